"""The fast MNIST recipe on the real data set (skipped where ../shared/data or $DATA_DIR lacks it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import CONFIGS, real_data_dir, run_cli


@pytest.mark.slow
def test_mnist_fast_reaches_its_accuracy_in_one_epoch() -> None:
    """`cli.py fit --config configs/mnist_fast.yaml` on real MNIST, on the CPU: test accuracy >= 98.5%."""
    data = real_data_dir()
    if data is None:
        pytest.skip("real MNIST not found (../shared/data or $DATA_DIR)")
    done = run_cli("fit", "--config", str(CONFIGS / "mnist_fast.yaml"), "--data.data_dir", str(data), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads(Path("logs/mnist_fast/version_0/metrics.json").read_text())
    assert metrics["epochs"] == 1 and metrics["metrics"]["test/acc"] >= 0.985, metrics
