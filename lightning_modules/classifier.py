"""Classification: multiclass (softmax over logits) or binary (one logit)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryAccuracy, MulticlassAccuracy

from lightning_modules.base import NetFactory, TaskModule
from run.errors import UserError


class Classifier(TaskModule):
    """Trains ``net`` to output logits; probabilities appear only in ``predict_step``.

    Args:
        net: the network class and its options (``num_outputs`` comes from the data).
        num_classes: classes in the data (linked from the datamodule).
        input_shape: shape of one input, e.g. (1, 28, 28) (linked from the datamodule).
        task: "multiclass" or "binary" (linked from the datamodule); a binary net has one logit.
        loss: a registry name (cross_entropy, bce_with_logits, ...), a loss class_path, or None
            for the task's default.
        optimizer: optimizer class and options (SGD with momentum, Adam, RMSprop, Adagrad, ...).
        scheduler: optional LR scheduler; OneCycleLR gets its total_steps from the Trainer.
        tta_flip: outside training, average the logits of each image and its mirror image.
        log_train_metrics: also compute the metrics on training batches (``train/acc``).
        init_weights: a state_dict or checkpoint file whose network weights start this run.
        freeze: name prefixes of network parameters that stay fixed, e.g. [features].
    """

    def __init__(
        self,
        net: NetFactory,
        num_classes: int = 10,
        input_shape: Sequence[int] = (1, 28, 28),
        task: str = "multiclass",
        loss: str | nn.Module | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
        tta_flip: bool = False,
        log_train_metrics: bool = True,
        init_weights: str | None = None,
        freeze: list[str] | None = None,
    ) -> None:
        if task not in ("multiclass", "binary"):
            raise UserError(f"Classifier needs class labels, but the data's task is {task!r}: use Regressor.")
        if num_classes < 2:
            raise UserError(f"The data has {num_classes} class: a classifier needs at least 2.")
        self.num_classes, self.tta_flip = num_classes, tta_flip
        num_outputs = 1 if task == "binary" else num_classes
        super().__init__(
            net, num_outputs, input_shape, task, loss, optimizer, scheduler, log_train_metrics, init_weights, freeze
        )
        # the CLI logs the whole config once; a checkpoint must rebuild without the weights file
        self.save_hyperparameters(ignore=["init_weights"], logger=False)

    def forward(self, x: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:  # -> (B, outputs)
        out = self.net(x, *rest)
        if self.tta_flip and not self.training:  # x (B, C, H, W), mirrored along W
            out = (out + self.net(x.flip(-1), *rest)) / 2
        return out

    def task_metrics(self) -> MetricCollection:
        if self.task == "binary":
            return MetricCollection({"acc": BinaryAccuracy(validate_args=False)})
        return MetricCollection({"acc": MulticlassAccuracy(self.num_classes, average="micro", validate_args=False)})

    def loss_inputs(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.task == "binary":  # (B, 1) logit against a (B,) label in {0, 1}
            return out.squeeze(-1), y.to(out.dtype)
        return out, y  # (B, C) logits against (B,) class indices

    def metric_inputs(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.task == "binary":  # hard labels: no data-dependent sigmoid check in the metric
            return (out.squeeze(-1) > 0).long(), y.long()
        return out, y

    def probabilities(self, out: torch.Tensor) -> torch.Tensor:  # (B, num_classes)
        if self.task == "binary":
            p1 = torch.sigmoid(out.float())  # (B, 1)
            return torch.cat([1 - p1, p1], dim=1)
        return torch.softmax(out.float(), dim=1)

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        *inputs, y = batch
        return {"probs": self.probabilities(self(*inputs)), "target": y}
