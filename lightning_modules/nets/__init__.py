"""Plain ``nn.Module`` networks: no Trainer knowledge, no Lightning imports.

A network takes ``num_outputs`` as its first argument (the rest are its options), infers its
input size with lazy layers, and lists the sample shapes it is tested on in ``input_shapes``.
A new file here is covered by ``tests/test_nets.py`` with no other edit; exported below, the CLI
also knows it by its class name (``--model.net CNN``).
"""

from lightning_modules.nets.cnn import CNN
from lightning_modules.nets.layers import EpochDropout, SpatialPyramidPool
from lightning_modules.nets.linear import LinearNet
from lightning_modules.nets.rnn import RecurrentNet

__all__ = ["CNN", "EpochDropout", "LinearNet", "RecurrentNet", "SpatialPyramidPool"]
