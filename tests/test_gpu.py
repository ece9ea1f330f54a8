"""On a CUDA machine (skipped elsewhere): the fast recipes on one GPU, bf16 and torch.compile, and
a two-GPU DDP fit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cli import cli_main
from tests.conftest import CONFIGS, ROOT

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
GPU = ["--trainer.accelerator", "gpu", "--trainer.devices", "1", "--trainer.enable_progress_bar", "false"]


def test_mnist_fast_on_one_gpu(mnist_dir: Path) -> None:
    cli = cli_main(
        ["fit", "--config", str(CONFIGS / "mnist_fast.yaml"), *GPU, "--data.data_dir", str(mnist_dir)]
    )
    assert cli.trainer.state.finished and next(cli.model.parameters()).is_cuda
    assert json.loads(Path(cli.trainer.log_dir, "metrics.json").read_text())["metrics"]["test/acc"] >= 0


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_cifar10_fast_bf16(compile: bool, image_folder_dir: Path, tmp_path: Path) -> None:
    cli = cli_main(
        [
            "fit",
            "--config",
            str(CONFIGS / "cifar10_fast.yaml"),
            *GPU,
            "--trainer.max_epochs",
            "2",
            "--data.data_dir",
            str(image_folder_dir),
            "--data.cache_dir",
            str(tmp_path / "cache"),
            "--data.batch_size",
            "8",
            "--model.init_args.net.init_args.compile",
            str(compile).lower(),
        ]
    )
    assert cli.trainer.precision == "bf16-mixed" and cli.trainer.state.finished
    assert all(torch.isfinite(p).all() for p in cli.model.parameters())


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_ddp_fit_on_two_gpus(mnist_dir: Path, tmp_path: Path) -> None:
    command = [
        sys.executable,
        str(ROOT / "cli.py"),
        "fit",
        "--config",
        str(CONFIGS / "mnist_cnn.yaml"),
        "--config",
        str(CONFIGS / "trainer" / "ddp.yaml"),
        "--trainer.devices",
        "2",
        "--data.data_dir",
        str(mnist_dir),
        "--trainer.enable_progress_bar",
        "false",
    ]
    done = subprocess.run(
        command,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(list((tmp_path / "logs" / "mnist_cnn").glob("*/metrics.json"))) == 1
