"""The shared system: a network, a loss and an optimizer, stepped the same way for every split."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import MeanMetric, MetricCollection

from lightning_modules.losses import build_loss, check_loss
from run.errors import UserError
from run.files import check_saved

SPLITS = ("train", "val", "test")


class NetFactory(Protocol):
    """A network class with its options bound; called with the output width the data needs."""

    def __call__(self, num_outputs: int) -> nn.Module: ...


def load_weights(net: nn.Module, path: str) -> None:
    """Load a plain ``state_dict`` of the network, or the network of a Lightning checkpoint, strictly."""
    check_saved(path, f"--model.init_weights {path}")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
        state = content.get("state_dict", content)
        if "pytorch-lightning_version" in content:  # a TaskModule keeps its network in self.net
            state = {key[4:]: value for key, value in state.items() if key.startswith("net.")}
        net.load_state_dict(state)
    except Exception as err:  # whatever keeps the file from loading into the network is the file's
        message = "\n".join(str(err).strip().splitlines()[:4]) or type(err).__name__
        raise UserError(f"--model.init_weights {path}: {message}") from err


def freeze_parameters(net: nn.Module, prefixes: Sequence[str]) -> None:
    """``requires_grad = False`` for parameters named by a prefix of whole name parts (``features``
    takes ``features.0.weight``, not ``features_x.weight``)."""
    parameters = dict(net.named_parameters())
    for prefix in prefixes:
        chosen = [p for name, p in parameters.items() if f"{name}.".startswith(f"{prefix}.")]
        if not chosen:
            parts = sorted({name.split(".")[0] for name in parameters})
            raise UserError(f"--model.freeze {prefix!r} names no parameter of the network; its parts: {parts}")
        for parameter in chosen:
            parameter.requires_grad_(False)


class TaskModule(L.LightningModule):
    """Builds ``net(num_outputs)`` on the data's input shape, checks that the loss fits the task,
    and runs one shared step for train/val/test. Subclasses give their metrics (``task_metrics``)
    and how outputs meet the loss and the metrics (``loss_inputs``, ``metric_inputs``)."""

    def __init__(
        self,
        net: NetFactory,
        num_outputs: int,
        input_shape: Sequence[int],
        task: str,
        loss: str | nn.Module | None,
        optimizer: OptimizerCallable,
        scheduler: LRSchedulerCallable | None,
        log_train_metrics: bool,
        init_weights: str | None,
        freeze: list[str] | None,
    ) -> None:
        super().__init__()
        self.task, self.log_train_metrics = task, log_train_metrics
        self.loss = build_loss(loss, task)
        self.optimizer, self.scheduler = optimizer, scheduler
        self.net = net(num_outputs=num_outputs)
        self.example_input_array = self.example_input(input_shape)
        try:  # lazy layers take their shapes here, before an optimizer or a summary sees them
            with torch.no_grad():
                self.net.eval()(*self.example_args())
        except (RuntimeError, ValueError, TypeError) as err:
            problem = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UserError(
                f"--model.net {type(self.net).__name__} cannot take this data's inputs, shaped "
                f"{tuple(input_shape)}: {problem}. Choose a network made for them."
            ) from err
        self.net.train()
        if init_weights is not None:
            load_weights(self.net, init_weights)
        freeze_parameters(self.net, freeze or [])
        for split in SPLITS:  # one mean loss and one metric collection per split
            setattr(self, f"{split}_loss", MeanMetric(nan_strategy="disable"))  # no NaN check: no device sync
            setattr(self, f"{split}_metrics", self.task_metrics().clone(prefix=f"{split}/"))

    def task_metrics(self) -> MetricCollection:
        raise NotImplementedError

    def example_input(self, input_shape: Sequence[int]) -> Any:
        return torch.zeros(2, *input_shape)  # two samples: BatchNorm needs more than one

    def example_args(self) -> tuple[torch.Tensor, ...]:
        return self.example_input_array if isinstance(self.example_input_array, tuple) else (self.example_input_array,)

    def loss_inputs(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return out, y

    def metric_inputs(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.loss_inputs(out, y)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.net(*inputs)

    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule
        if stage == "fit" and hasattr(datamodule, "train_targets"):
            targets = datamodule.train_targets()
            with torch.no_grad():
                out = self.net.eval()(*self.example_args())
            self.net.train()
            check_loss(self.loss, self.task, *self.loss_inputs(out, targets[: len(out)]), targets)

    def shared_step(self, batch: Any, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        *inputs, y = batch  # (x, y), or (x, lengths, y) for sequences
        out = self(*inputs)
        loss = self.loss(*self.loss_inputs(out, y))
        getattr(self, f"{split}_loss").update(
            loss.detach(), torch.full_like(loss.detach(), len(y))
        )  # weight on the device
        if split != "train" or self.log_train_metrics:
            getattr(self, f"{split}_metrics").update(*self.metric_inputs(out.detach(), y))
        if split == "train":
            self.log("train/loss", loss, prog_bar=True)  # this step's, this process's: no collective
        else:
            self.log_epoch(split)
        return loss, out.detach()

    def log_epoch(self, split: str) -> None:
        # Metric objects: Lightning computes them, an all-gather, on every rank at one point at the
        # epoch's end (after the callbacks that read metrics on rank 0 alone, e.g. the progress bar)
        name = "train/loss_epoch" if split == "train" else f"{split}/loss"
        self.log(name, getattr(self, f"{split}_loss"), on_step=False, on_epoch=True, prog_bar=split != "train")
        if split != "train" or self.log_train_metrics:
            self.log_dict(getattr(self, f"{split}_metrics"), on_step=False, on_epoch=True, prog_bar=True)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.shared_step(batch, "train")[0]

    def on_train_epoch_end(self) -> None:
        self.log_epoch("train")

    def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.shared_step(batch, "val")[1]  # the outputs, for callbacks (confusion matrix)

    def test_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.shared_step(batch, "test")[1]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        schedulers = checkpoint.get("lr_schedulers") or [{}]
        self.resumed_total_steps = schedulers[0].get("total_steps")  # a one-cycle schedule's length

    def configure_optimizers(self) -> Any:
        try:
            optimizer = self.optimizer([p for p in self.parameters() if p.requires_grad])
        except ValueError as err:  # torch checks the options: "Invalid learning rate: -0.1"
            raise UserError(f"--model.optimizer: {err}") from err
        if self.scheduler is None:
            return optimizer
        options = (self.hparams.get("scheduler") or {}).get("init_args", {})  # as the config gave them
        if options.get("total_steps", 0) is not None:
            scheduler = self.scheduler(optimizer)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss"}}
        # one-cycle: its length is the Trainer's, and it steps every batch
        total = int(self.trainer.estimated_stepping_batches)
        resumed = getattr(self, "resumed_total_steps", None)
        if resumed is not None and resumed != total:
            raise UserError(
                f"The checkpoint's one-cycle schedule spans {resumed} steps, this run {total}: a one-cycle "
                "schedule cannot be stretched. Keep the epochs and batches, or start a new run from these "
                "weights with --model.init_weights <checkpoint>."
            )
        scheduler = self.scheduler(optimizer, total_steps=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
