"""Seeded index splits of a training set: a hold-out validation part, or k folds."""

from __future__ import annotations

import torch


def holdout_split(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val) indices: a seeded permutation, the first ``val_fraction`` of it validation."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n_val = max(1, round(n * val_fraction))
    if n_val >= n:
        raise ValueError(f"val_fraction {val_fraction} of {n} samples leaves nothing to train on")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def kfold_split(
    targets: torch.Tensor, num_folds: int, fold: int, seed: int, stratify: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val) indices of fold ``fold`` of ``num_folds``.

    Folds are disjoint and cover every index. Stratified: each class is permuted and dealt into
    the folds separately, so every fold keeps the class proportions (within one sample).
    """
    if num_folds < 2:
        raise ValueError(f"num_folds must be at least 2, got {num_folds}")
    if not 0 <= fold < num_folds:
        raise ValueError(f"fold must be in [0, {num_folds}), got {fold}")
    generator = torch.Generator().manual_seed(seed)
    n = len(targets)
    groups = [torch.nonzero(targets == c).flatten() for c in targets.unique()] if stratify else [
        torch.arange(n)
    ]
    in_fold = torch.zeros(n, dtype=torch.bool)
    offset = 0  # rotate which fold gets each class's larger chunks, to balance fold sizes
    for group in groups:
        shuffled = group[torch.randperm(len(group), generator=generator)]
        chunk = torch.tensor_split(shuffled, num_folds)[(fold + offset) % num_folds]
        in_fold[chunk] = True
        offset += len(group) % num_folds
    return torch.nonzero(~in_fold).flatten(), torch.nonzero(in_fold).flatten()
