"""Saves the resolved config with the run, never over an earlier one, and hands it to W&B."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import yaml
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

from runs.files import write_text
from runs.folders import WANDB_ID_FILE, run_dir


def free_config_name(run_dir: Path, filename: str) -> str:
    """``config.yaml`` for a new run; ``config.restart1.yaml``, ... when a run is resumed into its
    own directory, so the configs of every start are kept."""
    stem, suffix = Path(filename).stem, Path(filename).suffix
    name, restart = filename, 0
    while (run_dir / name).exists():
        restart += 1
        name = f"{stem}.restart{restart}{suffix}"
    return name


class RunConfig(SaveConfigCallback):
    """LightningCLI's config saving (rank 0 writes ``<run dir>/config.yaml``), plus:

    - a resumed run writes ``config.restartN.yaml`` beside the first config instead of failing;
    - every W&B logger gets the whole resolved config (the run's config panel then shows every
      option, data and trainer included, not only the model's hyperparameters) and the run
      directory, and the directory records the W&B run id (``wandb_run_id.txt``) so that a
      restart continues the same W&B run.
    """

    _run_dir: Path | None = None  # set in setup, on every rank

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        folder = run_dir(trainer)
        if not self.already_saved and self.save_to_log_dir and not self.overwrite and folder:
            name = free_config_name(folder, self.config_filename) if trainer.is_global_zero else None
            self.config_filename = trainer.strategy.broadcast(name)
        self._run_dir = folder  # kept for save_config, which runs on rank 0 only
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        loggers = [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]
        if not loggers:
            return
        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        for logger in loggers:
            run = logger.experiment
            run.config.update({**config, "run_dir": str(self._run_dir)}, allow_val_change=True)
            if self._run_dir is not None:
                write_text(self._run_dir / WANDB_ID_FILE, run.id)
