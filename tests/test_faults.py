"""Faults injected into real ``cli.py fit`` processes: kill -9 at random moments and during a checkpoint write,
SIGTERM, SIGINT and SIGUSR1 (also to a process group with DataLoader workers, in a SLURM job), a truncated
checkpoint, two processes on one run. The resumed run must end bit-identical to an uninterrupted one and leave
nothing partial behind; exit statuses say what happened.

``FAULT_KILLS=20 python -m pytest -m slow tests/test_faults.py -k random`` runs 20 random kills (default 2).
"""

from __future__ import annotations

import fcntl
import os
import random
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from run.files import read_checkpoint
from tests.conftest import CONFIGS, ROOT
from tests.fake_data import write_mnist

KILLS = int(os.environ.get("FAULT_KILLS", "2"))
FINAL_STEP = 90  # 3 epochs of 30 steps
SAVED = re.compile(r"(SIG[A-Z0-9]+): saved (\S+) at step (\d+)")
CLUSTER = ("SLURM_", "MASTER_", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "RANK", "GROUP_RANK", "TORCHELASTIC")
SLURM_JOB = {
    "SLURM_JOB_ID": "7",
    "SLURM_JOB_NAME": "fit",
    "SLURM_NTASKS": "1",
    "SLURM_PROCID": "0",
    "SLURM_LOCALID": "0",
    "SLURM_NODEID": "0",
}


def local_env(tmpdir: Path, **extra: str) -> dict[str, str]:
    """This machine as a workstation (no cluster or rank variables of whoever runs the tests), ``TMPDIR`` on
    another folder (as node-local /tmp on a cluster), W&B offline."""
    tmpdir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(CLUSTER)}
    return {**env, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmpdir), "WANDB_MODE": "offline", **extra}


class Fit:
    """``python cli.py fit ARGS`` started as a user does, in a session of its own (its DataLoader workers and
    DDP ranks share its process group), stdout and stderr in files (a full pipe would stall it)."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str], name: str) -> None:
        self.args, self.cwd, self.env = args, cwd, env
        self.out, self.err = cwd / f"{name}.out", cwd / f"{name}.err"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.process = subprocess.Popen(
                [sys.executable, str(ROOT / "cli.py"), "fit", *args],
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        self.pid = self.process.pid

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def output(self) -> str:
        return self.out.read_text(errors="replace") + self.stderr()

    def tail(self) -> str:
        """The end of stderr (where errors, warnings and the log lines go), without progress bars."""
        lines = [line for line in self.stderr().splitlines() if "━" not in line]
        errors = [line for line in lines if "Error: " in line and "[rank0]" not in line][:3]  # the first cause
        return "\n".join(errors + ["..."] * bool(errors) + lines[-30:])

    def running(self) -> bool:
        return self.process.poll() is None

    def wait(self, timeout: float) -> int:
        """The exit status; the test fails if the process is still running after ``timeout`` s."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"pid {self.pid} still running after {timeout} s:\n{self.tail()}")

    def send(self, signum: int, group: bool = False) -> None:
        (os.killpg if group else os.kill)(self.pid, signum)

    def kill_all(self) -> None:
        """SIGKILL to the whole process group (ranks, workers), whatever state it is in."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(30)


@pytest.fixture
def elsewhere() -> Iterator[Path]:
    """An empty folder for TMPDIR with a short path: DataLoader workers put sockets there (108 bytes at most)."""
    folder = Path(tempfile.mkdtemp(prefix="faults-", dir="/tmp" if os.access("/tmp", os.W_OK) else None))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def fits(tmp_path: Path, elsewhere: Path) -> Iterator[Callable[..., Fit]]:
    """``fits(args, env=..., cwd=...)`` starts a fit; every process group started is killed at teardown."""
    started: list[Fit] = []

    def start(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> Fit:
        fit = Fit(args, cwd or tmp_path, env or local_env(elsewhere), f"fit{len(started)}")
        started.append(fit)
        return fit

    yield start
    for fit in started:
        fit.kill_all()


def wait_until(condition: Callable[[], bool], fit: Fit, what: str, timeout: float = 180, poll: float = 0.02) -> None:
    """Poll ``condition`` while ``fit`` runs; fail if the process ends first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert fit.running(), f"the run ended (status {fit.process.returncode}) before {what}:\n{fit.tail()}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s:\n{fit.tail()}"
        time.sleep(poll)


def fault_args(data: Path, *extra: str) -> list[str]:
    """3 epochs of mnist_cnn, 30 steps of 32 each, ``last.ckpt`` every 4 steps."""
    return [
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
        "--checkpoint.every_n_train_steps",
        "4",
        "--test_after_fit",
        "false",
        *extra,
    ]


def step_of(path: Path) -> int:
    return read_checkpoint(path)["global_step"]  # a UserError if the file is not whole


def partial_files(folder: Path, tmpdir: Path) -> list[Path]:
    """Temporary files a writer left: hidden ``.<name>.tmp<pid>`` siblings in the run, anything in TMPDIR."""
    return sorted(folder.rglob(".*.tmp*")) + sorted(tmpdir.rglob("*"))


def assert_bit_identical(last: Path, reference: dict[str, torch.Tensor]) -> None:
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == FINAL_STEP
    weights = checkpoint["state_dict"]
    assert weights.keys() == reference.keys()
    different = [key for key in reference if not torch.equal(weights[key], reference[key])]
    assert not different, f"not bit-identical to the uninterrupted run: {different}"


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1200 fake digits: 30 steps of 32 an epoch, a few seconds of training."""
    return write_mnist(tmp_path_factory.mktemp("digits"), n_train=1200, n_test=100)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    """The final weights of the uninterrupted run, trained once for all pytest-xdist workers."""
    shared = tmp_path_factory.getbasetemp()
    shared = shared.parent if os.environ.get("PYTEST_XDIST_WORKER") else shared  # the session's, not older ones
    folder = shared / "faults_reference"
    folder.mkdir(exist_ok=True)
    with open(folder / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the other worker waits for this one's result
        result = folder / "weights.pt"
        if not result.exists():
            data = write_mnist(folder / "digits", n_train=1200, n_test=100)
            fit = Fit([*fault_args(data), "--run_id", "reference"], folder, local_env(folder / "elsewhere"), "fit")
            try:
                assert fit.wait(300) == 0, fit.tail()
            finally:
                fit.kill_all()
            last = folder / "logs" / "mnist_cnn" / "reference" / "checkpoints" / "last.ckpt"
            assert step_of(last) == FINAL_STEP
            torch.save(torch.load(last, map_location="cpu", weights_only=True)["state_dict"], folder / "tmp.pt")
            os.replace(folder / "tmp.pt", result)
    return torch.load(result, weights_only=True)


def resume_to_the_end(
    fits: Callable[..., Fit], args: list[str], folder: Path, tmpdir: Path, reference: dict[str, torch.Tensor]
) -> Fit:
    """The same command again: it must find the run, resume it and end as the uninterrupted run did."""
    again = fits(args, env=local_env(tmpdir))
    assert again.wait(300) == 0, again.tail()
    assert "in use by process" not in again.output()  # the killed process's lock died with it
    assert_bit_identical(folder / "checkpoints" / "last.ckpt", reference)
    assert not partial_files(folder, tmpdir), partial_files(folder, tmpdir)
    return again


def test_sigterm_saves_a_whole_last_checkpoint_and_exits_143(
    mnist_dir: Path, fits, tmp_path: Path, elsewhere: Path
) -> None:
    """SIGTERM mid-training: the batch finishes, last.ckpt is written whole at that step, exit status 143."""
    args = ["--config", str(CONFIGS / "mnist_cnn.yaml"), "--data.data_dir", str(mnist_dir), "--run_id", "term"]
    folder = tmp_path / "logs" / "mnist_cnn" / "term"
    last = folder / "checkpoints" / "last.ckpt"
    fit = fits(
        [*args, "--data.batch_size", "32", "--trainer.max_epochs", "200", "--checkpoint.every_n_train_steps", "2"]
    )
    wait_until(last.exists, fit, "last.ckpt")
    fit.send(signal.SIGTERM)
    assert fit.wait(60) == 143, fit.tail()
    saved = SAVED.findall(fit.output())
    assert [name for name, *_ in saved] == ["SIGTERM"], fit.tail()
    assert step_of(last) == int(saved[0][2]) > 0
    assert not (folder / "metrics.json").exists()  # stopped, not finished
    assert not partial_files(folder, elsewhere)


@pytest.fixture
def scontrol(tmp_path: Path) -> tuple[Path, Path]:
    """A stand-in ``scontrol`` that records its arguments; returns (its folder, the record)."""
    bin_dir, record = tmp_path / "bin", tmp_path / "scontrol.calls"
    bin_dir.mkdir()
    script = bin_dir / "scontrol"
    script.write_text(f'#!/bin/sh\necho "$@" >> {record}\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return bin_dir, record


@pytest.mark.slow
@pytest.mark.parametrize(("name", "status"), [("SIGTERM", 143), ("SIGUSR1", 138)])
def test_slurm_signal_to_the_process_group_requeues_once_and_resumes(
    name: str, status: int, digits: Path, fits, scontrol, tmp_path: Path, elsewhere: Path
) -> None:
    """In a SLURM job with 2 DataLoader workers, a signal to the whole process group saves a whole last.ckpt,
    requeues the job once and exits 128 + signal; after another fit in the job (slurm-7-2), the requeued job
    resumes in slurm-7 and finishes."""
    bin_dir, record = scontrol
    job = {**SLURM_JOB, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    args = fault_args(digits, "--trainer.max_epochs", "2", "--data.num_workers", "2", "--test_after_fit", "true")
    experiment = tmp_path / "logs" / "mnist_cnn"
    last = experiment / "slurm-7" / "checkpoints" / "last.ckpt"
    fit = fits(args, env=local_env(elsewhere, **job))
    wait_until(last.exists, fit, "last.ckpt")
    fit.send(signal.Signals[name], group=True)  # as SLURM signals a job step: every process
    assert fit.wait(60) == status, fit.tail()
    saved = SAVED.findall(fit.output())
    assert [signame for signame, *_ in saved] == [name], fit.tail()
    assert step_of(last) == int(saved[0][2])
    assert record.read_text().splitlines() == ["requeue 7"]
    if name != "SIGTERM":
        return  # the requeued job, once: after SIGTERM

    # another fit in the same job (a seed loop, say) gets a folder of its own
    tiny = ["--seed_everything", "1", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2"]
    other = fits(
        [*args, *tiny, "--data.num_workers", "0", "--test_after_fit", "false"], env=local_env(elsewhere, **job)
    )
    assert other.wait(300) == 0, other.tail()
    assert (experiment / "slurm-7-2" / "checkpoints" / "last.ckpt").is_file()

    requeued = fits(args, env=local_env(elsewhere, **job, SLURM_RESTART_COUNT="1"))
    assert requeued.wait(300) == 0, requeued.tail()
    assert "Resuming logs/mnist_cnn/slurm-7 from" in requeued.output(), requeued.tail()
    assert (experiment / "slurm-7" / "metrics.json").is_file()
    assert sorted(p.name for p in experiment.iterdir()) == ["slurm-7", "slurm-7-2"]
    assert record.read_text().splitlines() == ["requeue 7"]  # the finished job asks for nothing more


@pytest.mark.slow
def test_a_second_process_on_a_live_run_is_refused(digits: Path, fits, tmp_path: Path) -> None:
    """A second fit on a live --run_id exits 2 with "in use by process P" and leaves the first undisturbed.
    (That a kill -9 leaves no stale lock, the kill tests show: the same command resumes.)"""
    args = fault_args(digits, "--run_id", "shared", "--trainer.max_epochs", "50")
    last = tmp_path / "logs" / "mnist_cnn" / "shared" / "checkpoints" / "last.ckpt"
    first = fits(args)
    wait_until(last.exists, first, "last.ckpt")
    second = fits(args)
    assert second.wait(120) == 2, second.tail()
    assert f"is in use by process {first.pid}" in second.stderr(), second.tail()
    step = step_of(last)
    wait_until(lambda: step_of(last) > step, first, "a newer last.ckpt of the first run", poll=0.1)


@pytest.mark.slow
def test_sigterm_during_the_evaluation_after_training_exits_nonzero(fits, tmp_path: Path) -> None:
    """SIGTERM while the best checkpoint is tested after training: the run is not finished (no metrics.json),
    so it must not exit 0 (a scheduler would take the job as done)."""
    data = write_mnist(tmp_path / "data", n_train=200, n_test=20000)  # a long test set
    args = ["--config", str(CONFIGS / "mnist_cnn.yaml"), "--data.data_dir", str(data), "--run_id", "late"]
    fit = fits([*args, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2"])
    wait_until(lambda: "`Trainer.fit` stopped" in fit.stderr(), fit, "the end of training", poll=0.1)
    time.sleep(1.0)  # validating, then testing 157 batches
    fit.send(signal.SIGTERM)
    status = fit.wait(60)
    assert not (tmp_path / "logs" / "mnist_cnn" / "late" / "metrics.json").exists()
    assert status != 0, fit.tail()


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(KILLS))
def test_kill9_at_a_random_moment_resumes_bit_identical(
    trial: int, digits: Path, reference, fits, tmp_path: Path, elsewhere: Path
) -> None:
    """kill -9 at a random moment of training, then the same command: the weights end bit-identical."""
    args = fault_args(digits, "--run_id", "killed")
    folder = tmp_path / "logs" / "mnist_cnn" / "killed"
    fit = fits(args)
    wait_until((folder / "checkpoints" / "last.ckpt").exists, fit, "last.ckpt")  # training is under way
    time.sleep(random.Random(trial).uniform(0.0, 3.0))
    fit.send(signal.SIGKILL)
    assert fit.wait(30) == -signal.SIGKILL
    resume_to_the_end(fits, args, folder, elsewhere, reference)


@pytest.mark.slow
def test_kill9_during_a_checkpoint_write_then_a_truncated_last_checkpoint(
    digits: Path, reference, fits, tmp_path: Path, elsewhere: Path
) -> None:
    """kill -9 while last.ckpt is written leaves the previous one whole; truncated, it is skipped with a line
    saying why, and the run resumes from the best checkpoint (furthest in training) to the same end."""
    args = fault_args(digits, "--run_id", "cut")
    checkpoints = tmp_path / "logs" / "mnist_cnn" / "cut" / "checkpoints"
    last, best = checkpoints / "last.ckpt", checkpoints / "epoch=0-step=30.ckpt"
    for _attempt in range(3):  # a write lasts milliseconds: a poll may miss it
        fit = fits(args)
        writing = checkpoints / f".last.tmp{fit.pid}.ckpt"
        wait_until(lambda: best.exists() and step_of(last) > 30, fit, "last.ckpt of epoch 1", poll=0.05)
        wait_until(writing.exists, fit, "a write of last.ckpt", poll=0.0005)
        fit.send(signal.SIGKILL)
        assert fit.wait(30) == -signal.SIGKILL
        if writing.exists():
            break
    assert writing.exists(), "no kill landed during a write of last.ckpt"
    assert step_of(last) > step_of(best) == 30  # the previous last.ckpt is whole, and further than the best

    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # as a copy cut short leaves it
    again = resume_to_the_end(fits, args, checkpoints.parent, elsewhere, reference)
    output = again.output()
    assert f"Skipping {last.relative_to(tmp_path)} is truncated" in output, again.tail()
    assert f"from {best.relative_to(tmp_path)} (step 30)" in output, again.tail()


@pytest.mark.slow
def test_sigint_then_sigterm_mid_epoch_save_the_current_step_and_resume_bit_identical(
    digits: Path, reference, fits, tmp_path: Path, elsewhere: Path
) -> None:
    """SIGINT, then (after the same command resumed) SIGTERM, mid-epoch: exit 130, then 143, each with last.ckpt at
    the step its log line names; the same command then ends bit-identical to the uninterrupted run."""
    args = fault_args(digits, "--run_id", "stopped")
    folder = tmp_path / "logs" / "mnist_cnn" / "stopped"
    last = folder / "checkpoints" / "last.ckpt"
    step = 0
    for name, status in (("SIGINT", 130), ("SIGTERM", 143)):
        fit = fits(args)
        wait_until(lambda before=step: last.exists() and step_of(last) > before, fit, "a new last.ckpt", poll=0.05)
        time.sleep(0.3)
        fit.send(signal.Signals[name])
        assert fit.wait(60) == status, fit.tail()
        saved = SAVED.findall(fit.output())
        assert [signame for signame, *_ in saved] == [name], fit.tail()
        assert step < step_of(last) == int(saved[0][2]) < FINAL_STEP
        assert not (folder / "metrics.json").exists()
        step = step_of(last)
    resume_to_the_end(fits, args, folder, elsewhere, reference)
