"""Gradient descent written out: the update a training loop would make by hand."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.optim.optimizer import ParamsT


class PlainSGD(torch.optim.Optimizer):
    """``p -= lr * p.grad`` under ``torch.no_grad()``: ``torch.optim.SGD`` without momentum,
    dampening or weight decay, spelled out (configs/polynomial_regression_manual.yaml).

    Args:
        params: the parameters to update.
        lr: the step size.
    """

    def __init__(self, params: ParamsT, lr: float = 0.01) -> None:
        super().__init__(params, {"lr": lr})

    @torch.no_grad()  # the update itself must not be recorded by autograd
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:  # Lightning passes the forward and backward pass as a closure
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p -= group["lr"] * p.grad
        return loss
