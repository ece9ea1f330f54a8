"""Batches made on the training device from resident uint8 images: the fast recipes' data path
(``device_resident: true``). Each batch is a few whole-batch tensor ops (gather, crop, flip,
normalize): no per-sample Python, no host-to-device copy, and nothing waits on the device, as each
epoch's order and augmentation draws are made on the host once and copied in one go. Measured
with ``bench/data_path.py`` (README, Performance)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torchvision.transforms.v2.functional import resize


def epoch_generator(seed: int, epoch: int, rank: int = 0) -> torch.Generator:
    """A host generator for one (seed, epoch, rank): runs repeat exactly, epochs differ."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + epoch) * 1_000_003 + rank) % (1 << 63))


def random_crop(x: torch.Tensor, padding: int, top: torch.Tensor, left: torch.Tensor, mode: str) -> torch.Tensor:
    """Pad ``x`` (B, C, H, W) by ``padding``, then cut each image's (H, W) window at its own offset
    ``top[b], left[b]`` in [0, 2 * padding] ((B,) int64 on ``x``'s device)."""
    b, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4, mode=mode)  # (B, C, H + 2p, W + 2p)
    rows = top[:, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = left[:, None] + torch.arange(w, device=x.device)  # (B, W)
    padded = padded.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * padding))
    return padded.gather(3, cols[:, None, None, :].expand(b, c, h, w))


class DeviceLoader:
    """``(x, y)`` batches of (N, C, H, W) uint8 ``images`` and (N,) ``targets`` on the training device:
    ``images / 255``, cropped and flipped if asked, normalized (the DataLoader path's arithmetic).
    Training shuffles by ``(seed, epoch)`` alike on every process, dealt round-robin in equal shares;
    evaluation deals the samples in order, each once. ``flip``: "none", "random" (each image, each
    epoch) or "alternate" (a fixed random half in even epochs, the other half in odd ones)."""

    def __init__(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        train: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        crop_padding: int = 0,
        padding_mode: str = "constant",
        flip: str = "none",
    ) -> None:
        self.images, self.targets, self.batch_size, self.train = images, targets, batch_size, train
        self.seed, self.rank, self.world_size, self.epoch = seed, rank, world_size, 0
        self.crop_padding, self.padding_mode, self.flip = crop_padding, padding_mode, flip
        self.mean = torch.tensor(mean, device=images.device).view(-1, 1, 1)  # (C, 1, 1)
        self.std = torch.tensor(std, device=images.device).view(-1, 1, 1)
        coins = torch.randint(0, 2, (len(images),), generator=epoch_generator(seed, -1))  # "alternate"
        self.flip_coins = coins.bool().to(images.device)
        self.sampler, self.batch_sampler = self, None  # what Lightning looks for on a loader
        self.delivered, self.resume_at = 0, None  # batches of this epoch handed out; (epoch, batches)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> torch.Tensor:  # this process's share of the epoch, on the host
        n = len(self.images)
        if not self.train:
            return torch.arange(self.rank, n, self.world_size)
        order = torch.randperm(n, generator=epoch_generator(self.seed, self.epoch))
        return order[self.rank :: self.world_size][: n // self.world_size]

    def __len__(self) -> int:
        n = (
            len(self.images) // self.world_size
            if self.train
            else len(range(self.rank, len(self.images), self.world_size))
        )
        return math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.indices()
        generator = epoch_generator(self.seed, self.epoch, self.rank)
        draws: dict[str, torch.Tensor] = {}
        if self.crop_padding:
            draws["offsets"] = torch.randint(0, 2 * self.crop_padding + 1, (2, len(order)), generator=generator)
        if self.flip == "random":
            draws["flip"] = torch.randint(0, 2, (len(order),), generator=generator).bool()
        order = order.to(self.images.device, non_blocking=True)  # one copy an epoch, then device work
        draws = {k: v.to(self.images.device, non_blocking=True) for k, v in draws.items()}
        if self.flip == "alternate":
            draws["flip"] = self.flip_coins[order] ^ bool(self.epoch % 2)
        resume_at, self.resume_at = self.resume_at, None  # a resumed epoch starts where it stopped
        self.delivered = resume_at[1] if resume_at and resume_at[0] == self.epoch else 0
        for start in range(self.delivered * self.batch_size, len(order), self.batch_size):
            self.delivered += 1
            part = slice(start, start + self.batch_size)
            x = self.images[order[part]].to(torch.float32).mul_(1.0 / 255)  # (B, C, H, W) in [0, 1]
            if "offsets" in draws:
                x = random_crop(x, self.crop_padding, *draws["offsets"][:, part], self.padding_mode)
            if "flip" in draws:
                x = torch.where(draws["flip"][part, None, None, None], x.flip(-1), x)
            yield x.sub_(self.mean).div_(self.std), self.targets[order[part]]

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batches": self.delivered}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.resume_at = state["epoch"], (state["epoch"], state["batches"])


def resident_loader(data: Any, split: str) -> DeviceLoader:
    """The ``DeviceLoader`` of a VisionDataModule's ``split``; its images (resized if asked) are
    copied to the training device once and kept in ``data.resident``."""
    trainer = data.trainer
    device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
    if split not in data.resident or data.resident[split][0].device != device:
        images, targets = data.uint8(train=split != "test")
        if split != "test":
            index = data.split_indices()[0 if split == "train" else 1]
            images, targets = images[index], targets[index]
        if data.resize is not None and images.shape[-2:] != (data.resize, data.resize):
            images = resize(images, [data.resize, data.resize], antialias=True)  # as v2.Resize, batched
        data.resident[split] = (images.to(device), targets.to(device))
    augment = split == "train" and data.augment
    flip = ("alternate" if data.alternate_flip else "random") if augment and data.flip else "none"
    rank, world_size = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
    return DeviceLoader(
        *data.resident[split],
        data.batch_size,
        data.mean,
        data.std,
        train=split == "train",
        seed=data.seed,
        rank=rank,
        world_size=world_size,
        crop_padding=data.crop_padding if augment else 0,
        padding_mode=data.padding_mode,
        flip=flip,
    )
