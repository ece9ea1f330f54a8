"""Every registered loss against its formula, stable at large inputs, checked against the task."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.losses import DEFAULT_LOSS, LOSSES, TASKS, build_loss, check_loss, task_of


def sample(task: str, scale: float = 3.0, n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(prediction, target) as a model of ``task`` feeds its loss; float64 for exact references."""
    g = torch.Generator().manual_seed(0)
    f64 = torch.float64
    if task == "multiclass":  # (N, C) logits, (N,) class index
        labels = torch.randint(0, 5, (n,), generator=g)
        return scale * torch.randn(n, 5, generator=g, dtype=f64), labels
    if task == "binary":  # (N,) logit, (N,) label in {0, 1}
        labels = torch.randint(0, 2, (n,), generator=g).to(f64)
        return scale * torch.randn(n, generator=g, dtype=f64), labels
    # regression, positive on both sides so that log_mse applies too
    pred = scale * torch.rand(n, generator=g, dtype=f64)
    return pred, scale * torch.rand(n, generator=g, dtype=f64)


def huber(d: torch.Tensor, delta: float = 1.0) -> torch.Tensor:
    return torch.where(d.abs() <= delta, 0.5 * d**2, delta * (d.abs() - 0.5 * delta)).mean()


# The textbook formulas, written out plainly (no stabilizing tricks): the reference.
FORMULAS = {
    "mse": lambda p, y: ((p - y) ** 2).mean(),
    "mae": lambda p, y: (p - y).abs().mean(),
    "huber": lambda p, y: huber(p - y),
    "log_mse": lambda p, y: ((torch.log(1 + p) - torch.log(1 + y)) ** 2).mean(),
    "log_cosh": lambda p, y: torch.log(torch.cosh(p - y)).mean(),
    "bce_with_logits": lambda z, y: (
        -(y * torch.log(torch.sigmoid(z)) + (1 - y) * torch.log(1 - torch.sigmoid(z))).mean()
    ),
    "cross_entropy": lambda z, y: -torch.log(torch.softmax(z, 1)[torch.arange(len(y)), y]).mean(),
}


def test_every_registered_loss_has_a_reference_formula() -> None:
    assert set(FORMULAS) == set(LOSSES)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_matches_formula(name: str) -> None:
    task = task_of(LOSSES[name]())
    loss = build_loss(name, task)
    assert isinstance(loss, nn.Module)
    pred, target = sample(task)
    assert loss(pred, target).item() == pytest.approx(FORMULAS[name](pred, target).item(), rel=1e-9)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_and_gradient_finite_at_large_inputs(name: str) -> None:
    task = task_of(LOSSES[name]())
    pred, target = sample(task, scale=1e4)  # cosh(1e4) and exp(1e4) overflow if computed naively
    pred = pred.float().requires_grad_()
    value = build_loss(name, task)(pred, target.float() if target.is_floating_point() else target)
    value.backward()
    assert torch.isfinite(value)
    assert torch.isfinite(pred.grad).all()
    assert pred.grad.abs().sum() > 0  # a gradient that still teaches something


def test_log_cosh_is_stable_where_the_formula_overflows() -> None:
    pred = torch.tensor([1000.0, -1000.0, 0.0])
    expected = (2 * (1000 - math.log(2)) + 0.0) / 3  # log(cosh(x)) = |x| - log 2 for large |x|
    value = build_loss("log_cosh", "regression")(pred, torch.zeros(3))
    assert value.item() == pytest.approx(expected)


def test_huber_delta_by_class_path() -> None:
    pred, target = sample("regression", scale=5.0)
    loss = build_loss("torch.nn.HuberLoss", "regression")
    assert isinstance(loss, nn.HuberLoss)
    wide = build_loss(nn.HuberLoss(delta=2.5), "regression")
    assert wide(pred, target).item() == pytest.approx(huber(pred - target, 2.5).item(), rel=1e-9)


def test_cross_entropy_label_smoothing_and_class_weights() -> None:
    cls = LOSSES["cross_entropy"]
    logits, y = sample("multiclass")
    log_p = torch.log_softmax(logits, 1)  # (N, C)
    eps, classes = 0.1, logits.shape[1]
    q = (1 - eps) * F.one_hot(y, classes) + eps / classes  # smoothed targets, (N, C)
    smoothed = cls(label_smoothing=eps)(logits, y)
    assert smoothed.item() == pytest.approx(-(q * log_p).sum(1).mean().item(), rel=1e-6)
    w = torch.tensor([1.0, 2.0, 0.5, 3.0, 1.0], dtype=torch.float64)
    weighted = cls(class_weights=w.tolist()).double()(logits, y)
    expected = -(w[y] * log_p[torch.arange(len(y)), y]).sum() / w[y].sum()
    assert weighted.item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("task", TASKS)
def test_task_defaults(task: str) -> None:
    expected = {"regression": nn.MSELoss, "binary": nn.BCEWithLogitsLoss, "multiclass": nn.CrossEntropyLoss}
    assert DEFAULT_LOSS[task] in LOSSES
    assert isinstance(build_loss(None, task), expected[task])


def test_every_loss_refuses_the_tasks_it_cannot_fit() -> None:
    for name, cls in LOSSES.items():
        for task in set(TASKS) - {task_of(cls())}:
            with pytest.raises(ValueError, match=f"{task} task. Losses that fit a {task} task: "):
                build_loss(name, task)


def test_losses_given_as_classes_are_checked_too() -> None:
    with pytest.raises(ValueError, match="regression task"):
        build_loss(nn.CrossEntropyLoss(), "regression")  # torch's class, not the registry's
    with pytest.raises(ValueError, match="multiclass task"):
        build_loss("torch.nn.HuberLoss", "multiclass")


def test_unknown_name_lists_the_valid_ones_and_the_closest() -> None:
    with pytest.raises(ValueError, match="Unknown loss 'label_smoothing_ce'") as info:
        build_loss("label_smoothing_ce", "multiclass")
    assert all(name in str(info.value) for name in LOSSES)
    with pytest.raises(ValueError, match="Did you mean 'cross_entropy'"):
        build_loss("cross_entropie", "multiclass")
    with pytest.raises(ValueError, match="Cannot import loss class 'torch.nn.NoSuchLoss'"):
        build_loss("torch.nn.NoSuchLoss", "regression")


def test_log_mse_needs_nonnegative_targets() -> None:
    loss = build_loss("log_mse", "regression")
    pred, target = torch.zeros(2), torch.zeros(2)
    check_loss(loss, "regression", pred, target, torch.tensor([0.0, 2.0, 5.0]))
    with pytest.raises(ValueError, match="needs targets >= 0, but the training targets reach -1"):
        check_loss(loss, "regression", pred, target, torch.tensor([0.0, -1.0, 5.0]))
    check_loss(build_loss("mse", "regression"), "regression", pred, target, torch.tensor([-1.0]))


class Unknown(nn.Module):
    """A loss the registry does not know: checked on an example batch instead."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (pred - target).abs().mean()


def test_unknown_losses_are_tried_on_an_example_batch() -> None:
    logits, labels = torch.zeros(10, 10), torch.arange(10)  # a classifier's output and target
    # BCELoss would broadcast (10, 10) against (10,) (torch warns); GaussianNLLLoss needs a var
    for loss in (nn.BCELoss(), nn.GaussianNLLLoss()):
        with pytest.raises(ValueError, match=r"on one example batch \(prediction \(10, 10\)"):
            check_loss(loss, "multiclass", logits, labels, labels)
    with pytest.raises(ValueError, match="is for regression targets"):  # known to be regression
        build_loss(nn.SmoothL1Loss(), "multiclass")
    check_loss(Unknown(), "regression", torch.zeros(4), torch.ones(4), torch.ones(4))  # fits


def test_the_models_help_lists_every_registered_name() -> None:
    from lightning_modules import Classifier, Regressor

    for model in (Classifier, Regressor):
        assert all(name in model.__doc__ for name in LOSSES), model.__name__
