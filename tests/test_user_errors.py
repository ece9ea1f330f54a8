"""Every mistake a user can make answered in a few lines (exit status 2, at most 5 lines from
``error:`` on, no traceback, naming the thing to change); a bug keeps its traceback.

The table runs the CLI's own entry (``user_errors.main(cli_main)``) in this process; a few cases
also run ``python cli.py`` as a real process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import user_errors
from cli import cli_main
from tests.conftest import CONFIGS, ROOT
from tests.fake_data import write_image_folder, write_mnist

POLY = ["fit", "--config", str(CONFIGS / "polynomial_regression.yaml"), "--trainer.fast_dev_run", "true"]
CNN = ["fit", "--config", str(CONFIGS / "mnist_cnn.yaml"), "--trainer.fast_dev_run", "true"]
FAST = ["fit", "--config", str(CONFIGS / "mnist_fast.yaml"), "--trainer.fast_dev_run", "true"]


def answer(args: list[str], capsys: pytest.CaptureFixture) -> list[str]:
    """The lines from ``error:`` on, after asserting a short answer and status 2."""
    with pytest.raises(SystemExit) as stopped:
        user_errors.main(lambda: cli_main(args))
    err = capsys.readouterr().err
    assert stopped.value.code == 2, err
    assert "error: " in err and "Traceback" not in err, err
    lines = err[err.index("error: ") :].strip().splitlines()
    assert len(lines) <= 5, err
    return lines


# (case, command-line flags after the command, words the answer must hold)
FLAGS = [
    (
        "abbreviated flag",
        [*POLY, "--trainer.max_epoch", "3"],
        ["--trainer.max_epoch", "Did you mean --trainer.max_epochs"],
    ),
    ("misspelt flag", [*POLY, "--trainer.max_epochz", "3"], ["Did you mean --trainer.max_epochs"]),
    (
        "unknown model",
        [*CNN, "--model", "Classifer"],
        ["'Classifer'", "Did you mean Classifier", "Known: Classifier, Regressor"],
    ),
    ("unknown datamodule", [*CNN, "--data", "MNISTDatamodule"], ["Did you mean MNISTDataModule"]),
    ("unknown network", [*CNN, "--model.net", "CNNN"], ["--model.net", "Did you mean CNN", "LinearNet"]),
    ("unknown optimizer", [*CNN, "--model.optimizer", "torch.optim.Adamm"], ["Did you mean Adam"]),
    (
        "option of another optimizer",
        [*CNN, "--model.optimizer.momentum", "0.9"],
        ["Adam has no option 'momentum'", "Options of Adam: lr"],
    ),
    (
        "unknown model option",
        [*POLY, "--model.los", "mse"],
        ["Regressor has no option 'los'", "Did you mean loss"],
    ),
    (
        "not a number",
        [*POLY, "--data.batch_size", "abc"],
        ["--data.batch_size must be an integer > 0", "'abc'"],
    ),
    (
        "negative batch size",
        [*FAST, "--data.batch_size", "-5"],
        ["--data.batch_size must be an integer > 0", "-5"],
    ),
    ("fraction out of range", [*POLY, "--data.val_fraction", "1.5"], ["--data.val_fraction", "1.5"]),
    ("probability out of range", [*CNN, "--model.net.dropout", "2"], ["--model.net.dropout", "2"]),
    ("negative workers", [*CNN, "--data.num_workers", "-1"], ["--data.num_workers", "-1"]),
    ("one fold", [*POLY, "--data.num_folds", "1"], ["--data.num_folds must be an integer >= 2"]),
    ("fold out of range", [*POLY, "--data.num_folds", "3", "--data.fold", "5"], ["--data.fold 5", "0 to 2"]),
    (
        "scheduler missing an option",
        [*CNN, "--model.scheduler", "StepLR"],
        ["StepLR needs step_size", "--model.scheduler.step_size"],
    ),
    (
        "no subcommand",
        ["--config", str(CONFIGS / "polynomial_regression.yaml")],
        ["subcommand", "fit,validate,test,predict"],
    ),
    ("missing config", ["fit", "--config", "configs/nope.yaml"], ["does not exist", "nope.yaml"]),
    (
        "loss for another task",
        [*CNN, "--model.loss", "huber"],
        ["model (Classifier)", "is for regression targets", "cross_entropy"],
    ),
    ("misspelt loss", [*CNN, "--model.loss", "cross_entropie"], ["Did you mean 'cross_entropy'"]),
    (
        "torch loss for another task",
        [*CNN, "--model.loss", "torch.nn.SmoothL1Loss"],
        ["SmoothL1Loss is for regression"],
    ),
    (
        "unknown loss that broadcasts",
        [*CNN, "--model.loss", "torch.nn.BCELoss"],
        ["on one example batch", "cross_entropy"],
    ),
    ("log loss on negative targets", [*POLY, "--model.loss", "log_mse"], ["needs targets >= 0"]),
    (
        "even kernel",
        [*CNN, "--model.net.kernel_size", "4"],
        ["model.init_args.net (CNN)", "kernel_size must be odd"],
    ),
    ("run id outside the logs", [*POLY, "--run_id", "../x"], ["--run_id '../x'", "relative folder name"]),
    ("no GPU here", [*POLY, "--trainer.accelerator", "gpu"], ["gpu"]),
    (
        "diverging run",
        [
            *POLY,
            "--trainer.fast_dev_run",
            "false",
            "--trainer.max_epochs",
            "3",
            "--model.optimizer.lr",
            "1e6",
        ],
        ["NaN or infinite", "Lower the learning rate"],
    ),
]


@pytest.mark.parametrize(("flags", "words"), [c[1:] for c in FLAGS], ids=[c[0] for c in FLAGS])
def test_flag_and_option_mistakes(flags: list[str], words: list[str], mnist_dir: Path, capsys) -> None:
    needs_data = "mnist" in " ".join(flags)
    lines = answer([*flags, *(["--data.data_dir", str(mnist_dir)] if needs_data else [])], capsys)
    for word in words:
        assert word in "\n".join(lines), (word, lines)


def test_config_file_typos_name_the_file_and_line(tmp_path: Path, capsys) -> None:
    typo = tmp_path / "typo.yaml"
    typo.write_text("trainer:\n  max_epoch: 3\n")
    lines = answer([*POLY, "--config", str(typo)], capsys)
    assert f"{typo}:2" in lines[0] and "Did you mean trainer.max_epochs" in "\n".join(lines)
    typo.write_text("model:\n  init_args:\n    los: mse\n")
    lines = answer([*POLY, "--config", str(typo)], capsys)
    assert "Regressor has no option 'los'" in lines[0] and f"{typo}:3" in lines[0]


def test_a_finished_run_is_not_reused(capsys, tmp_path: Path) -> None:
    args = [*POLY, "--trainer.fast_dev_run", "false", "--trainer.max_epochs", "1", "--run_id", "done"]
    cli_main(args)
    lines = answer(args, capsys)
    assert "holds a finished run" in lines[0] and "--model.init_weights" in lines[0]


def damaged_mnist(root: Path, file: str, damage: str) -> Path:
    write_mnist(root)
    path = root / "MNIST" / "raw" / file
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00\x00\x09\x03" + data[4:])
    return root


@pytest.mark.parametrize(
    ("file", "damage", "words"),
    [
        ("train-images-idx3-ubyte", "truncate", ["train-images-idx3-ubyte is truncated"]),
        # the test set's labels: checked before training, not after it
        ("t10k-labels-idx1-ubyte", "truncate", ["t10k-labels-idx1-ubyte is truncated"]),
        ("train-labels-idx1-ubyte", "magic", ["not an IDX file"]),
    ],
)
def test_damaged_idx_files_are_named(
    file: str, damage: str, words: list[str], tmp_path: Path, capsys
) -> None:
    data = damaged_mnist(tmp_path / "data", file, damage)
    lines = answer([*CNN, "--data.data_dir", str(data)], capsys)
    assert all(word in lines[0] for word in words), lines


def test_missing_data_leaves_no_empty_folders(tmp_path: Path, capsys, monkeypatch) -> None:
    from datamodules import MNISTDataModule

    def offline(self) -> None:
        (self.data_dir / "MNIST" / "raw").mkdir(parents=True)  # as torchvision does before it fails
        raise RuntimeError("Error downloading: no network")

    monkeypatch.setattr(MNISTDataModule, "fetch", offline)
    lines = answer([*CNN, "--data.data_dir", str(tmp_path / "nowhere")], capsys)
    assert "MNIST not found" in lines[0] and "--data.data_dir" in "\n".join(lines)
    assert not (tmp_path / "nowhere").exists()


def folder_fit(root: Path) -> list[str]:
    """One fast_dev_run step of the image-folder CNN on ``root``."""
    config = ["--config", str(CONFIGS / "cifar10_folder_cnn.yaml"), "--trainer.fast_dev_run", "true"]
    return [
        "fit",
        *config,
        "--data.data_dir",
        str(root),
        "--data.batch_size",
        "64",
        "--data.num_workers",
        "0",
    ]


@pytest.mark.parametrize("resident", [False, True], ids=["dataloader", "device-resident"])
def test_images_of_mixed_sizes_suggest_resize(resident: bool, tmp_path: Path, capsys) -> None:
    root = write_image_folder(tmp_path / "folder", size=(20, 16))
    write_image_folder(tmp_path / "odd", classes=("cat",), n_train=2, n_test=1, size=(12, 12))
    for image in (tmp_path / "odd" / "train" / "cat").iterdir():
        image.rename(root / "train" / "cat" / f"odd_{image.name}")
    resident_flags = [
        "--data.device_resident",
        str(resident).lower(),
        "--data.cache_dir",
        str(tmp_path / "cache"),
    ]
    lines = answer([*folder_fit(root), *resident_flags], capsys)
    assert "--data.resize" in "\n".join(lines), lines


def test_a_damaged_image_is_named(tmp_path: Path, capsys) -> None:
    root = write_image_folder(tmp_path / "folder")
    broken = sorted((root / "train" / "dog").glob("*.jpg"))[0]
    broken.write_bytes(broken.read_bytes()[:50])
    lines = answer(folder_fit(root), capsys)
    assert str(broken) in lines[0] and "remove or replace it" in lines[0]


def test_hidden_folders_are_no_classes_and_test_may_lack_one(tmp_path: Path, recwarn) -> None:
    from datamodules import ImageFolderDataModule

    root = write_image_folder(tmp_path / "folder")
    (root / "train" / ".ipynb_checkpoints").mkdir()
    for image in (root / "test" / "frog").iterdir():
        image.unlink()
    data = ImageFolderDataModule(data_dir=str(root))
    assert data.classes == ["cat", "dog", "frog"]
    assert set(data.source_targets(train=False).tolist()) == {0, 1}
    assert any("has no images of frog" in str(w.message) for w in recwarn)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    os.chdir(tmp_path_factory.mktemp("checkpoint"))
    cli = cli_main([*POLY, "--trainer.fast_dev_run", "false", "--trainer.max_epochs", "1"])
    return Path(cli.trainer.checkpoint_callback.best_model_path).resolve()


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda good, path: path.write_bytes(good.read_bytes()[:1000]), ["truncated or damaged"]),
        (lambda good, path: path.write_bytes(os.urandom(4096)), ["not a file torch.save wrote"]),
        (lambda good, path: path.write_bytes(b""), ["an empty file"]),
        (lambda good, path: torch.save({"w": torch.zeros(2)}, path), ["a plain state_dict"]),
        (
            lambda good, path: path.write_bytes((good.parent.parent / "model.pth").read_bytes()),
            ["a model.pth", "--model.init_weights"],
        ),
    ],
    ids=["truncated", "random-bytes", "empty", "state-dict", "model.pth"],
)
def test_checkpoints_that_are_not_say_what_they_are(
    make, words, checkpoint: Path, tmp_path: Path, capsys
) -> None:
    path = tmp_path / "given.ckpt"
    make(checkpoint, path)
    lines = answer(
        ["test", "--config", str(CONFIGS / "polynomial_regression.yaml"), "--ckpt_path", str(path)], capsys
    )
    assert f"--ckpt_path {path} is" in lines[0] and all(word in lines[0] for word in words), lines


def test_a_checkpoint_of_another_model_is_told(mnist_dir: Path, caplog) -> None:
    data = ["--data.data_dir", str(mnist_dir), "--trainer.enable_progress_bar", "false"]
    softmax = cli_main(
        [
            "fit",
            "--config",
            str(CONFIGS / "mnist_softmax.yaml"),
            *data,
            "--trainer.max_epochs",
            "1",
            "--test_after_fit",
            "false",
        ]
    )
    ckpt = softmax.trainer.checkpoint_callback.best_model_path
    cli_main(["test", "--config", str(CONFIGS / "mnist_cnn.yaml"), *data, "--ckpt_path", ckpt])
    assert (
        "--ckpt_path holds a Classifier with a LinearNet network: that model runs, not Classifier with a CNN"
        in caplog.text
    )


def test_a_bug_keeps_its_traceback(monkeypatch) -> None:
    import lightning_modules.nets.cnn as cnn

    def broken(*args, **kwargs):
        return {}["missing"]  # a KeyError raised by the interpreter: a bug, not a message

    monkeypatch.setattr(cnn.CNN, "forward", broken)
    with pytest.raises(KeyError):
        user_errors.main(lambda: cli_main([*CNN[1:], "--data.data_dir", "unused"], run=False))


def python_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}  # pytest-xdist sets 80
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def test_the_real_command_answers_briefly_and_debug_shows_the_traceback(tmp_path: Path) -> None:
    done = python_cli(*POLY[:3], "--trainer.max_epoch", "3", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") <= 5, done.stderr
    assert "Did you mean --trainer.max_epochs" in done.stderr and "Traceback" not in done.stderr
    debug = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *POLY[:3], "--trainer.max_epoch", "3"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT), "CLI_DEBUG": "1"},
    )
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_help_is_short_and_says_where_the_options_are(tmp_path: Path) -> None:
    root = python_cli("--help", cwd=tmp_path).stdout
    for line in ("fit ", "validate ", "test ", "predict "):
        assert any(row.strip().startswith(line) and row.rstrip().endswith(".") for row in root.splitlines())
    fit = python_cli("fit", "--help", cwd=tmp_path).stdout
    assert len(fit.splitlines()) <= 120, len(fit.splitlines())
    for where in (
        "--model.help",
        "--data.help",
        "--model.optimizer.help",
        "--model.scheduler.help",
        "--model.net.help",
    ):
        assert where in fit, where
    net = python_cli("fit", "--model.net.help", "CNN", cwd=tmp_path)
    assert net.returncode == 0 and "--net.channels" in net.stdout
    model = python_cli("fit", "--model.help", "Classifier", cwd=tmp_path).stdout
    assert len(model.splitlines()) < 80 and "cross_entropy" in model  # the loss names, not every nn.Module


def test_a_normal_run_prints_no_third_party_noise(tmp_path: Path) -> None:
    done = python_cli(*POLY[:3], "--trainer.max_epochs", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    output = done.stdout + done.stderr
    for noise in ("litlogger", "already configured with model summary", "LeafSpec", "Warning"):
        assert noise not in output, noise
    assert "MeanAbsoluteError" in output  # the model summary's type names, not cut at 80 columns


def test_a_run_that_fails_before_training_leaves_no_folder(capsys, tmp_path: Path) -> None:
    answer([*POLY, "--trainer.fast_dev_run", "false", "--model.loss", "log_mse"], capsys)  # fails in setup
    answer([*POLY, "--trainer.fast_dev_run", "false", "--model.loss", "log_mse", "--run_id", "named"], capsys)
    assert not list(tmp_path.glob("logs/*/*"))


def test_a_one_cycle_schedule_is_not_stretched(mnist_dir: Path, capsys) -> None:
    data = ["--data.data_dir", str(mnist_dir), "--trainer.enable_progress_bar", "false"]
    short = ["--trainer.limit_train_batches", "2", "--test_after_fit", "false"]
    cli_main(["fit", "--config", str(CONFIGS / "mnist_cnn.yaml"), *data, *short, "--run_id", "first"])
    last = "logs/mnist_cnn/first/checkpoints/last.ckpt"
    longer = [*data, *short, "--trainer.max_epochs", "2", "--ckpt_path", last, "--run_id", "more"]
    lines = answer(["fit", "--config", str(CONFIGS / "mnist_cnn.yaml"), *longer], capsys)
    assert "one-cycle schedule cannot be stretched" in lines[0] and "--model.init_weights" in lines[0]
