"""Loaders: training in an order that depends on (seed, epoch) alone, resumable mid-epoch; and
evaluation that sees every sample once over all processes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler


class EpochOrderSampler(DistributedSampler):
    """``DistributedSampler``'s shuffle of ``(seed, epoch)`` dealt out over processes (Lightning
    keeps a DistributedSampler as it is), able to start an epoch part-way through."""

    def __init__(self, dataset: Dataset, seed: int, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
        self.start = 0  # samples of this epoch trained on before a restart

    def __iter__(self) -> Iterator[int]:
        indices, self.start = list(super().__iter__())[self.start :], 0
        return iter(indices)


class EvaluationShard(DistributedSampler):
    """Process ``rank``'s share of an evaluation set, in order: every sample exactly once over all
    processes (a plain DistributedSampler repeats some to even the shares out)."""

    def __init__(self, dataset: Dataset, rank: int, world_size: int) -> None:
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=False)
        self.indices = range(rank, len(dataset), world_size)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class ResumableLoader(DataLoader):
    """A DataLoader over an ``EpochOrderSampler`` whose position Lightning saves in checkpoints
    (``state_dict``): a run resumed mid-epoch skips the batches it trained on before."""

    delivered, resume_at = 0, None  # batches of this epoch handed out; (epoch, batches) to resume at

    def __iter__(self) -> Iterator[Any]:
        sampler = self.sampler
        resume = self.resume_at is not None and self.resume_at[0] == sampler.epoch  # the epoch it was saved in
        self.delivered, self.resume_at = self.resume_at[1] if resume else 0, None
        sampler.start = self.delivered * self.batch_size
        self.generator.manual_seed((sampler.seed * 100_003 + sampler.epoch) % (1 << 63))  # the workers' seeds
        for batch in super().__iter__():
            self.delivered += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches": self.delivered}

    def load_state_dict(self, state: dict[str, int]) -> None:
        # called before the epoch's iterator exists, and before set_epoch: take the epoch too
        self.sampler.set_epoch(state["epoch"])
        self.resume_at = (state["epoch"], state["batches"])


def training_loader(dataset: Dataset, seed: int, rank: int, world_size: int, **options: Any) -> ResumableLoader:
    sampler = EpochOrderSampler(dataset, seed, rank, world_size)
    return ResumableLoader(dataset, sampler=sampler, generator=torch.Generator(), **options)
