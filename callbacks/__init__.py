"""Lightning callbacks: cross-cutting behaviour around the Trainer."""

from callbacks.checkpoint import RunCheckpoint
from callbacks.divergence import DivergenceCheck, TrainingDiverged
from callbacks.early_stopping import EarlyStopping
from callbacks.epoch_dropout import EpochDropoutReset
from callbacks.export import StateDictExport
from callbacks.fit_plot import FitPlot
from callbacks.media import MediaLogger
from callbacks.optuna_pruning import OptunaPruning
from callbacks.predictions import PredictionWriter
from callbacks.run_config import RunConfig
from callbacks.signals import GracefulStop, TrainingInterrupted
from callbacks.wandb_extras import WandbExtras

__all__ = [
    "DivergenceCheck",
    "EarlyStopping",
    "GracefulStop",
    "RunCheckpoint",
    "TrainingDiverged",
    "TrainingInterrupted",
    "EpochDropoutReset",
    "FitPlot",
    "MediaLogger",
    "OptunaPruning",
    "PredictionWriter",
    "RunConfig",
    "StateDictExport",
    "WandbExtras",
]
