"""A CIFAR-10 speed-run network: a frozen whitening layer, three conv blocks, BatchNorm, GELU.

The shape follows the public CIFAR-10 speed runs (airbench): a 2x2 convolution whose filters
whiten image patches (set once from training data, then frozen), then three blocks of
conv-pool-BN-GELU-conv-BN-GELU, a global max pool and a linear layer with scaled-down logits.
BatchNorm has no learned scale and a fast-moving running average; its shift and the whitening
bias learn ``bias_lr_scale`` times faster than the other weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedBuffer


class ScaledBias(nn.Module):
    """Adds a per-channel bias stored as ``bias / sqrt(lr_scale)``.

    Under SGD a parameter stored divided by ``s`` and multiplied back in the forward pass moves
    ``s**2`` times faster: the bias gets its own learning rate inside the single parameter group
    the optimizer is built with, while weight decay still shrinks it at the common rate.
    """

    def __init__(self, channels: int, lr_scale: float = 1.0) -> None:
        super().__init__()
        self.multiplier = math.sqrt(lr_scale)
        self.stored = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        return x + (self.stored * self.multiplier)[:, None, None]


def batch_norm(channels: int, momentum: float, bias_lr_scale: float) -> nn.Sequential:
    """BatchNorm without a learned scale (eps as in the speed runs), then a fast-learning shift."""
    return nn.Sequential(
        nn.BatchNorm2d(channels, eps=1e-12, momentum=momentum, affine=False),
        ScaledBias(channels, bias_lr_scale),
    )


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    """3x3 'same' convolution without bias; its first filters start as identity maps (dirac)."""
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[: min(in_channels, out_channels)])
    return conv


def conv_block(in_channels: int, out_channels: int, bn_momentum: float, bias_lr_scale: float) -> nn.Sequential:
    """(B, C_in, H, W) -> (B, C_out, H // 2, W // 2)."""
    return nn.Sequential(
        conv3x3(in_channels, out_channels),
        nn.MaxPool2d(2),
        batch_norm(out_channels, bn_momentum, bias_lr_scale),
        nn.GELU(),
        conv3x3(out_channels, out_channels),
        batch_norm(out_channels, bn_momentum, bias_lr_scale),
        nn.GELU(),
    )


def patch_whitening(x: torch.Tensor, kernel_size: int, filters: int, eps: float) -> torch.Tensor:
    """Filters that whiten the ``kernel_size`` patches of images ``x`` (B, C, H, W).

    The top ``filters // 2`` eigenvectors of the patches' second-moment matrix, each divided by
    the square root of its eigenvalue (plus ``eps``), followed by their negatives (so a ReLU-like
    activation keeps both signs). Returns (filters, C, k, k) float32.
    """
    channels, dim = x.shape[1], x.shape[1] * kernel_size**2
    if filters > 2 * dim:
        raise ValueError(
            f"whiten_width {filters} exceeds 2 x {dim} (the size of a {channels}-channel "
            f"{kernel_size}x{kernel_size} patch, twice); use at most {2 * dim}."
        )
    patches = x.float().unfold(2, kernel_size, 1).unfold(3, kernel_size, 1)  # (B, C, H', W', k, k)
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, dim)  # (P, C*k*k)
    moment = patches.T @ patches / len(patches)  # (C*k*k, C*k*k)
    eigenvalues, eigenvectors = torch.linalg.eigh(moment)  # ascending order
    eigenvalues = eigenvalues.clamp_min(0)  # rounding can leave a flat direction slightly < 0
    top = eigenvectors.T.flip(0)[: filters // 2]  # (filters/2, C*k*k), largest first
    top = top / (eigenvalues.flip(0)[: filters // 2, None] + eps).sqrt()
    top = top.reshape(-1, channels, kernel_size, kernel_size)
    return torch.cat([top, -top])


class PatchWhitening(LazyModuleMixin, nn.Module):
    """A frozen convolution (no padding) whose filters come from ``fit(x)``, plus a learned bias.

    The filters are a buffer, not a parameter: no optimizer or DDP ever sees them, and checkpoints
    keep them. Their input channels are taken from the first input (lazy).
    """

    def __init__(self, filters: int, kernel_size: int, eps: float, bias_lr_scale: float) -> None:
        super().__init__()
        self.filters = filters
        self.kernel_size = kernel_size
        self.eps = eps
        self.register_buffer("weight", UninitializedBuffer())
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.bias = ScaledBias(filters, bias_lr_scale)

    def initialize_parameters(self, x: torch.Tensor) -> None:  # called by LazyModuleMixin
        if self.has_uninitialized_params():
            with torch.no_grad():
                shape = (self.filters, x.shape[1], self.kernel_size, self.kernel_size)
                self.weight.materialize(shape, device=x.device, dtype=x.dtype)
                nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # placeholder until fit()

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> None:
        """Set the filters from the patches of ``x`` (B, C, H, W), once."""
        if bool(self.fitted):
            return
        self.initialize_parameters(x)
        self.weight.copy_(patch_whitening(x, self.kernel_size, self.filters, self.eps))
        self.fitted.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, F, H-k+1, W-k+1)
        return self.bias(F.conv2d(x, self.weight.to(x.dtype)))


class SpeedrunNet(nn.Module):
    """The speed-run network: logits (B, num_outputs) for images (B, C, H, W) of any size.

    ``init_from_data(x)`` must see a batch of normalized training images before training: it
    fits the whitening filters (once; a loaded checkpoint keeps its own) and, if asked, compiles
    the network on the device it will train on. The ``speed.InitFromData`` callback calls it when
    training starts.

    Args:
        num_outputs: logits out (classes). Filled in from the datamodule.
        widths: output channels of the three conv blocks.
        whiten_kernel: patch size of the whitening layer.
        whiten_width: whitening filters: eigenvectors and their negatives, so at most
            ``2 * channels * whiten_kernel**2`` (24 for RGB 2x2 patches).
        whiten_eps: added to the patch eigenvalues before taking their inverse square root.
        bn_momentum: BatchNorm running-statistics momentum (PyTorch's sense: the batch's weight).
        bias_lr_scale: learning-rate multiplier (under SGD) of the BatchNorm shifts and the
            whitening bias.
        logit_scale: multiplies the logits (a small value keeps early predictions soft).
        channels_last: NHWC weights and activations (faster convolutions on GPUs).
        compile: ``torch.compile`` the network in ``init_from_data``.
    """

    input_shapes = ((3, 32, 32), (1, 28, 28))  # what the network tests run it on

    def __init__(
        self,
        num_outputs: int,
        widths: Sequence[int] = (64, 256, 256),
        whiten_kernel: int = 2,
        whiten_width: int = 24,
        whiten_eps: float = 5e-4,
        bn_momentum: float = 0.4,
        bias_lr_scale: float = 64.0,
        logit_scale: float = 1 / 9,
        channels_last: bool = True,
        compile: bool = False,
    ) -> None:
        super().__init__()
        if whiten_width % 2:
            raise ValueError(f"whiten_width must be even (filters and their negatives), got {whiten_width}")
        self.logit_scale = logit_scale
        self.channels_last = channels_last
        self.compile_on_init = compile
        self.compiled = False
        self.whiten = PatchWhitening(whiten_width, whiten_kernel, whiten_eps, bias_lr_scale)
        blocks, width = [], whiten_width
        for out in widths:
            blocks.append(conv_block(width, out, bn_momentum, bias_lr_scale))
            width = out
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(  # (B, C, h, w) -> (B, C) -> (B, num_outputs)
            nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(width, num_outputs, bias=False)
        )
        if channels_last:
            self.blocks.to(memory_format=torch.channels_last)

    def init_from_data(self, x: torch.Tensor) -> None:
        """Fit the whitening filters to training images ``x`` (B, C, H, W) and compile if asked."""
        self.whiten.fit(x)
        if self.compile_on_init and not self.compiled:  # once, also when training resumes
            self.compile()
            self.compiled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, num_outputs)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = F.gelu(self.whiten(x))
        return self.head(self.blocks(x)) * self.logit_scale
