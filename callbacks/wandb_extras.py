"""W&B beyond metrics: parameter counts and gradient histograms."""

from __future__ import annotations

from typing import Literal

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.model_summary import ModelSummary


def parameter_counts(module: L.LightningModule) -> dict[str, int]:
    """Total, trainable and frozen parameters, and the total of each direct child (``net``, ...)."""
    summary = ModelSummary(module, max_depth=1)
    counts = {"total": summary.total_parameters, "trainable": summary.trainable_parameters}
    counts["frozen"] = counts["total"] - counts["trainable"]
    counts.update({name: n for name, n in zip(summary.layer_names, summary.param_nums, strict=True) if n})
    return counts


class WandbExtras(Callback):
    """Sends the model's parameter counts to W&B (config ``params``, a column to sort runs by) and,
    on request, gradient or weight histograms (``wandb.watch``). Does nothing without a W&B
    logger, and only rank 0 talks to W&B. Checkpoints as artifacts are WandbLogger's own
    ``log_model`` option (see configs/logger/wandb.yaml).

    Args:
        watch: histograms to log: "gradients", "parameters", "all", or None for none.
        watch_log_freq: training steps between two histograms.
    """

    def __init__(
        self,
        watch: Literal["gradients", "parameters", "all"] | None = None,
        watch_log_freq: int = 100,
    ) -> None:
        self.watch = watch
        self.watch_log_freq = watch_log_freq

    def wandb_loggers(self, trainer: L.Trainer) -> list[WandbLogger]:
        return [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        for logger in self.wandb_loggers(trainer):
            logger.log_hyperparams({"params": parameter_counts(pl_module)})
            if self.watch is not None:
                logger.watch(pl_module, log=self.watch, log_freq=self.watch_log_freq)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or self.watch is None:
            return
        for logger in self.wandb_loggers(trainer):
            logger.experiment.unwatch(pl_module)
