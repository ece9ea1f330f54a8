"""A new user's mistakes, each answered with exit status 2 and a few lines on stderr that name what to change,
without a traceback; a bug keeps its traceback, and ``CLI_DEBUG=1`` shows the traceback of a mistake too.

The table runs the CLI's own entry point, ``run.errors.main(cli_main)``, in this process; a few rows also run
``python cli.py`` as a process of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from argparse import ArgumentError
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from cli import cli_main
from run.errors import MAX_LINES, main
from tests.conftest import CONFIGS, run_cli
from tests.fake_data import write_image_folder

MNIST_CNN = str(CONFIGS / "mnist_cnn.yaml")
POLYNOMIAL = str(CONFIGS / "polynomial_regression.yaml")
FOLDER_CNN = str(CONFIGS / "cifar10_folder_cnn.yaml")


@dataclass
class Ground:
    """What a row may use to stage its mistake."""

    tmp: Path
    mnist: Path
    folder: Path
    monkeypatch: pytest.MonkeyPatch
    processes: list[subprocess.Popen] = field(default_factory=list)  # ended after the row


@dataclass
class Row:
    name: str
    args: Callable[[Ground], list[str]]  # the command line after ``cli.py``
    words: tuple[str, ...]  # each must appear in the answer
    bug: str | None = None  # why the answer is not short yet (the row is an expected failure until fixed)


def mnist_fit(g: Ground, *extra: str) -> list[str]:
    return ["fit", "--config", MNIST_CNN, "--data.data_dir", str(g.mnist), "--trainer.fast_dev_run", "true", *extra]


def poly_fit(g: Ground, *extra: str) -> list[str]:
    return ["fit", "--config", POLYNOMIAL, "--trainer.fast_dev_run", "true", *extra]


def folder_fit(root: Path, *extra: str) -> list[str]:
    return ["fit", "--config", FOLDER_CNN, "--data.data_dir", str(root), "--trainer.fast_dev_run", "true", *extra]


def yaml_file(g: Ground, text: str) -> str:
    path = g.tmp / "mine.yaml"
    path.write_text(text)
    return str(path)


def one_class_folder(g: Ground) -> list[str]:
    return folder_fit(write_image_folder(g.tmp / "one", classes=("cat",)))


def empty_class_folder(g: Ground) -> list[str]:
    root = write_image_folder(g.tmp / "folder")
    for image in (root / "train" / "dog").iterdir():
        image.unlink()
    return folder_fit(root)


def damaged_checkpoint(g: Ground) -> list[str]:
    path = g.tmp / "damaged.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}, "pytorch-lightning_version": "2.6.6"}, path)
    path.write_bytes(path.read_bytes()[:1000])  # cut short, as by a full disk or a killed copy
    return ["test", "--config", POLYNOMIAL, "--ckpt_path", str(path)]


def text_file(g: Ground, name: str = "notes.txt", text: str = "hello\n") -> str:
    (g.tmp / name).write_text(text)
    return str(g.tmp / name)


def state_dict_as_checkpoint(g: Ground) -> list[str]:
    path = g.tmp / "model.pth"
    torch.save({"linear.weight": torch.zeros(1, 3), "linear.bias": torch.zeros(1)}, path)
    return ["test", "--config", POLYNOMIAL, "--ckpt_path", str(path)]


def wandb_online_without_key(g: Ground) -> list[str]:
    home = g.tmp / "home"
    home.mkdir()
    g.monkeypatch.setenv("HOME", str(home))
    g.monkeypatch.delenv("WANDB_API_KEY", raising=False)
    g.monkeypatch.setenv("WANDB_MODE", "online")
    return wandb_fit(g)


def wandb_bad_key(g: Ground) -> list[str]:
    home = g.tmp / "home"
    home.mkdir()
    g.monkeypatch.setenv("HOME", str(home))
    g.monkeypatch.setenv("WANDB_API_KEY", "abc")
    g.monkeypatch.delenv("WANDB_MODE", raising=False)
    return wandb_fit(g)


def wandb_fit(g: Ground) -> list[str]:
    stack = ["--config", str(CONFIGS / "logger" / "wandb.yaml"), "--trainer.max_epochs", "1"]
    return ["fit", "--config", POLYNOMIAL, *stack]


def unwritable_root_file(g: Ground) -> list[str]:
    (g.tmp / "a_file").write_text("")
    return ["fit", "--config", POLYNOMIAL, "--trainer.default_root_dir", str(g.tmp / "a_file")]


def unwritable_root_folder(g: Ground) -> list[str]:
    if os.geteuid() == 0:
        pytest.skip("root writes into a read-only folder")
    folder = g.tmp / "read_only"
    folder.mkdir(mode=0o500)
    return ["fit", "--config", POLYNOMIAL, "--trainer.default_root_dir", str(folder)]


HOLDER = """
import fcntl, json, sys, time
from pathlib import Path
folder = Path(sys.argv[1]); folder.mkdir(parents=True)
lock = open(folder / "run.lock", "a+")
fcntl.lockf(lock, fcntl.LOCK_EX)
lock.write(json.dumps({"pid": 4242, "host": "node7", "command": []}) + "\\n"); lock.flush()
print("locked", flush=True)
time.sleep(120)
"""


def run_in_use(g: Ground) -> list[str]:
    folder = g.tmp / "logs" / "polynomial_regression" / "busy"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
    g.processes.append(holder)
    assert holder.stdout.readline().strip() == "locked"
    return ["fit", "--config", POLYNOMIAL, "--trainer.max_epochs", "1", "--run_id", "busy"]


ROWS = [
    Row("unknown option", lambda g: poly_fit(g, "--trainer.max_epoch", "3"), ("--trainer.max_epoch",)),
    Row("unknown model", lambda g: mnist_fit(g, "--model", "Clasifier"), ("model", "Clasifier")),
    Row("unknown network", lambda g: mnist_fit(g, "--model.net", "CNNN"), ("net", "CNNN")),
    Row(
        "unknown network class path",
        lambda g: mnist_fit(g, "--model.net", "lightning_modules.nets.cnn.CNNN"),
        ("CNNN",),
    ),
    Row("negative batch size", lambda g: mnist_fit(g, "--data.batch_size", "-5"), ("batch_size", "-5")),
    Row(
        "misspelt key in a config file",
        lambda g: poly_fit(g, "--config", yaml_file(g, "trainer:\n  max_epoch: 3\n")),
        ("trainer.max_epoch",),
    ),
    Row(
        "key twice in a config file",
        lambda g: poly_fit(g, "--config", yaml_file(g, "trainer:\n  max_epochs: 3\ntrainer:\n  max_epochs: 4\n")),
        ("trainer", "twice", "mine.yaml"),
    ),
    Row("test without weights", lambda g: ["test", "--config", POLYNOMIAL], ("--ckpt_path", "--model.init_weights")),
    Row("one class", one_class_folder, ("1 class", "at least 2")),
    Row("empty class folder", empty_class_folder, ("dog", "no images")),
    Row(
        "negative learning rate",
        lambda g: mnist_fit(g, "--model.optimizer.lr", "-0.1"),
        ("--model.optimizer", "learning rate", "-0.1"),
    ),
    Row("image network on regression data", lambda g: poly_fit(g, "--model.net", "CNN"), ("--model.net", "CNN")),
    Row("default_root_dir is a file", unwritable_root_file, ("a_file", "default_root_dir")),
    Row("default_root_dir read-only", unwritable_root_folder, ("read_only", "default_root_dir")),
    Row("W&B online without a key", wandb_online_without_key, ("WANDB_MODE", "wandb login", "WANDB_API_KEY")),
    Row("W&B key malformed", wandb_bad_key, ("WANDB_API_KEY", "API key")),
    Row(
        "missing MNIST files",
        lambda g: mnist_fit(g, "--data.data_dir", str(g.tmp / "nowhere"), "--data.download", "false"),
        ("MNIST not found", "nowhere", "--data.data_dir"),
    ),
    Row(
        "missing dataset folder",
        lambda g: folder_fit(g.tmp / "nowhere"),
        ("nowhere", "--data.data_dir", "train/<class>/<image>"),
    ),
    Row("damaged checkpoint", damaged_checkpoint, ("damaged.ckpt", "truncated")),
    Row(
        "damaged checkpoint to resume", lambda g: poly_fit(g, *damaged_checkpoint(g)[3:]), ("damaged.ckpt", "truncated")
    ),
    Row(
        "state_dict to resume",
        lambda g: poly_fit(g, *state_dict_as_checkpoint(g)[3:]),
        ("model.pth", "--model.init_weights"),
    ),
    Row(
        "state_dict as checkpoint",
        state_dict_as_checkpoint,
        ("model.pth", "--model.init_weights"),
    ),
    Row(
        "missing weights file",
        lambda g: ["test", "--config", POLYNOMIAL, "--model.init_weights", str(g.tmp / "missing.pth")],
        ("--model.init_weights", "missing.pth", "No such file"),
    ),
    Row(
        "damaged weights file",
        lambda g: ["test", "--config", POLYNOMIAL, "--model.init_weights", damaged_checkpoint(g)[-1]],
        ("--model.init_weights", "damaged.ckpt"),
    ),
    Row(
        "empty weights file",
        lambda g: ["test", "--config", POLYNOMIAL, "--model.init_weights", text_file(g, "empty.pth", "")],
        ("--model.init_weights", "empty.pth"),
    ),
    Row(
        "text file as weights",
        lambda g: ["test", "--config", POLYNOMIAL, "--model.init_weights", text_file(g)],
        ("--model.init_weights", "notes.txt"),
    ),
    Row("unknown loss", lambda g: mnist_fit(g, "--model.loss", "cross_entropie"), ("cross_entropie", "cross_entropy")),
    Row(
        "loss of another task",
        lambda g: mnist_fit(g, "--model.loss", "huber"),
        ("HuberLoss", "regression", "multiclass", "cross_entropy"),
    ),
    Row(
        "fold out of range",
        lambda g: poly_fit(g, "--data.fold", "5", "--data.num_folds", "3"),
        ("--data.fold 5", "0 to 2"),
    ),
    Row("run folder in use", run_in_use, ("busy", "in use", "--run_id")),
]


def answer(args: list[str], capsys: pytest.CaptureFixture) -> str:
    """Run ``cli.py ARGS`` in this process; assert exit status 2 and a short answer; return it."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        main(lambda: cli_main(args))
    err = capsys.readouterr().err
    assert stopped.value.code == 2, err
    assert "Traceback" not in err, err
    text = err[err.index("error: ") :]
    assert len(text.splitlines()) <= MAX_LINES, text
    return text


@pytest.mark.parametrize(
    "row",
    [pytest.param(r, id=r.name, marks=[pytest.mark.xfail(strict=True, reason=r.bug)] if r.bug else []) for r in ROWS],
)
def test_a_mistake_is_answered_in_a_few_lines(
    row: Row, tmp_path: Path, mnist_dir: Path, image_folder_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Exit status 2, at most 6 lines, no traceback, and the words that say what to change."""
    ground = Ground(tmp_path, mnist_dir, image_folder_dir, monkeypatch)
    args = row.args(ground)
    runs = set(tmp_path.glob("logs/*/*"))  # a folder a row made for its mistake, e.g. one in use
    try:
        text = answer(args, capsys)
    finally:
        for process in ground.processes:
            process.kill()
            process.wait()
    for word in row.words:
        assert word in text, (word, text)
    assert set(tmp_path.glob("logs/*/*")) == runs  # a fit that fails before training leaves no run folder


def test_a_bug_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """An exception that is no user's mistake (here a ZeroDivisionError in the model) is raised, not summed up."""
    from lightning_modules.base import TaskModule

    monkeypatch.setattr(TaskModule, "training_step", lambda self, batch, batch_idx: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        main(lambda: cli_main(["fit", "--config", POLYNOMIAL, "--trainer.fast_dev_run", "true"]))
    assert "error: " not in capsys.readouterr().err


def test_cli_debug_shows_the_traceback_of_a_mistake(monkeypatch: pytest.MonkeyPatch) -> None:
    """CLI_DEBUG=1: a mistake is raised with its traceback instead of the short answer."""
    monkeypatch.setenv("CLI_DEBUG", "1")
    with pytest.raises(ArgumentError, match="max_epoch"):
        main(lambda: cli_main(["fit", "--config", POLYNOMIAL, "--trainer.max_epoch", "3"]))


def process_answer(args: list[str], tmp_path: Path, **env: str) -> str:
    """``python cli.py ARGS`` as a user runs it: exit status 2, at most 6 lines on stderr, no traceback."""
    done = run_cli(*args, cwd=tmp_path, timeout=120, env=env)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) <= MAX_LINES, done.stderr
    return done.stderr


@pytest.mark.slow
def test_the_real_command_answers_an_unknown_option(tmp_path: Path) -> None:
    """python cli.py with a misspelt option: the short answer, as in this process."""
    stderr = process_answer(["fit", "--config", POLYNOMIAL, "--trainer.max_epoch", "3"], tmp_path)
    assert "error: " in stderr and "--trainer.max_epoch" in stderr


@pytest.mark.slow
def test_the_real_command_answers_config_and_environment_mistakes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """python cli.py with a key twice in a config file, and with W&B online but no key: short answers."""
    twice = tmp_path / "twice.yaml"
    twice.write_text("trainer:\n  max_epochs: 3\ntrainer:\n  max_epochs: 4\n")
    stderr = process_answer(["fit", "--config", POLYNOMIAL, "--config", str(twice)], tmp_path)
    assert "twice" in stderr and "twice.yaml" in stderr
    (tmp_path / "home").mkdir()
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    wandb = ["--config", str(CONFIGS / "logger" / "wandb.yaml")]
    stderr = process_answer(
        ["fit", "--config", POLYNOMIAL, *wandb], tmp_path, HOME=str(tmp_path / "home"), WANDB_MODE="online"
    )
    assert "wandb login" in stderr and "WANDB_API_KEY" in stderr
    assert not list(tmp_path.glob("logs/*/*"))  # the run folder made for it is gone


@pytest.mark.slow
def test_the_real_command_shows_the_traceback_with_cli_debug(tmp_path: Path) -> None:
    """CLI_DEBUG=1 python cli.py with a misspelt option: the traceback, and a non-zero exit status."""
    done = run_cli(
        "fit", "--config", POLYNOMIAL, "--trainer.max_epoch", "3", cwd=tmp_path, timeout=120, env={"CLI_DEBUG": "1"}
    )
    assert done.returncode != 0 and "Traceback" in done.stderr and "max_epoch" in done.stderr
