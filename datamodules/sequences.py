"""MNIST digits read as variable-length sequences of rows, batched with padding and lengths."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader

from datamodules.mnist import MNISTDataModule
from run.errors import UserError


class InkedRows:
    """(C, H, W) uint8 image -> (L, C*W) float sequence of its rows, from the first to the last
    row with ink (brighter than ``threshold`` in [0, 1]), after the image transform ``image``."""

    def __init__(self, image: Callable, mean: Sequence[float], std: Sequence[float], threshold: float) -> None:
        self.image, self.threshold = image, threshold
        self.mean, self.std = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)  # (C, 1, 1)

    def __call__(self, raw: torch.Tensor) -> torch.Tensor:
        x = self.image(raw)  # (C, H, W), normalized
        rows = torch.nonzero(((x * self.std + self.mean) > self.threshold).any(dim=2).any(dim=0)).flatten()
        first, last = (int(rows[0]), int(rows[-1])) if len(rows) else (0, 0)  # a blank image: one row
        return x[:, first : last + 1].permute(1, 0, 2).flatten(1)  # (L, C*W)


def pad_batch(samples: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sequence (L_i, F), label) samples -> x (B, max L_i, F) zero-padded, lengths (B,), labels (B,)."""
    lengths = torch.tensor([len(sequence) for sequence, _ in samples])
    labels = torch.tensor([int(label) for _, label in samples])
    return pad_sequence([sequence for sequence, _ in samples], batch_first=True), lengths, labels


class MNISTRowsDataModule(MNISTDataModule):
    """MNIST as sequences: each image row is a step of 28 pixels, from a digit's first to its last
    row with ink, so lengths vary (mostly 20, down to about 11). Batches are ``(x (B, T, 28),
    lengths (B,), y (B,))``, ``T`` the batch's longest sequence. Options as MNISTDataModule's; the
    batches always come from a DataLoader."""

    name, collate_fn, ink_threshold = "MNIST rows", staticmethod(pad_batch), 0.1

    @property
    def input_shape(self) -> tuple[int, int]:
        channels, height, width = super().input_shape
        return height, channels * width  # (longest sequence, features per step)

    def transform(self, stage: str) -> Callable:
        return InkedRows(super().transform(stage), self.mean, self.std, self.ink_threshold)

    def loader(self, split: str) -> DataLoader:
        if self.device_resident:
            raise UserError("MNISTRowsDataModule pads its sequences in a DataLoader: set --data.device_resident false.")
        return super().loader(split)
