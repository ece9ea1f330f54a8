"""Loss registry: a name (or a loss instance) to an ``nn.Module``, checked against the task. A new
loss: its ``nn.Module`` here (or anywhere importable), its name in ``LOSSES``, its task in ``TASK_OF``."""

from __future__ import annotations

import difflib
import math
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from jsonargparse.typing import ClosedUnitInterval
from torch import nn

from run.errors import UserError


class LogMSELoss(nn.Module):
    """``mean((log(1 + y_hat) - log(1 + y))^2)`` for y >= 0; negative predictions clamp to 0."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(torch.log1p(pred.clamp_min(0)), torch.log1p(target.clamp_min(0)))


class LogCoshLoss(nn.Module):
    """``mean(log(cosh(y_hat - y)))``, as ``x + softplus(-2x) - log 2``: cosh never overflows."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x = pred - target
        return (x + F.softplus(-2.0 * x) - math.log(2.0)).mean()


class WeightedCrossEntropyLoss(nn.CrossEntropyLoss):
    """Cross-entropy on logits with class weights as a list (a YAML file cannot hold a tensor).

    Args:
        label_smoothing: mass spread uniformly over all classes.
        class_weights: one weight per class (None: equal weights).
    """

    def __init__(self, label_smoothing: ClosedUnitInterval = 0.0, class_weights: Sequence[float] | None = None) -> None:
        weight = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float)
        super().__init__(weight=weight, label_smoothing=label_smoothing)


LOSSES: dict[str, type[nn.Module]] = {
    "mse": nn.MSELoss,
    "mae": nn.L1Loss,
    "huber": nn.HuberLoss,
    "log_mse": LogMSELoss,
    "log_cosh": LogCoshLoss,
    "bce_with_logits": nn.BCEWithLogitsLoss,
    "cross_entropy": WeightedCrossEntropyLoss,
}
TASK_OF: dict[type[nn.Module], str] = {  # matched with isinstance: torch's CrossEntropyLoss counts too
    nn.MSELoss: "regression",
    nn.L1Loss: "regression",
    nn.HuberLoss: "regression",
    nn.SmoothL1Loss: "regression",
    LogMSELoss: "regression",
    LogCoshLoss: "regression",
    nn.BCEWithLogitsLoss: "binary",
    nn.CrossEntropyLoss: "multiclass",
}
DEFAULT_LOSS = {"multiclass": "cross_entropy", "binary": "bce_with_logits", "regression": "mse"}


def task_of(loss: nn.Module) -> str | None:
    return next((task for cls, task in TASK_OF.items() if isinstance(loss, cls)), None)


def names_for(task: str) -> str:
    return ", ".join(name for name, cls in LOSSES.items() if task_of(cls()) == task)


def build_loss(loss: str | nn.Module | None, task: str) -> nn.Module:
    """A registry name, a loss instance, or None (the task's default), checked against ``task``."""
    if loss is None:
        loss = DEFAULT_LOSS[task]
    if isinstance(loss, str):
        if loss not in LOSSES:
            close = difflib.get_close_matches(loss, LOSSES, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UserError(
                f"--model.loss: unknown loss {loss!r}.{hint} Known: {', '.join(LOSSES)}, "
                "or a class_path of any torch.nn.Module loss."
            )
        loss = LOSSES[loss]()
    fits = task_of(loss)
    if fits is not None and fits != task:
        raise UserError(
            f"--model.loss: {type(loss).__name__} is for {fits} targets, but the data is a {task} "
            f"task. Losses for a {task} task: {names_for(task)}."
        )
    return loss


def check_loss(loss: nn.Module, task: str, pred: torch.Tensor, target: torch.Tensor, targets: torch.Tensor) -> None:
    """Before training: a log loss needs targets >= 0, and a loss the registry does not know must
    give one finite number on an example batch shaped as the model will feed it."""
    if isinstance(loss, LogMSELoss) and bool((targets < 0).any()):
        raise UserError(
            f"--model.loss log_mse takes log(1 + y), but the targets reach "
            f"{float(targets.min()):.4g}. Use mse, mae, huber or log_cosh."
        )
    if task_of(loss) is not None:
        return
    try:
        with warnings.catch_warnings():  # torch only warns when an elementwise loss broadcasts
            warnings.filterwarnings("error", message=".*target size.*different to the input size")
            value = loss(pred, target)
        problem = None if value.numel() == 1 and torch.isfinite(value) else f"gave {value}"
    except (RuntimeError, ValueError, TypeError, IndexError, UserWarning) as err:
        problem = f"failed: {str(err).strip().splitlines()[0]}"
    if problem is not None:
        raise UserError(
            f"--model.loss {type(loss).__name__} does not fit this {task} task: on an example "
            f"batch (prediction {tuple(pred.shape)}, target {tuple(target.shape)}) it {problem}. "
            f"Losses for a {task} task: {names_for(task)}."
        )
