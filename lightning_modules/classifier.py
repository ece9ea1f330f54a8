"""Image/feature classification: multiclass (softmax over logits) or binary (one logit)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryAccuracy, MulticlassAccuracy

from lightning_modules.base import NetFactory, TaskModule


class Classifier(TaskModule):
    """Trains ``net`` to output logits; probabilities appear only in ``predict_step``.

    Args:
        net: the network class and its options (``num_outputs`` comes from the data).
        num_classes: classes in the data (linked from the datamodule).
        input_shape: shape of one input, e.g. (1, 28, 28) (linked from the datamodule).
        task: "multiclass" or "binary" (linked from the datamodule). A binary net has one logit.
        loss: a registry name (mse, mae, huber, log_mse, log_cosh, bce_with_logits,
            cross_entropy), a loss class path (torch.nn.HuberLoss), or None: the task's default.
        optimizer: optimizer class and options (SGD with momentum, Adam, RMSprop, Adagrad, ...).
        scheduler: optional LR scheduler; OneCycleLR gets its total_steps from the Trainer.
        tta_flip: outside training, average the logits of each image and its horizontal mirror
            (test-time augmentation; only for data whose labels survive a flip).
        log_train_metrics: update and log the metrics on training batches too (``train/acc``...);
            false logs the training loss alone (validation and test metrics are kept).
        init_weights: a ``model.pth`` or checkpoint whose network weights start this run (the
            optimizer and epoch start afresh); it must fit the network exactly.
        freeze: name prefixes of network parameters that stay fixed, e.g. [features].
    """

    monitor = ("val/acc", "max")

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
            raise ValueError(
                f"Classifier needs a classification datamodule, but the data's task is {task!r}; "
                "use Regressor for real-valued targets."
            )
        self.num_classes = num_classes
        self.tta_flip = tta_flip
        num_outputs = 1 if task == "binary" else num_classes
        super().__init__(
            net,
            num_outputs,
            input_shape,
            task,
            loss,
            optimizer,
            scheduler,
            log_train_metrics,
            init_weights=init_weights,
            freeze=freeze,
        )
        # A checkpoint holds its weights: rebuilding it must not need the file it started from.
        self.save_hyperparameters(ignore=["init_weights"])

    def forward(self, x: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:  # -> (B, outputs)
        out = self.net(x, *rest)
        if self.tta_flip and not self.training:  # x: (B, C, H, W), mirrored along W
            out = (out + self.net(x.flip(-1), *rest)) / 2
        return out

    def make_metrics(self) -> MetricCollection:
        if self.task == "binary":
            return MetricCollection({"acc": BinaryAccuracy(validate_args=False)})
        return MetricCollection(
            {"acc": MulticlassAccuracy(self.num_classes, average="micro", validate_args=False)}
        )

    def loss_inputs(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.task == "binary":  # (B, 1) logit vs (B,) label in {0, 1}
            return out.squeeze(-1), y.to(out.dtype)
        return out, y  # (B, C) logits vs (B,) class index

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
        # class probabilities (B, num_classes); the writer reports the class and the top k
        return {"probs": self.probabilities(self(*inputs)), "target": y}
