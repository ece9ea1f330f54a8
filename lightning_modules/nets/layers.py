"""Reusable layers: epoch-fixed dropout and spatial pyramid pooling."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from jsonargparse.typing import restricted_number_type
from torch import nn

DropProbability = restricted_number_type("DropProbability", float, [(">=", 0), ("<", 1)])  # [0, 1)


def _forget_mask(layer: EpochDropout, incompatible_keys: object) -> None:
    layer._mask = None  # drawn again from the loaded (seed, epoch) at the next forward


class EpochDropout(nn.Module):
    """Dropout whose mask stays fixed for a whole epoch and is resampled by ``reset(epoch)``.

    The mask covers the feature dimensions (every sample in every batch of the epoch drops the
    same units) and is drawn from ``(seed, epoch)`` alone, so all DDP ranks hold the same mask and
    a run resumed from a checkpoint (``epoch`` is a buffer) draws the mask it would have drawn.
    Identity in eval mode. ``callbacks.EpochDropoutReset`` calls ``reset`` at each epoch start.

    Args:
        p: probability of dropping a unit.
        seed: base seed of the mask; give each layer of a network its own.
    """

    def __init__(self, p: float = 0.5, seed: int = 0) -> None:
        super().__init__()
        self.p = p
        self.seed = seed
        self.register_buffer("epoch", torch.zeros((), dtype=torch.long))
        self._mask: torch.Tensor | None = None  # derived from (seed, epoch), never saved
        # A loaded state (a resumed checkpoint) may hold another epoch than the cached mask's.
        self.register_load_state_dict_post_hook(_forget_mask)

    def reset(self, epoch: int) -> None:
        self.epoch.fill_(epoch)
        self._mask = None

    def mask(self, feature_shape: torch.Size, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The scaled keep-mask of the current epoch, shape ``feature_shape``."""
        cached = self._mask
        if cached is None or cached.shape != feature_shape or cached.device != device or cached.dtype != dtype:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + int(self.epoch))
            keep = torch.rand(feature_shape, generator=generator) >= self.p
            self._mask = (keep / (1.0 - self.p)).to(device=device, dtype=dtype)
        return self._mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, *features)
        if not self.training or self.p == 0.0:
            return x
        return x * self.mask(x.shape[1:], x.device, x.dtype)

    def extra_repr(self) -> str:
        return f"p={self.p}, seed={self.seed}"


class SpatialPyramidPool(nn.Module):
    """Max-pools a feature map to each grid size in ``levels`` and concatenates the results.

    The output width is ``C * sum(l * l for l in levels)`` whatever the input height and width,
    which lets one fully connected head serve any image size.
    """

    def __init__(self, levels: Sequence[int] = (1, 2, 4)) -> None:
        super().__init__()
        self.levels = tuple(levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C * sum(l^2))
        pooled = [F.adaptive_max_pool2d(x, level).flatten(1) for level in self.levels]
        return torch.cat(pooled, dim=1)

    def extra_repr(self) -> str:
        return f"levels={self.levels}"
