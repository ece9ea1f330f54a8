"""Linear models: polynomial, logistic and softmax regression are all one affine map."""

from __future__ import annotations

import torch
from torch import nn

from lightning_modules.nets.layers import DropProbability, EpochDropout


class LinearNet(nn.Module):
    """``y = x W^T + b`` on the flattened input (input width inferred by ``LazyLinear``).

    Polynomial regression on features [x, x^2, x^3] (1 output), logistic regression (1 logit)
    and softmax regression on 784 pixels (10 logits) are this network with different data.

    Args:
        num_outputs: output width. Filled in from the datamodule.
        epoch_dropout: EpochDropout probability on the inputs (0 = off).
        seed: seed of the EpochDropout mask.
    """

    def __init__(self, num_outputs: int, epoch_dropout: DropProbability = 0.0, seed: int = 0) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.dropout = EpochDropout(epoch_dropout, seed=seed) if epoch_dropout > 0 else nn.Identity()
        self.linear = nn.LazyLinear(num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, *features) -> (B, num_outputs)
        return self.linear(self.dropout(self.flatten(x)))
