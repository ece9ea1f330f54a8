"""Two CPU processes (configs/trainer/ddp_cpu.yaml, gloo) as a user starts them: fits that finish with one result
(W&B, time-based checkpoints, ranks at uneven speed, a busy machine), and ranks that are signalled, killed or stuck
in a collective: every process ends in bounded time, last.ckpt stays whole, and the same command resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from lightning.pytorch import Callback

from tests.conftest import CONFIGS
from tests.fake_data import write_mnist
from tests.test_faults import SAVED, Fit, local_env, step_of, wait_until

pytestmark = pytest.mark.slow
DDP = ["--config", str(CONFIGS / "mnist_cnn.yaml"), "--config", str(CONFIGS / "trainer" / "ddp_cpu.yaml")]
SIGNAL_STEPS = 60  # 3 epochs of 20 steps in the signal tests


class SlowRank(Callback):
    """Test-only: global rank ``rank`` sleeps ``seconds`` after each training step, so the ranks run at uneven speed."""

    def __init__(self, rank: int = 1, seconds: float = 0.3) -> None:
        self.rank, self.seconds = rank, seconds

    def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
        if trainer.global_rank == self.rank:
            time.sleep(self.seconds)


def alive(pid: int) -> bool:
    """Running (a zombie, ended but not yet reaped by its parent, is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def rank1(fit: Fit, timeout: float = 120) -> int:
    """The pid of rank 1: the child of rank 0 that Lightning started with LOCAL_RANK=1."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
                if ppid == fit.pid and b"LOCAL_RANK=1\0" in (stat.parent / "environ").read_bytes():
                    return int(stat.parent.name)
            except (OSError, ValueError, IndexError):
                continue
        assert fit.running(), f"rank 0 ended (status {fit.process.returncode}) before rank 1 started:\n{fit.tail()}"
        time.sleep(0.2)
    pytest.fail(f"no rank 1 after {timeout} s:\n{fit.tail()}")


def wait_gone(pid: int, timeout: float) -> float:
    """Seconds until process ``pid`` ended; the test fails after ``timeout``."""
    start = time.monotonic()
    while alive(pid):
        assert time.monotonic() - start < timeout, f"process {pid} still running after {timeout} s"
        time.sleep(0.1)
    return time.monotonic() - start


@pytest.fixture
def fits(tmp_path: Path) -> Iterator[Callable[..., Fit]]:
    """``fits(args)`` starts a 2-process fit; both ranks (one process group) are killed at teardown."""
    started: list[Fit] = []
    env = local_env(tmp_path / "tmp")

    def start(args: list[str]) -> Fit:
        started.append(Fit(args, tmp_path, env, f"fit{len(started)}"))
        return started[-1]

    yield start
    for fit in started:
        fit.kill_all()


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1200 fake digits: 34 steps of 16 an epoch on each of the 2 processes."""
    return write_mnist(tmp_path_factory.mktemp("digits"), n_train=1200, n_test=100)


@pytest.fixture
def busy_cpu() -> Iterator[None]:
    """A CPU-bound process beside the test, as on a shared machine."""
    loop = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    yield
    loop.kill()
    loop.wait(30)


FITS = {
    "defaults_busy_machine": ["--data.global_batch_size", "32"],
    "wandb": ["--config", str(CONFIGS / "logger" / "wandb.yaml")],
    "time_interval_uneven_ranks": [
        *("--data.global_batch_size", "32", "--trainer.max_epochs", "2"),
        *("--checkpoint.train_time_interval", "0:00:01", "--trainer.callbacks+=tests.test_ddp.SlowRank"),
    ],
}


@pytest.mark.parametrize("variant", FITS)
def test_two_process_fit_finishes_with_one_result(
    variant: str, mnist_dir: Path, fits, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A 2-process fit of mnist_cnn (defaults on a machine busy with another process, W&B stacked, or last.ckpt
    every second with one rank slower) ends with one run folder, one metrics.json and no warning about sync_dist
    or the sampler; config.yaml records the batch each process used of --data.global_batch_size 32."""
    if variant == "defaults_busy_machine":
        request.getfixturevalue("busy_cpu")
    fit = fits([*DDP, "--data.data_dir", str(mnist_dir), *FITS[variant]])
    assert fit.wait(300) == 0, fit.tail()
    assert "Starting with 2 processes" in fit.output()
    stderr = fit.stderr()
    assert "sync_dist" not in stderr and "DistributedSampler" not in stderr, stderr
    runs = list((tmp_path / "logs" / "mnist_cnn").iterdir())
    assert [run.name for run in runs] == ["version_0"]
    assert [p.relative_to(runs[0]) for p in tmp_path.rglob("metrics.json")] == [Path("metrics.json")]
    result = json.loads((runs[0] / "metrics.json").read_text())
    assert result["metrics"]["test/acc"] >= 0 and result["global_step"] > 0
    if variant in ("defaults_busy_machine", "time_interval_uneven_ranks"):
        config = (runs[0] / "config.yaml").read_text()
        assert "  batch_size: 16\n" in config  # what each of the 2 processes used of the global 32
    if variant == "wandb":
        assert len(list((runs[0] / "wandb").glob("offline-run-*"))) == 1  # rank 0 alone logs


def signal_args(data: Path) -> list[str]:
    """A 2-process run of 3 epochs of 20 steps, last.ckpt every 5 steps."""
    return [
        *DDP,
        *("--data.data_dir", str(data), "--data.batch_size", "16", "--trainer.max_epochs", "3"),
        *("--trainer.limit_train_batches", "20", "--checkpoint.every_n_train_steps", "5"),
        *("--test_after_fit", "false", "--run_id", "sig"),
    ]


@pytest.mark.parametrize("target", ["rank1", "both", "kill9_rank1"])
def test_a_signalled_rank_stops_both_and_the_same_command_resumes(
    target: str, digits: Path, fits, tmp_path: Path
) -> None:
    """SIGTERM to rank 1 or to both: both exit non-zero within 60 s with a whole last.ckpt; kill -9 of rank 1:
    rank 0 exits non-zero within 120 s. The same command then resumes and finishes."""
    args = signal_args(digits)
    last = tmp_path / "logs" / "mnist_cnn" / "sig" / "checkpoints" / "last.ckpt"
    fit = fits(args)
    other = rank1(fit)
    wait_until(last.exists, fit, "last.ckpt")
    os.kill(other, signal.SIGKILL if target == "kill9_rank1" else signal.SIGTERM)
    if target == "both":
        fit.send(signal.SIGTERM)
    limit = 120 if target == "kill9_rank1" else 60
    status = fit.wait(limit)
    assert status != 0, fit.tail()
    wait_gone(other, limit)
    if target != "kill9_rank1":  # both agreed on the stop and saved the step it names
        saved = SAVED.findall(fit.output())
        assert [name for name, *_ in saved] == ["SIGTERM"], fit.tail()
        assert step_of(last) == int(saved[0][2]) < SIGNAL_STEPS
    assert 0 < step_of(last) < SIGNAL_STEPS  # whole

    again = fits(args)
    assert again.wait(300) == 0, again.tail()
    assert step_of(last) == SIGNAL_STEPS


def test_a_rank_stuck_in_a_collective_ends_after_the_grace_period(digits: Path, fits, tmp_path: Path) -> None:
    """Rank 1 stopped (SIGSTOP) while rank 0 waits for it in a collective: SIGTERM ends rank 0 with 143 after
    --signals.grace_period 5, saying so, and kills rank 1, which it started."""
    last = tmp_path / "logs" / "mnist_cnn" / "sig" / "checkpoints" / "last.ckpt"
    fit = fits([*signal_args(digits), "--signals.grace_period", "5"])
    other = rank1(fit)
    wait_until(last.exists, fit, "last.ckpt")
    os.kill(other, signal.SIGSTOP)
    try:
        time.sleep(1)  # rank 0 reaches the next all-reduce and waits there
        start = time.monotonic()
        fit.send(signal.SIGTERM)
        assert fit.wait(30) == 143, fit.tail()
        assert time.monotonic() - start < 15
        assert "No clean stop 5 s after signal 15" in fit.stderr(), fit.tail()
        wait_gone(other, 5)
    finally:
        if alive(other):
            os.kill(other, signal.SIGKILL)
