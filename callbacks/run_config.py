"""The run folder's bookkeeping: the resolved config (never over an earlier one, also handed to
W&B and TensorBoard), the folder's lock, and no folder left behind by a run that failed before
training."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_info

from callbacks.signals import TrainingInterrupted
from runs.files import remove_stale_temporaries, write_text
from runs.folders import WANDB_ID_FILE, run_dir
from runs.lock import LOCK_FILE, lock_run, release_run_locks, started_here


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
      restart continues the same W&B run;
    - every TensorBoard logger gets it too: as hyperparameters (HPARAMS tab, nested keys joined
      by "/") and as YAML text (TEXT tab, ``config``);
    - fit locks the folder (``runs.lock``: one process per run) and clears what writers killed
      mid-write left there;
    - a fit that fails before its first step, in a folder it started, removes that folder.
    """

    _run_dir: Path | None = None  # set in setup, on every rank

    def __init__(self, *args: Any, command: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.command = command or []  # recorded in the lock file: how a requeued job finds its run
        self._fresh = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        folder = run_dir(trainer)
        if stage == "fit" and folder is not None and trainer.is_global_zero:
            lock_run(folder, self.command)  # a named run's folder is locked already
            self._fresh = started_here(folder)
            remove_stale_temporaries(folder)
        if not self.already_saved and self.save_to_log_dir and not self.overwrite and folder:
            name = free_config_name(folder, self.config_filename) if trainer.is_global_zero else None
            self.config_filename = trainer.strategy.broadcast(name)
        self._run_dir = folder  # kept for save_config, which runs on rank 0 only
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        loggers = [log for log in trainer.loggers if isinstance(log, (WandbLogger, TensorBoardLogger))]
        if not loggers:
            return
        text = self.parser.dump(self.config, skip_none=False)
        config = yaml.safe_load(text)
        for logger in loggers:
            if isinstance(logger, TensorBoardLogger):
                # Before Trainer.fit logs the model's hyperparameters: TensorBoard shows the first set.
                logger.log_hyperparams(config)
                logger.experiment.add_text("config", textwrap.indent(text, "    "))  # a code block
                continue
            run = logger.experiment
            run.config.update({**config, "run_dir": str(self._run_dir)}, allow_val_change=True)
            if self._run_dir is not None:
                write_text(self._run_dir / WANDB_ID_FILE, run.id)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        folder = self._run_dir
        if folder is None and trainer.world_size == 1 and trainer.log_dir is not None:
            folder = Path(trainer.log_dir)  # failed before setup: a folder the logger just made
            self._fresh = started_here(folder) or not (folder / LOCK_FILE).exists()
        started = trainer.global_step > 0 or isinstance(exception, TrainingInterrupted)
        if folder is None or not self._fresh or started or not trainer.is_global_zero:
            return
        files = {p.name for p in folder.rglob("*") if p.is_file()} if folder.is_dir() else {"?"}
        if files <= {self.config_filename, "hparams.yaml", "metrics.csv", LOCK_FILE}:
            release_run_locks()
            shutil.rmtree(folder, ignore_errors=True)
            rank_zero_info(f"Removed {folder}: the run failed before training.")
