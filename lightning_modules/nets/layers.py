"""Reusable layers: epoch-fixed dropout and spatial pyramid pooling."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from jsonargparse.typing import restricted_number_type
from torch import nn

DropProbability = restricted_number_type("DropProbability", float, [(">=", 0), ("<", 1)])  # [0, 1)


class EpochDropout(nn.Module):
    """Dropout whose mask stays fixed for a whole epoch: every sample of every batch drops the same
    units, drawn from ``(seed, epoch)`` alone, so all DDP ranks hold the same mask, and a resumed
    run (the epoch is in the state_dict) the mask it would have had. Identity in eval mode;
    ``callbacks.EpochDropoutReset`` calls ``reset(epoch)`` at each epoch start.

    Args:
        p: probability of dropping a unit.
        seed: base seed of the mask; give each layer of a network its own.
    """

    def __init__(self, p: float = 0.5, seed: int = 0) -> None:
        super().__init__()
        self.p, self.seed, self.epoch, self._mask = p, seed, 0, None

    def reset(self, epoch: int) -> None:
        self.epoch, self._mask = epoch, None

    def get_extra_state(self) -> dict[str, int]:
        return {"epoch": self.epoch}

    def set_extra_state(self, state: dict[str, int]) -> None:
        self.reset(state["epoch"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, *features)
        if not self.training or self.p == 0.0:
            return x
        if self._mask is None or self._mask.shape != x.shape[1:] or self._mask.device != x.device:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            keep = torch.rand(x.shape[1:], generator=generator) >= self.p  # drawn on the host: no device sync
            self._mask = (keep / (1.0 - self.p)).to(x.device)
        return x * self._mask.to(x.dtype)

    def extra_repr(self) -> str:
        return f"p={self.p}, seed={self.seed}"


class SpatialPyramidPool(nn.Module):
    """Max-pools a feature map to each grid size in ``levels`` and concatenates the results: the
    width is ``C * sum(l * l for l in levels)`` whatever the image size, so one head serves all."""

    def __init__(self, levels: Sequence[int] = (1, 2, 4)) -> None:
        super().__init__()
        self.levels = tuple(levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C * sum(l^2))
        pooled = [F.adaptive_max_pool2d(x, level).flatten(1) for level in self.levels]
        return torch.cat(pooled, dim=1)

    def extra_repr(self) -> str:
        return f"levels={self.levels}"
