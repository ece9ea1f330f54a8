"""Best-by-validation and last checkpoints."""

from __future__ import annotations

from typing import Literal

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


class BestCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that keeps the best checkpoint by validation and the last one.

    The CLI fills in ``monitor`` and ``mode`` from the model when they are left empty (its
    ``monitor``: ``val/acc`` to maximize for classifiers, ``val/loss`` to minimize otherwise), so
    one trainer config serves every model.

    Args:
        dirpath: where to write (default: ``<run dir>/checkpoints``).
        monitor: logged metric to rank checkpoints by (default: the model's own).
        mode: "min" or "max" (default: the model's own).
        save_top_k: how many best checkpoints to keep.
        save_last: also write ``last.ckpt`` (what a restarted run resumes from).
        every_n_epochs: validate-and-save period in epochs.
    """

    def __init__(
        self,
        dirpath: str | None = None,
        monitor: str | None = None,
        mode: Literal["min", "max"] | None = None,
        save_top_k: int = 1,
        save_last: bool = True,
        every_n_epochs: int | None = None,
    ) -> None:
        # "val/acc" would make a folder: spell the metric with "_" in the file name
        metric = (monitor or "").replace("/", "_")
        super().__init__(
            dirpath=dirpath,
            monitor=monitor,
            mode=mode or "min",
            save_top_k=save_top_k,
            save_last=save_last,
            every_n_epochs=every_n_epochs,
            auto_insert_metric_name=False,
            filename=f"epoch={{epoch:02d}}-step={{step}}-{metric}={{{monitor}:.4f}}" if monitor else None,
        )

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning's end-of-fit save of last.ckpt ignores fast_dev_run; a dry run writes nothing.
        if not trainer.fast_dev_run:
            super().on_train_end(trainer, pl_module)
