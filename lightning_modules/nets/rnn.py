"""A recurrent classifier over padded batches of variable-length sequences."""

from __future__ import annotations

from typing import Literal

import torch
from jsonargparse.typing import ClosedUnitInterval, PositiveInt
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from lightning_modules.nets.layers import DropProbability, EpochDropout

CELLS: dict[str, type[nn.RNNBase]] = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


class RecurrentNet(nn.Module):
    """Per-step projection, a recurrent stack over the packed batch, a linear head. ``forward(x,
    lengths)`` takes a padded batch (B, T, F) and each sequence's length (None: all T); packed, the
    padding is never read, whatever it holds. ``F`` is inferred (``LazyLinear``).

    Args:
        num_outputs: logits out (classes; 1 for a binary task). Filled in from the datamodule.
        cell: "lstm", "gru" or "rnn" (tanh).
        embed_size: width of the per-step linear projection that feeds the recurrent layers.
        hidden_size: hidden width of each recurrent layer (per direction).
        num_layers: stacked recurrent layers.
        bidirectional: also read each sequence backwards (from its own last step).
        pool: summary of a sequence: "last" (final hidden state of the top layer) or "mean"
            (mean of the top layer's outputs over the valid steps).
        dropout: dropout between stacked recurrent layers.
        epoch_dropout: EpochDropout probability before the head (0 = off).
        seed: seed of the EpochDropout mask.
    """

    input_shapes = ((28, 28),)  # (T, F): the sample shapes tests/test_nets.py runs it on

    def __init__(
        self,
        num_outputs: int,
        cell: Literal["lstm", "gru", "rnn"] = "lstm",
        embed_size: PositiveInt = 64,
        hidden_size: PositiveInt = 128,
        num_layers: PositiveInt = 1,
        bidirectional: bool = False,
        pool: Literal["last", "mean"] = "last",
        dropout: ClosedUnitInterval = 0.0,
        epoch_dropout: DropProbability = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.pool = pool
        self.num_layers = num_layers
        self.directions = 2 if bidirectional else 1
        self.embed = nn.LazyLinear(embed_size)
        self.rnn = CELLS[cell](
            embed_size,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.dropout = EpochDropout(epoch_dropout, seed=seed) if epoch_dropout > 0 else nn.Identity()
        self.head = nn.Linear(self.directions * hidden_size, num_outputs)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        # x (B, T, F) padded, lengths (B,) -> (B, num_outputs)
        if lengths is None:
            lengths = torch.full((x.shape[0],), x.shape[1])
        steps = self.embed(x)  # (B, T, E); padded steps are projected too, then never read
        # enforce_sorted=False: the batch keeps its order; lengths must live on the CPU
        packed = pack_padded_sequence(steps, lengths.cpu(), batch_first=True, enforce_sorted=False)
        outputs, hidden = self.rnn(packed)
        if self.pool == "last":
            h_n = hidden[0] if isinstance(hidden, tuple) else hidden  # LSTM: (h_n, c_n)
            # (layers * directions, B, H) -> top layer (directions, B, H) -> (B, directions * H)
            top = h_n.view(self.num_layers, self.directions, *h_n.shape[1:])[-1]
            summary = top.transpose(0, 1).reshape(x.shape[0], -1)
        else:
            # (B, T', D*H) with zeros past each sequence's end, and the (B,) lengths
            padded, valid = pad_packed_sequence(outputs, batch_first=True)
            summary = padded.sum(1) / valid.to(padded.device, padded.dtype).unsqueeze(1)
        return self.head(self.dropout(summary))
