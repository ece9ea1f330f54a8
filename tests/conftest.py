"""Shared fixtures: tiny fake datasets in the real formats, and the CLI's data flags for a config."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torchvision.datasets.cifar
import yaml
from torchvision.datasets import CIFAR10

from tests.fake_data import write_cifar10, write_image_folder, write_mnist

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
EXPERIMENT_CONFIGS = sorted(CONFIGS.glob("*.yaml"))


def real_data_dir() -> Path | None:
    """``$DATA_DIR`` or ``../shared/data`` if it holds MNIST, else None."""
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
def _run_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in its own folder, so ``logs/`` and run files never land in the repo."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["cli.py"])  # pytest's own flags are not the CLI's
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))


def data_class(config: Path) -> str:
    """Short class name of the datamodule a config selects."""
    data = yaml.safe_load(config.read_text()).get("data", {})
    return str(data.get("class_path", "")).rsplit(".", 1)[-1]


@pytest.fixture
def data_args(mnist_dir: Path, cifar_dir: Path, image_folder_dir: Path):
    """``data_args(config)``: CLI flags that point a config's datamodule at fake data."""
    import datamodules

    def args_for(config: Path) -> list[str]:
        cls = getattr(datamodules, data_class(config), None)
        if cls is None:
            return []
        for base, folder in (
            (datamodules.MNISTDataModule, mnist_dir),
            (datamodules.CIFAR10DataModule, cifar_dir),
            (datamodules.ImageFolderDataModule, image_folder_dir),
        ):
            if issubclass(cls, base):
                return ["--data.data_dir", str(folder)]
        return []

    return args_for
