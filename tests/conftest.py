"""Shared fixtures: tiny datasets in the real file formats, each test in its own folder, W&B
offline, and the ways a user starts the CLI (a process of its own, or ``cli_main`` in Python)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torchvision.datasets.cifar
import yaml
from torchvision.datasets import CIFAR10

from tests.fake_data import write_cifar10, write_image_folder, write_mnist

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
EXPERIMENTS = sorted(CONFIGS.glob("*.yaml"))
FOLDER_DATA = {
    "MNISTDataModule": "mnist",
    "MNISTRowsDataModule": "mnist",
    "CIFAR10DataModule": "cifar",
    "ImageFolderDataModule": "folder",
}


def real_data_dir() -> Path | None:
    """``$DATA_DIR`` or ``../shared/data`` when it holds MNIST, else None."""
    for candidate in (os.environ.get("DATA_DIR"), ROOT.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mnist(tmp_path_factory.mktemp("mnist"))


@pytest.fixture(scope="session")
def cifar_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cifar10(tmp_path_factory.mktemp("cifar"))


@pytest.fixture(scope="session")
def image_folder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("folder"))


@pytest.fixture(autouse=True)
def _fake_cifar_checksums(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake CIFAR batches cannot match the real md5 sums; skip that check, as torchvision's tests do."""
    monkeypatch.setattr(CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda path, md5=None: True)


@pytest.fixture(autouse=True)
def _run_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test in its own folder (``logs/`` never lands in the repository), W&B offline."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["cli.py"])  # pytest's own flags are not the CLI's
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    yield
    if "wandb" in sys.modules:  # W&B keeps the settings it read (mode, key, HOME) per process
        sys.modules["wandb"].teardown()


@pytest.fixture
def data_args(mnist_dir: Path, cifar_dir: Path, image_folder_dir: Path):
    """``data_args(config)``: the flags that point a config's datamodule at fake data."""
    folders = {"mnist": mnist_dir, "cifar": cifar_dir, "folder": image_folder_dir}

    def args_for(config: Path) -> list[str]:
        data = yaml.safe_load(config.read_text()).get("data", {})
        kind = FOLDER_DATA.get(str(data.get("class_path", "")).rsplit(".", 1)[-1])
        return ["--data.data_dir", str(folders[kind])] if kind else []

    return args_for


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 300, env: dict[str, str] | None = None, script: str = "cli.py"
) -> subprocess.CompletedProcess:
    """``python cli.py ARGS`` (or another script of the project) as a user starts it; fails on a hang."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
