"""Generated data for the regression and logistic-regression examples, reproducible from ``seed``."""

from __future__ import annotations

from typing import Any

import torch
from jsonargparse.typing import NonNegativeFloat, PositiveFloat, PositiveInt
from torch.utils.data import TensorDataset

from datamodules.base import SplitDataModule


class SyntheticDataModule(SplitDataModule):
    """``generate(n, generator)`` gives (inputs, targets); training (split into train and val) and
    test sets come from different seeds.

    Args:
        num_samples: training samples (split into train and val).
        num_test: test samples.
    """

    def __init__(self, *, num_samples: PositiveInt = 1000, num_test: PositiveInt = 200, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_samples, self.num_test = num_samples, num_test

    def generate(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def tensors(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        n, seed = (self.num_samples, self.seed) if train else (self.num_test, self.seed + 1)
        return self.generate(n, torch.Generator().manual_seed(seed))  # cheap: made when asked

    def source(self, train: bool) -> TensorDataset:
        return TensorDataset(*self.tensors(train))

    def source_targets(self, train: bool) -> torch.Tensor:
        return self.tensors(train)[1]


class PolynomialDataModule(SyntheticDataModule):
    """y = 0.9 + 0.5x + 3x^2 + 2.4x^3 (+ Gaussian noise), x uniform in [-3, 3]; the inputs are the
    features [x, x^2, x^3], so a linear model can recover the coefficients.

    Args:
        noise: std of the Gaussian noise added to y.
    """

    task, num_classes, input_shape = "regression", None, (3,)
    bias, weights = 0.9, (0.5, 3.0, 2.4)

    def __init__(self, *, noise: NonNegativeFloat = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.noise = noise

    @staticmethod
    def features(x: torch.Tensor) -> torch.Tensor:  # (N,) -> (N, 3)
        return torch.stack([x, x**2, x**3], dim=1)

    def true_curve(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias + self.features(x) @ torch.tensor(self.weights)

    def generate(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.rand(n, generator=generator) * 6 - 3
        return self.features(x), self.true_curve(x) + self.noise * torch.randn(n, generator=generator)


class GaussianClustersDataModule(SyntheticDataModule):
    """Binary classification: two 2-D Gaussian clusters on the diagonal, labels 0 and 1.

    Args:
        separation: distance between the two cluster centres.
        spread: std of each cluster.
    """

    task, num_classes, input_shape = "binary", 2, (2,)

    def __init__(self, *, separation: float = 4.0, spread: PositiveFloat = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.separation, self.spread = separation, spread

    def generate(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, 2, (n,), generator=generator)
        centres = (y.float() - 0.5).unsqueeze(1) * self.separation / 2**0.5  # (N, 1)
        return centres + self.spread * torch.randn(n, 2, generator=generator), y  # (N, 2), (N,)
