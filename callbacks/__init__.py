"""Cross-cutting behaviour around the Trainer."""

from callbacks.checkpoint import BestCheckpoint
from callbacks.predictions import PredictionWriter

__all__ = ["BestCheckpoint", "PredictionWriter"]
