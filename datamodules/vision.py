"""Image classification data: uint8 images in, transforms v2 out; subclasses name the dataset."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from jsonargparse.typing import NonNegativeInt, PositiveInt
from torch.utils.data import Dataset, TensorDataset, default_collate
from torchvision.transforms import v2

from datamodules.base import SplitDataModule, data_not_found
from run.errors import UserError


def stack_images(samples: list[tuple[torch.Tensor, Any]]) -> Any:
    """``default_collate``, with a word on images of different sizes."""
    if len(sizes := {tuple(x.shape) for x, _ in samples}) > 1:
        raise UserError(
            f"Images of one batch differ in size ({', '.join(map(str, sorted(sizes)[:3]))}): "
            "set --data.resize N to resize them all to N x N."
        )
    return default_collate(samples)


class VisionDataModule(SplitDataModule):
    """An image-classification datamodule: subclasses set ``name``, ``classes``, ``image_shape``,
    ``mean``, ``std``, ``flip`` (a mirror image keeps its label) and give ``expected_files``,
    ``fetch``, ``verify`` and ``load_uint8``. Per sample: resize, training augmentation, normalization.

    Args:
        resize: resize images to ``resize x resize`` (e.g. 28 to feed CIFAR-10 to an MNIST net).
        augment: random crop with padding (and horizontal flip) of training images.
        crop_padding: padding of the random crop.
        padding_mode: how the crop pads: "constant" (black) or "reflect".
        mean: per-channel mean for normalization (None: the dataset's own).
        std: per-channel std for normalization (None: the dataset's own).
        download: download missing data (needs network access).
        device_resident: keep the images on the training device and make the batches there
            (``datamodules/device_loader.py``: whole-batch crop, flip and normalization).
        alternate_flip: with ``device_resident`` and ``augment``: flip a fixed random half of the
            images in even epochs and the other half in odd ones.

    The options of ``SplitDataModule`` (data_dir, batch sizes, split, seed, workers) apply too.
    """

    name, classes, image_shape = "dataset", [], (3, 32, 32)
    mean, std, flip = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), True
    collate_fn = staticmethod(stack_images)

    def __init__(
        self,
        *,
        resize: PositiveInt | None = None,
        augment: bool = False,
        crop_padding: NonNegativeInt = 4,
        padding_mode: Literal["constant", "reflect"] = "constant",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        download: bool = True,
        device_resident: bool = False,
        alternate_flip: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if alternate_flip and not device_resident:
            raise UserError("--data.alternate_flip needs --data.device_resident true.")
        self.resize, self.augment, self.crop_padding, self.padding_mode = resize, augment, crop_padding, padding_mode
        self.mean, self.std = tuple(mean or self.mean), tuple(std or self.std)
        self.download, self.device_resident, self.alternate_flip = download, device_resident, alternate_flip
        self._uint8: dict[bool, tuple[torch.Tensor, torch.Tensor]] = {}
        self.resident: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # split -> on the device

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        channels, height, width = self.image_shape
        return (channels, self.resize, self.resize) if self.resize else (channels, height, width)

    def expected_files(self) -> tuple[Path, list[str]]:
        raise NotImplementedError

    def fetch(self) -> None:
        raise OSError(f"{self.name} cannot be downloaded")

    def verify(self) -> None:
        """Raise a UserError naming the file when the data on disk is damaged."""

    def load_uint8(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C, H, W) uint8 images and (N,) int64 labels of the official training or test set."""
        raise NotImplementedError

    def present(self) -> bool:
        folder, files = self.expected_files()
        return all((folder / f).is_file() for f in files)

    def prepare_data(self) -> None:
        if not self.present():
            folder = self.expected_files()[0]
            made = [p for p in (folder, *folder.parents) if not p.exists()]
            try:
                if not self.download:
                    raise OSError("download=False")
                self.fetch()
            except (OSError, RuntimeError) as err:
                for path in made:  # what the failed download made and left empty
                    if path.is_dir() and not any(path.iterdir()):
                        path.rmdir()
                raise data_not_found(self.name, *self.expected_files(), str(err).splitlines()[0]) from err
        self.verify()  # training and test files, before any training

    def uint8(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if train not in self._uint8:
            if not self.present():  # setup runs on every process: never download here
                raise data_not_found(self.name, *self.expected_files(), "not prepared")
            self._uint8[train] = self.load_uint8(train)
        return self._uint8[train]

    def source(self, train: bool) -> Dataset:
        return TensorDataset(*self.uint8(train))

    def source_targets(self, train: bool) -> torch.Tensor:
        return self.uint8(train)[1]

    def transform(self, stage: str) -> Callable:
        steps: list[Callable] = [v2.ToImage()]  # (C, H, W) uint8
        if self.resize is not None:
            steps.append(v2.Resize((self.resize, self.resize), antialias=True))
        if stage == "train" and self.augment:
            steps.append(v2.RandomCrop(self.input_shape[1:], padding=self.crop_padding, padding_mode=self.padding_mode))
            steps += [v2.RandomHorizontalFlip()] if self.flip else []
        return v2.Compose([*steps, v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)])

    def loader(self, split: str) -> Any:
        if not self.device_resident:
            return super().loader(split)
        from datamodules.device_loader import resident_loader  # the fast recipes' path

        return resident_loader(self, split)

    def predict_dataloader(self) -> Any:
        return super().loader("test")  # a DataLoader: predictions keep their sample order
