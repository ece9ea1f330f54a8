"""Shared data logic: seeded validation split or k-fold, per-device batch size, DataLoaders.

A subclass says what its data is (``task``, ``num_classes``, ``input_shape``), where the raw
training and test sets come from (``source``), and how samples are transformed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from jsonargparse.typing import NonNegativeInt, OpenUnitInterval, PositiveInt, restricted_number_type
from torch.utils.data import DataLoader, Dataset, random_split

from datamodules.loader import training_loader

AtLeastTwo = restricted_number_type("AtLeastTwo", int, (">=", 2))


class DataNotFoundError(FileNotFoundError):
    """Raised when a dataset is neither on disk nor downloadable."""


def data_not_found(name: str, folder: Path, expected: Sequence[str], cause: str = "") -> DataNotFoundError:
    reason = f" ({cause})" if cause else ""
    return DataNotFoundError(
        f"{name} not found in {folder.resolve()} and could not be downloaded{reason}.\n"
        "  Point --data.data_dir to a folder that holds it (e.g. ../shared/data), or allow the download.\n"
        f"  Expected there: {', '.join(expected)}"
    )


def kfold_indices(
    targets: torch.Tensor, num_folds: int, fold: int, seed: int, stratify: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val) indices of fold ``fold`` of ``num_folds`` (stratified: every fold keeps the
    class shares), shuffled by ``seed``: scikit-learn's ``(Stratified)KFold``."""
    from sklearn.model_selection import KFold, StratifiedKFold  # only k-fold runs pay the import

    splitter = (StratifiedKFold if stratify else KFold)(num_folds, shuffle=True, random_state=seed)
    labels = targets.numpy()
    train, val = list(splitter.split(labels, labels))[fold]
    return torch.from_numpy(train), torch.from_numpy(val)


class TransformedSubset(Dataset):
    """``source[indices[i]]`` with ``transform`` applied to the input."""

    def __init__(self, source: Dataset, indices: Sequence[int] | None, transform: Callable | None) -> None:
        self.source = source
        self.indices = indices
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else len(self.source)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        x, y = self.source[int(self.indices[i]) if self.indices is not None else i]
        return (self.transform(x) if self.transform is not None else x), y


class SplitDataModule(L.LightningDataModule):
    """Base of every datamodule here.

    Args:
        data_dir: folder that holds (or receives) the data.
        batch_size: samples per batch on each device (process), > 0.
        global_batch_size: if set, the batch over all processes; it must divide by the number of
            processes, and ``batch_size`` is derived from it.
        val_fraction: share of the official training set held out for validation, in (0, 1).
        num_folds: if set (>= 2), validate on fold ``fold`` of a k-fold split instead (stratified
            for classification); ``val_fraction`` is then unused.
        fold: which fold validates, in [0, num_folds).
        seed: seed of the split (and of generated data).
        num_workers: DataLoader worker processes.
        pin_memory: page-locked host memory for faster copies to a GPU.
        persistent_workers: keep workers alive between epochs.
    """

    task: str = "multiclass"
    collate_fn: Callable | None = None  # how the DataLoader batches samples (None: stack them)

    def __init__(
        self,
        *,
        data_dir: str = "data",
        batch_size: PositiveInt = 128,
        global_batch_size: PositiveInt | None = None,
        val_fraction: OpenUnitInterval = 0.1,
        num_folds: AtLeastTwo | None = None,
        fold: NonNegativeInt = 0,
        seed: int = 42,
        num_workers: NonNegativeInt = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
    ) -> None:
        super().__init__()
        self.data_dir = Path(data_dir)
        self.batch_size = batch_size
        self.global_batch_size = global_batch_size
        self.val_fraction = val_fraction
        self.num_folds = num_folds
        self.fold = fold
        self.seed = seed
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.datasets: dict[str, Dataset] = {}

    # -- facts linked into the model -------------------------------------------------------
    @property
    def num_classes(self) -> int | None:
        """Classes of a classification task (None for regression)."""
        raise NotImplementedError

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one model input, without the batch dimension."""
        raise NotImplementedError

    # -- what a subclass provides ----------------------------------------------------------
    def source(self, train: bool) -> Dataset:
        """The official training (``train=True``) or test set, untransformed."""
        raise NotImplementedError

    def source_targets(self, train: bool) -> torch.Tensor:
        """All targets of ``source(train)``, in order (used to stratify and to check losses)."""
        raise NotImplementedError

    def transform(self, stage: str) -> Callable | None:
        """Per-sample input transform for "train" or for evaluation ("eval")."""
        return None

    # -- splitting -------------------------------------------------------------------------
    def split_indices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(train, val) indices into the official training set, each in ascending order."""
        targets = self.source_targets(train=True)
        if self.num_folds is not None:
            if self.fold >= self.num_folds:
                raise ValueError(f"--data.fold {self.fold} does not exist: choose 0 to {self.num_folds - 1}.")
            return kfold_indices(
                targets, self.num_folds, self.fold, self.seed, stratify=self.task != "regression"
            )
        n = len(targets)
        n_val = max(1, round(n * self.val_fraction))  # tiny data still validates on something
        train, val = random_split(
            range(n), [n - n_val, n_val], generator=torch.Generator().manual_seed(self.seed)
        )
        return torch.tensor(sorted(train.indices)), torch.tensor(sorted(val.indices))

    def train_targets(self) -> torch.Tensor:
        """Targets of the training part of the split."""
        return self.source_targets(train=True)[self.split_indices()[0]]

    def setup(self, stage: str) -> None:
        self.batch_size = self.per_device_batch_size()
        if stage in ("fit", "validate") and "train" not in self.datasets:
            train_idx, val_idx = self.split_indices()
            train_source = self.source(train=True)
            self.datasets["train"] = TransformedSubset(train_source, train_idx, self.transform("train"))
            self.datasets["val"] = TransformedSubset(train_source, val_idx, self.transform("eval"))
        if stage in ("test", "predict") and "test" not in self.datasets:
            # the official test set is only ever evaluated, never trained or tuned on
            self.datasets["test"] = TransformedSubset(self.source(train=False), None, self.transform("eval"))

    def per_device_batch_size(self) -> int:
        world_size = self.trainer.world_size if self.trainer is not None else 1
        if self.global_batch_size is None:
            return self.batch_size
        if self.global_batch_size % world_size:
            raise ValueError(
                f"global_batch_size {self.global_batch_size} does not divide by the {world_size} "
                f"processes of this run; choose a multiple of {world_size} or set batch_size "
                "(per device) instead."
            )
        return self.global_batch_size // world_size

    # -- loaders ---------------------------------------------------------------------------
    def loader(self, split: str) -> DataLoader:
        options = {
            "batch_size": self.batch_size,
            "collate_fn": self.collate_fn,
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory,
            "persistent_workers": self.persistent_workers,
        }
        if split != "train":
            return DataLoader(self.datasets[split], **options)
        # the order depends on the data seed and the run's seed alone, so a resumed run replays it
        seed = (self.seed * 1_000_003 + torch.initial_seed()) % (1 << 62)
        rank, world_size = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        return training_loader(self.datasets["train"], seed, rank, world_size, **options)

    def train_dataloader(self) -> Any:
        return self.loader("train")

    def val_dataloader(self) -> Any:
        return self.loader("val")

    def test_dataloader(self) -> Any:
        return self.loader("test")

    def predict_dataloader(self) -> Any:
        return self.loader("test")
