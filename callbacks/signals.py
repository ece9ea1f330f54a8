"""Stopping on a signal: finish the batch, save ``last.ckpt``, requeue under SLURM, exit non-zero."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from typing import Any

import lightning as L
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn


class TrainingInterrupted(SystemExit):
    """Training stopped on a signal after saving its state; the exit status is 128 + signal."""


def requeue_slurm_job() -> None:
    """``scontrol requeue`` this job (array task), as Lightning's SLURM plugin does."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array_job else os.environ["SLURM_JOB_ID"]
    try:
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        rank_zero_warn(f"Could not requeue SLURM job {job}: {err}")
        return
    if done.returncode == 0:
        rank_zero_info(f"Requeued SLURM job {job}: it resumes from last.ckpt when it starts again.")
    else:  # e.g. a job submitted without --requeue
        rank_zero_warn(f"SLURM refused to requeue job {job}: {done.stderr.strip() or done.stdout.strip()}")


class GracefulStop(Checkpoint):  # a Checkpoint: Lightning runs it after RunCheckpoint's saves
    """On SIGINT, SIGTERM or SIGUSR1 during training: finish the current batch (and the epoch's
    validation when it was the last batch), write ``last.ckpt``, requeue the job when running
    under SLURM, and exit with status 128 + signal number (130, 143, 138). A second signal stops at
    once. ``GracefulStop`` takes these signals over from Lightning for the length of training.

    Args:
        signals: signals that stop training this way.
        requeue_signals: inside a SLURM job, also requeue it on these (SLURM sends SIGTERM at
            pre-emption and at the time limit, and the signal asked for with ``sbatch --signal``
            before it; ``scancel`` sends SIGTERM too: cancel a requeued job again while it waits).
        check_every_n_steps: with several processes, how often they agree on stopping (a
            collective operation); a single process checks every step at no cost.
    """

    def __init__(
        self,
        signals: list[str] = ["SIGINT", "SIGTERM", "SIGUSR1"],  # noqa: B006 (a config default)
        requeue_signals: list[str] = ["SIGTERM", "SIGUSR1"],  # noqa: B006
        check_every_n_steps: int = 10,
    ) -> None:
        self.signals = [signal.Signals[name] for name in signals]
        self.requeue_signals = {signal.Signals[name] for name in requeue_signals}
        self.check_every_n_steps = check_every_n_steps
        self.received: signal.Signals | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is None:
            self.received = signal.Signals(signum)
            rank_zero_info(f"Received {self.received.name}: stopping after the current batch.")
            return
        self._restore()  # a second signal: the previous handler (Ctrl+C: KeyboardInterrupt) now
        signal.raise_signal(signum)

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.received = None
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread
            self._previous = {s: signal.signal(s, self._handle) for s in self.signals}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._restore()

    def _should_stop(self, trainer: L.Trainer) -> bool:
        if trainer.world_size == 1:
            return self.received is not None
        if trainer.global_step % self.check_every_n_steps:
            return False
        return trainer.strategy.reduce_boolean_decision(self.received is not None, all=False)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        # the epoch's last batch: stop after its validation and epoch-end checkpoint instead
        if self._should_stop(trainer) and not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            self.stop(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._should_stop(trainer):
            self.stop(trainer)

    def stop(self, trainer: L.Trainer) -> None:
        signum = self.received or signal.SIGTERM
        checkpoint = trainer.checkpoint_callback
        if hasattr(checkpoint, "write_last"):
            checkpoint.write_last(trainer)  # the epoch-end save may have written it already: cheap
            rank_zero_info(f"{signum.name}: saved {checkpoint.last_model_path} at step {trainer.global_step}")
        if signum in self.requeue_signals and SLURMEnvironment.detect() and trainer.is_global_zero:
            requeue_slurm_job()
        self._restore()
        raise TrainingInterrupted(128 + int(signum))
