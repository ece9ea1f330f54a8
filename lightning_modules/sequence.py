"""Classification of variable-length sequences: batches are (x, lengths, y)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lightning_modules.classifier import Classifier


class SequenceClassifier(Classifier):
    """A Classifier whose network reads a zero-padded batch ``x`` (B, T, F) with each sequence's
    length, ``net(x, lengths)``; ``input_shape`` is (longest T, F). Options as for Classifier."""

    def example_input(self, input_shape: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        longest = int(input_shape[0])  # one full-length and one half-length sequence
        return torch.zeros(2, *input_shape), torch.tensor([longest, max(1, longest // 2)])
