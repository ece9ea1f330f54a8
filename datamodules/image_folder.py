"""Any classification data laid out as ``train/<class>/<image>`` and ``test/<class>/<image>``."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_warn
from PIL import Image
from torchvision.datasets import ImageFolder
from torchvision.transforms.v2.functional import pil_to_tensor, resize

from datamodules.vision import VisionDataModule
from run.errors import UserError


def read_rgb(path: str) -> torch.Tensor:
    try:
        with Image.open(path) as image:
            return pil_to_tensor(image.convert("RGB"))  # (3, H, W) uint8
    except OSError as err:  # truncated, damaged, not an image
        raise UserError(f"{path} cannot be decoded ({err}): remove or replace it.") from err


class ClassFolders(ImageFolder):
    """``ImageFolder`` that takes no hidden folder (``.ipynb_checkpoints``) for a class, names an
    empty class folder, and can be told the classes (the training set's, for the test set)."""

    def __init__(self, root: Path, classes: list[str] | None = None) -> None:
        self.given = classes
        super().__init__(str(root), loader=read_rgb, allow_empty=True)
        if empty := sorted(set(self.classes) - {self.classes[t] for t in self.targets}):
            message = f"{root} has no images of {', '.join(empty)}"
            if classes is None:
                raise UserError(f"{message}: add images to those folders or remove them.")
            rank_zero_warn(f"{message}; it is tested on the other classes.")

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        found = sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))
        if not found:
            raise UserError(f"{directory} holds no class folders (<class>/<image>).")
        if extra := sorted(set(found) - set(self.given or found)):
            raise UserError(f"{directory} has classes the training set lacks: {', '.join(extra)}.")
        classes = self.given or found
        return classes, {name: i for i, name in enumerate(classes)}


class ImageFolderDataModule(VisionDataModule):
    """Images in ``<data_dir>/train/<class>/`` and ``<data_dir>/test/<class>/`` (any format
    torchvision decodes), as RGB; class names are the folder names. Images of different sizes
    need ``resize``. Options: see VisionDataModule."""

    name = "image folder"

    @cached_property
    def folders(self) -> dict[bool, ClassFolders]:
        self.prepare_data()  # a missing folder is an error that says where it looked
        train = ClassFolders(self.data_dir / "train")
        return {True: train, False: ClassFolders(self.data_dir / "test", classes=train.classes)}

    def present(self) -> bool:
        return all((self.data_dir / split).is_dir() for split in ("train", "test"))

    def expected_files(self) -> tuple[Path, list[str]]:
        return self.data_dir, ["train/<class>/<image>", "test/<class>/<image>"]

    @property
    def classes(self) -> list[str]:
        return self.folders[True].classes

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(read_rgb(self.folders[True].samples[0][0]).shape)  # type: ignore[return-value]

    def source(self, train: bool) -> ImageFolder:
        return self.folders[train]

    def source_targets(self, train: bool) -> torch.Tensor:
        return torch.tensor(self.folders[train].targets, dtype=torch.long)

    def load_uint8(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Every image decoded (and resized, if asked), for the device-resident path."""
        samples = self.folders[train].samples
        images = [read_rgb(path) for path, _ in samples]
        if self.resize is not None:
            images = [resize(image, [self.resize, self.resize], antialias=True) for image in images]
        if len({image.shape for image in images}) > 1:
            raise UserError(f"Images under {self.data_dir} differ in size: set --data.resize N.")
        return torch.stack(images), torch.tensor([target for _, target in samples], dtype=torch.long)
