"""CIFAR-10 in torchvision's python-batch format."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.datasets import CIFAR10, cifar

from datamodules.vision import VisionDataModule
from run.errors import UserError


class CIFAR10DataModule(VisionDataModule):
    """CIFAR-10: 50,000 training and 10,000 test images, 3x32x32, 10 classes.

    Reads ``<data_dir>/cifar-10-batches-py/`` (torchvision's layout, checksums verified). For a
    JPEG copy in image-folder layout use ImageFolderDataModule. See VisionDataModule for options.
    """

    name = "CIFAR-10"
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)

    @property
    def classes(self) -> list[str]:
        return ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (3, 32, 32)

    def expected_files(self) -> tuple[Path, list[str]]:
        names = [name for name, _ in CIFAR10.train_list + CIFAR10.test_list] + ["batches.meta"]
        return self.data_dir / CIFAR10.base_folder, names

    def verify(self) -> None:
        folder = self.expected_files()[0]
        for name, md5 in CIFAR10.train_list + CIFAR10.test_list:
            if not cifar.check_integrity(str(folder / name), md5):
                raise UserError(
                    f"{folder / name} fails its checksum: damaged, or not the original file. "
                    "Download CIFAR-10 again, or use ImageFolderDataModule for other copies."
                )

    def fetch(self) -> None:
        CIFAR10(str(self.data_dir), train=True, download=True)

    def load_uint8(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        dataset = CIFAR10(str(self.data_dir), train=train, download=False)
        images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()  # (N, 3, 32, 32)
        return images, torch.tensor(dataset.targets, dtype=torch.long)
