"""Regression on real-valued targets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection

from lightning_modules.base import NetFactory, TaskModule


class Regressor(TaskModule):
    """Fits ``net`` to scalar targets.

    Args:
        net: the network class and its options (``num_outputs`` is 1).
        input_shape: shape of one input, e.g. (3,) for [x, x^2, x^3] (linked from the datamodule).
        task: must be "regression" (linked from the datamodule).
        loss: a registry name (mse, mae, huber, log_mse, log_cosh, bce_with_logits,
            cross_entropy), a loss class path (torch.nn.HuberLoss), or None: the task's default.
        optimizer: optimizer class and options (``lightning_modules.optim.PlainSGD`` writes the
            update out by hand).
        scheduler: optional LR scheduler.
        log_train_metrics: update and log the metrics on training batches too (``train/mae``,
            ``train/mse``); false logs the training loss alone.
        init_weights: a ``model.pth`` or checkpoint whose network weights start this run (the
            optimizer and epoch start afresh); it must fit the network exactly.
        freeze: name prefixes of network parameters that stay fixed, e.g. [linear].
    """

    def __init__(
        self,
        net: NetFactory,
        input_shape: Sequence[int] = (3,),
        task: str = "regression",
        loss: str | nn.Module | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
        log_train_metrics: bool = True,
        init_weights: str | None = None,
        freeze: list[str] | None = None,
    ) -> None:
        if task != "regression":
            raise ValueError(
                f"Regressor needs real-valued targets, but the data's task is {task!r}; "
                "use Classifier for class labels."
            )
        super().__init__(
            net,
            1,
            input_shape,
            task,
            loss,
            optimizer,
            scheduler,
            log_train_metrics,
            init_weights=init_weights,
            freeze=freeze,
        )
        # The CLI links num_classes into every model; a regressor takes none, and a checkpoint that
        # recorded it would fail to rebuild the model (validate/test/predict --ckpt_path). A
        # checkpoint holds its weights: rebuilding it must not need the file it started from.
        self.save_hyperparameters(ignore=["num_classes", "init_weights"])

    def make_metrics(self) -> MetricCollection:
        return MetricCollection({"mae": MeanAbsoluteError(), "mse": MeanSquaredError()})

    def loss_inputs(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return out.squeeze(-1), y.to(out.dtype)  # (B, 1) -> (B,) against (B,)

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        *inputs, y = batch
        return {"pred": self(*inputs).squeeze(-1), "target": y}
