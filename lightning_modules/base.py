"""The shared system: a network, a loss and an optimizer, stepped the same way for every split."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from typing import Any, Protocol

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import MeanMetric, MetricCollection

from lightning_modules.losses import build_loss, check_targets


class NetFactory(Protocol):
    """A network class with its options bound; called with the output width from the data."""

    def __call__(self, num_outputs: int) -> nn.Module: ...


def _accepts_total_steps(factory: Any) -> bool:
    """True when a scheduler factory builds a class that takes ``total_steps`` (e.g. OneCycleLR)
    and the config did not fix it, so the module fills in the Trainer's step count."""
    if not isinstance(factory, functools.partial):
        return False
    target = next((a for a in factory.args if inspect.isclass(a)), factory.func)
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False
    return "total_steps" in params and factory.keywords.get("total_steps") is None


class TaskModule(L.LightningModule):
    """Builds ``net(num_outputs)``, materializes its lazy layers on ``input_shape``, checks that
    the loss fits ``task``, and runs one shared step for train/val/test.

    Subclasses define the metrics (``make_metrics``), how outputs meet the loss
    (``loss_inputs``), ``predict_step`` and ``monitor`` (the checkpoint's quality metric).
    """

    monitor: tuple[str, str] = ("val/loss", "min")

    def __init__(
        self,
        net: NetFactory,
        num_outputs: int,
        input_shape: Sequence[int],
        task: str,
        loss: str | nn.Module | None,
        optimizer: OptimizerCallable,
        scheduler: LRSchedulerCallable | None,
        log_train_metrics: bool = True,
    ) -> None:
        super().__init__()
        self.task = task
        self.log_train_metrics = log_train_metrics
        self.loss = build_loss(loss, task)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.num_outputs = num_outputs  # what the bare network is built with, e.g. to load weights
        self.net = net(num_outputs=num_outputs)
        self.example_input_array = self.example_input(input_shape)
        example = self.example_input_array
        was_training = self.net.training
        with torch.no_grad():  # materialize lazy layers so summaries and optimizers see shapes
            self.net.eval()(*(example if isinstance(example, tuple) else (example,)))
        self.net.train(was_training)
        self.train_metrics = self.make_metrics().clone(prefix="train/")
        self.val_metrics = self.make_metrics().clone(prefix="val/")
        self.test_metrics = self.make_metrics().clone(prefix="test/")
        # mean loss per split, weighted by batch size (no NaN check: it would sync the device)
        self.train_loss_mean = MeanMetric(nan_strategy="disable")
        self.val_loss_mean = MeanMetric(nan_strategy="disable")
        self.test_loss_mean = MeanMetric(nan_strategy="disable")

    def make_metrics(self) -> MetricCollection:
        raise NotImplementedError

    def example_input(self, input_shape: Sequence[int]) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """The forward arguments of a small batch, for lazy layers and the summary's sizes."""
        # (2, *input_shape): two samples so BatchNorm-free and BatchNorm nets alike run it.
        return torch.zeros(2, *input_shape)

    def loss_inputs(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(prediction, target) as the loss expects them."""
        return out, y

    def metric_inputs(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(prediction, target) as the metrics expect them."""
        return self.loss_inputs(out, y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        if stage == "fit" and datamodule is not None and hasattr(datamodule, "train_targets"):
            check_targets(self.loss, datamodule.train_targets())

    def shared_step(self, batch: Any, split: str) -> torch.Tensor:
        *inputs, y = batch  # (x, y), or (x, lengths, y) for sequences: forward takes the inputs
        out = self(*inputs)
        loss = self.loss(*self.loss_inputs(out, y))
        # Each step only updates tensors on the device. ``self.log`` is slow Python, so epoch
        # values are logged once per epoch (``log_epoch``) and the step loss only where a logger
        # or a progress bar reads it.
        if split != "train" or self.log_train_metrics:
            getattr(self, f"{split}_metrics").update(*self.metric_inputs(out.detach(), y))
        # the batch mean once per sample (B,): a batch-size-weighted mean over the epoch
        # (MeanMetric's own weight argument is ignored under nan_strategy="disable")
        getattr(self, f"{split}_loss_mean").update(loss.detach().expand(len(y)))
        if split == "train" and self.step_loss_is_read():
            self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True,
                     batch_size=len(y))
        return loss

    def step_loss_is_read(self) -> bool:
        """Whether a logger records this training step (every ``log_every_n_steps`` optimizer
        steps, as Lightning counts them) or a progress bar shows it."""
        trainer = self.trainer
        if trainer.progress_bar_callback is not None or trainer.fast_dev_run:
            return True
        every = trainer.log_every_n_steps
        return every > 0 and (self.global_step + 1) % every == 0

    def log_epoch(self, split: str) -> None:
        """Log the split's mean loss and metrics over the epoch (torchmetrics syncs them across
        processes and Lightning resets them). The training loss keeps the names Lightning gives a
        loss logged per step and per epoch: ``train/loss_step``, ``train/loss_epoch`` and, for
        callbacks and the progress bar, ``train/loss``."""
        loss = getattr(self, f"{split}_loss_mean")
        if split == "train":
            self.log("train/loss_epoch", loss)
            self.log("train/loss", loss, logger=False, prog_bar=True)
        else:
            self.log(f"{split}/loss", loss, prog_bar=True)
        if split != "train" or self.log_train_metrics:
            self.log_dict(getattr(self, f"{split}_metrics"), prog_bar=True)

    def on_train_epoch_end(self) -> None:
        self.log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self.log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self.log_epoch("test")

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.shared_step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.shared_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.shared_step(batch, "test")

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        if _accepts_total_steps(self.scheduler_factory):
            total = int(self.trainer.estimated_stepping_batches)
            scheduler = self.scheduler_factory(optimizer, total_steps=total)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
        scheduler = self.scheduler_factory(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch", "monitor": self.monitor[0]},
        }
