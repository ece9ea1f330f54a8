"""Systems (training logic); each receives its network, loss and optimizer."""

from lightning_modules.base import TaskModule
from lightning_modules.classifier import Classifier
from lightning_modules.nets import CNN, LinearNet, RecurrentNet
from lightning_modules.optim import PlainSGD
from lightning_modules.regression import Regressor
from lightning_modules.sequence import SequenceClassifier

__all__ = ["CNN", "Classifier", "LinearNet", "PlainSGD", "RecurrentNet", "Regressor", "SequenceClassifier", "TaskModule"]
