"""The run's checkpoints: the best by validation, and ``last.ckpt``, always the newest state."""

from __future__ import annotations

import random
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from jsonargparse.typing import NonNegativeInt
from lightning.pytorch.callbacks import ModelCheckpoint

LAST = "last.ckpt"


def rng_states() -> dict[str, Any]:
    """Every random generator a training step may draw from, as plain tensors and numbers (so the
    checkpoint still loads with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
    }


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class RunCheckpoint(ModelCheckpoint):
    """Keeps the best checkpoint by the model's validation metric and ``last.ckpt``, rewritten at
    every epoch end and, if asked, every N training steps and every T of training time: whatever
    the validation metric does, ``last.ckpt`` holds the newest state (what a restarted run resumes
    from). Checkpoints also hold the random generators' states, restored when training resumes, so
    a resumed run draws what the uninterrupted run would have drawn (dropout, augmentation).

    The CLI fills in ``monitor`` and ``mode`` from the model when they are left empty (``val/acc``
    to maximize for classifiers, ``val/loss`` to minimize otherwise).

    Args:
        dirpath: where to write (default: ``<run dir>/checkpoints``).
        monitor: logged metric to rank checkpoints by (default: the model's own).
        mode: "min" or "max" (default: the model's own).
        save_top_k: how many best checkpoints to keep.
        every_n_epochs: validate-and-save period in epochs.
        every_n_train_steps: also write ``last.ckpt`` every N training steps (0: at epoch ends only).
        train_time_interval: also write ``last.ckpt`` after this much training time ("h:m:s").
    """

    def __init__(
        self,
        dirpath: str | None = None,
        monitor: str | None = None,
        mode: Literal["min", "max"] | None = None,
        save_top_k: int = 1,
        every_n_epochs: int | None = None,
        every_n_train_steps: NonNegativeInt = 0,
        train_time_interval: timedelta | None = None,
    ) -> None:
        metric = (monitor or "").replace("/", "_")  # "val/acc" would make a folder in a file name
        super().__init__(
            dirpath=dirpath,
            monitor=monitor,
            mode=mode or "min",
            save_top_k=save_top_k,
            every_n_epochs=every_n_epochs,
            auto_insert_metric_name=False,
            filename=f"epoch={{epoch:02d}}-step={{step}}-{metric}={{{monitor}:.4f}}" if monitor else None,
        )
        self.last_every_n_steps = every_n_train_steps
        self.last_interval = train_time_interval.total_seconds() if train_time_interval else None
        self._last_saved_at = time.monotonic()
        self._last_saved_step: int | None = None
        self._resume: dict[str, Any] | None = None

    def write_last(self, trainer: L.Trainer) -> None:
        """Write ``last.ckpt`` now (every rank must call it: saving is collective)."""
        if trainer.fast_dev_run or trainer.sanity_checking:
            return
        path = Path(self.dirpath) / LAST
        trainer.save_checkpoint(path, weights_only=False)
        self.last_model_path = str(path)
        self._last_saved_at = time.monotonic()
        self._last_saved_step = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        super().on_train_batch_end(trainer, pl_module, *args)
        due = bool(self.last_every_n_steps) and trainer.global_step % self.last_every_n_steps == 0
        if self.last_interval is not None:  # clocks differ between processes: rank 0 decides
            elapsed = time.monotonic() - self._last_saved_at >= self.last_interval
            due = trainer.strategy.broadcast(due or elapsed)
        if due:
            self.write_last(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)  # the best checkpoint, after validation
        self.write_last(trainer)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # a run resumed from a checkpoint with nothing left to train (its last.ckpt was damaged)
        # still leaves a whole last.ckpt behind
        if self._last_saved_step != trainer.global_step:
            self.write_last(trainer)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        # what an exact resume needs beyond Lightning's own state: the random generators, and where
        # the training loader is in its epoch (Lightning restores the latter only when the loader
        # is built after the checkpoint is read, not when a one-cycle schedule asks for it earlier)
        loader = trainer.train_dataloader
        position = loader.state_dict() if hasattr(loader, "state_dict") else None
        checkpoint["resume"] = {"rng": rng_states(), "train_loader": position}

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self._resume = checkpoint.get("resume")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the resumed run is set up; its first batch is still to be drawn: the next draw and batch
        # are the ones the uninterrupted run would have had
        if self._resume is None:
            return
        loader, position = trainer.train_dataloader, self._resume["train_loader"]
        if position is not None and hasattr(loader, "load_state_dict"):
            loader.load_state_dict(position)
        set_rng_states(self._resume["rng"])
        self._resume = None
