"""Loaders: training in an order that depends on (seed, epoch) alone, resumable mid-epoch; and
evaluation that sees every sample once over all processes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler


class EpochOrderSampler(DistributedSampler):
    """``DistributedSampler``'s shuffle, a function of ``(seed, epoch)`` dealt out over processes
    (Lightning keeps a DistributedSampler as it is), that can start an epoch part-way through."""

    def __init__(self, dataset: Dataset, seed: int, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
        self.start = 0  # samples of this epoch to skip: trained on before a restart

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())[self.start :]
        self.start = 0
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
    """A DataLoader whose position Lightning saves in checkpoints (``state_dict``) and restores
    (``load_state_dict``): a run resumed mid-epoch skips the batches it already trained on instead
    of starting the epoch over. Worker processes are seeded from ``(seed, epoch)`` too."""

    def __init__(self, dataset: Dataset, *args: Any, **kwargs: Any) -> None:
        super().__init__(dataset, *args, **kwargs)
        self.delivered = 0  # batches of the current epoch handed to training
        self.resume_at: tuple[int, int] | None = None  # (epoch, batches already trained)

    def __iter__(self) -> Iterator[Any]:
        sampler, skip = self.sampler, 0
        if isinstance(sampler, EpochOrderSampler):
            if self.resume_at is not None and self.resume_at[0] == sampler.epoch:
                skip = self.resume_at[1]  # only in the epoch it was saved in
            sampler.start = skip * self.batch_size
            if self.generator is not None:
                self.generator.manual_seed((sampler.seed * 100_003 + sampler.epoch) % (1 << 63))
        self.delivered, self.resume_at = skip, None
        for batch in super().__iter__():
            self.delivered += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": getattr(self.sampler, "epoch", 0), "batches": self.delivered}

    def load_state_dict(self, state: dict[str, int]) -> None:
        # called before the epoch's iterator exists (and before set_epoch): take the epoch too
        if isinstance(self.sampler, EpochOrderSampler):
            self.sampler.set_epoch(state["epoch"])
            self.resume_at = (state["epoch"], state["batches"])


def training_loader(
    dataset: Dataset, seed: int, rank: int, world_size: int, **kwargs: Any
) -> ResumableLoader:
    """The resumable training loader of ``dataset`` (kwargs: batch size, workers, collate_fn)."""
    sampler = EpochOrderSampler(dataset, seed, rank, world_size)
    return ResumableLoader(dataset, sampler=sampler, generator=torch.Generator(), **kwargs)
