"""Benchmarks leave their results in the JSON file they name, and no run folders behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import overhead, time_to_accuracy
from tests.conftest import CONFIGS

SHORT = [
    "--trainer.limit_train_batches",
    "2",
    "--trainer.limit_val_batches",
    "1",
    "--trainer.limit_test_batches",
    "1",
]


@pytest.mark.parametrize(
    ("script", "options"),
    [
        (time_to_accuracy, ["--seeds", "1", "--warmup", "0"]),
        (overhead, ["--rounds", "1", "--max_steps", "2"]),
    ],
    ids=["time_to_accuracy", "overhead"],
)
def test_benchmark_writes_only_its_results(
    script, options: list[str], mnist_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "results" / "result.json"
    argv = ["--config", str(CONFIGS / "mnist_cnn.yaml"), "--data_dir", str(mnist_dir), "--out", str(out)]
    script.main([*argv, *options, "--", *SHORT, "--trainer.enable_progress_bar", "false"])
    assert json.loads(out.read_text())["benchmark"] == script.__name__.rsplit(".", 1)[-1]
    assert [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")] == [
        "results",
        "results/result.json",
    ]
