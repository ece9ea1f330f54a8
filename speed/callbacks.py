"""Speed callbacks: channels-last weights, and data-dependent network set-up (whitening, compile)."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


class ChannelsLast(Callback):
    """Stores the model's 4-D weights (convolutions) channels-last before the optimizer is built.

    Convolutions, BatchNorm and pooling then run on NHWC activations: the same numbers, faster
    kernels. Measured on 2 CPU cores (oneDNN): max pooling of a 256x24x28x28 batch took 1.3 ms
    forward and 3.3 ms backward NHWC against 10 ms and 1.7 ms NCHW; on GPUs, convolutions under
    mixed precision gain likewise. ``load_state_dict`` keeps the layout (it copies into the
    existing tensors), so resumed and reloaded models stay NHWC.
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # LightningModules here build their lazy layers in __init__, so every weight exists now.
        pl_module.to(memory_format=torch.channels_last)


class InitFromData(Callback):
    """Hands one batch of training inputs to ``net.init_from_data(x)`` when training starts
    (``SpeedrunNet`` fits its whitening filters to it and compiles itself if asked).

    Every process gets rank 0's batch, so under DDP the data-dependent weights stay identical.
    """

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        init = getattr(pl_module.net, "init_from_data", None)
        if not callable(init):
            raise ValueError(
                f"InitFromData needs a network with an init_from_data(x) method, such as "
                f"speed.SpeedrunNet; {type(pl_module.net).__name__} has none: remove the callback."
            )
        x = next(iter(trainer.train_dataloader))[0]  # (B, C, H, W)
        init(trainer.strategy.broadcast(x.cpu()).to(pl_module.device))
