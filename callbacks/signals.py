"""Stopping on a signal: finish the batch, save ``last.ckpt``, requeue under SLURM, exit non-zero."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import lightning as L
from jsonargparse.typing import PositiveFloat, PositiveInt
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only, rank_zero_warn

from callbacks.checkpoint import Checkpoint


class TrainingInterrupted(SystemExit):
    """Training stopped on a signal after saving its state; the exit status is 128 + signal."""


def requeue_slurm_job() -> None:
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array else os.environ["SLURM_JOB_ID"]
    try:
        subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60, check=True)
        rank_zero_info(f"Requeued SLURM job {job}: it resumes from last.ckpt.")
    except (OSError, subprocess.SubprocessError) as err:  # e.g. a job submitted without --requeue
        rank_zero_warn(f"Could not requeue SLURM job {job}: {getattr(err, 'stderr', None) or err}")


class GracefulStop(Callback):
    """On SIGINT, SIGTERM or SIGUSR1 while training, every process finishes its batch, ``last.ckpt``
    is written, a SLURM job is requeued (SIGTERM, SIGUSR1) and the run exits with status 128 +
    signal (130, 143, 138); before training starts or after it ends (the evaluation after fit) it
    stops at once, alike. A second signal, or a stop that has not ended the process
    ``grace_period`` seconds after the first (a process hanging in a collective or a data read),
    ends it at once with the same status.

    Args:
        signals: the signals that stop training.
        requeue_signals: inside a SLURM job, also requeue it on these.
        check_every_n_steps: with several processes, how often they agree on stopping (an
            all-reduce; a single process checks every step).
        grace_period: seconds from the first signal to the end of the process, whatever happens.
    """

    def __init__(
        self,
        signals: list[str] = ["SIGINT", "SIGTERM", "SIGUSR1"],  # noqa: B006 (a config default)
        requeue_signals: list[str] = ["SIGTERM", "SIGUSR1"],  # noqa: B006
        check_every_n_steps: PositiveInt = 10,
        grace_period: PositiveFloat = 60.0,
    ) -> None:
        self.signals = [signal.Signals[name] for name in signals]
        self.requeue_signals = {signal.Signals[name] for name in requeue_signals}
        self.check_every_n_steps, self.grace_period = check_every_n_steps, grace_period
        self.received: signal.Signals | None = None
        self.training = False  # in the training loop (a signal waits for the batch's end) or not
        self._wakeup: tuple[int, int] | None = None  # (previous wakeup fd, our pipe's write end)
        self._launcher: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:
            os._exit(128 + signum)  # a second signal: at once
        self.received = signal.Signals(signum)
        if self.training:
            rank_zero_info(f"Received {self.received.name}: stopping after the current batch.")
            return
        # the sanity check, an evaluation: nothing to save, stop now
        if self.received in self.requeue_signals and SLURMEnvironment.detect() and rank_zero_only.rank == 0:
            requeue_slurm_job()
        raise TrainingInterrupted(128 + signum)

    def _watch(self, read_end: int) -> None:
        # Woken by the signal itself (Python's wakeup fd), also while the main thread waits in C
        # code, where the handler above cannot run: the grace period bounds any stop.
        while byte := os.read(read_end, 1):
            if byte[0] in self.signals:
                time.sleep(self.grace_period)
                print(f"No clean stop {self.grace_period:g} s after signal {byte[0]}: exiting.", file=sys.stderr)
                if self._launcher is not None:  # the processes it started end too, even a stopped one
                    self._launcher.kill(signal.SIGKILL)
                os._exit(128 + byte[0])
        os.close(read_end)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.received, self.training, self._launcher = None, False, trainer.strategy.launcher
        self._originals = {s: signal.getsignal(s) for s in self.signals}  # put back at teardown

    def _take_over(self, *args: Any) -> None:
        """Ours, in place of what Lightning installs just before a stage runs (its SIGTERM handler
        broadcasts from rank 0 inside the handler and ends the run with exit status 0)."""
        if threading.current_thread() is not threading.main_thread():  # signals reach the main thread
            return
        for signum in self.signals:
            signal.signal(signum, self._handle)
        if self._wakeup is None:
            read_end, write_end = os.pipe()
            os.set_blocking(write_end, False)
            self._wakeup = (signal.set_wakeup_fd(write_end), write_end)
            threading.Thread(target=self._watch, args=(read_end,), name="graceful-stop", daemon=True).start()

    on_sanity_check_start = on_validation_start = on_test_start = on_predict_start = _take_over

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._take_over()
        self.training = True

    def _restore(self) -> None:
        for signum, handler in getattr(self, "_originals", {}).items():
            signal.signal(signum, handler)
        if self._wakeup is not None:
            signal.set_wakeup_fd(self._wakeup[0])
            os.close(self._wakeup[1])  # the watcher reads the end of the pipe and finishes
            self._wakeup = None

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore()

    def _agreed(self, trainer: L.Trainer, always: bool) -> bool:
        if trainer.world_size == 1:
            return self.received is not None
        if not always and trainer.global_step % self.check_every_n_steps:
            return False
        # every rank reaches this at the same step or epoch end: one all-reduce of "any received?"
        return trainer.strategy.reduce_boolean_decision(self.received is not None, all=False)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if not trainer.is_last_batch and self._agreed(trainer, always=False):  # last: after its validation
            self.stop(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._agreed(trainer, always=True):
            self.stop(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._agreed(trainer, always=True):  # training ended between the signal and a check
            self.stop(trainer)
        self.training = False

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()

    def stop(self, trainer: L.Trainer) -> None:
        signum = self.received or signal.SIGTERM  # another process received it
        if isinstance(trainer.checkpoint_callback, Checkpoint):
            trainer.checkpoint_callback.write_last(trainer)
            rank_zero_info(
                f"{signum.name}: saved {trainer.checkpoint_callback.last_model_path} at step {trainer.global_step}"
            )
        if signum in self.requeue_signals and SLURMEnvironment.detect() and trainer.is_global_zero:
            requeue_slurm_job()
        raise TrainingInterrupted(128 + int(signum))  # on_exception puts the handlers back
