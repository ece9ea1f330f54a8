"""Regression on real-valued targets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection

from lightning_modules.base import NetFactory, TaskModule
from run.errors import UserError


class Regressor(TaskModule):
    """Fits ``net`` (one output) to scalar targets.

    Args:
        net: the network class and its options.
        input_shape: shape of one input, e.g. (3,) for [x, x^2, x^3] (linked from the datamodule).
        task: "regression" (linked from the datamodule).
        loss: a registry name (mse, mae, huber, log_mse, log_cosh), a loss class_path, or None (mse).
        optimizer: optimizer class and options (``lightning_modules.optim.PlainSGD`` writes the
            update out by hand).
        scheduler: optional LR scheduler.
        log_train_metrics: also compute the metrics on training batches (``train/mae``, ``train/mse``).
        init_weights: a state_dict or checkpoint file whose network weights start this run.
        freeze: name prefixes of network parameters that stay fixed.
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
            raise UserError(f"Regressor needs real-valued targets, but the data's task is {task!r}: use Classifier.")
        super().__init__(net, 1, input_shape, task, loss, optimizer, scheduler, log_train_metrics, init_weights, freeze)
        # the CLI links num_classes into every model: a regressor takes none
        self.save_hyperparameters(ignore=["num_classes", "init_weights"], logger=False)

    def task_metrics(self) -> MetricCollection:
        return MetricCollection({"mae": MeanAbsoluteError(), "mse": MeanSquaredError()})

    def loss_inputs(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return out.squeeze(-1), y.to(out.dtype)  # (B, 1) -> (B,) against (B,)

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        *inputs, y = batch
        return {"pred": self(*inputs).squeeze(-1), "target": y}
