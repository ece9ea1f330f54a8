"""Pictures of a run: the training batch as the model receives it, and the confusion matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn
from matplotlib.figure import Figure
from PIL import Image
from torchmetrics.classification import BinaryConfusionMatrix, MulticlassConfusionMatrix
from torchvision.transforms.functional import pil_to_tensor
from torchvision.utils import make_grid

from runs.files import atomic_path
from runs.folders import run_dir


def save_figure(figure: Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=100)
    return path


def log_image(trainer: L.Trainer, key: str, path: Path, caption: str) -> None:
    """Hand a PNG to every logger that takes images: W&B's ``log_image``, TensorBoard's writer."""
    for logger in trainer.loggers:
        if hasattr(logger, "log_image"):
            logger.log_image(key=key, images=[str(path)], caption=[caption], step=trainer.global_step)
        elif isinstance(logger, TensorBoardLogger):  # no log_image: the SummaryWriter takes a tensor
            image = pil_to_tensor(Image.open(path).convert("RGB"))  # (3, H, W) uint8
            logger.experiment.add_image(key, image, global_step=trainer.global_step)


def batch_figure(images: torch.Tensor, labels: list[str], columns: int = 8) -> Figure:
    """(N, C, H, W) images with C in {1, 3} in a grid, each titled with its label.

    One linear map of the batch's [min, max] to [0, 1] for all images, so brightness and contrast
    compare across the grid as the model sees them.
    """
    low, high = float(images.min()), float(images.max())
    grid = make_grid(
        images.float().cpu(), nrow=columns, padding=2, normalize=True, value_range=(low, high), pad_value=1.0
    )  # (3, H', W') in [0, 1]
    rows = (len(images) + columns - 1) // columns
    height, width = images.shape[-2:]
    figure = Figure(figsize=(1.4 * columns, 1.6 * rows), layout="constrained")
    axes = figure.subplots()
    axes.imshow(grid.permute(1, 2, 0).numpy())
    axes.set_axis_off()
    for i, label in enumerate(labels):  # the label above each cell's top-left corner
        row, col = divmod(i, columns)
        axes.text(2 + col * (width + 2), 2 + row * (height + 2), label, fontsize=7, va="top", color="red")
    axes.set_title(
        f"training batch as the model sees it (inputs in [{low:.2f}, {high:.2f}] shown as [0, 1])", fontsize=9
    )
    return figure


class MediaLogger(Callback):
    """Saves pictures to ``<run dir>/media/`` and hands them to every logger that takes images.

    - The first training batch as the model receives it: after the datamodule's transforms and
      augmentation, not the raw dataset. A wrong normalization, crop, channel order or label
      mapping shows here at a glance and nowhere else (inputs (B, C, H, W), C = 1 or 3).
    - The validation confusion matrix after each validation epoch and for the best checkpoint
      (the CLI validates it after fit), for classifiers (models with ``num_classes``).

    Listed twice (the W&B and TensorBoard presets stacked), the first one logs to every logger and
    the second does nothing.

    Args:
        num_images: images in the training-batch grid (0: no grid).
        confusion_matrix: plot the validation confusion matrix.
    """

    def __init__(self, num_images: int = 32, confusion_matrix: bool = True) -> None:
        self.num_images = num_images
        self.confusion_matrix = confusion_matrix
        self.media_dir: Path | None = None
        self.grid_done = False
        self.matrix: MulticlassConfusionMatrix | BinaryConfusionMatrix | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if next(c for c in trainer.callbacks if isinstance(c, MediaLogger)) is not self:
            self.grid_done, self.media_dir, self.matrix = True, None, None  # the first one logs
            return
        folder = run_dir(trainer)
        self.media_dir = folder / "media" if folder is not None else None
        num_classes = getattr(pl_module, "num_classes", None)
        if self.confusion_matrix and num_classes and self.matrix is None:
            binary = getattr(pl_module, "task", "multiclass") == "binary"
            self.matrix = BinaryConfusionMatrix() if binary else MulticlassConfusionMatrix(num_classes)

    def class_names(self, trainer: L.Trainer, count: int) -> list[str]:
        names = getattr(trainer.datamodule, "classes", None)
        return list(names) if names is not None and len(names) == count else [str(i) for i in range(count)]

    def save(self, trainer: L.Trainer, figure: Figure, name: str, key: str, caption: str) -> None:
        if self.media_dir is not None:  # None in a dry run (fast_dev_run): no files
            log_image(trainer, key, save_figure(figure, self.media_dir / name), caption)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.grid_done or self.num_images <= 0 or not trainer.is_global_zero:
            return
        self.grid_done = True
        x, y = batch[0], batch[-1]  # (x, y), or (x, lengths, y) for sequences: the label is last
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            return  # not an image batch: nothing a person could look at
        n = min(self.num_images, len(x))
        names = self.class_names(trainer, getattr(pl_module, "num_classes", None) or 0)
        labels = [names[int(t)] if int(t) < len(names) else f"{float(t):.3g}" for t in y[:n]]
        self.save(
            trainer,
            batch_figure(x[:n].detach(), labels),
            "train_batch.png",
            "train/batch",
            f"first training batch, epoch {trainer.current_epoch}",
        )

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.matrix is not None:
            self.matrix = self.matrix.to(pl_module.device)

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.matrix is None or trainer.sanity_checking or not isinstance(outputs, torch.Tensor):
            return
        # validation_step returns its outputs; the model says how they meet its metrics
        self.matrix.update(*pl_module.metric_inputs(outputs, batch[-1]))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.matrix is None or trainer.sanity_checking:
            return
        counts = self.matrix.compute()  # (K, K), summed over all processes: every rank calls it
        self.matrix.reset()
        if not trainer.is_global_zero:
            return
        epoch = trainer.current_epoch
        name, title = f"confusion_matrix_epoch{epoch:03d}.png", f"validation confusion matrix, epoch {epoch}"
        if trainer.state.fn == TrainerFn.VALIDATING:
            name, title = "confusion_matrix.png", "validation confusion matrix (evaluated checkpoint)"
        accuracy = counts.diag().sum().item() / max(counts.sum().item(), 1)
        size = min(2.0 + 0.5 * len(counts), 12.0)
        figure = Figure(figsize=(size, size), layout="constrained")
        axes = figure.subplots()
        self.matrix.plot(
            val=counts.cpu(),
            ax=axes,
            add_text=len(counts) <= 20,
            labels=self.class_names(trainer, len(counts)),
        )
        axes.set_title(f"{title}\naccuracy {accuracy:.4f} (rows: true, columns: predicted)")
        self.save(trainer, figure, name, "val/confusion_matrix", title)
