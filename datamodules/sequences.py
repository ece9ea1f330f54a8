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
    row with ink (a pixel brighter than ``threshold``, in [0, 1]); ``image`` transforms the
    picture first (augmentation, normalization with ``mean``/``std``)."""

    def __init__(
        self, image: Callable, mean: Sequence[float], std: Sequence[float], threshold: float
    ) -> None:
        self.image = image
        self.mean = torch.tensor(mean).view(-1, 1, 1)  # (C, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)
        self.threshold = threshold

    def __call__(self, raw: torch.Tensor) -> torch.Tensor:
        x = self.image(raw)  # (C, H, W), normalized
        inked = ((x * self.std + self.mean) > self.threshold).any(dim=2).any(dim=0)  # (H,)
        rows = torch.nonzero(inked).flatten()  # indices of the rows with ink
        first, last = (int(rows[0]), int(rows[-1])) if len(rows) else (0, 0)  # blank: one row
        return x[:, first : last + 1].permute(1, 0, 2).flatten(1)  # (L, C*W)


def pad_batch(
    samples: list[tuple[torch.Tensor, int]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Collate (sequence (L_i, F), label) samples to x (B, max L_i, F) zero-padded, lengths (B,),
    labels (B,)."""
    sequences = [sequence for sequence, _ in samples]
    lengths = torch.tensor([len(sequence) for sequence in sequences])
    labels = torch.tensor([int(label) for _, label in samples])
    return pad_sequence(sequences, batch_first=True), lengths, labels


class MNISTRowsDataModule(MNISTDataModule):
    """MNIST as sequences: each image row is one step of 28 pixels, and a digit's sequence runs
    from its first to its last row with ink, so lengths vary (on MNIST mostly 20, the height of
    the box each digit is scaled into, down to about 11). Batches are
    ``(x (B, T, 28), lengths (B,), y (B,))`` with ``T`` the batch's longest sequence.

    Reads the same files as MNISTDataModule and takes its options (augmentation crops the image
    before its rows are read); batches always come from a DataLoader, never device-resident.
    """

    name = "MNIST rows"
    collate_fn = staticmethod(pad_batch)  # pads each batch and returns the lengths
    ink_threshold = 0.1  # brightness in [0, 1] above which a row counts as part of the digit

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
