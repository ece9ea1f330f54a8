"""Any classification data laid out as ``train/<class>/<image>`` and ``test/<class>/<image>``."""

from __future__ import annotations

import hashlib
import os
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from PIL import Image
from torchvision.datasets import ImageFolder
from torchvision.transforms.v2.functional import pil_to_tensor, resize

from datamodules.vision import VisionDataModule
from runs.files import save_torch


def read_rgb(path: str) -> torch.Tensor:
    try:
        with Image.open(path) as image:
            return pil_to_tensor(image.convert("RGB"))  # (3, H, W) uint8
    except OSError as err:  # truncated, damaged, not an image
        raise ValueError(f"{path} cannot be decoded ({err}): remove or replace it.") from err


class ClassFolders(ImageFolder):
    """``ImageFolder`` that never takes a hidden folder (``.ipynb_checkpoints``, ``.cache``) for a
    class, and that can be told the classes (the training set's, for the test set)."""

    def __init__(self, root: Path, classes: list[str] | None = None) -> None:
        self.given = classes
        super().__init__(str(root), loader=read_rgb, allow_empty=classes is not None)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        found = sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))
        if not found:
            raise ValueError(f"{directory} holds no class folders (<class>/<image>).")
        classes = self.given or found
        if extra := sorted(set(found) - set(classes)):
            raise ValueError(f"{directory} has classes the training set lacks: {', '.join(extra)}.")
        return classes, {name: i for i, name in enumerate(classes)}


class ImageFolderDataModule(VisionDataModule):
    """Images in ``<data_dir>/train/<class>/`` and ``<data_dir>/test/<class>/`` (any format that
    torchvision decodes: JPEG, PNG, ...), decoded to RGB. Class names are the folder names.

    Images of different sizes need ``resize``. ``load_uint8`` (the device-resident path) decodes
    every image once (resized, if asked) and caches the tensor under ``cache_dir`` (skipped,
    with a warning, when that folder is read-only), so later runs skip decoding.
    ``mean``/``std`` default to 0.5 per channel; the CIFAR-10 configs set CIFAR-10's statistics.

    Args:
        cache_dir: where decoded images are cached (default ``<data_dir>/.cache``; give another
            folder when the data folder is read-only).

    See VisionDataModule for the other options.
    """

    name = "image folder"

    def __init__(self, *, cache_dir: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else self.data_dir / ".cache"

    @cached_property
    def folders(self) -> dict[bool, ImageFolder]:
        train = ClassFolders(self.data_dir / "train")
        test = ClassFolders(self.data_dir / "test", classes=train.classes)  # may lack some classes
        if missing := sorted(set(train.classes) - {train.classes[t] for t in set(test.targets)}):
            rank_zero_warn(f"{self.data_dir / 'test'} has no images of {', '.join(missing)}.")
        return {True: train, False: test}

    def present(self) -> bool:
        splits = [self.data_dir / "train", self.data_dir / "test"]
        return all(s.is_dir() and any(c.is_dir() and c.name[0] != "." for c in s.iterdir()) for s in splits)

    def expected_files(self) -> tuple[Path, list[str]]:
        return self.data_dir, ["train/<class>/<image>", "test/<class>/<image>"]

    @property
    def classes(self) -> list[str]:
        if not self.present():
            self.prepare_data()  # raises the not-found error that says where it looked
        return self.folders[True].classes

    @property
    def image_shape(self) -> tuple[int, int, int]:
        channels, height, width = read_rgb(self.folders[True].samples[0][0]).shape
        return channels, height, width

    def source(self, train: bool) -> ImageFolder:
        if not self.present():
            self.prepare_data()
        return self.folders[train]

    def source_targets(self, train: bool) -> torch.Tensor:
        return torch.tensor(self.source(train).targets, dtype=torch.long)

    def decode_all(self, paths: list[str]) -> list[torch.Tensor]:
        """Each image as (3, H, W) uint8, resized to ``resize`` (as the DataLoader path's
        ``v2.Resize`` does) when set; without ``resize`` all must share one size."""
        images, size = [], None
        for path in paths:
            image = read_rgb(path)
            if self.resize is not None:
                image = resize(image, [self.resize, self.resize], antialias=True)
            elif size is None:
                size = image.shape[1:]
            elif image.shape[1:] != size:
                raise ValueError(
                    f"Images under {self.data_dir} differ in size ({path} is "
                    f"{tuple(image.shape[1:])}, earlier ones {tuple(size)}); set "
                    "--data.resize N to resize them all to N x N."
                )
            images.append(image)
        return images

    def load_uint8(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        samples = self.folders[train].samples
        stamp = "\n".join(f"{p}:{os.stat(p).st_size}:{os.stat(p).st_mtime_ns}" for p, _ in samples)
        stamp += f"\nresize={self.resize}"  # a resized copy is another cache entry
        key = hashlib.sha1(stamp.encode()).hexdigest()[:16]
        cache = self.cache_dir / f"{'train' if train else 'test'}-{key}.pt"
        if cache.is_file():
            cached = torch.load(cache, weights_only=True)
            return cached["images"], cached["targets"]
        images = torch.stack(self.decode_all([p for p, _ in samples]))  # (N, 3, H, W)
        targets = torch.tensor([t for _, t in samples], dtype=torch.long)
        try:
            save_torch({"images": images, "targets": targets}, cache)
        except OSError as err:
            rank_zero_warn(
                f"Could not cache decoded images in {cache.parent} ({err}); the next run decodes them again."
            )
        return images, targets
