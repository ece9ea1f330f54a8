"""The shared system: a network, a loss and an optimizer, stepped the same way for every split."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torchmetrics import MetricCollection

from lightning_modules.losses import build_loss, check_loss
from lightning_modules.weights import load_weights


class NetFactory(Protocol):
    """A network class with its options bound; called with the output width from the data."""

    def __call__(self, num_outputs: int) -> nn.Module: ...


def leaves_total_steps_open(scheduler: Any) -> bool:
    """A scheduler factory whose ``total_steps`` the config left unset (OneCycleLR): the model
    fills in the Trainer's step count. jsonargparse binds every init arg as a partial keyword."""
    return getattr(scheduler, "keywords", {}).get("total_steps", 0) is None


def freeze_parameters(net: nn.Module, prefixes: Sequence[str]) -> None:
    """``requires_grad = False`` for the parameters whose names start with one of ``prefixes``
    (a whole name part: ``features`` takes ``features.0.weight``, not ``features_x.weight``)."""
    parameters = dict(net.named_parameters())
    for prefix in prefixes:
        chosen = [p for name, p in parameters.items() if name == prefix or name.startswith(f"{prefix}.")]
        if not chosen:
            parts = sorted({name.split(".")[0] for name in parameters})
            raise ValueError(
                f"--model.freeze {prefix!r} names no parameter of the network. Its parts: {parts} "
                "(full names: python scripts/inspect_model.py --config ..., without the 'net.')."
            )
        for parameter in chosen:
            parameter.requires_grad_(False)


class TaskModule(L.LightningModule):
    """Builds ``net(num_outputs)``, materializes its lazy layers on ``input_shape``, checks that
    the loss fits ``task``, and runs one shared step for train/val/test.

    Subclasses define the metrics (``make_metrics``), how outputs meet the loss and the metrics
    (``loss_inputs``, ``metric_inputs``), ``predict_step`` and ``monitor`` (the checkpoint's
    quality metric and whether higher is better).

    Fine-tuning: ``init_weights`` loads network weights (a ``model.pth`` or a checkpoint) into the
    new network, strictly; the run itself starts fresh (optimizer, schedule, epoch 0). ``freeze``
    stops the gradients of the named parts (BatchNorm running statistics still update in training).
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
        init_weights: str | None = None,
        freeze: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.task = task
        self.log_train_metrics = log_train_metrics
        self.loss = build_loss(loss, task)
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.num_outputs = num_outputs  # what the bare network is built with, e.g. to load weights
        self.net = net(num_outputs=num_outputs)
        self.example_input_array = self.example_input(input_shape)
        with torch.no_grad():  # materialize lazy layers so summaries and optimizers see shapes
            self.net.eval()(*self.example_args())
        self.net.train()
        if init_weights is not None:
            load_weights(self.net, init_weights)
        freeze_parameters(self.net, freeze or [])
        self.train_metrics = self.make_metrics().clone(prefix="train/")
        self.val_metrics = self.make_metrics().clone(prefix="val/")
        self.test_metrics = self.make_metrics().clone(prefix="test/")

    def make_metrics(self) -> MetricCollection:
        raise NotImplementedError

    def example_input(self, input_shape: Sequence[int]) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """The forward arguments of a small batch, for lazy layers and the summary's sizes."""
        return torch.zeros(2, *input_shape)  # (2, *input_shape): BatchNorm needs two samples

    def example_args(self) -> tuple[torch.Tensor, ...]:
        example = self.example_input_array
        return example if isinstance(example, tuple) else (example,)

    def loss_inputs(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(prediction, target) as the loss expects them."""
        return out, y

    def metric_inputs(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(prediction, target) as the metrics expect them."""
        return self.loss_inputs(out, y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule
        if stage == "fit" and hasattr(datamodule, "train_targets"):
            targets = datamodule.train_targets()
            with torch.no_grad():
                out = self.net.eval()(*self.example_args())
            self.net.train()
            check_loss(self.loss, self.task, *self.loss_inputs(out, targets[: len(out)]), targets)

    def shared_step(self, batch: Any, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        *inputs, y = batch  # (x, y), or (x, lengths, y) for sequences: forward takes the inputs
        out = self(*inputs)
        loss = self.loss(*self.loss_inputs(out, y))
        train = split == "train"
        # validation and test means are over every process's samples; a training step stays local
        self.log(
            f"{split}/loss",
            loss,
            on_step=train,
            on_epoch=True,
            prog_bar=True,
            batch_size=len(y),
            sync_dist=not train,
        )
        if not train or self.log_train_metrics:
            metrics = getattr(self, f"{split}_metrics")
            metrics.update(*self.metric_inputs(out.detach(), y))
            self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=True)
        return loss, out.detach()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.shared_step(batch, "train")[0]

    def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.shared_step(batch, "val")[1]  # the outputs, for callbacks (confusion matrix)

    def test_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.shared_step(batch, "test")[1]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        schedulers = checkpoint.get("lr_schedulers") or [{}]
        self.resumed_total_steps = schedulers[0].get("total_steps")  # a one-cycle schedule's length

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer([p for p in self.parameters() if p.requires_grad])  # not the frozen
        if self.scheduler is None:
            return optimizer
        if leaves_total_steps_open(self.scheduler):  # one-cycle: stepped every batch
            total = int(self.trainer.estimated_stepping_batches)
            resumed = getattr(self, "resumed_total_steps", None)
            if resumed is not None and resumed != total:
                raise ValueError(
                    f"The checkpoint's one-cycle schedule spans {resumed} steps, but this run has "
                    f"{total} (max_epochs, max_steps, limit_train_batches or the batch size changed), "
                    "and a one-cycle schedule cannot be stretched. Keep those settings to resume, or "
                    "start a new run from these weights with --model.init_weights <checkpoint> "
                    "(a new optimizer and schedule)."
                )
            scheduler = self.scheduler(optimizer, total_steps=total)
            peak, lr = self.scheduler.keywords.get("max_lr"), optimizer.defaults.get("lr")
            if peak is not None and peak != lr:
                note = f"peak max_lr {peak}): the optimizer's lr {lr} is not used."
                rank_zero_info(f"The one-cycle schedule sets every step's learning rate ({note}")
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
        scheduler = self.scheduler(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch", "monitor": self.monitor[0]},
        }
