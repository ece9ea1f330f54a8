"""Lightning callbacks: checkpoints, signals, epoch dropout masks, config, pictures, predictions."""

from callbacks.checkpoint import Checkpoint
from callbacks.epoch_dropout import EpochDropoutReset
from callbacks.predictions import PredictionWriter
from callbacks.run_config import RunConfig
from callbacks.signals import GracefulStop
