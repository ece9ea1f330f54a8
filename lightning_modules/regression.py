"""Regression on real-valued targets, with an optional hand-written SGD update (the seed notes')."""

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

    With ``manual_update`` the step is written out as in the seed notes: backward, then
    ``p -= lr * p.grad`` under ``torch.no_grad()`` (Lightning manual optimization). It reads ``lr``
    from the configured optimizer, which must then be plain SGD, so both paths do the same update.

    Args:
        net: the network class and its options (``num_outputs`` is 1).
        input_shape: shape of one input, e.g. (3,) for [x, x^2, x^3] (linked from the datamodule).
        task: must be "regression" (linked from the datamodule).
        loss: registry name or loss module; None picks mse.
        optimizer: optimizer class and options.
        scheduler: optional LR scheduler.
        manual_update: write the SGD update out by hand instead of calling ``optimizer.step()``.
        log_train_metrics: update and log the metrics on training batches too (``train/mae``,
            ``train/mse``). False leaves training with its loss alone (validation and test
            metrics are kept).
    """

    def __init__(
        self,
        net: NetFactory,
        input_shape: Sequence[int] = (3,),
        task: str = "regression",
        loss: str | nn.Module | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
        manual_update: bool = False,
        log_train_metrics: bool = True,
    ) -> None:
        if task != "regression":
            raise ValueError(
                f"Regressor needs real-valued targets, but the data's task is {task!r}; "
                "use Classifier for class labels."
            )
        if manual_update and scheduler is not None:
            raise ValueError("manual_update writes out a constant-lr SGD step: remove the scheduler.")
        super().__init__(net, 1, input_shape, task, loss, optimizer, scheduler,
                         log_train_metrics)
        self.manual_update = manual_update
        self.automatic_optimization = not manual_update
        # The CLI links num_classes into every model; a regressor takes none, and a checkpoint that
        # recorded it would fail to rebuild the model (validate/test/predict --ckpt_path).
        self.save_hyperparameters(ignore=["num_classes"])

    def make_metrics(self) -> MetricCollection:
        return MetricCollection({"mae": MeanAbsoluteError(), "mse": MeanSquaredError()})

    def loss_inputs(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return out.squeeze(-1), y.to(out.dtype)  # (B, 1) -> (B,) against (B,)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self.shared_step(batch, "train")
        if self.manual_update:
            self._sgd_by_hand(loss)
        return loss

    def configure_optimizers(self) -> Any:
        config = super().configure_optimizers()
        if self.manual_update:  # checked here, so a wrong setup fails before the first step
            optimizer = config["optimizer"] if isinstance(config, dict) else config
            plain = isinstance(optimizer, torch.optim.SGD) and not any(
                g["momentum"] or g["weight_decay"] or g["maximize"] for g in optimizer.param_groups
            )
            if not plain:
                raise ValueError(
                    "manual_update writes out plain SGD (p -= lr * grad), but the optimizer is "
                    f"{type(optimizer).__name__} {optimizer.defaults}: configure "
                    "torch.optim.SGD without momentum or weight decay, or set manual_update false."
                )
            if self.trainer.precision == "16-mixed":
                raise ValueError(
                    "manual_update reads the gradients unscaled: use 32-true or bf16 precision."
                )
        return config

    def _sgd_by_hand(self, loss: torch.Tensor) -> None:
        optimizer = self.optimizers()
        self.manual_backward(loss)
        with torch.no_grad():  # the update itself must not be recorded by autograd
            for group in optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        p -= group["lr"] * p.grad  # what SGD(lr) does without momentum
                        p.grad = None
        # Lightning counts steps (global_step, checkpoint saving, max_steps) in optimizer.step()
        # calls. With every gradient cleared above, plain SGD's step changes no parameter.
        optimizer.step()

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        *inputs, y = batch
        return {"pred": self(*inputs).squeeze(-1), "target": y}
