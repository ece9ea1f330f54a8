"""Loss registry: a name (or a class/instance) to an ``nn.Module``, checked against the task.

Add a loss: write the ``nn.Module`` here (or anywhere importable), add its name to ``LOSSES`` and
the task it fits to ``TASK_OF``.
"""

from __future__ import annotations

import difflib
import importlib
import math
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from jsonargparse.typing import ClosedUnitInterval
from torch import nn

TASKS = ("multiclass", "binary", "regression")


class LogMSELoss(nn.Module):
    """Mean squared logarithmic error, ``mean((log(1 + y_hat) - log(1 + y))^2)``, for y >= 0.

    Predictions below zero are clamped to zero (as Keras' MSLE does), so the log stays finite.
    """

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(torch.log1p(pred.clamp_min(0)), torch.log1p(target.clamp_min(0)))


class LogCoshLoss(nn.Module):
    """``mean(log(cosh(y_hat - y)))``: ~x^2/2 near zero, ~|x| - log 2 far away.

    Written as ``x + softplus(-2x) - log 2`` so that cosh never overflows: the gradient is
    ``tanh(x)``, finite for any input.
    """

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x = pred - target
        return (x + F.softplus(-2.0 * x) - math.log(2.0)).mean()


class WeightedCrossEntropyLoss(nn.CrossEntropyLoss):
    """``nn.CrossEntropyLoss`` on logits, with class weights given as a plain list for configs
    (torch's ``weight`` is a tensor, which a YAML file cannot hold).

    Args:
        label_smoothing: mass spread uniformly over all classes.
        class_weights: one weight per class (None = equal weights).
    """

    def __init__(
        self, label_smoothing: ClosedUnitInterval = 0.0, class_weights: Sequence[float] | None = None
    ) -> None:
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
# The task each known loss fits, matched with isinstance (so torch's CrossEntropyLoss given by
# class_path counts as the registry's cross_entropy).
TASK_OF: dict[type[nn.Module], str] = {
    nn.MSELoss: "regression",
    nn.L1Loss: "regression",
    nn.HuberLoss: "regression",
    nn.SmoothL1Loss: "regression",
    LogMSELoss: "regression",
    LogCoshLoss: "regression",
    nn.BCEWithLogitsLoss: "binary",
    nn.CrossEntropyLoss: "multiclass",
}
NONNEGATIVE_TARGETS = (LogMSELoss,)  # losses that take log(1 + y)
DEFAULT_LOSS = {"multiclass": "cross_entropy", "binary": "bce_with_logits", "regression": "mse"}


def task_of(loss: nn.Module) -> str | None:
    """The task a known loss fits; None for a loss this module does not know."""
    return next((task for cls, task in TASK_OF.items() if isinstance(loss, cls)), None)


def names_for(task: str) -> list[str]:
    """The registry names of the losses that fit ``task``."""
    return [name for name, cls in LOSSES.items() if task_of(cls()) == task]


def import_loss(class_path: str) -> nn.Module:
    """An instance, with default options, of the loss class at a dotted ``class_path``."""
    module_name, _, class_name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise ValueError(
            f"Cannot import loss class {class_path!r} ({err}). Give a registry name "
            f"({', '.join(LOSSES)}) or an importable class path such as torch.nn.HuberLoss."
        ) from err
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f"{class_path} is not an nn.Module class, so it cannot be a loss.")
    return cls()


def build_loss(loss: str | nn.Module | None, task: str) -> nn.Module:
    """Build ``loss`` (a registry name, a class path, an instance, or None for the task's
    default) for ``task``.

    Raises ValueError for an unknown name (listing the valid ones and the closest) and for a
    known loss that cannot fit the task (cross-entropy on real-valued targets, MSE on labels, ...).
    """
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; expected one of {TASKS}")
    if loss is None:
        loss = DEFAULT_LOSS[task]
    if isinstance(loss, str) and "." in loss:  # a class path given as plain text
        loss = import_loss(loss)
    if isinstance(loss, str):
        if loss not in LOSSES:
            close = difflib.get_close_matches(loss, LOSSES, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"Unknown loss {loss!r}.{hint} Valid names: {', '.join(LOSSES)} "
                "(or a class_path to any torch.nn.Module loss)."
            )
        loss = LOSSES[loss]()
    if not isinstance(loss, nn.Module):
        raise ValueError(f"A loss must be a registry name or an nn.Module, got {type(loss).__name__}")
    fits = task_of(loss)
    if fits is not None and fits != task:
        raise ValueError(
            f"Loss {type(loss).__name__} is for {fits} targets, but the data is a {task} task. "
            f"Losses that fit a {task} task: {', '.join(names_for(task))}."
        )
    return loss


def check_loss(
    loss: nn.Module, task: str, pred: torch.Tensor, target: torch.Tensor, train_targets: torch.Tensor
) -> None:
    """Fail before training when ``loss`` cannot take the data: a log loss on negative targets,
    or a loss this module does not know that fails, broadcasts or returns no finite number on
    one example (``pred``, ``target``) shaped as the model will feed it."""
    if isinstance(loss, NONNEGATIVE_TARGETS) and bool((train_targets < 0).any()):
        raise ValueError(
            f"{type(loss).__name__} takes log(1 + y) and needs targets >= 0, but the training "
            f"targets reach {float(train_targets.min()):.4g}. Use mse, mae, huber or log_cosh."
        )
    if task_of(loss) is not None:
        return
    shapes = f"prediction {tuple(pred.shape)} {pred.dtype}, target {tuple(target.shape)} {target.dtype}"
    try:
        with warnings.catch_warnings():
            # torch only warns when an elementwise loss broadcasts (B, C) against (B,)
            warnings.filterwarnings("error", message=".*target size.*different to the input size")
            value = loss(pred, target)
        problem = None if value.numel() == 1 and torch.isfinite(value) else f"gave {value}"
    except (RuntimeError, ValueError, TypeError, IndexError, UserWarning) as err:
        problem = str(err).strip().splitlines()[0]
    if problem is not None:
        raise ValueError(
            f"Loss {type(loss).__name__} does not fit this {task} task: on one example batch "
            f"({shapes}) it {problem if problem.startswith('gave') else 'failed: ' + problem}. "
            f"Losses that fit a {task} task: {', '.join(names_for(task))}."
        )
