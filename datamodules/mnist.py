"""MNIST handwritten digits (torchvision's IDX files)."""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path

import torch
from torchvision.datasets import MNIST

from datamodules.vision import VisionDataModule
from run.errors import UserError


def check_idx(path: Path) -> int:
    """The number of items of an IDX file, checked against its own header: two zero bytes, type
    0x08 (unsigned bytes), the number of dimensions, then each dimension as a big-endian uint32."""
    with open(path, "rb") as f:
        head = f.read(4)
        if len(head) < 4 or head[:3] != b"\x00\x00\x08" or not 1 <= head[3] <= 4:
            raise UserError(f"{path} is not an IDX file of unsigned bytes (it starts with {head!r}): replace it.")
        dims = struct.unpack(f">{head[3]}I", f.read(4 * head[3]))
    expected, size = 4 + 4 * len(dims) + math.prod(dims), path.stat().st_size
    if size != expected:
        state = "truncated" if size < expected else "longer than its header says"
        raise UserError(f"{path} is {state}: {size:,} bytes where its header {dims} needs {expected:,}. Replace it.")
    return dims[0]


class MNISTDataModule(VisionDataModule):
    """MNIST: 60,000 training and 10,000 test digits, 1x28x28, 10 classes, read from
    ``<data_dir>/MNIST/raw/*-ubyte`` (torchvision's layout). Digits are never flipped. Options: see
    VisionDataModule."""

    name, image_shape, classes = "MNIST", (1, 28, 28), [str(digit) for digit in range(10)]
    mean, std, flip = (0.1307,), (0.3081,), False

    def expected_files(self) -> tuple[Path, list[str]]:
        return self.data_dir / "MNIST" / "raw", [
            os.path.basename(url).removesuffix(".gz") for url, _ in MNIST.resources
        ]

    def verify(self) -> None:
        folder, names = self.expected_files()
        counts = [check_idx(folder / name) for name in names]  # train images and labels, then test
        for images, labels in (counts[0:2], counts[2:4]):
            if images != labels:
                raise UserError(f"{folder}: an images file holds {images} images, its labels file {labels} labels.")

    def fetch(self) -> None:
        MNIST(str(self.data_dir), train=True, download=True)

    def load_uint8(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        dataset = MNIST(str(self.data_dir), train=train, download=False)
        return dataset.data.unsqueeze(1).contiguous(), dataset.targets.long()  # (N, 1, 28, 28)
