"""Generated data for the regression and logistic-regression examples, reproducible from ``seed``."""

from __future__ import annotations

from typing import Any

import torch
from jsonargparse.typing import NonNegativeFloat, PositiveFloat, PositiveInt
from torch.utils.data import Dataset, TensorDataset

from datamodules.base import SplitDataModule


class SyntheticDataModule(SplitDataModule):
    """Base of the generated datasets: ``generate(n, generator)`` gives (inputs, targets).

    The training set (split into train/val) and the test set are drawn from disjoint seeds.

    Args:
        num_samples: training samples (split into train and val).
        num_test: test samples.

    The options of ``SplitDataModule`` (batch sizes, split, seed) apply too; ``seed`` also seeds
    the data.
    """

    def __init__(
        self, *, num_samples: PositiveInt = 1000, num_test: PositiveInt = 200, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.num_samples = num_samples
        self.num_test = num_test
        self._data: dict[bool, tuple[torch.Tensor, torch.Tensor]] = {}

    def generate(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def tensors(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if train not in self._data:
            seed = self.seed if train else self.seed + 1
            n = self.num_samples if train else self.num_test
            self._data[train] = self.generate(n, torch.Generator().manual_seed(seed))
        return self._data[train]

    def source(self, train: bool) -> Dataset:
        return TensorDataset(*self.tensors(train))

    def source_targets(self, train: bool) -> torch.Tensor:
        return self.tensors(train)[1]


class PolynomialDataModule(SyntheticDataModule):
    """y = 0.9 + 0.5x + 3x^2 + 2.4x^3 (+ Gaussian noise), x uniform in [-3, 3].

    Inputs are the features [x, x^2, x^3], so a linear model can recover the coefficients.

    Args:
        noise: std of the Gaussian noise added to y.
    """

    task = "regression"
    bias = 0.9
    weights = (0.5, 3.0, 2.4)

    def __init__(self, *, noise: NonNegativeFloat = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.noise = noise

    @property
    def num_classes(self) -> None:
        return None

    @property
    def input_shape(self) -> tuple[int]:
        return (3,)

    @staticmethod
    def features(x: torch.Tensor) -> torch.Tensor:  # (N,) -> (N, 3)
        return torch.stack([x, x**2, x**3], dim=1)

    def true_curve(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias + self.features(x) @ torch.tensor(self.weights)

    def generate(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.rand(n, generator=generator) * 6 - 3
        y = self.true_curve(x) + self.noise * torch.randn(n, generator=generator)
        return self.features(x), y


class GaussianClustersDataModule(SyntheticDataModule):
    """Binary classification: two 2-D Gaussian clusters, labels 0 and 1.

    Args:
        separation: distance between the two cluster centres.
        spread: std of each cluster.
    """

    task = "binary"

    def __init__(self, *, separation: float = 4.0, spread: PositiveFloat = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.separation = separation
        self.spread = spread

    @property
    def num_classes(self) -> int:
        return 2

    @property
    def input_shape(self) -> tuple[int]:
        return (2,)

    def generate(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, 2, (n,), generator=generator)
        centres = (y.float() - 0.5).unsqueeze(1) * self.separation / 2**0.5  # (N, 1) on the diagonal
        x = centres + self.spread * torch.randn(n, 2, generator=generator)  # (N, 2)
        return x, y
