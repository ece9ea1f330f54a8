"""Loss registry: a name (or a class/instance) to an ``nn.Module``, checked against the task.

Add a loss: write the ``nn.Module`` here (or anywhere importable) and add one line to ``LOSSES``.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
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
    (a name of its own, so that a config's short class name ``CrossEntropyLoss`` stays torch's).

    Args:
        label_smoothing: mass spread uniformly over all classes.
        class_weights: one weight per class (None = equal weights).
    """

    def __init__(self, label_smoothing: float = 0.0, class_weights: Sequence[float] | None = None):
        weight = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float)
        super().__init__(weight=weight, label_smoothing=label_smoothing)


@dataclass(frozen=True)
class LossSpec:
    cls: type[nn.Module]
    tasks: tuple[str, ...]
    nonnegative_targets: bool = False  # the loss takes log(1 + y)


LOSSES: dict[str, LossSpec] = {
    "mse": LossSpec(nn.MSELoss, ("regression",)),
    "mae": LossSpec(nn.L1Loss, ("regression",)),
    "huber": LossSpec(nn.HuberLoss, ("regression",)),
    "log_mse": LossSpec(LogMSELoss, ("regression",), nonnegative_targets=True),
    "log_cosh": LossSpec(LogCoshLoss, ("regression",)),
    "bce_with_logits": LossSpec(nn.BCEWithLogitsLoss, ("binary",)),
    "cross_entropy": LossSpec(WeightedCrossEntropyLoss, ("multiclass",)),
}
DEFAULT_LOSS = {"multiclass": "cross_entropy", "binary": "bce_with_logits", "regression": "mse"}


def spec_of(loss: nn.Module) -> LossSpec | None:
    """The registry entry of a loss instance (None for a loss the registry does not know).

    Subclasses match their registry class, and torch's ``nn.CrossEntropyLoss`` matches the
    registry's subclass of it, so a loss given by class_path is checked against the task too.
    """
    kind = type(loss)
    matches = [spec for spec in LOSSES.values() if isinstance(loss, spec.cls)
               or (kind is not nn.Module and kind in spec.cls.__bases__)]
    return matches[0] if matches else None


def import_loss(class_path: str) -> nn.Module:
    """An instance, with default options, of the loss class at a dotted ``class_path``."""
    module_name, _, class_name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise ValueError(
            f"Cannot import loss class {class_path!r} ({err}). Give a registry name "
            f"({', '.join(sorted(LOSSES))}) or an importable class path such as torch.nn.HuberLoss."
        ) from err
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"{class_path} is not an nn.Module class, so it cannot be a loss.")
    return cls()


def build_loss(loss: str | nn.Module | None, task: str) -> nn.Module:
    """Build ``loss`` (a registry name, an instance, or None for the task's default) for ``task``.

    Raises ValueError for an unknown name (listing the valid ones) and for a loss that cannot
    fit the task (cross-entropy on real-valued targets, MSE on class labels, ...).
    """
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; expected one of {TASKS}")
    if loss is None:
        loss = DEFAULT_LOSS[task]
    if isinstance(loss, str) and "." in loss:  # a class path given as plain text
        loss = import_loss(loss)
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise ValueError(
                f"Unknown loss {loss!r}. Valid names: {', '.join(sorted(LOSSES))} "
                "(or give a class_path to any torch.nn.Module loss)."
            )
        loss = LOSSES[loss].cls()
    if not isinstance(loss, nn.Module):
        raise TypeError(f"A loss must be a registry name or an nn.Module, got {type(loss).__name__}")
    spec = spec_of(loss)
    if spec is not None and task not in spec.tasks:
        fitting = [name for name, s in LOSSES.items() if task in s.tasks]
        raise ValueError(
            f"Loss {type(loss).__name__} is for {'/'.join(spec.tasks)} targets, but the data is a "
            f"{task} task. Losses that fit a {task} task: {', '.join(fitting)}."
        )
    return loss


def check_targets(loss: nn.Module, targets: torch.Tensor) -> None:
    """Fail before training when the data's targets are outside what ``loss`` accepts."""
    spec = spec_of(loss)
    if spec is not None and spec.nonnegative_targets and bool((targets < 0).any()):
        raise ValueError(
            f"{type(loss).__name__} takes log(1 + y) and needs targets >= 0, but the training "
            f"targets reach {float(targets.min()):.4g}. Use mse, mae, huber or log_cosh instead."
        )
