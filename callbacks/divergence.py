"""A training loss that is not finite ends the run as a failure, before it reaches a checkpoint."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


class TrainingDiverged(ValueError):
    """The training loss became NaN or infinite."""


class DivergenceCheck(Callback):
    """Stops training with an error when the training loss has been NaN or infinite.

    Each step folds ``isfinite(loss)`` into a flag that stays on the device; the host reads it
    (one synchronization) every ``log_every_n_steps`` steps, at each epoch end and before every
    checkpoint is written, so a diverged state never replaces a good checkpoint.
    """

    def __init__(self) -> None:
        self._finite: torch.Tensor | None = None
        self._since = 0  # the first step the flag covers

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, *args: Any
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        finite = torch.isfinite(loss.detach()).all()
        self._finite = finite if self._finite is None else self._finite & finite
        if trainer.global_step % max(trainer.log_every_n_steps, 1) == 0:
            self.check(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: Any) -> None:
        self.check(trainer)

    def check(self, trainer: L.Trainer) -> None:
        diverged = self._finite is not None and not bool(self._finite)
        if trainer.strategy.reduce_boolean_decision(diverged, all=False):
            raise TrainingDiverged(
                f"The training loss became NaN or infinite between steps {self._since} and "
                f"{trainer.global_step}: the run stops (its last good checkpoint is kept). "
                "Lower the learning rate (--model.optimizer.lr, or the scheduler's max_lr), add "
                "gradient clipping (--trainer.gradient_clip_val 1.0), or check the data."
            )
        self._finite, self._since = None, trainer.global_step
