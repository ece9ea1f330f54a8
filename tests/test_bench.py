"""The benchmarks in a tiny mode on fake data: each leaves its results in the JSON file it names,
and nothing else behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench import data_path, gpu, overhead, time_to_accuracy
from tests.conftest import CONFIGS
from tests.fake_data import write_image_folder

SHORT = ["--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "1"]


@pytest.fixture(scope="module")
def cifar_folder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CIFAR-10-like image folder (32 x 32) for cifar10_fast."""
    return write_image_folder(tmp_path_factory.mktemp("cifar_folder"), size=(32, 32))


def written(tmp_path: Path) -> list[str]:
    return sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))


def test_time_to_accuracy(mnist_dir: Path, tmp_path: Path) -> None:
    """One seed of mnist_fast: its accuracy and times in the results, the run folder gone."""
    out = tmp_path / "results" / "tta.json"
    argv = ["--config", str(CONFIGS / "mnist_fast.yaml"), "--data_dir", str(mnist_dir), "--out", str(out)]
    payload = time_to_accuracy.main([*argv, "--seeds", "1", "--warmup", "0", "--", *SHORT])
    assert json.loads(out.read_text()) == json.loads(json.dumps(payload))
    [run] = payload["runs"]
    assert payload["benchmark"] == "time_to_accuracy" and 0 <= run["accuracy"] <= 1
    assert run["steps"] == 1 and run["epochs"] == 1 and run["train_s"] > 0
    assert written(tmp_path) == ["results", "results/tta.json"]


@pytest.mark.slow
def test_overhead(mnist_dir: Path, tmp_path: Path) -> None:
    """One round of two steps through Lightning and through the hand-written loop, same step count."""
    out = tmp_path / "overhead.json"
    argv = ["--config", str(CONFIGS / "mnist_fast.yaml"), "--data_dir", str(mnist_dir), "--out", str(out)]
    payload = overhead.main([*argv, "--rounds", "1", "--max_steps", "2", "--", "--trainer.max_epochs", "2", *SHORT])
    summary = json.loads(out.read_text())["summary"]
    assert payload["benchmark"] == "overhead" and summary["steps"] == 2 and summary["ratio"] > 0
    assert written(tmp_path) == ["overhead.json"]


def test_data_path(mnist_dir: Path, tmp_path: Path) -> None:
    """Both paths, with and without augmentation, deliver every training sample each epoch."""
    out = tmp_path / "data_path.json"
    payload = data_path.main(["--data_dir", str(mnist_dir), "--epochs", "1", "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert payload["benchmark"] == "data_path"
    assert [(r["path"], r["augment"]) for r in rows] == [
        ("DataLoader", False),
        ("device-resident", False),
        ("DataLoader", True),
        ("device-resident", True),
    ]
    assert len({r["samples"] for r in rows}) == 1 and all(r["epochs_per_s"] > 0 for r in rows)
    assert written(tmp_path) == ["data_path.json"]


@pytest.mark.gpu
@pytest.mark.slow
def test_gpu_benchmarks(mnist_dir: Path, cifar_folder_dir: Path, tmp_path: Path) -> None:
    """bench.gpu, shortened: every part's results in one file, each part's beside it."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    out = tmp_path / "gpu.json"
    argv = ["--data_dir", str(mnist_dir), "--cifar_dir", str(cifar_folder_dir), "--out", str(out)]
    payload = gpu.main([*argv, "--seeds", "1", "--rounds", "1", "--epochs", "1", "--", "--trainer.max_steps", "3"])
    parts = {"mnist_fast", "cifar10_fast", "overhead", "data_path"}
    assert set(json.loads(out.read_text())) == {"benchmark", "argv", "machine", *parts}
    assert payload["mnist_fast"]["summary"]["runs"] == 1 and "gpu" in payload["machine"]
    assert written(tmp_path) == sorted([*(f"gpu-{part}.json" for part in parts), "gpu.json"])
