"""The device-resident data path: same samples as the DataLoader path, disjoint shards, seeded
augmentation, decoded-image cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import datamodules.image_folder as image_folder
from datamodules import CIFAR10DataModule, ImageFolderDataModule, MNISTDataModule
from speed.device_loader import DeviceLoader, EpochSampler, random_crop
from tests.conftest import CONFIGS, ROOT


def batches(loader) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*loader, strict=True)
    return torch.cat(xs), torch.cat(ys)


def sorted_rows(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Samples as rows (label, pixels...) in lexicographic order: order-free comparison."""
    rows = torch.cat([y[:, None].double(), x.flatten(1).double()], dim=1)
    return torch.unique(rows, dim=0, sorted=True)


def datamodule(kind: str, folders: dict[str, Path], tmp_path: Path, **options):
    common = {"batch_size": 16, "val_fraction": 0.25, **options}
    if kind == "mnist":
        return MNISTDataModule(data_dir=str(folders["mnist"]), **common)
    if kind == "cifar":
        return CIFAR10DataModule(data_dir=str(folders["cifar"]), **common)
    return ImageFolderDataModule(data_dir=str(folders["folder"]), cache_dir=str(tmp_path / "cache"), **common)


@pytest.fixture
def folders(mnist_dir: Path, cifar_dir: Path, image_folder_dir: Path) -> dict[str, Path]:
    return {"mnist": mnist_dir, "cifar": cifar_dir, "folder": image_folder_dir}


@pytest.mark.parametrize(
    ("kind", "resize"),
    [
        ("mnist", None),
        ("cifar", None),
        ("folder", None),
        ("cifar", 20),
        ("folder", 12),
    ],
)
def test_same_samples_as_dataloader(kind: str, resize: int | None, folders, tmp_path: Path) -> None:
    """Before augmentation both paths yield the same normalized images and labels: in the same
    order for validation and test, as the same set (in another order) for training."""
    loaders = {}
    for resident in (False, True):
        dm = datamodule(kind, folders, tmp_path, resize=resize, device_resident=resident)
        dm.prepare_data()
        dm.setup("fit")
        dm.setup("test")
        loaders[resident] = dm
        assert isinstance(dm.train_dataloader(), DeviceLoader) == resident
    for split in ("val", "test"):
        x_ref, y_ref = batches(getattr(loaders[False], f"{split}_dataloader")())
        x, y = batches(getattr(loaders[True], f"{split}_dataloader")())
        assert x.dtype == x_ref.dtype == torch.float32 and x.shape == x_ref.shape
        torch.testing.assert_close(x, x_ref, rtol=0, atol=1e-6)
        assert torch.equal(y, y_ref)
    x_ref, y_ref = batches(loaders[False].train_dataloader())
    x, y = batches(loaders[True].train_dataloader())
    assert len(y) == len(y_ref)
    torch.testing.assert_close(sorted_rows(x, y), sorted_rows(x_ref, y_ref), rtol=0, atol=1e-6)


def test_predictions_keep_the_dataloader(folders, tmp_path: Path) -> None:
    dm = datamodule("mnist", folders, tmp_path, device_resident=True)
    dm.setup("predict")
    assert isinstance(dm.predict_dataloader(), torch.utils.data.DataLoader)


@pytest.mark.parametrize("shuffle", [True, False])
def test_shards_are_disjoint_and_cover_the_data(shuffle: bool) -> None:
    n, world = 101, 3
    labels = torch.arange(n)  # each label names its sample
    images = torch.zeros(n, 1, 2, 2, dtype=torch.uint8)
    shards = []
    for rank in range(world):
        loader = DeviceLoader(
            images,
            labels,
            batch_size=8,
            mean=[0.0],
            std=[1.0],
            shuffle=shuffle,
            seed=5,
            rank=rank,
            world_size=world,
        )
        loader.sampler.set_epoch(3)
        shards.append(batches(loader)[1].tolist())
    seen = [i for shard in shards for i in shard]
    assert len(seen) == len(set(seen))  # disjoint
    if shuffle:  # equal shard sizes; at most world - 1 samples sit the epoch out
        assert {len(s) for s in shards} == {n // world}
        assert len(seen) == n - n % world
    else:
        assert sorted(seen) == list(range(n))


def test_epochs_reshuffle_from_the_seed() -> None:
    sampler = EpochSampler(50, shuffle=True, seed=1)
    first = sampler.indices()
    sampler.set_epoch(1)
    second = sampler.indices()
    assert not torch.equal(first, second) and sorted(second.tolist()) == list(range(50))
    sampler.set_epoch(0)
    assert torch.equal(sampler.indices(), first)
    assert not torch.equal(EpochSampler(50, shuffle=True, seed=2).indices(), first)


def test_random_crop_cuts_the_padded_image() -> None:
    x = torch.rand(5, 3, 6, 7)
    top, left = torch.tensor([0, 4, 2, 1, 3]), torch.tensor([4, 0, 2, 3, 1])
    for mode in ("constant", "reflect"):
        crops = random_crop(x, 2, top, left, mode)
        padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode=mode)
        for i in range(5):
            t, s = int(top[i]), int(left[i])
            assert torch.equal(crops[i], padded[i, :, t : t + 6, s : s + 7])


def test_alternate_flip_mirrors_each_image_every_other_epoch() -> None:
    n = 40
    images = torch.randint(0, 256, (n, 1, 4, 4), dtype=torch.uint8)
    loader = DeviceLoader(
        images, torch.arange(n), batch_size=7, mean=[0.0], std=[1.0], shuffle=True, flip="alternate", seed=0
    )
    seen = []
    for epoch in range(3):
        loader.sampler.set_epoch(epoch)
        x, y = batches(loader)
        seen.append(x[y.argsort()] * 255)  # back in sample order, in [0, 255]
    original = images.float()
    flipped = [(s - original.flip(-1)).abs().amax(dim=(1, 2, 3)) < 1e-3 for s in seen]
    same = [(s - original).abs().amax(dim=(1, 2, 3)) < 1e-3 for s in seen]
    assert torch.all(flipped[0] ^ same[0])  # each image as it is or mirrored (none symmetric)
    assert 0 < int(flipped[0].sum()) < n  # a random part of the images
    assert torch.equal(flipped[1], ~flipped[0])  # the other part in the next epoch
    assert torch.equal(flipped[2], flipped[0])


def test_augmented_epochs_repeat_from_the_seed() -> None:
    images = torch.randint(0, 256, (30, 3, 8, 8), dtype=torch.uint8)

    def epoch(seed: int, number: int) -> torch.Tensor:
        loader = DeviceLoader(
            images,
            torch.arange(30),
            batch_size=8,
            mean=[0.5] * 3,
            std=[0.25] * 3,
            shuffle=True,
            seed=seed,
            crop_padding=2,
            flip="random",
        )
        loader.sampler.set_epoch(number)
        return batches(loader)[0]

    assert torch.equal(epoch(0, 1), epoch(0, 1))
    assert not torch.equal(epoch(0, 1), epoch(0, 2))
    assert not torch.equal(epoch(0, 1), epoch(1, 1))


def test_decoded_images_are_cached(
    image_folder_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    first = ImageFolderDataModule(data_dir=str(image_folder_dir), cache_dir=str(cache), resize=8)
    images, targets = first.load_uint8(train=True)
    assert images.shape[1:] == (3, 8, 8) and len(list(cache.glob("train-*.pt"))) == 1

    def no_decoding(path: str) -> torch.Tensor:
        raise AssertionError(f"decoded {path} although the cache holds it")

    monkeypatch.setattr(image_folder, "read_rgb", no_decoding)
    second = ImageFolderDataModule(data_dir=str(image_folder_dir), cache_dir=str(cache), resize=8)
    cached_images, cached_targets = second.load_uint8(train=True)
    assert torch.equal(cached_images, images) and torch.equal(cached_targets, targets)


def test_images_of_different_sizes_need_resize(tmp_path: Path) -> None:
    from tests.fake_data import write_image_folder

    root = write_image_folder(tmp_path / "data", n_train=2, n_test=1)
    write_image_folder(tmp_path / "other", classes=("cat",), n_train=1, n_test=1, size=(9, 9))
    (tmp_path / "other" / "train" / "cat" / "0000.jpg").rename(root / "train" / "cat" / "odd.jpg")
    dm = ImageFolderDataModule(data_dir=str(root), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="differ in size.*resize"):
        dm.load_uint8(train=True)
    resized = ImageFolderDataModule(data_dir=str(root), cache_dir=str(tmp_path / "cache"), resize=10)
    assert resized.load_uint8(train=True)[0].shape[1:] == (3, 10, 10)


def test_alternate_flip_needs_the_device_path(mnist_dir: Path) -> None:
    with pytest.raises(ValueError, match="device_resident"):
        CIFAR10DataModule(data_dir=str(mnist_dir), alternate_flip=True)


def test_two_process_ddp_trains_on_shards(mnist_dir: Path, tmp_path: Path) -> None:
    """Under DDP (2 CPU processes) each rank trains on its own half: 108 training samples make
    54 per rank, so 4 steps of 16 (one process alone takes 7)."""
    cluster = ("SLURM_", "MASTER_", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "RANK", "TORCHELASTIC")
    env = {k: v for k, v in os.environ.items() if not k.startswith(cluster)}
    command = [
        sys.executable,
        str(ROOT / "cli.py"),
        "fit",
        "--config",
        str(CONFIGS / "mnist_fast.yaml"),
        "--config",
        str(CONFIGS / "trainer" / "ddp_cpu.yaml"),
        "--data.init_args.data_dir",
        str(mnist_dir),
        "--data.init_args.batch_size",
        "16",
        "--data.init_args.val_fraction",
        "0.1",
        "--trainer.enable_model_summary",
        "false",
    ]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(next((tmp_path / "logs").rglob("metrics.json")).read_text())
    assert result["global_step"] == 4
    assert {"val/acc", "test/acc"} <= set(result["metrics"])
