"""CIFAR-10 in torchvision's python-batch format."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.datasets import CIFAR10, cifar

from datamodules.vision import VisionDataModule
from run.errors import UserError


class CIFAR10DataModule(VisionDataModule):
    """CIFAR-10: 50,000 training and 10,000 test images, 3x32x32, 10 classes, read from
    ``<data_dir>/cifar-10-batches-py/`` (checksums verified). For a JPEG copy in image-folder layout
    use ImageFolderDataModule. Options: see VisionDataModule."""

    name, image_shape = "CIFAR-10", (3, 32, 32)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

    def expected_files(self) -> tuple[Path, list[str]]:
        names = [name for name, _ in CIFAR10.train_list + CIFAR10.test_list] + ["batches.meta"]
        return self.data_dir / CIFAR10.base_folder, names

    def verify(self) -> None:
        for name, md5 in CIFAR10.train_list + CIFAR10.test_list:
            if not cifar.check_integrity(str(self.expected_files()[0] / name), md5):
                raise UserError(
                    f"{self.expected_files()[0] / name} fails its checksum: download CIFAR-10 again, "
                    "or read other copies with ImageFolderDataModule."
                )

    def fetch(self) -> None:
        CIFAR10(str(self.data_dir), train=True, download=True)

    def load_uint8(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        dataset = CIFAR10(str(self.data_dir), train=train, download=False)
        images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()  # (N, 3, 32, 32)
        return images, torch.tensor(dataset.targets, dtype=torch.long)
