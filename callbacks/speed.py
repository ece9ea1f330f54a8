"""The fast recipes' callbacks."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback

from run.errors import UserError


class InitFromData(Callback):
    """Hands one batch of training inputs to ``net.init_from_data(x)`` when training starts
    (``SpeedrunNet`` fits its whitening filters to it); every process gets rank 0's batch."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        init = getattr(pl_module.net, "init_from_data", None)
        if not callable(init):
            raise UserError(f"InitFromData needs a network with init_from_data(x), such as SpeedrunNet, "
                            f"not {type(pl_module.net).__name__}: remove the callback.")
        x = next(iter(trainer.train_dataloader))[0]  # (B, C, H, W)
        init(trainer.strategy.broadcast(x.cpu()).to(pl_module.device))  # every rank, at train start
