"""Fine-tuning: --model.init_weights starts a new run from trained weights; --model.freeze fixes parts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cli import cli_main
from tests.conftest import CONFIGS, ROOT
from user_errors import UserError

SOURCE = Path("logs/mnist_cnn/version_0")  # the first run in a test's folder


def run(subcommand: str, mnist_dir: Path, *extra: str):
    args = [subcommand, "--config", str(CONFIGS / "mnist_cnn.yaml"), "--data.data_dir", str(mnist_dir)]
    args += ["--data.batch_size", "16", "--trainer.enable_progress_bar", "false"]
    if subcommand == "fit":
        args += ["--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "2"]
    return cli_main(args + list(extra))


def metrics(run_dir: Path) -> dict[str, float]:
    return json.loads((run_dir / "metrics.json").read_text())["metrics"]


@pytest.fixture
def source_run(mnist_dir: Path) -> dict[str, float]:
    """A trained run with its model.pth and metrics.json."""
    run("fit", mnist_dir, "--trainer.max_epochs", "2")
    return metrics(SOURCE)


def test_init_weights_from_model_pth_starts_at_the_source_accuracy(source_run, mnist_dir: Path) -> None:
    # a new run that trains for no epoch: what it evaluates are the loaded weights
    model_pth = str(SOURCE / "model.pth")
    cli = run("fit", mnist_dir, "--trainer.max_epochs", "0", "--model.init_weights", model_pth)
    assert cli.trainer.global_step == 0
    assert metrics(Path("logs/mnist_cnn/version_1"))["test/acc"] == source_run["test/acc"]
    # and `test` of a model.pth, without a checkpoint
    cli = run("test", mnist_dir, "--model.init_weights", model_pth)
    assert float(cli.trainer.callback_metrics["test/acc"]) == pytest.approx(source_run["test/acc"])


def test_init_weights_from_a_checkpoint_starts_a_fresh_run(source_run, mnist_dir: Path) -> None:
    best = Path(json.loads((SOURCE / "metrics.json").read_text())["checkpoint"])
    start = torch.load(best, weights_only=True)["state_dict"]
    tune = ["--model.init_weights", str(best), "--run_id", "tuned", "--trainer.max_epochs", "1"]
    cli = run("fit", mnist_dir, *tune)
    assert cli.trainer.global_step == 3 and cli.trainer.current_epoch == 1  # epoch 0, fresh schedule
    tuned = cli.model.state_dict()
    assert not torch.equal(tuned["net.head.3.weight"], start["net.head.3.weight"])  # it trained on
    # its checkpoints load without the file the run started from (the argument is not stored)
    best.unlink()
    tuned_best = json.loads(Path("logs/mnist_cnn/tuned/metrics.json").read_text())["checkpoint"]
    cli = run("test", mnist_dir, "--ckpt_path", tuned_best)
    assert "test/acc" in cli.trainer.callback_metrics


def test_freeze_keeps_the_named_parts_fixed(source_run, mnist_dir: Path) -> None:
    start = torch.load(SOURCE / "model.pth", weights_only=True)["state_dict"]
    cli = run(
        "fit",
        mnist_dir,
        "--trainer.max_epochs",
        "1",
        "--model.init_weights",
        str(SOURCE / "model.pth"),
        "--model.freeze",
        "[features]",
    )
    net = cli.model.net
    assert all(not p.requires_grad for p in net.features.parameters())
    for name, parameter in net.named_parameters():
        assert torch.equal(parameter.cpu(), start[name]) == name.startswith("features."), name


def test_weights_that_do_not_fit_name_the_difference(source_run, mnist_dir: Path) -> None:
    model_pth = str(SOURCE / "model.pth")
    with pytest.raises(UserError) as error:
        run("fit", mnist_dir, "--model.init_weights", model_pth, "--model.net.init_args.hidden", "128")
    message = str(error.value)
    assert "\n" not in message and message.startswith("model (Classifier): ")  # one line
    assert "shapes differ: head.1.bias (256,) in the file, (128,) in the network" in message
    assert "The file holds a model.pth of lightning_modules.CNN with 10 outputs, 16 tensors." in message
    with pytest.raises(UserError, match="no such file"):
        run("fit", mnist_dir, "--model.init_weights", "missing.pth")


def test_an_unknown_freeze_prefix_lists_the_parts(mnist_dir: Path) -> None:
    with pytest.raises(UserError, match=r"'feature' names no parameter.*\['features', 'head'\]"):
        run("fit", mnist_dir, "--model.freeze", "[feature]")
    # on the command line: a few lines, no traceback
    command = [sys.executable, str(ROOT / "cli.py"), "fit", "--config", str(CONFIGS / "mnist_cnn.yaml")]
    done = subprocess.run(
        command + ["--model.freeze", "[feature]"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "\nerror: model (Classifier): --model.freeze 'feature' names no parameter" in done.stderr
    assert len(done.stderr.splitlines()) <= 3
