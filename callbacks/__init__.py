"""Lightning callbacks: cross-cutting behaviour around the Trainer."""

from callbacks.checkpoint import BestCheckpoint
from callbacks.epoch_dropout import EpochDropoutReset
from callbacks.export import StateDictExport
from callbacks.fit_plot import FitPlot
from callbacks.media import MediaLogger
from callbacks.optuna_pruning import OptunaPruning
from callbacks.predictions import PredictionWriter
from callbacks.run_config import RunConfig
from callbacks.wandb_extras import WandbExtras

__all__ = [
    "BestCheckpoint",
    "EpochDropoutReset",
    "FitPlot",
    "MediaLogger",
    "OptunaPruning",
    "PredictionWriter",
    "RunConfig",
    "StateDictExport",
    "WandbExtras",
]
