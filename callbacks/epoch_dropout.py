"""Resamples the masks of EpochDropout layers at the start of every training epoch."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback

from lightning_modules.nets.layers import EpochDropout


class EpochDropoutReset(Callback):
    """Sets every ``EpochDropout`` layer to the epoch about to train, at each epoch start (a resumed
    run's first too): every process and every resumed run draws the same mask for an epoch."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for module in pl_module.modules():
            if isinstance(module, EpochDropout):
                module.reset(trainer.current_epoch)
