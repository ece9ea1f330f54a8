"""The run's resolved config: ``config.yaml`` in the run folder, and once to every other logger."""

from __future__ import annotations

from typing import Any

import lightning as L
import yaml
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, WandbLogger


class RunConfig(SaveConfigCallback):
    """LightningCLI's ``config.yaml`` (rank 0 writes it), with the batch size each process used,
    handed whole to the other loggers (W&B's config, TensorBoard's HPARAMS); W&B's summary keeps
    the best value of the metric the checkpoints are ranked by. ``given``: the config as the user
    gave it, before the CLI filled in what is this run's alone (folder, W&B id, checkpoint to
    resume), so that ``--config config.yaml`` starts a new run."""

    def __init__(self, parser: Any, config: Any, *args: Any, given: Any = None, **kwargs: Any) -> None:
        super().__init__(parser, config if given is None else given, *args, **kwargs)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        batch_size = getattr(trainer.datamodule, "batch_size", None)
        if batch_size is not None and "data" in self.config:  # --data.global_batch_size divides it
            self.config.data.init_args.batch_size = batch_size
        super().setup(trainer, pl_module, stage)  # broadcasts the run folder: every rank calls it

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        checkpoint = trainer.checkpoint_callback
        for logger in trainer.loggers:
            if isinstance(logger, CSVLogger):  # config.yaml is its copy
                continue
            logger.log_hyperparams(config)
            if isinstance(logger, WandbLogger) and getattr(checkpoint, "monitor", None):
                logger.experiment.define_metric(
                    checkpoint.monitor, summary=checkpoint.mode, step_metric="trainer/global_step"
                )
