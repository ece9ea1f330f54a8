"""Convolutional classifiers built from lazy layers, so one network fits any image size."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from lightning_modules.nets.layers import EpochDropout, SpatialPyramidPool

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}


def weight_to_channels_last(conv: nn.Module, args: object) -> None:
    """Forward pre-hook of a lazy convolution: store its weight NHWC before its first forward.

    Runs after the lazy layer's own pre-hook has made the weight (or after ``load_state_dict``
    has), at the network's first forward, which the LightningModule runs before any optimizer
    sees the parameters; the Parameter object stays the same (only its storage changes).
    """
    conv.weight.data = conv.weight.data.to(memory_format=torch.channels_last)
    for key, hook in list(conv._forward_pre_hooks.items()):
        if hook is weight_to_channels_last:
            del conv._forward_pre_hooks[key]


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"Unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class CNN(nn.Module):
    """Stacked 3x3 convolutions and a pooling head; the defaults are the seed notes' CIFAR network.

    Defaults: conv(->32), ReLU, conv(->64), ReLU, AdaptiveMaxPool2d(16), AvgPool2d(2), Flatten,
    Linear(64*8*8, 512), ReLU, Linear(512, num_outputs). Input channels and the first linear
    width are inferred (``LazyConv2d``/``LazyLinear``), so the same config runs on MNIST
    (1x28x28) and CIFAR-10 (3x32x32). The network returns logits: no Softmax before the loss.

    Args:
        num_outputs: logits out (classes; 1 for a binary task). Filled in from the datamodule.
        channels: output channels of each convolution.
        kernel_size: convolution kernel size (odd; padding keeps the spatial size).
        dilation: dilation of every convolution (padding grows with it, size is kept).
        batch_norm: BatchNorm2d after each convolution (the convolution then has no bias).
        block_pool: pooling after each convolution block: "none", "max" or "avg" (2x2). With
            ReLU, max pooling runs before the activation: the same outputs and gradients, as
            max and ReLU commute, with the activation on a quarter of the values.
        head: "seed" (AdaptiveMaxPool2d(adaptive_size) then AvgPool2d(2)), "flatten",
            "gap" (global average pooling, no hidden layer) or "spp" (spatial pyramid pooling).
        adaptive_size: output size of the seed head's AdaptiveMaxPool2d.
        spp_levels: grid sizes of the spatial pyramid head.
        hidden: width of the hidden linear layer (unused by the "gap" head).
        activation: "relu", "gelu" or "silu".
        dropout: ordinary dropout before the last linear layer.
        epoch_dropout: EpochDropout probability before the last linear layer (0 = off).
        seed: seed of the EpochDropout mask.
        channels_last: NHWC convolution weights and activations. The same numbers; on CPUs
            (oneDNN) max pooling and convolutions run several times faster that way, on GPUs
            convolutions under mixed precision do.
    """

    def __init__(
        self,
        num_outputs: int,
        channels: Sequence[int] = (32, 64),
        kernel_size: int = 3,
        dilation: int = 1,
        batch_norm: bool = False,
        block_pool: Literal["none", "max", "avg"] = "none",
        head: Literal["seed", "flatten", "gap", "spp"] = "seed",
        adaptive_size: int = 16,
        spp_levels: Sequence[int] = (1, 2, 4),
        hidden: int = 512,
        activation: str = "relu",
        dropout: float = 0.0,
        epoch_dropout: float = 0.0,
        seed: int = 0,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd to keep the spatial size, got {kernel_size}")
        padding = dilation * (kernel_size // 2)
        blocks: list[nn.Module] = []
        for width in channels:
            blocks.append(
                nn.LazyConv2d(width, kernel_size, padding=padding, dilation=dilation, bias=not batch_norm)
            )
            if batch_norm:
                blocks.append(nn.BatchNorm2d(width))
            pooling = {"none": [], "max": [nn.MaxPool2d(2)], "avg": [nn.AvgPool2d(2)]}[block_pool]
            act = make_activation(activation)
            relu_max = block_pool == "max" and activation == "relu"
            blocks += [*pooling, act] if relu_max else [act, *pooling]
        self.features = nn.Sequential(*blocks)
        if channels_last:
            for layer in self.features:
                if isinstance(layer, nn.LazyConv2d):
                    layer.register_forward_pre_hook(weight_to_channels_last)

        pool: list[nn.Module] = {
            "seed": [nn.AdaptiveMaxPool2d(adaptive_size), nn.AvgPool2d(2), nn.Flatten()],
            "flatten": [nn.Flatten()],
            "gap": [nn.AdaptiveAvgPool2d(1), nn.Flatten()],
            "spp": [SpatialPyramidPool(spp_levels)],
        }[head]
        hidden_layers: list[nn.Module] = []
        if head != "gap":
            hidden_layers = [nn.LazyLinear(hidden), make_activation(activation)]
        regularizers: list[nn.Module] = []
        if dropout > 0:
            regularizers.append(nn.Dropout(dropout))
        if epoch_dropout > 0:
            regularizers.append(EpochDropout(epoch_dropout, seed=seed))
        self.head = nn.Sequential(*pool, *hidden_layers, *regularizers, nn.LazyLinear(num_outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, num_outputs)
        return self.head(self.features(x))
