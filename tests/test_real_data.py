"""Real MNIST, when it is on disk (``$DATA_DIR`` or ``../shared/data``): the reference run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli import cli_main
from tests.conftest import CONFIGS, real_data_dir

DATA = real_data_dir()
needs_mnist = pytest.mark.skipif(DATA is None, reason="real MNIST not found ($DATA_DIR or ../shared/data)")


@needs_mnist
def test_mnist_cnn_one_epoch_reaches_98_5_percent(tmp_path: Path) -> None:
    cli_main(
        [
            "fit",
            "--config",
            str(CONFIGS / "mnist_cnn.yaml"),
            "--data.data_dir",
            str(DATA),
            "--trainer.max_epochs",
            "1",
            "--trainer.enable_progress_bar",
            "false",
        ]
    )
    result = json.loads((tmp_path / "logs/mnist_cnn/version_0/metrics.json").read_text())
    assert result["metrics"]["test/acc"] >= 0.985, result
