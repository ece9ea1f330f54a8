"""A CIFAR-10 speed-run network, after the public speed runs (airbench): a frozen 2x2 convolution
whose filters whiten image patches (fitted once to training images), three blocks of
conv-pool-BN-GELU-conv-BN-GELU, a global max pool and a linear layer with scaled-down logits.
BatchNorm has no learned scale and a fast running average; its shift and the whitening bias learn
``bias_lr_scale`` times faster than the other weights."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from run.errors import UserError


class ScaledBias(nn.Module):
    """A per-channel bias stored as ``bias / sqrt(lr_scale)``: under SGD it then moves ``lr_scale``
    times faster, inside the optimizer's one parameter group."""

    def __init__(self, channels: int, lr_scale: float) -> None:
        super().__init__()
        self.multiplier, self.stored = math.sqrt(lr_scale), nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        return x + (self.stored * self.multiplier)[:, None, None]


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    """A 3x3 'same' convolution without bias whose first filters start as identity maps."""
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[: min(in_channels, out_channels)])
    return conv


def conv_block(in_channels: int, out_channels: int, momentum: float, bias_lr_scale: float) -> nn.Sequential:
    """(B, C_in, H, W) -> (B, C_out, H // 2, W // 2)."""

    def norm() -> list[nn.Module]:  # BatchNorm without a learned scale, then a fast-learning shift
        bn = nn.BatchNorm2d(out_channels, eps=1e-12, momentum=momentum, affine=False)
        return [bn, ScaledBias(out_channels, bias_lr_scale)]

    first, second = conv3x3(in_channels, out_channels), conv3x3(out_channels, out_channels)
    return nn.Sequential(first, nn.MaxPool2d(2), *norm(), nn.GELU(), second, *norm(), nn.GELU())


def patch_whitening(x: torch.Tensor, kernel_size: int, filters: int, eps: float) -> torch.Tensor:
    """(filters, C, k, k) filters whitening the k x k patches of images ``x`` (B, C, H, W): the top
    ``filters // 2`` eigenvectors of the patches' second moments over sqrt(eigenvalue + eps), and
    their negatives."""
    patches = x.float().unfold(2, kernel_size, 1).unfold(3, kernel_size, 1)  # (B, C, H', W', k, k)
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, x.shape[1] * kernel_size**2)  # (P, C*k*k)
    eigenvalues, eigenvectors = torch.linalg.eigh(patches.T @ patches / len(patches))  # ascending
    top = eigenvectors.T.flip(0)[: filters // 2] / (eigenvalues.flip(0)[: filters // 2, None].clamp_min(0) + eps).sqrt()
    top = top.reshape(-1, x.shape[1], kernel_size, kernel_size)
    return torch.cat([top, -top])


class SpeedrunNet(nn.Module):
    """Logits (B, num_outputs) for images (B, C, H, W). ``init_from_data(x)`` must see a batch of
    normalized training images before training (the ``callbacks.speed.InitFromData`` callback):
    it fits the whitening filters (once; a loaded checkpoint keeps its own) and compiles if asked.

    Args:
        num_outputs: logits out (classes). Filled in from the datamodule.
        in_channels: image channels.
        widths: output channels of the three conv blocks.
        whiten_kernel: patch size of the whitening layer.
        whiten_width: whitening filters (eigenvectors and their negatives: at most 2 C k^2).
        whiten_eps: added to the patch eigenvalues before their inverse square root.
        bn_momentum: BatchNorm running-statistics momentum (PyTorch's sense: the batch's weight).
        bias_lr_scale: learning-rate multiplier (under SGD) of the BatchNorm shifts and whitening bias.
        logit_scale: multiplies the logits (small: soft early predictions).
        compile: ``torch.compile`` the network in ``init_from_data``.
    """

    input_shapes = ((3, 32, 32),)  # the sample shapes tests/test_nets.py runs it on

    def __init__(
        self,
        num_outputs: int,
        in_channels: int = 3,
        widths: Sequence[int] = (64, 256, 256),
        whiten_kernel: int = 2,
        whiten_width: int = 24,
        whiten_eps: float = 5e-4,
        bn_momentum: float = 0.4,
        bias_lr_scale: float = 64.0,
        logit_scale: float = 1 / 9,
        compile: bool = False,
    ) -> None:
        super().__init__()
        if whiten_width > 2 * in_channels * whiten_kernel**2:  # eigenvectors and their negatives
            raise UserError(f"--model.net.whiten_width is at most {2 * in_channels * whiten_kernel**2} here.")
        self.logit_scale, self.compile_on_init, self.whiten_eps = logit_scale, compile, whiten_eps
        self.register_buffer("whiten", torch.zeros(whiten_width, in_channels, whiten_kernel, whiten_kernel))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))  # a buffer: a checkpoint keeps it
        self.whiten_bias = ScaledBias(whiten_width, bias_lr_scale)
        ins = [whiten_width, *widths[:-1]]
        self.blocks = nn.Sequential(
            *(conv_block(a, b, bn_momentum, bias_lr_scale) for a, b in zip(ins, widths, strict=True))
        )
        self.head = nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(widths[-1], num_outputs, bias=False))
        self.to(memory_format=torch.channels_last)  # NHWC: faster convolutions on GPUs

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor) -> None:
        if not bool(self.fitted):
            self.whiten.copy_(patch_whitening(x, self.whiten.shape[-1], len(self.whiten), self.whiten_eps))
            self.fitted.fill_(True)
        if self.compile_on_init:  # once, also when training resumes
            self.compile()
            self.compile_on_init = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, num_outputs)
        x = F.gelu(self.whiten_bias(F.conv2d(x.contiguous(memory_format=torch.channels_last), self.whiten.to(x.dtype))))
        return self.head(self.blocks(x)) * self.logit_scale
