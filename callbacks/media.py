"""What a person looks at: the training batch as the model sees it, the confusion matrix, and a
table of validation predictions, for the loggers that take pictures (W&B, TensorBoard)."""

from __future__ import annotations

from typing import Any, Literal

import lightning as L
import torch
from jsonargparse.typing import NonNegativeInt
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from matplotlib.figure import Figure
from torchmetrics.classification import BinaryConfusionMatrix, MulticlassConfusionMatrix
from torchvision.utils import make_grid


def log_picture(trainer: L.Trainer, key: str, picture: Any, caption: str) -> None:
    """A (3, H, W) image in [0, 1] or a matplotlib figure, to W&B and TensorBoard."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[picture], caption=[caption], step=trainer.global_step)
        elif isinstance(logger, TensorBoardLogger):
            add = logger.experiment.add_image if isinstance(picture, torch.Tensor) else logger.experiment.add_figure
            add(key, picture, trainer.global_step)


def is_image_batch(x: Any) -> bool:
    return isinstance(x, torch.Tensor) and x.ndim == 4 and x.shape[1] in (1, 3)  # (B, C, H, W)


class MediaLogger(Callback):
    """Logs, when a W&B or TensorBoard logger is there (nothing is computed otherwise): the first
    training batch as the model receives it (a wrong normalization, crop or label shows at a glance),
    the validation confusion matrix, and to W&B a table of validation predictions from rank 0's
    share, misses first: image, true and predicted class, confidence (regression: x, y, prediction).

    Args:
        num_images: images in the grid of the first training batch (0: no grid).
        confusion_matrix: plot the validation confusion matrix.
        num_predictions: rows of the predictions table (0: no table).
        predictions_at: log the table after every "validation", or once at the "end" of fit.
    """

    def __init__(
        self,
        num_images: NonNegativeInt = 32,
        confusion_matrix: bool = True,
        num_predictions: NonNegativeInt = 64,
        predictions_at: Literal["validation", "end"] = "validation",
    ) -> None:
        self.num_images, self.confusion_matrix = num_images, confusion_matrix
        self.num_predictions, self.predictions_at = num_predictions, predictions_at
        self.matrix: Any = None
        self.rows: dict[bool, list[tuple[float, Any, list[Any]]]] = {True: [], False: []}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.active = any(isinstance(log, (WandbLogger, TensorBoardLogger)) for log in trainer.loggers)
        self.active &= next(c for c in trainer.callbacks if isinstance(c, MediaLogger)) is self  # two presets: one
        self.table = self.num_predictions > 0 and any(isinstance(log, WandbLogger) for log in trainer.loggers)
        num_classes = getattr(pl_module, "num_classes", None)
        if self.active and self.confusion_matrix and num_classes and self.matrix is None:
            binary = pl_module.task == "binary"
            self.matrix = (BinaryConfusionMatrix() if binary else MulticlassConfusionMatrix(num_classes)).to(
                pl_module.device
            )
        self.class_names = list(getattr(trainer.datamodule, "classes", None) or range(num_classes or 0))

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if not (
            self.active and self.num_images and trainer.global_step == 0 and batch_idx == 0 and is_image_batch(batch[0])
        ):
            return
        x, y = batch[0][: self.num_images].detach().float().cpu(), batch[-1][: self.num_images].tolist()
        grid = make_grid(x, nrow=8, normalize=True, pad_value=1.0)  # one [min, max] for all: contrasts compare
        labels = " ".join(str(self.class_names[t]) if self.class_names else f"{t:.3g}" for t in y)
        if trainer.is_global_zero:
            log_picture(trainer, "train/batch", grid, f"labels, row by row: {labels}")

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.rows = {True: [], False: []}  # rank 0's share of this validation: hits, misses

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if trainer.sanity_checking or not self.active:
            return
        x, y = batch[0], batch[-1]
        if self.matrix is not None:
            self.matrix.update(*pl_module.metric_inputs(outputs, y))
        if self.table and trainer.is_global_zero and len(self.rows[False]) < self.num_predictions:
            self.collect(pl_module, x.detach().cpu(), y.cpu(), outputs.cpu())

    def collect(self, pl_module: L.LightningModule, x: torch.Tensor, y: torch.Tensor, outputs: torch.Tensor) -> None:
        if not hasattr(pl_module, "probabilities"):  # regression: (x, y, prediction) points
            self.columns = ["x", "y", "prediction"]
            points = zip(x.flatten(1)[:, 0].tolist(), y.tolist(), outputs.flatten().tolist(), strict=True)
            self.rows[True] += [(0.0, None, list(point)) for point in points]
            del self.rows[True][self.num_predictions :]
            return
        self.columns = ["image"] * is_image_batch(x) + ["true", "predicted", "confidence"]
        confidence, predicted = pl_module.probabilities(outputs).max(dim=1)
        for i in range(len(y)):
            hit = bool(predicted[i] == y[i])
            row = [self.class_names[int(y[i])], self.class_names[int(predicted[i])], float(confidence[i])]
            if len(self.rows[hit]) < self.num_predictions:
                self.rows[hit].append((-float(confidence[i]), x[i] if is_image_batch(x) else None, row))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self.active:
            return
        if self.matrix is not None:
            counts = self.matrix.compute()  # summed over processes: every rank calls it, at this hook
            self.matrix.reset()
            if trainer.is_global_zero:
                figure = Figure(figsize=(min(2 + len(counts) / 2, 12),) * 2, layout="constrained")  # no pyplot state
                _, axes = self.matrix.plot(val=counts.cpu(), ax=figure.subplots(), labels=self.class_names)
                axes.set_title(f"validation, epoch {trainer.current_epoch} (rows: true, columns: predicted)")
                log_picture(trainer, "val/confusion_matrix", figure, f"epoch {trainer.current_epoch}")
        if self.predictions_at == "validation":
            self.log_table(trainer)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.log_table(trainer)

    def log_table(self, trainer: L.Trainer) -> None:
        """The most confident misses first, then hits, up to ``num_predictions`` rows (W&B only)."""
        if not self.table or not trainer.is_global_zero or not any(self.rows.values()):
            return
        import wandb

        rows = [*sorted(self.rows[False], key=lambda r: r[0]), *sorted(self.rows[True], key=lambda r: r[0])]
        rows = rows[: self.num_predictions]
        data = [([wandb.Image(image.float())] if image is not None else []) + row for _, image, row in rows]
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_table("val/predictions", columns=self.columns, data=data, step=trainer.global_step)
        self.rows = {True: [], False: []}
