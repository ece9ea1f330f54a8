"""The opt-in speed layer: what the fast recipes switch on, and nothing the default path imports.

Each piece says its measured effect in its docstring. ``configs/speed/cpu.yaml`` stacks the
process settings, the cheap profiler and channels-last weights on an experiment; the data side is
the datamodules' ``device_resident`` option (``DeviceLoader``); ``SpeedrunNet`` with
``InitFromData`` is the CIFAR-10 speed-run network.
"""

from speed.callbacks import ChannelsLast, InitFromData
from speed.device_loader import DeviceLoader, EpochSampler
from speed.profiler import NullProfiler
from speed.runtime import CPUSpeedups
from speed.speedrun import SpeedrunNet

__all__ = [
    "CPUSpeedups",
    "ChannelsLast",
    "DeviceLoader",
    "EpochSampler",
    "InitFromData",
    "NullProfiler",
    "SpeedrunNet",
]
