"""Systems (training logic). Each receives its network, loss and optimizer."""

from lightning_modules.base import NetFactory, TaskModule
from lightning_modules.classifier import Classifier
from lightning_modules.nets import CNN, EpochDropout, LinearNet, RecurrentNet, SpatialPyramidPool
from lightning_modules.optim import PlainSGD
from lightning_modules.regression import Regressor
from lightning_modules.sequence import SequenceClassifier

__all__ = [
    "CNN",
    "Classifier",
    "EpochDropout",
    "LinearNet",
    "NetFactory",
    "PlainSGD",
    "RecurrentNet",
    "Regressor",
    "SequenceClassifier",
    "SpatialPyramidPool",
    "TaskModule",
]
