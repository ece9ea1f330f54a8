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
from torchmetrics import MetricCollection

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
    ) -> None:
        super().__init__()
        self.task = task
        self.loss = build_loss(loss, task)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.net = net(num_outputs=num_outputs)
        # (2, *input_shape): two samples so BatchNorm-free and BatchNorm nets alike run it.
        self.example_input_array = torch.zeros(2, *input_shape)
        was_training = self.net.training
        with torch.no_grad():  # materialize lazy layers so summaries and optimizers see shapes
            self.net.eval()(self.example_input_array)
        self.net.train(was_training)
        self.train_metrics = self.make_metrics().clone(prefix="train/")
        self.val_metrics = self.make_metrics().clone(prefix="val/")
        self.test_metrics = self.make_metrics().clone(prefix="test/")

    def make_metrics(self) -> MetricCollection:
        raise NotImplementedError

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
        x, y = batch
        out = self(x)
        loss = self.loss(*self.loss_inputs(out, y))
        metrics = getattr(self, f"{split}_metrics")
        metrics.update(*self.metric_inputs(out.detach(), y))
        on_step = split == "train"
        self.log(f"{split}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True,
                 sync_dist=not on_step, batch_size=len(y))
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=True)
        return loss

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
