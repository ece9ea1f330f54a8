"""Plain ``nn.Module`` networks: no Trainer knowledge, no Lightning imports."""

from lightning_modules.nets.cnn import CNN
from lightning_modules.nets.layers import EpochDropout, SpatialPyramidPool
from lightning_modules.nets.linear import LinearNet

__all__ = ["CNN", "EpochDropout", "LinearNet", "SpatialPyramidPool"]
