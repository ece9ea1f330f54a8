"""Resamples the masks of EpochDropout layers at the start of every training epoch."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback

from lightning_modules.nets.layers import EpochDropout


class EpochDropoutReset(Callback):
    """Sets every ``EpochDropout`` layer of the model to the epoch about to train.

    Runs at each training epoch start: the first one after the sanity check, each later one, and
    the first one of a resumed run. The mask then depends on ``(seed, epoch)`` alone, never on what
    ran before, so every DDP rank and every resumed run draws the same mask for the same epoch.
    Models without such layers are untouched.
    """

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for module in pl_module.modules():
            if isinstance(module, EpochDropout):
                module.reset(trainer.current_epoch)
