"""The device-resident data path: the DataLoader path's samples, one order per (seed, epoch) on every
rank, disjoint equal shards, resumable mid-epoch, seeded crop and flip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from datamodules.cifar10 import CIFAR10DataModule
from datamodules.device_loader import DeviceLoader, random_crop
from datamodules.image_folder import ImageFolderDataModule
from datamodules.mnist import MNISTDataModule
from run.errors import UserError


def batches(loader) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*loader, strict=True)
    return torch.cat(xs), torch.cat(ys)


def sorted_rows(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Samples as rows (label, pixels...) in lexicographic order: an order-free comparison."""
    return torch.unique(torch.cat([y[:, None].double(), x.flatten(1).double()], dim=1), dim=0, sorted=True)


def datamodule(kind: str, folders: dict[str, Path], **options):
    common = {"data_dir": str(folders[kind]), "batch_size": 16, "val_fraction": 0.25, **options}
    if kind == "mnist":
        return MNISTDataModule(**common)
    if kind == "cifar":
        return CIFAR10DataModule(**common)
    return ImageFolderDataModule(**common)


@pytest.fixture
def folders(mnist_dir: Path, cifar_dir: Path, image_folder_dir: Path) -> dict[str, Path]:
    return {"mnist": mnist_dir, "cifar": cifar_dir, "folder": image_folder_dir}


def loader(n: int = 40, shape: tuple[int, ...] = (1, 4, 4), **options) -> DeviceLoader:
    """A training DeviceLoader over ``n`` random images whose label is their index."""
    images = torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(n))
    options = {"batch_size": 7, "mean": [0.5] * shape[0], "std": [0.25] * shape[0], "train": True, **options}
    return DeviceLoader(images, torch.arange(n), **options)


@pytest.mark.parametrize(
    ("kind", "resize"), [("mnist", None), ("cifar", None), ("folder", None), ("cifar", 20), ("folder", 12)]
)
def test_same_samples_as_the_dataloader(kind: str, resize: int | None, folders) -> None:
    """Without augmentation both paths give the same normalized images and labels: in the same order for
    validation and test, as the same set for training."""
    modules = {}
    for resident in (False, True):
        dm = datamodule(kind, folders, resize=resize, device_resident=resident)
        dm.prepare_data()
        dm.setup("fit")
        dm.setup("test")
        modules[resident] = dm
        assert isinstance(dm.train_dataloader(), DeviceLoader) == resident
    for split in ("val", "test"):
        x_ref, y_ref = batches(getattr(modules[False], f"{split}_dataloader")())
        x, y = batches(getattr(modules[True], f"{split}_dataloader")())
        assert x.dtype == x_ref.dtype == torch.float32 and x.shape == x_ref.shape
        assert torch.equal(x, x_ref)
        assert torch.equal(y, y_ref)
    x_ref, y_ref = batches(modules[False].train_dataloader())
    x, y = batches(modules[True].train_dataloader())
    assert len(modules[True].train_dataloader()) == len(modules[False].train_dataloader())
    assert torch.equal(sorted_rows(x, y), sorted_rows(x_ref, y_ref))
    assert isinstance(modules[True].predict_dataloader(), DataLoader)  # predictions keep their order


def test_alternate_flip_needs_the_device_path(cifar_dir: Path) -> None:
    """alternate_flip without device_resident is a UserError."""
    with pytest.raises(UserError, match="alternate_flip needs --data.device_resident true"):
        CIFAR10DataModule(data_dir=str(cifar_dir), alternate_flip=True)


@pytest.mark.parametrize("world_size", [1, 3])
def test_shuffle_is_one_order_dealt_over_ranks(world_size: int) -> None:
    """Every rank shuffles by (seed, epoch) alike: shards are disjoint, equal in length, dealt round-robin
    from one order; the order repeats for the same (seed, epoch) and changes with either."""
    n = 41

    def shards(seed: int, epoch: int) -> list[list[int]]:
        result = []
        for rank in range(world_size):
            shard = loader(n, seed=seed, rank=rank, world_size=world_size)
            shard.sampler.set_epoch(epoch)
            assert len(shard) == -(-(n // world_size) // 7)
            result.append(batches(shard)[1].tolist())
        return result

    dealt = shards(5, 3)
    assert {len(s) for s in dealt} == {n // world_size}  # every rank runs the same steps
    seen = [i for shard in dealt for i in shard]
    assert len(seen) == len(set(seen)) == n - n % world_size
    whole = loader(n, seed=5)
    whole.sampler.set_epoch(3)
    order = batches(whole)[1].tolist()
    assert dealt == [order[rank::world_size][: n // world_size] for rank in range(world_size)]
    assert shards(5, 3) == dealt
    assert shards(5, 4) != dealt and shards(6, 3) != dealt


def test_evaluation_deals_every_sample_once() -> None:
    """Evaluation keeps the order and gives each sample once over ranks, none dropped."""
    shards = [batches(loader(41, train=False, rank=rank, world_size=3))[1].tolist() for rank in range(3)]
    assert shards[0] == list(range(0, 41, 3)) and sorted(sum(shards, [])) == list(range(41))


@pytest.mark.parametrize("augment", [False, True], ids=["plain", "crop-flip"])
def test_resume_continues_mid_epoch(augment: bool) -> None:
    """A loader that loads the state saved after k batches yields the rest of that epoch, batch for batch."""
    options = {"crop_padding": 1, "flip": "random"} if augment else {}
    full = loader(seed=2, **options)
    full.sampler.set_epoch(4)
    expected = list(full)
    stopped = loader(seed=2, **options)
    stopped.sampler.set_epoch(4)
    for i, _ in enumerate(stopped):
        if i == 2:
            break
    state = stopped.state_dict()
    assert state == {"epoch": 4, "batches": 3}
    resumed = loader(seed=2, **options)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert len(rest) == len(expected) - 3
    for (x, y), (x_ref, y_ref) in zip(rest, expected[3:], strict=True):
        assert torch.equal(x, x_ref) and torch.equal(y, y_ref)
    resumed.sampler.set_epoch(5)
    assert len(list(resumed)) == len(expected)  # the next epoch is whole again


def test_random_crop_cuts_the_padded_image() -> None:
    """Each image's window sits at its own offset in the padded image, for both padding modes."""
    x = torch.rand(5, 3, 6, 7)
    top, left = torch.tensor([0, 4, 2, 1, 3]), torch.tensor([4, 0, 2, 3, 1])
    for mode in ("constant", "reflect"):
        crops = random_crop(x, 2, top, left, mode)
        padded = F.pad(x, (2, 2, 2, 2), mode=mode)
        assert crops.shape == x.shape
        for i in range(5):
            t, s = int(top[i]), int(left[i])
            assert torch.equal(crops[i], padded[i, :, t : t + 6, s : s + 7])


def test_augmented_epochs_repeat_from_the_seed() -> None:
    """Crop and flip keep the shape, repeat for the same (seed, epoch), and change with either."""

    def epoch(seed: int, number: int) -> torch.Tensor:
        augmented = loader(30, (3, 8, 8), seed=seed, crop_padding=2, flip="random")
        augmented.sampler.set_epoch(number)
        x, y = batches(augmented)
        assert x.shape == (30, 3, 8, 8)
        return x[y.argsort()]

    assert torch.equal(epoch(0, 1), epoch(0, 1))
    assert not torch.equal(epoch(0, 1), epoch(0, 2))
    assert not torch.equal(epoch(0, 1), epoch(1, 1))
    plain = loader(30, (3, 8, 8), seed=0)
    x, y = batches(plain)
    torch.testing.assert_close(x[y.argsort()], (plain.images.float() / 255 - 0.5) / 0.25)  # no augmentation asked


def test_alternate_flip_mirrors_complementary_halves() -> None:
    """Alternate flip mirrors a fixed random part of the images in even epochs and the rest in odd ones."""
    n = 40
    alternate = loader(n, flip="alternate", mean=[0.0], std=[1.0], seed=0)
    original = alternate.images.float()
    flipped = []
    for epoch in range(3):
        alternate.sampler.set_epoch(epoch)
        x, y = batches(alternate)
        x = x[y.argsort()] * 255  # back in sample order, in [0, 255]
        mirrored = (x - original.flip(-1)).abs().amax(dim=(1, 2, 3)) < 1e-3
        same = (x - original).abs().amax(dim=(1, 2, 3)) < 1e-3
        assert torch.all(mirrored ^ same)  # each image as it is or mirrored (random images are not symmetric)
        flipped.append(mirrored)
    assert 0 < int(flipped[0].sum()) < n
    assert torch.equal(flipped[1], ~flipped[0]) and torch.equal(flipped[2], flipped[0])
