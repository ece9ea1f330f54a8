"""Classification of variable-length sequences: batches are (x, lengths, y)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lightning_modules.classifier import Classifier


class SequenceClassifier(Classifier):
    """A Classifier whose network reads a padded batch with its lengths, ``net(x, lengths)``.

    ``x`` is (B, T, F), zero-padded after each sequence's ``lengths[b]`` steps; ``input_shape`` is
    (longest T, F), linked from the datamodule. Options as for Classifier.
    """

    def example_input(self, input_shape: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        # x (2, T, F) and lengths (2,): one full-length and one half-length sequence
        longest = int(input_shape[0])
        return torch.zeros(2, *input_shape), torch.tensor([longest, max(1, longest // 2)])

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.net(x, lengths)
