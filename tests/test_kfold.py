"""K-fold cross-validation: the folds partition the training set, the summary is the folds'."""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
import yaml

from datamodules import GaussianClustersDataModule, MNISTDataModule
from tests.conftest import CONFIGS, ROOT

KFOLD = ROOT / "scripts" / "kfold.py"


def kfold_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kfold", KFOLD)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("k", [2, 5])
def test_folds_are_disjoint_cover_the_training_set_and_keep_class_shares(k: int, mnist_dir: Path) -> None:
    data = MNISTDataModule(data_dir=str(mnist_dir), num_folds=k, fold=0)
    targets = data.source_targets(train=True)
    n = len(targets)
    seen = torch.zeros(n, dtype=torch.long)
    for fold in range(k):
        data.fold = fold
        train, val = data.split_indices()
        assert len(train) + len(val) == n and not set(train.tolist()) & set(val.tolist())
        seen[val] += 1
        for label in targets.unique():  # stratified: each fold holds ~1/k of every class
            share = (targets == label).sum().item() / k
            assert abs((targets[val] == label).sum().item() - share) < 1, (fold, int(label))
    assert torch.equal(seen, torch.ones(n, dtype=torch.long))  # every sample validates exactly once


def test_folds_depend_on_the_seed_only() -> None:
    def val_of(seed: int) -> list[int]:
        data = GaussianClustersDataModule(num_folds=3, fold=1, seed=seed)
        return data.split_indices()[1].tolist()

    assert val_of(1) == val_of(1) and val_of(1) != val_of(2)


def test_summary_is_mean_and_sample_std_of_the_folds() -> None:
    folds = [
        {"val/acc": 0.90, "val/loss": 0.30, "test/acc": 0.5},
        {"val/acc": 0.80, "val/loss": 0.50, "test/acc": 0.6},
        {"val/acc": 0.85, "val/loss": 0.45, "test/acc": 0.7},
    ]
    summary = kfold_script().summarize(folds)
    assert set(summary) == {"val/acc", "val/loss"}  # validation metrics only
    assert summary["val/acc"]["mean"] == pytest.approx(0.85)
    assert summary["val/acc"]["std"] == pytest.approx(0.05)  # sqrt(((.05)^2 + (.05)^2 + 0) / 2)
    assert summary["val/loss"]["std"] == pytest.approx(statistics.stdev([0.30, 0.50, 0.45]))


def test_kfold_command_trains_every_fold_and_reports_them(tmp_path: Path, mnist_dir: Path) -> None:
    command = [
        sys.executable,
        str(KFOLD),
        "--num_folds",
        "2",
        "--group",
        "cv",
        "--config",
        str(CONFIGS / "mnist_softmax.yaml"),
        "--data.data_dir",
        str(mnist_dir),
        "--trainer.max_epochs",
        "1",
        "--trainer.enable_progress_bar",
        "false",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    group = Path("logs/mnist_softmax/cv")
    report = json.loads((group / "kfold.json").read_text())
    fold_acc = []
    for fold in (0, 1):
        run_dir = group / f"fold_{fold}"
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        data = config["data"]["init_args"]
        assert (data["num_folds"], data["fold"]) == (2, fold)
        # its own run, in the W&B group of the k-fold run (test_wandb checks that the group arrives)
        assert (config["run_id"], config["run_group"]) == (f"cv/fold_{fold}", "mnist_softmax/cv")
        fold_acc.append(json.loads((run_dir / "metrics.json").read_text())["metrics"]["val/acc"])
    assert [f["metrics"]["val/acc"] for f in report["folds"]] == fold_acc
    assert report["summary"]["val/acc"]["mean"] == pytest.approx(statistics.fmean(fold_acc))
    assert report["summary"]["val/acc"]["std"] == pytest.approx(statistics.stdev(fold_acc))
    assert "mean ± std" in done.stdout and "val/acc" in done.stdout


def test_folds_as_array_tasks_and_the_last_one_summarizes(mnist_dir: Path) -> None:
    env = {**os.environ, "SLURM_ARRAY_JOB_ID": "77", "SLURM_JOB_ID": "79"}  # task 1 of array job 77
    config = ["--config", str(CONFIGS / "mnist_softmax.yaml"), "--data.data_dir", str(mnist_dir)]
    config += ["--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false"]

    def kfold(*options: str) -> subprocess.CompletedProcess:
        command = [sys.executable, str(KFOLD), "--num_folds", "2", *options, *config]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)

    group = Path("logs/mnist_softmax/kfold-slurm-77")  # the array's job id, shared by its tasks
    done = kfold("--fold", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "folds [0] are not finished yet" in " ".join(done.stdout.split())
    assert sorted(p.name for p in group.iterdir()) == ["fold_1"]
    done = kfold("--summarize", "--group", group.name)
    assert done.returncode == 1 and "folds [0] of" in done.stderr
    done = kfold("--fold", "0")  # the last fold to finish writes the summary
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((group / "kfold.json").read_text())
    assert [fold["fold"] for fold in report["folds"]] == [0, 1]
    assert kfold("--summarize", "--group", group.name).returncode == 0
