"""MNIST handwritten digits (torchvision's IDX files)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torchvision.datasets import MNIST

from datamodules.vision import VisionDataModule


class MNISTDataModule(VisionDataModule):
    """MNIST: 60,000 training and 10,000 test digits, 1x28x28, 10 classes.

    Reads ``<data_dir>/MNIST/raw/*-ubyte`` (torchvision's layout); see VisionDataModule for the
    options. Digits are never flipped when augmenting.
    """

    name = "MNIST"
    mean = (0.1307,)
    std = (0.3081,)
    flip = False

    @property
    def classes(self) -> list[str]:
        return [str(d) for d in range(10)]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (1, 28, 28)

    def expected_files(self) -> tuple[Path, list[str]]:
        names = [os.path.splitext(os.path.basename(url))[0] for url, _ in MNIST.resources]
        return self.data_dir / "MNIST" / "raw", names

    def fetch(self) -> None:
        MNIST(str(self.data_dir), train=True, download=True)

    def load_uint8(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        dataset = MNIST(str(self.data_dir), train=train, download=False)
        return dataset.data.unsqueeze(1).contiguous(), dataset.targets.long()  # (N, 1, 28, 28)
