"""Convolutional classifiers built from lazy layers, so one network fits any image size."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from jsonargparse.typing import ClosedUnitInterval, PositiveInt
from torch import nn

from lightning_modules.nets.layers import DropProbability, EpochDropout, SpatialPyramidPool
from run.errors import UserError

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}


class CNN(nn.Module):
    """Stacked convolutions and a pooling head; the defaults are the classic CIFAR-10 network:
    conv(->32), ReLU, conv(->64), ReLU, AdaptiveMaxPool2d(16), AvgPool2d(2), Linear(->512), ReLU,
    Linear(->num_outputs). Lazy layers infer the input channels and the first linear width, so one
    config runs on 1x28x28 and 3x32x32 images. It returns logits: no Softmax before the loss.

    Args:
        num_outputs: logits out (classes; 1 for a binary task). Filled in from the datamodule.
        channels: output channels of each convolution.
        kernel_size: convolution kernel size (odd; padding keeps the spatial size).
        dilation: dilation of every convolution (padding grows with it, size is kept).
        batch_norm: BatchNorm2d after each convolution (the convolution then has no bias).
        block_pool: pooling after each convolution block: "none", "max" or "avg" (2x2). With
            ReLU, max pooling runs before the activation: the same outputs and gradients, as
            max and ReLU commute, with the activation on a quarter of the values.
        head: "adaptive" (AdaptiveMaxPool2d(adaptive_size) then AvgPool2d(2)), "flatten",
            "gap" (global average pooling, no hidden layer) or "spp" (spatial pyramid pooling).
        adaptive_size: output size of the adaptive head's AdaptiveMaxPool2d.
        spp_levels: grid sizes of the spatial pyramid head.
        hidden: width of the hidden linear layer (unused by the "gap" head).
        activation: "relu", "gelu" or "silu".
        dropout: ordinary dropout before the last linear layer.
        epoch_dropout: EpochDropout probability before the last linear layer (0 = off).
        seed: seed of the EpochDropout mask.
    """

    def __init__(
        self,
        num_outputs: int,
        channels: Sequence[PositiveInt] = (32, 64),
        kernel_size: PositiveInt = 3,
        dilation: PositiveInt = 1,
        batch_norm: bool = False,
        block_pool: Literal["none", "max", "avg"] = "none",
        head: Literal["adaptive", "flatten", "gap", "spp"] = "adaptive",
        adaptive_size: PositiveInt = 16,
        spp_levels: Sequence[PositiveInt] = (1, 2, 4),
        hidden: PositiveInt = 512,
        activation: Literal["relu", "gelu", "silu"] = "relu",
        dropout: ClosedUnitInterval = 0.0,
        epoch_dropout: DropProbability = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise UserError(f"--model.net.kernel_size must be odd to keep the spatial size, got {kernel_size}.")
        padding = dilation * (kernel_size // 2)
        blocks: list[nn.Module] = []
        for width in channels:
            blocks.append(nn.LazyConv2d(width, kernel_size, padding=padding, dilation=dilation, bias=not batch_norm))
            if batch_norm:
                blocks.append(nn.BatchNorm2d(width))
            pooling = {"none": [], "max": [nn.MaxPool2d(2)], "avg": [nn.AvgPool2d(2)]}[block_pool]
            act = ACTIVATIONS[activation]()
            relu_max = block_pool == "max" and activation == "relu"
            blocks += [*pooling, act] if relu_max else [act, *pooling]
        self.features = nn.Sequential(*blocks)

        pool: list[nn.Module] = {
            "adaptive": [nn.AdaptiveMaxPool2d(adaptive_size), nn.AvgPool2d(2), nn.Flatten()],
            "flatten": [nn.Flatten()],
            "gap": [nn.AdaptiveAvgPool2d(1), nn.Flatten()],
            "spp": [SpatialPyramidPool(spp_levels)],
        }[head]
        hidden_layers: list[nn.Module] = []
        if head != "gap":
            hidden_layers = [nn.LazyLinear(hidden), ACTIVATIONS[activation]()]
        regularizers: list[nn.Module] = []
        if dropout > 0:
            regularizers.append(nn.Dropout(dropout))
        if epoch_dropout > 0:
            regularizers.append(EpochDropout(epoch_dropout, seed=seed))
        self.head = nn.Sequential(*pool, *hidden_layers, *regularizers, nn.LazyLinear(num_outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, num_outputs)
        return self.head(self.features(x))
