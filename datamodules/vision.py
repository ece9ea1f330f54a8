"""Image classification data: uint8 images in, transforms v2 out; subclasses name the dataset."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from jsonargparse.typing import NonNegativeInt, PositiveInt
from torch.utils.data import Dataset, default_collate
from torchvision.transforms import v2

from datamodules.base import SplitDataModule, data_not_found


def stack_images(samples: list[tuple[torch.Tensor, int]]) -> Any:
    """``default_collate``, with a word on images of different sizes."""
    try:
        return default_collate(samples)
    except RuntimeError as err:
        sizes = sorted({tuple(x.shape[-2:]) for x, _ in samples})
        if len(sizes) > 1:
            raise ValueError(
                f"Images of one batch differ in size ({', '.join(map(str, sizes[:3]))}...): set "
                "--data.resize N to resize them all to N x N."
            ) from err
        raise


class ImageTensorDataset(Dataset):
    """Samples of a (N, C, H, W) uint8 image tensor with (N,) integer labels."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor) -> None:
        self.images = images
        self.targets = targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.targets[i])


class VisionDataModule(SplitDataModule):
    """An image-classification datamodule; subclasses set the class attributes and loaders.

    Transforms (v2, per sample): to image, optional ``Resize``, optional train-time augmentation
    (random crop with padding, horizontal flip where the dataset allows it), to float in [0, 1],
    normalize with the dataset's mean and std.

    Args:
        resize: resize images to ``resize x resize`` (e.g. 28 to feed CIFAR-10 to an MNIST net).
        augment: random crop with padding (and horizontal flip if ``flip``) on training images.
        crop_padding: padding of the random crop.
        mean: per-channel mean for normalization (None = the dataset's own statistics).
        std: per-channel std for normalization (None = the dataset's own statistics).
        download: try to download data that is missing (needs network access).
        device_resident: keep the uint8 images on the training device and make train/val/test
            batches there (the speed layer's ``DeviceLoader``: whole-batch crop, flip and
            normalization, no workers); the ``DataLoader`` path is the default. Predictions
            always use a DataLoader.
        padding_mode: how the random crop pads: "constant" (black) or "reflect".
        alternate_flip: with ``augment`` on a dataset that allows flips, and ``device_resident``:
            flip a fixed random half of the images in even epochs and the other half in odd ones,
            instead of a fresh coin per image and epoch.

    The options of ``SplitDataModule`` (data_dir, batch sizes, split, seed, workers) apply too.
    """

    name: str = "dataset"
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    flip: bool = True  # horizontal flips keep the label (not so for digits)
    collate_fn = staticmethod(stack_images)

    def __init__(
        self,
        *,
        resize: PositiveInt | None = None,
        augment: bool = False,
        crop_padding: NonNegativeInt = 4,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        download: bool = True,
        device_resident: bool = False,
        padding_mode: Literal["constant", "reflect"] = "constant",
        alternate_flip: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if alternate_flip and not device_resident:
            raise ValueError(
                "alternate_flip needs device_resident: true (the DataLoader path "
                "flips each image with a fresh coin); set both or neither."
            )
        self.device_resident = device_resident
        self.padding_mode = padding_mode
        self.alternate_flip = alternate_flip
        self.resident: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # split -> device tensors
        self.resize = resize
        self.augment = augment
        self.crop_padding = crop_padding
        if mean is not None:
            self.mean = tuple(mean)
        if std is not None:
            self.std = tuple(std)
        self.download = download
        self._uint8: dict[bool, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def classes(self) -> list[str]:
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the stored images, before any resize."""
        raise NotImplementedError

    @property
    def input_shape(self) -> tuple[int, int, int]:
        channels, height, width = self.image_shape
        if self.resize is not None:
            return channels, self.resize, self.resize
        return channels, height, width

    def expected_files(self) -> tuple[Path, list[str]]:
        """The folder the data must be in and the files (or patterns) it must hold."""
        raise NotImplementedError

    def present(self) -> bool:
        folder, files = self.expected_files()
        return all((folder / f).is_file() for f in files)

    def fetch(self) -> None:
        """Download the data into ``data_dir`` (raises OSError/RuntimeError when it cannot)."""
        raise RuntimeError(f"{self.name} cannot be downloaded")

    def prepare_data(self) -> None:
        if not self.present():
            self.download_or_fail()
        self.verify()  # train and test files alike, before any training

    def download_or_fail(self) -> None:
        folder = self.expected_files()[0]
        created = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
        cause = "download=False"
        if self.download:
            try:
                return self.fetch()
            except (OSError, RuntimeError) as err:
                cause = f"download failed: {str(err).strip().splitlines()[0]}"
            for path in created:  # what the failed download made, and left empty
                if path.is_dir() and not any(path.iterdir()):
                    path.rmdir()
        raise data_not_found(self.name, *self.expected_files(), cause=cause)

    def verify(self) -> None:
        """Raise ValueError naming the file when the data on disk is damaged (subclasses check)."""

    def load_uint8(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C, H, W) uint8 images and (N,) int64 labels of the official train or test set."""
        raise NotImplementedError

    def uint8(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """``load_uint8`` once per process; a clear error if the data is missing."""
        if train not in self._uint8:
            if not self.present():  # never download here: setup runs on every rank
                raise data_not_found(self.name, *self.expected_files(), cause="not prepared")
            self._uint8[train] = self.load_uint8(train)
        return self._uint8[train]

    def source(self, train: bool) -> Dataset:
        return ImageTensorDataset(*self.uint8(train))

    def source_targets(self, train: bool) -> torch.Tensor:
        return self.uint8(train)[1]

    def transform(self, stage: str) -> Callable:
        steps: list[Callable] = [v2.ToImage()]  # (C, H, W) uint8
        if self.resize is not None:
            steps.append(v2.Resize((self.resize, self.resize), antialias=True))
        if stage == "train" and self.augment:
            steps.append(
                v2.RandomCrop(self.input_shape[1:], padding=self.crop_padding, padding_mode=self.padding_mode)
            )
            if self.flip:
                steps.append(v2.RandomHorizontalFlip())
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)]
        return v2.Compose(steps)

    def loader(self, split: str) -> Any:
        if not self.device_resident:
            return super().loader(split)
        from speed.device_loader import resident_loader  # the opt-in speed layer: imported when used

        return resident_loader(self, split)

    def predict_dataloader(self) -> Any:
        return super().loader("test")  # a DataLoader: Lightning tracks its sample indices
