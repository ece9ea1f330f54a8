"""Faults injected into real ``cli.py fit`` processes: kill -9 at random moments and during
checkpoint writes, SIGTERM, SIGINT, a truncated checkpoint, two processes on one run. Each test
asserts the outcome: the resumed run ends bit-identical to an uninterrupted one, nothing partial is
left, the exit status says what happened.

``FAULT_KILLS=20 python -m pytest tests/test_faults.py -k random`` runs the 20-kill acceptance check.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from runs.checkpoint_io import checkpoint_problem
from tests.conftest import CONFIGS, ROOT
from tests.fake_data import write_mnist

KILLS = int(os.environ.get("FAULT_KILLS", "1"))
STEP_SAVES = 4  # last.ckpt every 4 steps, so kills land after, between and during saves


@pytest.fixture(scope="module")
def bigger_mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough fake digits that 3 epochs take a few seconds of training."""
    return write_mnist(tmp_path_factory.mktemp("mnist_faults"), n_train=1200, n_test=100)


def fit_args(data: Path, run_id: str, *extra: str) -> list[str]:
    """3 epochs of mnist_cnn on the DataLoader path, 30 steps each."""
    return [
        sys.executable,
        str(ROOT / "cli.py"),
        "fit",
        "--config",
        str(CONFIGS / "mnist_cnn.yaml"),
        "--data.data_dir",
        str(data),
        "--data.batch_size",
        "32",
        "--trainer.max_epochs",
        "3",
        "--trainer.limit_train_batches",
        "30",
        "--trainer.limit_val_batches",
        "4",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
        "--checkpoint.every_n_train_steps",
        str(STEP_SAVES),
        "--test_after_fit",
        "false",
        "--run_id",
        run_id,
        *extra,
    ]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmpdir = tmp_path_factory.mktemp("elsewhere")  # TMPDIR elsewhere, as node-local /tmp on clusters
    return {**os.environ, "TMPDIR": str(tmpdir), "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"}


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    return done


def final_weights(folder: Path) -> dict[str, torch.Tensor]:
    checkpoint = torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 90, checkpoint["global_step"]  # the run went to its end
    return checkpoint["state_dict"]


def assert_nothing_partial(folder: Path, env: dict[str, str]) -> None:
    leftovers = [p for p in folder.rglob(".*.tmp*")] + list(Path(env["TMPDIR"]).iterdir())
    assert not leftovers, leftovers
    for path in folder.rglob("*.ckpt"):
        assert checkpoint_problem(path) is None, path


@pytest.fixture(scope="module")
def reference(
    bigger_mnist: Path, env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, torch.Tensor]:
    """The final weights of the run never interrupted."""
    cwd = tmp_path_factory.mktemp("reference")
    done = run(fit_args(bigger_mnist, "reference"), env, cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    return final_weights(cwd / "logs" / "mnist_cnn" / "reference")


def start(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        args, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.stdout.read()[-3000:]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.005)


def assert_resumes_identically(args: list[str], env: dict, cwd: Path, folder: Path, reference: dict) -> None:
    done = run(args, env, cwd)  # the same command again: it finds the run and continues it
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    weights = final_weights(folder)
    assert weights.keys() == reference.keys()
    for key in reference:
        assert torch.equal(weights[key], reference[key]), key
    assert_nothing_partial(folder, env)


@pytest.mark.parametrize("trial", range(KILLS))
def test_kill9_at_a_random_moment_resumes_bit_identical(
    trial: int, bigger_mnist: Path, env: dict, tmp_path: Path, reference: dict
) -> None:
    args = fit_args(bigger_mnist, f"killed{trial}")
    folder = tmp_path / "logs" / "mnist_cnn" / f"killed{trial}"
    process = start(args, env, tmp_path)
    wait_for(folder / "checkpoints" / "last.ckpt", process)  # training has begun
    time.sleep(random.Random(trial).uniform(0.0, 2.0))
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert_resumes_identically(args, env, tmp_path, folder, reference)


def test_kill9_during_a_checkpoint_write(
    bigger_mnist: Path, env: dict, tmp_path: Path, reference: dict
) -> None:
    args = fit_args(bigger_mnist, "killed_writing")
    folder = tmp_path / "logs" / "mnist_cnn" / "killed_writing"
    process = start(args, env, tmp_path)
    wait_for(folder / "checkpoints" / "last.ckpt", process)
    checkpoints = folder / "checkpoints"
    while not any(p.name.startswith(".") for p in checkpoints.iterdir()):  # a write under way
        assert process.poll() is None, "the run ended before a write was caught"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert any(p.name.startswith(".") for p in checkpoints.iterdir())  # killed mid-write indeed
    assert checkpoint_problem(checkpoints / "last.ckpt") is None  # the previous one is whole
    assert_resumes_identically(args, env, tmp_path, folder, reference)


@pytest.mark.parametrize(("name", "status"), [("SIGTERM", 143), ("SIGINT", 130)])
def test_signal_saves_within_a_step_exits_nonzero_and_resumes(
    name: str, status: int, bigger_mnist: Path, env: dict, tmp_path: Path, reference: dict
) -> None:
    args = fit_args(bigger_mnist, name.lower())
    folder = tmp_path / "logs" / "mnist_cnn" / name.lower()
    process = start(args, env, tmp_path)
    wait_for(folder / "checkpoints" / "last.ckpt", process)
    time.sleep(0.5)
    step_then = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    process.send_signal(signal.Signals[name])
    output, _ = process.communicate(timeout=120)
    assert process.returncode == status, output[-3000:]
    saved = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert saved > step_then and f"{name}: saved" in output  # saved at the batch it was in
    assert not (folder / "metrics.json").exists()  # an interrupted run is not a finished one
    assert_resumes_identically(args, env, tmp_path, folder, reference)


def test_truncated_last_checkpoint_is_skipped(bigger_mnist: Path, env: dict, tmp_path: Path) -> None:
    args = fit_args(bigger_mnist, "truncated", "--trainer.max_epochs", "1")
    folder = tmp_path / "logs" / "mnist_cnn" / "truncated"
    process = start(args, env, tmp_path)
    wait_for(folder / "checkpoints" / "last.ckpt", process)
    time.sleep(0.5)
    process.send_signal(signal.SIGKILL)
    process.wait()
    last = folder / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 3])  # as a copy cut short leaves it
    done = run(args, env, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Skipping {last.relative_to(tmp_path)}: truncated" in done.stdout + done.stderr
    assert checkpoint_problem(last) is None  # rewritten whole by the resumed run


def test_a_second_process_on_a_live_run_is_refused(bigger_mnist: Path, env: dict, tmp_path: Path) -> None:
    args = fit_args(bigger_mnist, "shared", "--trainer.max_epochs", "50")  # still training later
    folder = tmp_path / "logs" / "mnist_cnn" / "shared"
    first = start(args, env, tmp_path)
    wait_for(folder / "checkpoints" / "last.ckpt", first)
    second = run(args, env, tmp_path)
    assert second.returncode == 2, second.stderr[-3000:]
    assert f"is in use by process {first.pid}" in second.stderr
    assert first.poll() is None  # the first run is not disturbed
    first.send_signal(signal.SIGINT)
    assert first.wait(timeout=300) == 130
