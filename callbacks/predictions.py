"""``cli.py predict`` writes every prediction to a CSV file."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import lightning as L
import torch
from jsonargparse.typing import PositiveInt
from lightning.pytorch.callbacks import BasePredictionWriter

from run.files import atomic_path


class PredictionWriter(BasePredictionWriter):
    """One row per test sample: the predicted class, its probability and the top-k classes and
    probabilities (joined by ``|``) for classifiers, the predicted value for regressors; and the target.

    Args:
        output: the CSV file (the CLI's default: ``predictions.csv`` in the checkpoint's run folder;
            one file per process with several, suffixed ``.rank<N>``).
        topk: how many of the most probable classes a classifier's row lists.
    """

    def __init__(self, output: str | None = None, topk: PositiveInt = 3) -> None:
        super().__init__(write_interval="epoch")
        self.output, self.topk = output, topk

    def write_on_epoch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, predictions: Any, batch_indices: Any
    ) -> None:
        columns = {k: torch.cat([batch[k].cpu() for batch in predictions]) for k in predictions[0]}
        if "probs" in columns:  # (N, C) class probabilities
            probs = columns.pop("probs")
            probs, classes = probs.topk(min(self.topk, probs.shape[1]), dim=1)
            columns = {
                "pred": classes[:, 0],
                "prob": probs[:, 0],
                "topk_classes": classes,
                "topk_probs": probs,
                **columns,
            }
        indices = [i for batches in batch_indices for batch in batches for i in batch]  # each sample's in the dataset
        path = Path(self.output or "predictions.csv")
        if trainer.world_size > 1:
            path = path.with_name(f"{path.stem}.rank{trainer.global_rank}{path.suffix}")
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["index", *columns])
            for i, index in enumerate(indices or range(len(columns["target"]))):
                values = [v[i].tolist() for v in columns.values()]
                writer.writerow(
                    [index, *("|".join(f"{x:.6g}" for x in v) if isinstance(v, list) else v for v in values)]
                )
        print(f"predictions: {len(columns['target'])} rows written to {path}")
