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

    def verify(self) -> None:
        folder, names = self.expected_files()
        counts = [check_idx(folder / name) for name in names]  # train images, labels; test alike
        for (images, labels), split in ((counts[0:2], "train"), (counts[2:4], "t10k")):
            if images != labels:
                raise UserError(
                    f"{folder}: the {split} images file holds {images} images but its labels file "
                    f"{labels} labels. Download both again or replace them."
                )

    def fetch(self) -> None:
        MNIST(str(self.data_dir), train=True, download=True)

    def load_uint8(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        dataset = MNIST(str(self.data_dir), train=train, download=False)
        return dataset.data.unsqueeze(1).contiguous(), dataset.targets.long()  # (N, 1, 28, 28)


def check_idx(path: Path) -> int:
    """Check an IDX file (MNIST's format) against its own header; returns its number of items.

    The header: two zero bytes, a type code (0x08: unsigned bytes), the number of dimensions,
    then each dimension as a big-endian 32-bit integer.
    """
    with open(path, "rb") as f:
        head = f.read(4)
        if len(head) < 4 or head[:3] != b"\x00\x00\x08" or not 1 <= head[3] <= 4:
            raise UserError(
                f"{path} is not an IDX file of unsigned bytes (it starts with {head!r}, not "
                "00 00 08 <dimensions>). Download it again or replace it."
            )
        dims = struct.unpack(f">{head[3]}I", f.read(4 * head[3]))
    expected, size = 4 + 4 * len(dims) + math.prod(dims), path.stat().st_size
    if size != expected:
        raise UserError(
            f"{path} is {'truncated' if size < expected else 'longer than its header says'}: "
            f"{size:,} bytes where its header {dims} needs {expected:,}. Download it again or replace it."
        )
    return dims[0]
