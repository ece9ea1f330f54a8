"""Pictures of a run: the training batch as the model receives it, and the confusion matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from matplotlib.figure import Figure
from torch.utils.hooks import RemovableHandle
from torchmetrics.classification import BinaryConfusionMatrix, MulticlassConfusionMatrix

from callbacks.atomic import atomic_path


def save_figure(figure: Figure, path: Path) -> Path:
    """PNG through a temporary name: a reader never sees half an image."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=100)
    return path


def log_image(trainer: L.Trainer, key: str, path: Path, caption: str) -> None:
    """Hand a PNG to every logger that takes images (``log_image``: W&B, ...)."""
    for logger in trainer.loggers:
        if hasattr(logger, "log_image"):
            logger.log_image(key=key, images=[str(path)], caption=[caption],
                             step=trainer.global_step)


def batch_figure(images: torch.Tensor, labels: list[str], columns: int = 8) -> Figure:
    """A grid of (N, C, H, W) images with C in {1, 3}, titled with their labels.

    All images share one linear map of the batch's [min, max] to [0, 1], so brightness and
    contrast compare across the grid as the model sees them.
    """
    low, high = images.min(), images.max()
    images = ((images - low) / (high - low).clamp_min(1e-12)).float().cpu()
    rows = (len(images) + columns - 1) // columns
    figure = Figure(figsize=(1.4 * columns, 1.6 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i < len(images):
            image = images[i].permute(1, 2, 0)  # (H, W, C) for imshow
            if image.shape[-1] == 1:
                ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(image.numpy())
            ax.set_title(labels[i], fontsize=8)
    figure.suptitle(f"training batch as the model sees it (inputs in [{low:.2f}, {high:.2f}] "
                    "shown as [0, 1])", fontsize=9)
    return figure


def confusion_figure(counts: torch.Tensor, names: list[str], title: str) -> Figure:
    """(K, K) counts, rows = true class, columns = predicted class."""
    k = len(names)
    size = min(2.0 + 0.5 * k, 12.0)
    figure = Figure(figsize=(size, size), layout="constrained")
    ax = figure.subplots()
    ax.imshow(counts.cpu(), cmap="Blues")
    ax.set(xticks=range(k), yticks=range(k), xlabel="predicted", ylabel="true", title=title)
    ax.set_xticklabels(names, rotation=90 if k > 10 else 0, fontsize=8)
    ax.set_yticklabels(names, fontsize=8)
    if k <= 20:  # counts are unreadable beyond that: the colours still show the pattern
        threshold = counts.max().item() / 2
        for row in range(k):
            for col in range(k):
                value = int(counts[row, col])
                ax.text(col, row, str(value), ha="center", va="center", fontsize=7,
                        color="white" if value > threshold else "black")
    return figure


class MediaLogger(Callback):
    """Saves pictures to ``<run dir>/media/`` and hands them to every logger that takes images.

    - The first training batch as the model receives it: after the datamodule's transforms and
      augmentation, not the raw dataset. A wrong normalization, crop, channel order or label
      mapping shows here at a glance and nowhere else (inputs (B, C, H, W), C = 1 or 3).
    - The validation confusion matrix after each validation epoch and for the best checkpoint
      (the CLI validates it after fit), for classifiers (models with ``num_classes``).

    The fitted-curve plot of a regression is ``callbacks.FitPlot``.

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
        self._hook: RemovableHandle | None = None
        self._output: torch.Tensor | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        log_dir = trainer.log_dir  # a broadcast under DDP: every rank asks
        self.media_dir = Path(log_dir) / "media" if log_dir is not None else None
        num_classes = getattr(pl_module, "num_classes", None)
        if self.confusion_matrix and num_classes and self.matrix is None:
            binary = getattr(pl_module, "task", "multiclass") == "binary"
            self.matrix = (BinaryConfusionMatrix() if binary
                           else MulticlassConfusionMatrix(num_classes))

    def class_names(self, trainer: L.Trainer, count: int) -> list[str]:
        names = getattr(trainer.datamodule, "classes", None)
        if names is not None and len(names) == count:
            return list(names)
        return [str(i) for i in range(count)]

    def save(self, trainer: L.Trainer, figure: Figure, name: str, key: str, caption: str) -> None:
        if self.media_dir is None:  # no run directory (fast_dev_run): nothing to keep
            return
        log_image(trainer, key, save_figure(figure, self.media_dir / name), caption)

    # -- training batch ----------------------------------------------------------------------
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
        self.save(trainer, batch_figure(x[:n].detach(), labels), "train_batch.png",
                  "train/batch", f"first training batch, epoch {trainer.current_epoch}")

    # -- confusion matrix --------------------------------------------------------------------
    def _keep_output(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            self._output = output.detach()

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.matrix is None or trainer.sanity_checking:
            return
        self.matrix = self.matrix.to(pl_module.device)
        # the model's own forward pass gives the logits: no second forward pass just for the plot
        self._hook = pl_module.register_forward_hook(self._keep_output)

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
        batch_idx: int, dataloader_idx: int = 0,
    ) -> None:
        if self._hook is None or self._output is None:
            return
        logits, target = self._output, batch[-1]  # (B, C) or (B, 1) logits, (B,) labels last
        self._output = None
        if isinstance(self.matrix, BinaryConfusionMatrix):
            self.matrix.update((logits.squeeze(-1) > 0).long(), target.long())
        else:
            self.matrix.update(logits.argmax(dim=-1), target.long())

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._hook is None:
            return
        self._hook.remove()
        self._hook = None
        counts = self.matrix.compute()  # (K, K), summed over all processes: every rank calls it
        self.matrix.reset()
        if not trainer.is_global_zero:
            return
        names = self.class_names(trainer, len(counts))
        if trainer.state.fn == TrainerFn.VALIDATING:
            name = "confusion_matrix.png"
            title = "validation confusion matrix (evaluated checkpoint)"
        else:
            name = f"confusion_matrix_epoch{trainer.current_epoch:03d}.png"
            title = f"validation confusion matrix, epoch {trainer.current_epoch}"
        accuracy = counts.diag().sum().item() / max(counts.sum().item(), 1)
        self.save(trainer, confusion_figure(counts, names, f"{title}\naccuracy {accuracy:.4f}"),
                  name, "val/confusion_matrix", title)
