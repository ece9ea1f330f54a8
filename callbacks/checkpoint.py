"""Best-by-validation and last checkpoints, monitoring the model's own quality metric."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint


class BestCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that keeps the best checkpoint by validation and the last one.

    With ``monitor: auto`` it asks the model what "best" means (``pl_module.monitor``: ``val/acc``
    to maximize for classifiers, ``val/loss`` to minimize for regressors), so one trainer config
    serves every model.

    Args:
        dirpath: where to write (default: ``<run dir>/checkpoints``).
        monitor: logged metric to rank checkpoints by, or "auto".
        mode: "min", "max", or "auto" (taken with the metric from the model).
        save_top_k: how many best checkpoints to keep.
        save_last: also write ``last.ckpt`` (what a requeued job resumes from).
        every_n_epochs: validate-and-save period in epochs.
    """

    def __init__(
        self,
        dirpath: str | None = None,
        monitor: str = "auto",
        mode: str = "auto",
        save_top_k: int = 1,
        save_last: bool = True,
        every_n_epochs: int | None = None,
    ) -> None:
        self._auto = monitor == "auto"
        super().__init__(
            dirpath=dirpath,
            monitor=None if self._auto else monitor,
            mode="min" if mode == "auto" else mode,
            save_top_k=save_top_k,
            save_last=save_last,
            every_n_epochs=every_n_epochs,
            auto_insert_metric_name=False,
        )
        self._auto_mode = mode == "auto"

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._auto:
            metric, mode = getattr(pl_module, "monitor", ("val/loss", "min"))
            self.monitor = metric
            if self._auto_mode:
                self.mode = mode
                self.kth_value = torch.tensor(torch.inf if mode == "min" else -torch.inf)
        if self.monitor is not None and self.filename is None:
            # "val/acc" would make a folder: spell the metric with "_" in the file name
            metric = self.monitor.replace("/", "_")
            self.filename = f"epoch={{epoch:02d}}-step={{step}}-{metric}={{{self.monitor}:.4f}}"
        super().setup(trainer, pl_module, stage)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning's end-of-fit save of last.ckpt ignores fast_dev_run; a dry run writes nothing.
        if not trainer.fast_dev_run:
            super().on_train_end(trainer, pl_module)
