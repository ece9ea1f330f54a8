"""Writes ``cli.py predict`` outputs to a CSV or JSON file in the run directory."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from jsonargparse.typing import PositiveInt
from lightning.pytorch.callbacks import BasePredictionWriter

from runs.files import write_text


def _rows(predictions: list[dict[str, torch.Tensor]], topk: int) -> list[dict[str, Any]]:
    """One row per sample from the per-batch dicts of ``predict_step``; class probabilities
    (``probs``, (N, C)) become the predicted class, its probability and the top ``topk``."""
    columns = {k: torch.cat([p[k].cpu() for p in predictions]) for k in predictions[0]}
    if "probs" in columns:
        probs = columns.pop("probs")
        top_probs, top_classes = probs.topk(min(topk, probs.shape[1]), dim=1)  # (N, k)
        columns = {
            "pred": top_classes[:, 0],
            "prob": top_probs[:, 0],
            "topk_classes": top_classes,
            "topk_probs": top_probs,
            **columns,
        }
    rows = []
    for i in range(len(next(iter(columns.values())))):
        row: dict[str, Any] = {"index": i}
        for key, values in columns.items():
            value = values[i]
            row[key] = value.tolist() if value.ndim else value.item()
        rows.append(row)
    return rows


class PredictionWriter(BasePredictionWriter):
    """Saves every prediction: class, probability and top-k (classifiers) or value (regressors).

    Args:
        output: file to write (default ``<run dir>/predictions.<format>``; one file per process
            under DDP, suffixed ``.rank<N>``).
        format: "csv" (top-k lists joined with "|") or "json".
        topk: how many of the most probable classes a classifier's row lists, with probabilities.
    """

    def __init__(
        self, output: str | None = None, format: Literal["csv", "json"] = "csv", topk: PositiveInt = 3
    ) -> None:
        super().__init__(write_interval="epoch")
        self.output = output
        self.format = format
        self.topk = topk
        self.path: Path | None = None

    def write_on_epoch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, predictions: Any, batch_indices: Any
    ) -> None:
        if not predictions:
            return
        batches = predictions[0] if isinstance(predictions[0], list) else predictions  # one loader
        rows = _rows(batches, self.topk)
        default = Path(trainer.log_dir or ".") / f"predictions.{self.format}"
        path = Path(self.output) if self.output else default
        if trainer.world_size > 1:
            path = path.with_name(f"{path.stem}.rank{trainer.global_rank}{path.suffix}")
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.format == "json":
            text = json.dumps(rows, indent=1) + "\n"
        else:
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
            writer.writeheader()
            for row in rows:
                writer.writerow(
                    {
                        k: "|".join(f"{x:.6g}" if isinstance(x, float) else str(x) for x in v)
                        if isinstance(v, list)
                        else v
                        for k, v in row.items()
                    }
                )
            text = buffer.getvalue()
        write_text(path, text)
        self.path = path
        print(f"predictions: {len(rows)} rows written to {path}")
