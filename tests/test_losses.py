"""Every registered loss against its formula, stable at large inputs, and checked against the task."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.losses import DEFAULT_LOSS, LOSSES, build_loss, check_loss, task_of
from run.errors import UserError

TASKS = ("regression", "binary", "multiclass")


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
    # regression, nonnegative on both sides so that log_mse applies too
    return scale * torch.rand(n, generator=g, dtype=f64), scale * torch.rand(n, generator=g, dtype=f64)


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
    """A loss added to the registry needs its formula here too."""
    assert set(FORMULAS) == set(LOSSES)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_matches_formula(name: str) -> None:
    """Each registry name builds a module that computes its textbook formula."""
    task = task_of(LOSSES[name]())
    loss = build_loss(name, task)
    assert isinstance(loss, nn.Module)
    pred, target = sample(task)
    assert loss(pred, target).item() == pytest.approx(FORMULAS[name](pred, target).item(), rel=1e-9)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_and_gradient_finite_at_large_inputs(name: str) -> None:
    """No overflow where the plain formula would (cosh(1e4), exp(1e4)), and a gradient that still teaches."""
    task = task_of(LOSSES[name]())
    pred, target = sample(task, scale=1e4)
    pred = pred.float().requires_grad_()
    value = build_loss(name, task)(pred, target.float() if target.is_floating_point() else target)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(pred.grad).all()
    assert pred.grad.abs().sum() > 0


def test_log_cosh_is_stable_where_the_formula_overflows() -> None:
    """log(cosh(x)) = |x| - log 2 for large |x|."""
    value = build_loss("log_cosh", "regression")(torch.tensor([1000.0, -1000.0, 0.0]), torch.zeros(3))
    assert value.item() == pytest.approx(2 * (1000 - math.log(2)) / 3)


def test_cross_entropy_label_smoothing_and_class_weights() -> None:
    """label_smoothing spreads eps over the classes; class_weights weigh each sample by its class."""
    cls = LOSSES["cross_entropy"]
    logits, y = sample("multiclass")
    log_p = torch.log_softmax(logits, 1)  # (N, C)
    eps, classes = 0.1, logits.shape[1]
    q = (1 - eps) * F.one_hot(y, classes) + eps / classes  # smoothed targets, (N, C)
    assert cls(label_smoothing=eps)(logits, y).item() == pytest.approx(-(q * log_p).sum(1).mean().item(), rel=1e-6)
    w = torch.tensor([1.0, 2.0, 0.5, 3.0, 1.0], dtype=torch.float64)
    weighted = cls(class_weights=w.tolist()).double()(logits, y)
    expected = -(w[y] * log_p[torch.arange(len(y)), y]).sum() / w[y].sum()
    assert weighted.item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("task", TASKS)
def test_task_defaults(task: str) -> None:
    """No loss given: MSE for regression, BCE with logits for binary, cross-entropy for classes."""
    expected = {"regression": nn.MSELoss, "binary": nn.BCEWithLogitsLoss, "multiclass": nn.CrossEntropyLoss}
    assert DEFAULT_LOSS[task] in LOSSES
    assert isinstance(build_loss(None, task), expected[task])


def test_every_loss_refuses_the_tasks_it_cannot_fit() -> None:
    """A registry loss on another task is a UserError that lists the losses that fit that task."""
    for name, cls in LOSSES.items():
        for task in set(TASKS) - {task_of(cls())}:
            fitting = [n for n, c in LOSSES.items() if task_of(c()) == task]
            with pytest.raises(UserError, match=f"{task} task. Losses for a {task} task: ") as info:
                build_loss(name, task)
            assert all(n in str(info.value) for n in fitting)


def test_torch_losses_given_as_instances_are_checked_too() -> None:
    """torch's own classes are matched by isinstance: CrossEntropyLoss is no regression loss."""
    with pytest.raises(UserError, match="CrossEntropyLoss is for multiclass targets.*regression task"):
        build_loss(nn.CrossEntropyLoss(), "regression")
    with pytest.raises(UserError, match="SmoothL1Loss is for regression targets"):
        build_loss(nn.SmoothL1Loss(), "multiclass")
    wide = build_loss(nn.HuberLoss(delta=2.5), "regression")
    pred, target = sample("regression", scale=5.0)
    assert wide(pred, target).item() == pytest.approx(huber(pred - target, 2.5).item(), rel=1e-9)


def test_unknown_name_lists_the_valid_ones_and_the_closest() -> None:
    """An unknown name is a UserError naming every valid loss, and the closest one."""
    with pytest.raises(UserError, match="unknown loss 'label_smoothing_ce'") as info:
        build_loss("label_smoothing_ce", "multiclass")
    assert all(name in str(info.value) for name in LOSSES)
    with pytest.raises(UserError, match="Did you mean 'cross_entropy'"):
        build_loss("cross_entropie", "multiclass")


def test_log_mse_refuses_negative_targets() -> None:
    """log(1 + y) needs y >= 0: check_loss stops before training and names the other losses."""
    loss = build_loss("log_mse", "regression")
    pred, target = torch.zeros(2), torch.zeros(2)
    check_loss(loss, "regression", pred, target, torch.tensor([0.0, 2.0, 5.0]))
    with pytest.raises(UserError, match="targets reach -1.*Use mse"):
        check_loss(loss, "regression", pred, target, torch.tensor([0.0, -1.0, 5.0]))


def test_unknown_losses_are_tried_on_an_example_batch() -> None:
    """A loss the registry does not know must give one finite number on a batch shaped as the model feeds it."""

    class Unknown(nn.Module):
        def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return ((pred - target) ** 4).mean()

    logits, labels = torch.zeros(10, 10), torch.arange(10)  # a classifier's output and target
    # BCELoss would broadcast (10, 10) against (10,) (torch only warns); GaussianNLLLoss needs a variance
    for loss in (nn.BCELoss(), nn.GaussianNLLLoss()):
        with pytest.raises(UserError, match=r"on an example batch \(prediction \(10, 10\), target \(10,\)\)") as info:
            check_loss(loss, "multiclass", logits, labels, labels)
        assert "cross_entropy" in str(info.value)

    class PerSample(nn.Module):
        def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return (pred - target).abs()

    with pytest.raises(UserError, match="it gave tensor"):  # a loss per sample, not one number
        check_loss(PerSample(), "regression", torch.zeros(3), torch.ones(3), torch.ones(3))
    check_loss(Unknown(), "regression", torch.zeros(4), torch.ones(4), torch.ones(4))  # fits: no error
