"""Offline W&B runs read back with W&B's own reader, ``wandb leet inspect --json``, and the
callbacks the W&B tests put into a training process (``--trainer.callbacks+ tests.wandb_offline.X``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from filelock import FileLock
from lightning.pytorch.callbacks import Callback


def once_per_session(factory: pytest.TempPathFactory, name: str, make: Callable[[Path], dict]) -> dict:
    """``make(folder)``'s JSON result, computed once per test session, by the first pytest-xdist
    worker that asks (the others wait for it): one fit for all the tests of a module."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return json.loads(json.dumps(make(factory.mktemp(name))))
    folder = factory.getbasetemp().parent / name  # the session's folder, above each worker's
    with FileLock(f"{folder}.lock"):
        if not (folder / "result.json").is_file():
            folder.mkdir(exist_ok=True)
            result = json.dumps(make(folder))
            (folder / "result.json").write_text(result)
    return json.loads((folder / "result.json").read_text())


def inspect(folder: Path, *args: str) -> str:
    """``wandb leet inspect ARGS FOLDER``: one JSON record per line, or one object with ``--summary``."""
    done = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--json", *args, str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


class OfflineRun:
    """One ``offline-run-<time>-<id>/`` folder: its records (type run, config, history, summary,
    artifact, exit...) and the final summary as ``wandb leet inspect --summary`` states it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @cached_property
    def records(self) -> list[dict[str, Any]]:
        """Once W&B's service has written the exit record (up to 30 s after the run's process ended;
        a run killed with kill -9 never gets one)."""
        deadline = time.monotonic() + 30
        while True:
            records = [json.loads(line) for line in inspect(self.folder).splitlines() if line.strip()]
            if any(record.get("type") == "exit" for record in records) or time.monotonic() > deadline:
                return records
            time.sleep(0.5)

    @cached_property
    def final(self) -> dict[str, Any]:
        return json.loads(inspect(self.folder, "--summary"))

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [record[kind] for record in self.records if record.get("type") == kind]

    @property
    def run(self) -> dict[str, Any]:
        return self.of_type("run")[0]

    @property
    def history(self) -> list[dict[str, Any]]:
        """One flat dict per history row (media values as ``key._type``, ``key.path``...)."""
        return [row["item"] for row in self.of_type("history")]

    def artifacts(self, kind: str) -> list[dict[str, Any]]:
        return [a for a in self.of_type("artifact") if a.get("type") == kind]


def offline_runs(wandb_dir: Path) -> list[OfflineRun]:
    """The offline runs under ``<run folder>/wandb``, oldest first (``offline-run-<start time>-<id>``)."""
    return [OfflineRun(folder) for folder in sorted(wandb_dir.glob("offline-run-*"))]


def media_keys(row: dict[str, Any]) -> set[str]:
    """The pictures and tables in a history row (``train/batch``, ``val/predictions``...)."""
    return {key[: -len("._type")] for key in row if key.endswith("._type")}


class SlowSteps(Callback):
    """Sleeps ``$STEP_SLEEP`` seconds after each training batch: time to stop a process mid-epoch."""

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        time.sleep(float(os.environ.get("STEP_SLEEP") or 0))


class SpoilLastEpoch(Callback):
    """At the last validation, sets the network to answer the class rarest in the validation set
    for every input: the last epoch is the worst, so the best value is not the latest one."""

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.current_epoch != trainer.max_epochs - 1:
            return
        labels = torch.cat([batch[-1].flatten().cpu() for batch in trainer.val_dataloaders])
        rarest = int(torch.bincount(labels, minlength=pl_module.num_classes).argmin())
        with torch.no_grad():
            for parameter in pl_module.parameters():
                parameter.zero_()
            head = [m for m in pl_module.modules() if isinstance(m, torch.nn.Linear)][-1]
            head.bias[rarest] = 1.0
