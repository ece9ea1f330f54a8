"""``cli.py`` end to end, in this process: the run folder a fit writes, resuming, evaluations, fine-tuning and
the ways a fit stops early (a diverged model, a full disk)."""

from __future__ import annotations

import csv
import errno
import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import Callback

import run.files
from cli import cli_main
from run.errors import main
from tests.conftest import CONFIGS, ROOT

EVALUATE = ["--data.batch_size", "32", "--trainer.limit_test_batches", "2"]
TINY = [
    *EVALUATE,
    "--trainer.max_epochs",
    "1",
    "--trainer.limit_train_batches",
    "3",
    "--trainer.limit_val_batches",
    "2",
]


def mnist_cnn(mnist_dir: Path, *extra: str, command: str = "fit") -> list[str]:
    """``cli.py COMMAND`` of configs/mnist_cnn.yaml on the fake digits: batches of 32, 3 training steps an epoch."""
    args = [command, "--config", str(CONFIGS / "mnist_cnn.yaml"), "--data.data_dir", str(mnist_dir)]
    return args + (TINY if command == "fit" else EVALUATE) + list(extra)


def mistake(args: list[str], capsys: pytest.CaptureFixture, callbacks: tuple = ()) -> str:
    """The CLI's answer to a mistake: exit status 2 and a few lines on stderr, returned."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        main(lambda: cli_main(args, callbacks=callbacks))
    err = capsys.readouterr().err
    assert stopped.value.code == 2, err
    answer = err[err.index("error: ") :]
    assert len(answer.splitlines()) <= 6 and "Traceback" not in err, err
    return answer


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


class LoadedStep(Callback):
    """Records the global step of the checkpoint a fit resumes from."""

    step: int | None = None

    def on_load_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self.step = checkpoint["global_step"]


def fit_in(folder: Path, args: list[str]) -> None:
    """``cli_main(args)`` run from ``folder`` (a module fixture has no test folder of its own)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setattr("sys.argv", ["cli.py"])
        patch.setenv("WANDB_MODE", "offline")
        cli_main(args)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Path:
    """A finished run (metrics.json written): ``<root>/logs/mnist_cnn/done``."""
    root = tmp_path_factory.mktemp("finished")
    fit_in(root, mnist_cnn(mnist_dir, "--run_id", "done"))
    return root / "logs" / "mnist_cnn" / "done"


@pytest.fixture(scope="module")
def unfinished(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> tuple[Path, list[str]]:
    """A run that trained 2 epochs and was not tested (no metrics.json), every epoch's checkpoint kept;
    returns its folder and its command."""
    root = tmp_path_factory.mktemp("unfinished")
    args = mnist_cnn(mnist_dir, "--trainer.max_epochs", "2", "--test_after_fit", "false")
    args += ["--checkpoint.save_top_k", "-1", "--trainer.default_root_dir", str(root), "--run_id", "open"]
    fit_in(root, args)
    return root / "logs" / "mnist_cnn" / "open", args


def test_fit_writes_config_metrics_and_checkpoints(mnist_dir: Path, tmp_path: Path) -> None:
    """A fit writes config.yaml (with the per-process batch size), metrics.json, last.ckpt and the best;
    the next fit gets the next version."""
    cli_main(mnist_cnn(mnist_dir, "--data.batch_size", "8", "--data.global_batch_size", "32"))
    run_dir = tmp_path / "logs" / "mnist_cnn" / "version_0"
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["data"]["init_args"]["batch_size"] == 32  # what one process took: 32 / 1, not 8
    result = json.loads((run_dir / "metrics.json").read_text())
    assert set(result) == {"metrics", "checkpoint", "epochs", "global_step", "monitor"}
    assert {"val/acc", "val/loss", "test/acc", "test/loss"} <= set(result["metrics"])
    assert result["global_step"] == 3 and result["epochs"] == 1
    assert result["monitor"] == {"metric": "val/acc", "mode": "max"}
    best = Path(result["checkpoint"])
    assert best.is_file() and best.resolve().parent == run_dir / "checkpoints" and best.name != "last.ckpt"
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3
    assert not list(run_dir.rglob(".*tmp*"))  # no half-written file left

    cli_main(mnist_cnn(mnist_dir, "--test_after_fit", "false"))
    assert sorted(p.name for p in (tmp_path / "logs" / "mnist_cnn").iterdir()) == ["version_0", "version_1"]
    assert (tmp_path / "logs/mnist_cnn/version_1/checkpoints/last.ckpt").is_file()


def test_a_named_run_resumes_from_the_checkpoint_furthest_in_training(unfinished, tmp_path: Path) -> None:
    """The same command resumes a named run from the checkpoint with the highest step, not the newest file."""
    source, args = unfinished
    copy = tmp_path / "logs" / "mnist_cnn" / "open"
    shutil.copytree(source, copy, copy_function=shutil.copy)  # as `cp -r`: new modification times
    checkpoints = copy / "checkpoints"
    (checkpoints / "epoch=1-step=6.ckpt").unlink()
    older = checkpoints / "epoch=0-step=3.ckpt"
    newest = (checkpoints / "last.ckpt").stat().st_mtime + 60
    os.utime(older, (newest, newest))  # the step-3 checkpoint is now the newest file
    assert torch.load(older, weights_only=True)["global_step"] == 3
    loaded = LoadedStep()
    cli = cli_main([*args[:-4], "--trainer.default_root_dir", str(tmp_path), "--run_id", "open"], callbacks=[loaded])
    assert loaded.step == 6 and cli.trainer.global_step == 6
    assert Path(cli.trainer.ckpt_path) == checkpoints / "last.ckpt"


def test_a_resumed_run_keeps_its_metric_history(tmp_path: Path) -> None:
    """A resumed run keeps the rows logged before the restart (Lightning's CSVLogger would delete
    them): in metrics.until-restart1.csv beside the new metrics.csv."""
    args = ["fit", "--config", str(CONFIGS / "polynomial_regression.yaml"), "--test_after_fit", "false"]
    args += ["--data.num_samples", "200", "--run_id", "again"]
    cli_main([*args, "--trainer.max_epochs", "1"])
    folder = tmp_path / "logs" / "polynomial_regression" / "again"
    first = (folder / "metrics.csv").read_text().splitlines()[1:]
    cli_main([*args, "--trainer.max_epochs", "2"])  # the same run, trained for one epoch more
    with open(folder / "metrics.csv", newline="") as f:
        assert {row["epoch"] for row in csv.DictReader(f)} == {"1"}
    assert first and (folder / "metrics.until-restart1.csv").read_text().splitlines()[1:] == first


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (["--model.optimizer.lr", "0.01"], "lr"),
        (["--data.batch_size", "16"], "--data.batch_size"),
        (["--model.net.channels", "[8, 16]"], "channels"),
    ],
    ids=["lr", "batch_size", "channels"],
)
def test_resuming_with_other_options_is_refused(unfinished, change: list[str], key: str, capsys) -> None:
    """A run resumes only with the model and data options it was trained with; the answer names the key."""
    folder, args = unfinished
    before = {p.name: p.stat().st_mtime_ns for p in folder.rglob("*")}
    answer = mistake([*args, *change], capsys)
    assert key in answer and "trained with other options" in answer and "--model.init_weights" in answer
    assert {p.name: p.stat().st_mtime_ns for p in folder.rglob("*") if p.name != "run.lock"} == {
        k: v for k, v in before.items() if k != "run.lock"
    }


def test_a_finished_run_is_never_written_into(
    finished: Path, mnist_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """A run id whose run finished (metrics.json) is refused, and its files stay as they are."""
    before = {p: p.read_bytes() for p in finished.rglob("*") if p.is_file()}
    monkeypatch.chdir(finished.parents[2])
    answer = mistake(mnist_cnn(mnist_dir, "--run_id", "done"), capsys)
    assert "finished run" in answer and "--run_id" in answer
    assert {p: p.read_bytes() for p in finished.rglob("*") if p.is_file()} == before


def test_a_one_cycle_schedule_is_not_stretched(finished: Path, mnist_dir: Path, tmp_path: Path, capsys) -> None:
    """Resuming a one-cycle run for more epochs is refused, and the new run's folder is removed."""
    last = finished / "checkpoints" / "last.ckpt"
    args = mnist_cnn(mnist_dir, "--ckpt_path", str(last), "--trainer.max_epochs", "2")
    answer = mistake(args, capsys)
    assert "one-cycle schedule cannot be stretched" in answer and "--model.init_weights" in answer
    assert not list(tmp_path.glob("logs/*/*"))


@pytest.mark.parametrize("command", ["validate", "test", "predict"])
def test_evaluations_need_weights(command: str, mnist_dir: Path, tmp_path: Path, capsys) -> None:
    """validate, test and predict without --ckpt_path or --model.init_weights are refused."""
    answer = mistake(mnist_cnn(mnist_dir, command=command), capsys)
    assert "--ckpt_path" in answer and "--model.init_weights" in answer
    assert not list(tmp_path.iterdir())


def test_predict_writes_a_csv_in_the_run_folder(finished: Path, mnist_dir: Path) -> None:
    """predict --ckpt_path writes <run>/predictions.csv: one row per test sample, top-3 classes."""
    predictions = finished / "predictions.csv"
    best = json.loads((finished / "metrics.json").read_text())["checkpoint"]
    cli_main(
        ["predict", "--config", str(CONFIGS / "mnist_cnn.yaml"), "--data.data_dir", str(mnist_dir)]
        + ["--ckpt_path", str(finished.parents[2] / best)]
    )
    with open(predictions, newline="") as f:
        rows = list(csv.DictReader(f))
    predictions.unlink()  # the run folder is shared by this module's tests
    assert list(rows[0]) == ["index", "pred", "prob", "topk_classes", "topk_probs", "target"]
    assert len(rows) == 40 and [int(r["index"]) for r in rows] == list(range(40))  # fake MNIST: 40 test digits
    for row in rows:
        classes, probs = row["topk_classes"].split("|"), [float(p) for p in row["topk_probs"].split("|")]
        assert len(classes) == 3 and classes[0] == row["pred"] and probs == sorted(probs, reverse=True)
        assert 0 < float(row["prob"]) <= 1 and 0 <= int(row["target"]) < 10


def test_an_exported_state_dict_reproduces_the_test_accuracy(finished: Path, mnist_dir: Path, tmp_path: Path) -> None:
    """scripts/export_state_dict.py writes the network; test with --model.init_weights gets the run's accuracy."""
    result = json.loads((finished / "metrics.json").read_text())
    exported = load_script("export_state_dict").main([str(finished.parents[2] / result["checkpoint"]), "-o", "net.pth"])
    state = torch.load(exported, weights_only=True)
    assert "features.0.weight" in state and not any(k.startswith("net.") for k in state)
    cli = cli_main(mnist_cnn(mnist_dir, "--model.init_weights", "net.pth", command="test"))
    assert float(cli.trainer.callback_metrics["test/acc"]) == pytest.approx(result["metrics"]["test/acc"])
    assert not (tmp_path / "logs").exists()  # evaluations keep no run folder


def test_freeze_keeps_the_named_parts_fixed(mnist_dir: Path, capsys) -> None:
    """--model.freeze [features] trains the head alone; a part the network lacks is a mistake."""
    start = cli_main(mnist_cnn(mnist_dir)[1:], run=False).model.net.state_dict()
    net = cli_main(mnist_cnn(mnist_dir, "--model.freeze", "[features]", "--test_after_fit", "false")).model.net
    for name, value in net.state_dict().items():
        if name.startswith("features.") and "running" not in name and "num_batches" not in name:
            assert torch.equal(value, start[name]), name  # BatchNorm statistics move; weights do not
        elif name.startswith("head.") and name.endswith("weight"):
            assert not torch.equal(value, start[name]), name
    answer = mistake(mnist_cnn(mnist_dir, "--model.freeze", "[feature]"), capsys)
    assert "--model.freeze 'feature'" in answer and "features" in answer


def test_default_root_dir_holds_everything(mnist_dir: Path, tmp_path: Path) -> None:
    """--trainer.default_root_dir D: the run folder and everything in it lie under D."""
    cli_main(mnist_cnn(mnist_dir, "--trainer.default_root_dir", "elsewhere"))
    assert [p.name for p in tmp_path.iterdir()] == ["elsewhere"]
    run_dir = tmp_path / "elsewhere" / "logs" / "mnist_cnn" / "version_0"
    assert {"config.yaml", "metrics.json", "metrics.csv", "checkpoints"} <= {p.name for p in run_dir.iterdir()}
    best = Path(json.loads((run_dir / "metrics.json").read_text())["checkpoint"])
    assert best.resolve().is_relative_to(run_dir)


def test_a_run_that_fails_before_training_leaves_no_folder(mnist_dir: Path, tmp_path: Path, capsys) -> None:
    """A fit stopped by a mistake before its first step leaves no run folder, named or not."""
    mistake(mnist_cnn(mnist_dir, "--model.loss", "huber"), capsys)
    mistake(mnist_cnn(mnist_dir, "--model.freeze", "[nothing]", "--run_id", "named"), capsys)
    assert not list(tmp_path.glob("logs/*/*"))


class PoisonBatchNorm(Callback):
    """Makes a BatchNorm's running variance infinite after the first step: a buffer, not a weight."""

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        next(m for m in pl_module.modules() if isinstance(m, torch.nn.BatchNorm2d)).running_var.fill_(float("inf"))


POLYNOMIAL = ["fit", "--config", str(CONFIGS / "polynomial_regression.yaml"), "--trainer.max_epochs", "2"]


@pytest.mark.parametrize(
    ("args", "callbacks"),
    [
        (["--model.optimizer", "torch.optim.SGD", "--model.optimizer.lr", "1e6", "--model.scheduler", "null"], ()),
        ([], (PoisonBatchNorm(),)),
        ([*POLYNOMIAL, "--model.optimizer.lr", "100"], ()),
    ],
    ids=["sgd-huge-lr", "batchnorm-inf", "polynomial-huge-lr"],
)
def test_a_diverged_run_writes_no_checkpoint(args, callbacks, mnist_dir: Path, tmp_path: Path, capsys) -> None:
    """Non-finite weights or buffers end the fit with "diverged" (exit 2); no checkpoint holds them."""
    args = args if args[:1] == ["fit"] else mnist_cnn(mnist_dir, *args)
    answer = mistake(args, capsys, callbacks)
    assert "diverged" in answer and "learning rate" in answer
    assert "running_var" in answer or not callbacks  # the buffer is named
    for path in tmp_path.rglob("*.ckpt"):
        state = torch.load(path, weights_only=True)["state_dict"]
        assert all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point()), path


def test_a_full_disk_keeps_the_last_checkpoint_whole(
    mnist_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """A checkpoint that cannot be written (no space left) ends the fit in a few lines naming the file; the
    previous last.ckpt stays whole."""
    save = torch.save

    def full_disk(obj, path, *args, **kwargs):
        if Path(path).name.startswith(".last") and Path(path).with_name("last.ckpt").exists():
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return save(obj, path, *args, **kwargs)

    args = ["--trainer.limit_train_batches", "2", "--checkpoint.every_n_train_steps", "1"]
    with monkeypatch.context() as disk:
        disk.setattr(run.files.torch, "save", full_disk)
        answer = mistake(mnist_cnn(mnist_dir, *args, "--run_id", "full"), capsys)
    last = tmp_path / "logs" / "mnist_cnn" / "full" / "checkpoints" / "last.ckpt"
    assert str(last.relative_to(tmp_path)) in answer and "No space left" in answer
    assert run.files.read_checkpoint(last)["global_step"] == 1  # written after step 1, whole
    assert not list(last.parent.glob(".*"))  # no temporary file left


def test_inspect_model_prints_every_parameter(capsys) -> None:
    """scripts/inspect_model.py prints one row per parameter (name, shape, count) and the total."""
    rows = load_script("inspect_model").main(["--config", str(CONFIGS / "mnist_softmax.yaml")])
    out = capsys.readouterr().out
    assert [r[0] for r in rows] == ["net.linear.weight", "net.linear.bias"]
    assert "net.linear.weight" in out and "[10, 784]" in out and "7,840" in out and "7,850" in out
