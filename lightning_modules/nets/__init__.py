"""Plain ``nn.Module`` networks, no Lightning: ``num_outputs`` first (the data fills it in), lazy
layers infer the input size. Exported here, the CLI knows a network by its class name."""

from lightning_modules.nets.cnn import CNN
from lightning_modules.nets.layers import EpochDropout, SpatialPyramidPool
from lightning_modules.nets.linear import LinearNet
from lightning_modules.nets.rnn import RecurrentNet

__all__ = ["CNN", "EpochDropout", "LinearNet", "RecurrentNet", "SpatialPyramidPool"]
