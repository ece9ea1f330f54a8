"""Plain ``nn.Module`` networks: no Trainer knowledge, no Lightning imports."""

from lightning_modules.nets.cnn import CNN
from lightning_modules.nets.layers import EpochDropout, SpatialPyramidPool
from lightning_modules.nets.linear import LinearNet
from lightning_modules.nets.rnn import RecurrentNet
from lightning_modules.nets.speedrun import SpeedrunNet

__all__ = ["CNN", "EpochDropout", "LinearNet", "RecurrentNet", "SpatialPyramidPool", "SpeedrunNet"]
