"""Checkpoints: the best by validation, and ``last.ckpt``, the newest state, for exact resumes."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from jsonargparse.typing import NonNegativeInt
from lightning.pytorch.callbacks import ModelCheckpoint

from run.errors import UserError


def rng_states() -> dict[str, Any]:
    """torch's generators, which dropout and the transforms draw from (tensors: a safe load reads them)."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
    }


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class Checkpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint (the best by ``monitor``) plus ``last.ckpt`` at every epoch end and,
    if asked, every N steps and every T (Lightning rewrites it only when the best improves). They
    hold the generators and the loader's position, for exact resumes, and never a weight or buffer
    that is not finite: the run stops instead.

    Args:
        dirpath: where to write (default: ``<run folder>/checkpoints``).
        monitor: the logged metric the best checkpoints are ranked by.
        mode: "max" or "min": which values of ``monitor`` are better.
        save_top_k: how many best checkpoints to keep.
        every_n_train_steps: also write ``last.ckpt`` every N training steps (0: never).
        train_time_interval: also write ``last.ckpt`` after this much training time ("h:m:s").
    """

    def __init__(
        self,
        dirpath: str | None = None,
        monitor: str = "val/loss",
        mode: Literal["min", "max"] = "min",
        save_top_k: int = 1,
        every_n_train_steps: NonNegativeInt = 0,
        train_time_interval: timedelta | None = None,
    ) -> None:
        super().__init__(
            dirpath=dirpath, monitor=monitor, mode=mode, save_top_k=save_top_k, enable_version_counter=False
        )
        self.last_every = every_n_train_steps
        self.last_interval = train_time_interval.total_seconds() if train_time_interval else None
        self._last_time, self._last_step = time.monotonic(), -1
        self._resume: dict[str, Any] | None = None

    def write_last(self, trainer: L.Trainer) -> None:
        """Write ``last.ckpt`` now; every rank calls it, as ``Trainer.save_checkpoint`` is collective."""
        if trainer.sanity_checking or trainer.fast_dev_run or self._last_step == trainer.global_step:
            return
        self.last_model_path = str(Path(self.dirpath) / "last.ckpt")
        trainer.save_checkpoint(self.last_model_path, weights_only=False)
        self._last_time, self._last_step = time.monotonic(), trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        super().on_train_batch_end(trainer, pl_module, *args)
        due = bool(self.last_every) and trainer.global_step % self.last_every == 0
        if self.last_interval is not None:
            # every rank at every step: the clocks differ, so rank 0's decides for all
            due = trainer.strategy.broadcast(due or time.monotonic() - self._last_time >= self.last_interval)
        if due:
            self.write_last(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self.write_last(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.write_last(trainer)  # a resumed run with nothing left to train still leaves one

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        floats = {k: t for k, t in pl_module.state_dict().items() if torch.is_tensor(t) and t.is_floating_point()}
        finite = torch.stack([torch.isfinite(t).all() for t in floats.values()]).cpu()
        # inside Trainer.save_checkpoint, which every rank calls at the same point: one all-reduce
        if trainer.strategy.reduce_boolean_decision(not bool(finite.all()), all=False):
            names = [k for k, ok in zip(floats, finite.tolist(), strict=True) if not ok] or ["another process's"]
            raise UserError(
                f"Training diverged at step {trainer.global_step}: {', '.join(names[:3])} not finite, "
                "so no checkpoint is written. Lower the learning rate (or clip gradients)."
            )
        loader = trainer.train_dataloader
        position = loader.state_dict() if hasattr(loader, "state_dict") else None
        checkpoint["resume"] = {"rng": rng_states(), "train_loader": position}

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self._resume = checkpoint.get("resume")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning has restored the run and not drawn its first batch: restore the draws now
        if self._resume is None:
            return
        loader, position = trainer.train_dataloader, self._resume["train_loader"]
        if position is not None and hasattr(loader, "load_state_dict"):
            loader.load_state_dict(position)
        set_rng_states(self._resume["rng"])
        self._resume = None
