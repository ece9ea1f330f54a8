"""Shared data logic: a seeded validation split or k-fold, per-process batches, loaders. A subclass
says what its data is (``task``, ``num_classes``, ``input_shape``), where it comes from (``source``,
``source_targets``) and how samples are transformed."""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from jsonargparse.typing import NonNegativeInt, OpenUnitInterval, PositiveInt, restricted_number_type
from torch.utils.data import DataLoader, Dataset, random_split

from datamodules.loader import EvaluationShard, training_loader
from run.errors import UserError

AtLeastTwo = restricted_number_type("AtLeastTwo", int, (">=", 2))


def data_not_found(name: str, folder: Path, expected: Sequence[str], cause: str) -> UserError:
    return UserError(
        f"{name} not found in {folder.resolve()} ({cause}).\nPoint --data.data_dir to a folder "
        f"that holds it, e.g. ../shared/data.\nExpected there: {', '.join(expected)}"
    )


def ignore_stop_signals(worker_id: int) -> None:
    """Workers leave the stop signals to the main process, which saves and then stops them:
    SLURM and Ctrl+C signal every process of a job."""
    for name in ("SIGINT", "SIGTERM", "SIGUSR1"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)


class TransformedSubset(Dataset):
    """``source[indices[i]]`` (every sample without indices) with ``transform`` on the input."""

    def __init__(self, source: Dataset, indices: Sequence[int] | None, transform: Callable | None) -> None:
        self.source, self.indices, self.transform = source, indices, transform

    def __len__(self) -> int:
        return len(self.indices if self.indices is not None else self.source)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        x, y = self.source[int(self.indices[i]) if self.indices is not None else i]
        return (self.transform(x) if self.transform else x), y


class SplitDataModule(L.LightningDataModule):
    """Base of every datamodule here.

    Args:
        data_dir: folder that holds (or receives) the data.
        batch_size: samples per batch in each process.
        global_batch_size: if set, the batch over all processes (``batch_size`` is derived).
        val_fraction: share of the official training set held out for validation.
        num_folds: if set, validate on fold ``fold`` of a k-fold split (stratified for classes).
        fold: which fold validates, in [0, num_folds).
        seed: seed of the split (and of generated data).
        num_workers: DataLoader worker processes.
        pin_memory: page-locked host memory for faster copies to a GPU.
        persistent_workers: keep workers alive between epochs.
    """

    task: str = "multiclass"
    collate_fn: Callable | None = None

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
        if num_folds is not None and fold >= num_folds:
            raise UserError(f"--data.fold {fold} does not exist: choose 0 to {num_folds - 1}.")
        # what a resumed run must keep (cli.py checks); where the data is, and how it is read, may change
        self.save_hyperparameters(ignore=["data_dir", "num_workers", "pin_memory", "persistent_workers"], logger=False)
        self.data_dir, self.batch_size, self.global_batch_size = Path(data_dir), batch_size, global_batch_size
        self.val_fraction, self.num_folds, self.fold, self.seed = val_fraction, num_folds, fold, seed
        self.loader_options = {
            "num_workers": num_workers,
            "pin_memory": pin_memory,
            "persistent_workers": persistent_workers and num_workers > 0,
        }
        self.datasets: dict[str, Dataset] = {}

    def source(self, train: bool) -> Dataset:
        """The official training (``train=True``) or test set, untransformed."""
        raise NotImplementedError

    def source_targets(self, train: bool) -> torch.Tensor:
        raise NotImplementedError

    def transform(self, stage: str) -> Callable | None:
        """Per-sample input transform for "train" or "eval"."""
        return None

    def split_indices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(train, val) indices into the official training set, each in ascending order."""
        targets = self.source_targets(train=True)
        if self.num_folds is not None:  # scikit-learn's (Stratified)KFold, imported by k-fold runs alone
            from sklearn.model_selection import KFold, StratifiedKFold

            kind = KFold if self.task == "regression" else StratifiedKFold
            train, val = list(kind(self.num_folds, shuffle=True, random_state=self.seed).split(targets, targets))[
                self.fold
            ]
            return torch.from_numpy(train), torch.from_numpy(val)
        n_val = max(1, round(len(targets) * self.val_fraction))
        generator = torch.Generator().manual_seed(self.seed)
        train, val = random_split(range(len(targets)), [len(targets) - n_val, n_val], generator=generator)
        return torch.tensor(sorted(train.indices)), torch.tensor(sorted(val.indices))

    def train_targets(self) -> torch.Tensor:
        return self.source_targets(train=True)[self.split_indices()[0]]

    def setup(self, stage: str) -> None:
        world_size = self.trainer.world_size if self.trainer else 1
        if self.global_batch_size is not None:
            if self.global_batch_size % world_size:
                raise UserError(
                    f"--data.global_batch_size {self.global_batch_size} does not divide by the "
                    f"{world_size} processes: choose a multiple of {world_size}."
                )
            self.batch_size = self.global_batch_size // world_size
        if stage in ("fit", "validate") and "train" not in self.datasets:
            (train, val), source = self.split_indices(), self.source(train=True)
            self.datasets["train"] = TransformedSubset(source, train, self.transform("train"))
            self.datasets["val"] = TransformedSubset(source, val, self.transform("eval"))
        if stage in ("test", "predict") and "test" not in self.datasets:  # only ever evaluated
            self.datasets["test"] = TransformedSubset(self.source(train=False), None, self.transform("eval"))

    def loader(self, split: str) -> Any:
        options = {"batch_size": self.batch_size, "collate_fn": self.collate_fn, **self.loader_options}
        if options["num_workers"]:
            options["worker_init_fn"] = ignore_stop_signals
        rank, world_size = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        if split != "train":
            return DataLoader(
                self.datasets[split], sampler=EvaluationShard(self.datasets[split], rank, world_size), **options
            )
        # the order depends on the data seed and the run's seed alone, so a resumed run replays it
        seed = (self.seed * 1_000_003 + torch.initial_seed()) % (1 << 62)
        return training_loader(self.datasets["train"], seed, rank, world_size, **options)

    def train_dataloader(self) -> Any:
        return self.loader("train")

    def val_dataloader(self) -> Any:
        return self.loader("val")

    def test_dataloader(self) -> Any:
        return self.loader("test")

    def predict_dataloader(self) -> Any:
        return self.loader("test")
