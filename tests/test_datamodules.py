"""Datamodules on tiny files in the real formats: shapes, splits, transforms, errors."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from datamodules import (
    CIFAR10DataModule,
    DataNotFoundError,
    GaussianClustersDataModule,
    ImageFolderDataModule,
    MNISTDataModule,
    PolynomialDataModule,
)
from datamodules.base import kfold_indices


def first_batch(dm, split: str = "train"):
    loader = {"train": dm.train_dataloader, "val": dm.val_dataloader, "test": dm.test_dataloader}[split]()
    return next(iter(loader))


def test_mnist_shapes_and_normalization(mnist_dir: Path) -> None:
    dm = MNISTDataModule(data_dir=str(mnist_dir), batch_size=16, val_fraction=0.25)
    dm.prepare_data()
    dm.setup("fit")
    assert (dm.num_classes, dm.input_shape, dm.task) == (10, (1, 28, 28), "multiclass")
    assert len(dm.datasets["train"]) == 90 and len(dm.datasets["val"]) == 30  # 120 fake images
    x, y = first_batch(dm)
    assert x.shape == (16, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (16,) and y.dtype == torch.long
    # normalized with MNIST's mean/std: the raw [0, 1] range maps to [-0.42, 2.82]
    assert x.min() >= (0 - 0.1307) / 0.3081 - 1e-5 and x.max() <= (1 - 0.1307) / 0.3081 + 1e-5
    dm.setup("test")
    assert len(dm.datasets["test"]) == 40


def test_transform_matches_manual_normalization(mnist_dir: Path) -> None:
    dm = MNISTDataModule(data_dir=str(mnist_dir))
    images, _ = dm.load_uint8(train=True)
    expected = (images[0].float() / 255 - 0.1307) / 0.3081
    torch.testing.assert_close(dm.transform("eval")(images[0]), expected)


def test_split_is_seeded_disjoint_and_covering(mnist_dir: Path) -> None:
    def split(seed: int):
        return MNISTDataModule(data_dir=str(mnist_dir), seed=seed, val_fraction=0.2).split_indices()

    train, val = split(0)
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(120))
    again_train, again_val = split(0)
    assert torch.equal(train, again_train) and torch.equal(val, again_val)
    assert not torch.equal(val, split(1)[1])


def test_official_test_set_stays_out_of_training(mnist_dir: Path) -> None:
    dm = MNISTDataModule(data_dir=str(mnist_dir))
    dm.setup("fit")
    assert set(dm.datasets) == {"train", "val"}
    assert dm.datasets["val"].source is dm.datasets["train"].source  # val is carved from train
    assert list(dm._uint8) == [True]  # fitting never reads the official test files


def test_resize_and_augment(cifar_dir: Path) -> None:
    dm = CIFAR10DataModule(data_dir=str(cifar_dir), batch_size=8, resize=28, augment=True)
    dm.setup("fit")
    assert dm.input_shape == (3, 28, 28)
    x, _ = first_batch(dm)
    assert x.shape == (8, 3, 28, 28)
    steps = [type(t).__name__ for t in dm.transform("train").transforms]
    assert steps == ["ToImage", "Resize", "RandomCrop", "RandomHorizontalFlip", "ToDtype", "Normalize"]
    assert "RandomCrop" not in [type(t).__name__ for t in dm.transform("eval").transforms]
    assert "RandomHorizontalFlip" not in [  # digits are not flipped
        type(t).__name__ for t in MNISTDataModule(augment=True).transform("train").transforms
    ]


def test_cifar10_batches(cifar_dir: Path) -> None:
    dm = CIFAR10DataModule(data_dir=str(cifar_dir), batch_size=10, val_fraction=0.1)
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")
    assert (dm.num_classes, dm.input_shape) == (10, (3, 32, 32))
    assert len(dm.datasets["train"]) + len(dm.datasets["val"]) == 100  # 5 batches of 20
    assert len(dm.datasets["test"]) == 20
    x, y = first_batch(dm, "test")
    assert x.shape == (10, 3, 32, 32) and int(y.max()) < 10


def test_image_folder(image_folder_dir: Path) -> None:
    dm = ImageFolderDataModule(data_dir=str(image_folder_dir), batch_size=4, val_fraction=0.25)
    assert dm.classes == ["cat", "dog", "frog"]
    assert (dm.num_classes, dm.input_shape) == (3, (3, 20, 16))
    dm.setup("fit")
    x, y = first_batch(dm)
    assert x.shape == (4, 3, 20, 16) and set(y.tolist()) <= {0, 1, 2}
    resized = ImageFolderDataModule(data_dir=str(image_folder_dir), batch_size=4, resize=12)
    resized.setup("test")
    assert resized.input_shape == (3, 12, 12) and first_batch(resized, "test")[0].shape == (4, 3, 12, 12)


def test_image_folder_uint8_matches_loader(image_folder_dir: Path) -> None:
    dm = ImageFolderDataModule(data_dir=str(image_folder_dir))
    images, targets = dm.load_uint8(train=False)
    folder = dm.source(train=False)
    assert images.shape == (12, 3, 20, 16) and images.dtype == torch.uint8
    assert torch.equal(images[5], folder[5][0]) and int(targets[5]) == folder[5][1]


@pytest.mark.parametrize(
    "cls, folder, names",
    [
        (MNISTDataModule, "MNIST/raw", ["train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]),
        (CIFAR10DataModule, "cifar-10-batches-py", ["data_batch_1", "test_batch"]),
        (ImageFolderDataModule, "", ["train/<class>/<image>"]),
    ],
)
def test_missing_data_error_says_where_and_what(tmp_path: Path, cls, folder, names, monkeypatch) -> None:
    def offline(self):
        raise RuntimeError("Error downloading: <urlopen error [Errno -2] Name or service not known>")

    monkeypatch.setattr(cls, "fetch", offline)  # no network in tests, whatever the machine
    dm = cls(data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(DataNotFoundError) as err:
        dm.prepare_data()
    message = str(err.value)
    assert str((tmp_path / "nowhere" / folder).resolve()) in message
    assert all(name in message for name in names)
    assert "--data.data_dir" in message and "download failed" in message


def test_missing_data_without_download(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="download=False"):
        MNISTDataModule(data_dir=str(tmp_path), download=False).prepare_data()
    with pytest.raises(DataNotFoundError, match="not prepared"):
        MNISTDataModule(data_dir=str(tmp_path)).setup("fit")  # setup never downloads


def test_global_batch_size_must_divide_by_processes(mnist_dir: Path) -> None:
    dm = MNISTDataModule(data_dir=str(mnist_dir), global_batch_size=64)
    dm.trainer = SimpleNamespace(world_size=2)
    assert dm.per_device_batch_size() == 32
    dm.trainer = SimpleNamespace(world_size=3)
    with pytest.raises(ValueError, match="does not divide by the 3 processes"):
        dm.per_device_batch_size()


def test_kfold_is_disjoint_covering_and_stratified() -> None:
    targets = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    folds = [kfold_indices(targets, 5, f, seed=3, stratify=True) for f in range(5)]
    vals = [set(val.tolist()) for _, val in folds]
    assert set().union(*vals) == set(range(100)) and sum(len(v) for v in vals) == 100
    for train, val in folds:
        assert set(train.tolist()).isdisjoint(val.tolist())
        assert torch.bincount(targets[val], minlength=3).tolist() == [10, 6, 4]


def test_polynomial_data_follows_the_formula() -> None:
    dm = PolynomialDataModule(num_samples=50, noise=0.0)
    x, y = dm.tensors(train=True)
    assert x.shape == (50, 3) and dm.task == "regression" and dm.input_shape == (3,)
    torch.testing.assert_close(y, 0.9 + 0.5 * x[:, 0] + 3 * x[:, 1] + 2.4 * x[:, 2])
    assert torch.allclose(x[:, 1], x[:, 0] ** 2) and x[:, 0].abs().max() <= 3
    noisy = PolynomialDataModule(num_samples=50, noise=1.0).tensors(train=True)[1]
    assert not torch.allclose(noisy, y)


def test_gaussian_clusters_are_binary_and_separated() -> None:
    dm = GaussianClustersDataModule(num_samples=400, separation=6.0, spread=0.5)
    x, y = dm.tensors(train=True)
    assert (dm.task, dm.num_classes, dm.input_shape) == ("binary", 2, (2,))
    assert set(y.tolist()) == {0, 1}
    assert (x[y == 1].mean(0) - x[y == 0].mean(0)).norm() == pytest.approx(6.0, rel=0.1)
    test_x, _ = dm.tensors(train=False)
    assert not torch.equal(test_x[:10], x[:10])  # test set drawn from another seed
