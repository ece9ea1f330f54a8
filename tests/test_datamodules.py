"""Datamodules on tiny files in the real formats: shapes, splits, k-fold, batch sizes, and the errors
that name what is wrong with the data."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from datamodules.base import SplitDataModule
from datamodules.cifar10 import CIFAR10DataModule
from datamodules.image_folder import ImageFolderDataModule
from datamodules.loader import EvaluationShard
from datamodules.mnist import MNISTDataModule
from datamodules.sequences import MNISTRowsDataModule
from datamodules.synthetic import GaussianClustersDataModule, PolynomialDataModule
from run.errors import UserError
from tests.fake_data import write_image_folder


def first_batch(dm: SplitDataModule, split: str = "train"):
    return next(iter(getattr(dm, f"{split}_dataloader")()))


def on_processes(dm: SplitDataModule, world_size: int, rank: int = 0) -> SplitDataModule:
    """What the datamodule sees of a Trainer of ``world_size`` processes."""
    dm.trainer = SimpleNamespace(world_size=world_size, global_rank=rank)
    return dm


def test_mnist_shapes_and_normalization(mnist_dir: Path) -> None:
    """MNIST: 10 classes of 1x28x28, split 90/30 from 120 fake images, float batches normalized with its mean/std."""
    dm = MNISTDataModule(data_dir=str(mnist_dir), batch_size=16, val_fraction=0.25)
    dm.prepare_data()
    dm.setup("fit")
    assert (dm.task, dm.num_classes, dm.input_shape) == ("multiclass", 10, (1, 28, 28))
    assert len(dm.datasets["train"]) == 90 and len(dm.datasets["val"]) == 30
    x, y = first_batch(dm)
    assert x.shape == (16, 1, 28, 28) and x.dtype == torch.float32 and y.shape == (16,) and y.dtype == torch.long
    assert x.min() >= (0 - 0.1307) / 0.3081 - 1e-5 and x.max() <= (1 - 0.1307) / 0.3081 + 1e-5
    images, _ = dm.uint8(train=True)
    torch.testing.assert_close(dm.transform("eval")(images[0]), (images[0].float() / 255 - 0.1307) / 0.3081)
    dm.setup("test")
    assert len(dm.datasets["test"]) == 40


def test_cifar10_batches_and_resize(cifar_dir: Path) -> None:
    """CIFAR-10: 10 classes of 3x32x32 from five training batches and a test batch; resize changes the shape."""
    dm = CIFAR10DataModule(data_dir=str(cifar_dir), batch_size=10, val_fraction=0.1)
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")
    assert (dm.task, dm.num_classes, dm.input_shape) == ("multiclass", 10, (3, 32, 32))
    assert len(dm.datasets["train"]) + len(dm.datasets["val"]) == 100 and len(dm.datasets["test"]) == 20
    x, y = first_batch(dm, "test")
    assert x.shape == (10, 3, 32, 32) and int(y.max()) < 10
    resized = CIFAR10DataModule(data_dir=str(cifar_dir), batch_size=8, resize=28, augment=True)
    resized.setup("fit")
    assert resized.input_shape == (3, 28, 28) and first_batch(resized)[0].shape == (8, 3, 28, 28)
    steps = [type(t).__name__ for t in resized.transform("train").transforms]
    assert steps == ["ToImage", "Resize", "RandomCrop", "RandomHorizontalFlip", "ToDtype", "Normalize"]
    assert "RandomCrop" not in [type(t).__name__ for t in resized.transform("eval").transforms]
    digits = MNISTDataModule(augment=True).transform("train").transforms
    assert "RandomHorizontalFlip" not in [type(t).__name__ for t in digits]  # a mirrored digit is no digit


def test_image_folder(image_folder_dir: Path) -> None:
    """Classes are the folder names; the input shape is the images' (H=20, W=16) or the resize."""
    dm = ImageFolderDataModule(data_dir=str(image_folder_dir), batch_size=4, val_fraction=0.25)
    assert (dm.task, dm.classes, dm.num_classes, dm.input_shape) == (
        "multiclass",
        ["cat", "dog", "frog"],
        3,
        (3, 20, 16),
    )
    dm.setup("fit")
    x, y = first_batch(dm)
    assert x.shape == (4, 3, 20, 16) and set(y.tolist()) <= {0, 1, 2}
    resized = ImageFolderDataModule(data_dir=str(image_folder_dir), batch_size=4, resize=12)
    resized.setup("test")
    assert resized.input_shape == (3, 12, 12) and first_batch(resized, "test")[0].shape == (4, 3, 12, 12)


def test_polynomial_data_follows_the_formula() -> None:
    """Features [x, x^2, x^3], target 0.9 + 0.5x + 3x^2 + 2.4x^3, noise only when asked."""
    dm = PolynomialDataModule(num_samples=50, noise=0.0)
    assert (dm.task, dm.num_classes, dm.input_shape) == ("regression", None, (3,))
    x, y = dm.tensors(train=True)
    assert x.shape == (50, 3)
    torch.testing.assert_close(y, 0.9 + 0.5 * x[:, 0] + 3 * x[:, 1] + 2.4 * x[:, 2])
    assert torch.allclose(x[:, 1], x[:, 0] ** 2) and x[:, 0].abs().max() <= 3
    assert not torch.allclose(PolynomialDataModule(num_samples=50, noise=1.0).tensors(train=True)[1], y)
    dm.setup("fit")
    xb, yb = first_batch(dm)
    assert xb.shape == (45, 3) and yb.dtype == torch.float32


def test_gaussian_clusters_are_binary_and_separated() -> None:
    """Two clusters ``separation`` apart, labels 0 and 1; the test set comes from another seed."""
    dm = GaussianClustersDataModule(num_samples=400, separation=6.0, spread=0.5)
    assert (dm.task, dm.num_classes, dm.input_shape) == ("binary", 2, (2,))
    x, y = dm.tensors(train=True)
    assert set(y.tolist()) == {0, 1}
    assert (x[y == 1].mean(0) - x[y == 0].mean(0)).norm() == pytest.approx(6.0, rel=0.1)
    assert not torch.equal(dm.tensors(train=False)[0][:10], x[:10])


def test_mnist_rows_are_padded_sequences(mnist_dir: Path) -> None:
    """MNIST rows: (T, 28) inputs, batches (x, lengths, y) with each sequence cut to its inked rows."""
    dm = MNISTRowsDataModule(data_dir=str(mnist_dir), batch_size=4)
    assert (dm.task, dm.num_classes, dm.input_shape) == ("multiclass", 10, (28, 28))
    image = torch.zeros(1, 28, 28, dtype=torch.uint8)
    image[0, 5:10, 3:20] = 255  # ink on rows 5..9 only
    rows = dm.transform("eval")(image)
    assert rows.shape == (5, 28)
    assert torch.equal(dm.transform("eval")(image.roll(10, dims=1)), rows)  # the same digit lower
    dm.prepare_data()
    dm.setup("fit")
    x, lengths, y = first_batch(dm)
    assert x.shape == (4, int(lengths.max()), 28) and lengths.shape == y.shape == (4,)
    for i, n in enumerate(lengths.tolist()):
        assert (x[i, n:] == 0).all()  # zero padding past each sequence's end
    with pytest.raises(UserError, match="device_resident false"):
        MNISTRowsDataModule(data_dir=str(mnist_dir), device_resident=True).train_dataloader()


def test_split_is_seeded_disjoint_and_covering(mnist_dir: Path) -> None:
    """The validation split depends on the seed alone and shares no sample with training."""

    def split(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        return MNISTDataModule(data_dir=str(mnist_dir), seed=seed, val_fraction=0.2).split_indices()

    train, val = split(0)
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(120)) and len(val) == 24
    again = split(0)
    assert torch.equal(train, again[0]) and torch.equal(val, again[1])
    assert not torch.equal(val, split(1)[1])


def test_the_test_set_is_never_in_the_split(mnist_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fitting reads the official training set alone; train and val are both carved from it."""
    dm = MNISTDataModule(data_dir=str(mnist_dir))
    read = []
    original = MNISTDataModule.load_uint8
    monkeypatch.setattr(MNISTDataModule, "load_uint8", lambda self, train: read.append(train) or original(self, train))
    dm.setup("fit")
    assert set(dm.datasets) == {"train", "val"} and read == [True]
    assert dm.datasets["val"].source is dm.datasets["train"].source
    synthetic = PolynomialDataModule(num_samples=30, num_test=30)
    train_x = synthetic.tensors(train=True)[0]
    test_x = synthetic.tensors(train=False)[0]
    assert not set(map(tuple, train_x.tolist())) & set(map(tuple, test_x.tolist()))


@pytest.mark.parametrize("module", ["clusters", "polynomial"])
def test_kfold_folds_are_disjoint_covering_and_stratified(module: str) -> None:
    """Each sample validates in exactly one fold; class folds keep the class proportions."""
    kind = {"clusters": GaussianClustersDataModule, "polynomial": PolynomialDataModule}[module]
    folds = [kind(num_samples=103, num_folds=5, fold=f, seed=3).split_indices() for f in range(5)]
    vals = [set(val.tolist()) for _, val in folds]
    assert set().union(*vals) == set(range(103)) and sum(len(v) for v in vals) == 103
    for train, val in folds:
        assert set(train.tolist()).isdisjoint(val.tolist()) and len(train) + len(val) == 103
    again = kind(num_samples=103, num_folds=5, fold=2, seed=3).split_indices()[1]
    assert torch.equal(again, folds[2][1])
    if module == "clusters":
        targets = GaussianClustersDataModule(num_samples=103, seed=3).source_targets(train=True)
        share = float(targets.float().mean())
        for _, val in folds:
            assert abs(int(targets[val].sum()) - share * len(val)) <= 1  # the positives' share, to one sample
    with pytest.raises(UserError, match="--data.fold 5 does not exist: choose 0 to 4"):
        kind(num_folds=5, fold=5)


def test_global_batch_size_divides_over_processes() -> None:
    """global_batch_size 64 is 32 a process on 2 and a UserError on 3."""
    dm = on_processes(PolynomialDataModule(num_samples=40, global_batch_size=64), world_size=2)
    dm.setup("fit")
    assert dm.batch_size == 32
    with pytest.raises(UserError, match="global_batch_size 64 does not divide by the 3 processes"):
        on_processes(PolynomialDataModule(global_batch_size=64), world_size=3).setup("fit")


@pytest.mark.parametrize(("n", "world_size"), [(40, 3), (7, 4), (2, 3)])
def test_evaluation_shards_give_every_sample_once(n: int, world_size: int) -> None:
    """Over all ranks each evaluation sample comes exactly once: no padding repeats a sample."""
    dataset = list(range(n))
    seen = [i for rank in range(world_size) for i in EvaluationShard(dataset, rank, world_size)]
    assert sorted(seen) == dataset
    assert sum(len(EvaluationShard(dataset, rank, world_size)) for rank in range(world_size)) == n
    dm = PolynomialDataModule(num_samples=40, val_fraction=0.25, batch_size=4)
    dm.setup("fit")
    val = [y for rank in range(3) for _, ys in on_processes(dm, 3, rank).val_dataloader() for y in ys.tolist()]
    assert sorted(val) == sorted(dm.datasets["val"][i][1].item() for i in range(10))


def test_image_folder_hidden_folders_are_not_classes(tmp_path: Path) -> None:
    """``.ipynb_checkpoints`` and other hidden folders are skipped."""
    root = write_image_folder(tmp_path / "data", n_train=2, n_test=1)
    hidden = root / "train" / ".ipynb_checkpoints"
    hidden.mkdir()
    shutil.copy(root / "train" / "cat" / "0000.jpg", hidden / "0000.jpg")
    dm = ImageFolderDataModule(data_dir=str(root))
    assert dm.classes == ["cat", "dog", "frog"] and len(dm.source(train=True)) == 6


def test_image_folder_empty_class_is_named(tmp_path: Path) -> None:
    """A class folder without images is a UserError naming it."""
    root = write_image_folder(tmp_path / "data", n_train=2, n_test=1)
    (root / "train" / "bird").mkdir()
    with pytest.raises(UserError, match="has no images of bird"):
        _ = ImageFolderDataModule(data_dir=str(root)).classes


def test_image_folder_mixed_sizes_need_resize(tmp_path: Path) -> None:
    """Images of different sizes are a UserError pointing to --data.resize, which fixes it."""
    root = write_image_folder(tmp_path / "data", n_train=2, n_test=1)
    Image.new("RGB", (9, 9)).save(root / "train" / "cat" / "odd.png")
    options = {"batch_size": 8, "val_fraction": 0.5}
    dm = ImageFolderDataModule(data_dir=str(root), **options)
    with pytest.raises(UserError, match="differ in size.*--data.resize"):
        dm.load_uint8(train=True)  # the device-resident path
    dm.setup("fit")
    with pytest.raises(UserError, match="differ in size.*--data.resize"):  # the DataLoader path
        [*dm.train_dataloader(), *dm.val_dataloader()]
    resized = ImageFolderDataModule(data_dir=str(root), resize=10, **options)
    assert resized.load_uint8(train=True)[0].shape == (7, 3, 10, 10)
    resized.setup("fit")
    assert {tuple(x.shape[1:]) for x, _ in resized.train_dataloader()} == {(3, 10, 10)}


def test_image_folder_damaged_image_is_named(tmp_path: Path) -> None:
    """An image that cannot be decoded is a UserError naming the file."""
    root = write_image_folder(tmp_path / "data", n_train=2, n_test=1)
    damaged = root / "train" / "dog" / "0000.jpg"
    damaged.write_bytes(damaged.read_bytes()[:40])
    dm = ImageFolderDataModule(data_dir=str(root))
    with pytest.raises(UserError, match=f"{damaged}.*cannot be decoded"):
        dm.load_uint8(train=True)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda data: data[:-100], "is truncated"),
        (lambda data: data + b"\x00", "longer than its header says"),
        (lambda data: b"\x00\x00\x0d\x03" + data[4:], "is not an IDX file of unsigned bytes"),
    ],
    ids=["truncated", "too-long", "header"],
)
def test_damaged_mnist_file_is_named(mnist_dir: Path, tmp_path: Path, damage, message: str) -> None:
    """prepare_data checks every IDX file against its header and names the damaged one."""
    copy = tmp_path / "copy"
    shutil.copytree(mnist_dir, copy)
    path = copy / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(UserError, match=message) as info:
        MNISTDataModule(data_dir=str(copy)).prepare_data()
    assert str(path) in str(info.value)


def test_mnist_images_and_labels_must_agree(mnist_dir: Path, tmp_path: Path) -> None:
    """A labels file of another count than its images file is a UserError."""
    copy = tmp_path / "copy"
    shutil.copytree(mnist_dir, copy)
    shutil.copy(copy / "MNIST" / "raw" / "t10k-labels-idx1-ubyte", copy / "MNIST" / "raw" / "train-labels-idx1-ubyte")
    with pytest.raises(UserError, match="holds 120 images, its labels file 40 labels"):
        MNISTDataModule(data_dir=str(copy)).prepare_data()


@pytest.mark.parametrize(
    ("cls", "folder", "names"),
    [
        (MNISTDataModule, "MNIST/raw", ["train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]),
        (CIFAR10DataModule, "cifar-10-batches-py", ["data_batch_1", "test_batch"]),
        (ImageFolderDataModule, "", ["train/<class>/<image>"]),
    ],
    ids=["mnist", "cifar", "folder"],
)
def test_missing_data_says_where_and_leaves_no_empty_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cls, folder: str, names: list[str]
) -> None:
    """A failed download is a UserError with the folder looked in, the files expected and the cause; the
    folders the download made stay behind only if they hold something."""

    def offline(self) -> None:  # as torchvision does: make the folder, then fail
        (self.data_dir / folder).mkdir(parents=True, exist_ok=True)
        raise RuntimeError("Error downloading: <urlopen error [Errno -2] Name or service not known>")

    monkeypatch.setattr(cls, "fetch", offline)  # never the network in a test
    (tmp_path / "kept").mkdir()
    data_dir = tmp_path / "kept" / "nowhere"
    with pytest.raises(UserError) as info:
        cls(data_dir=str(data_dir)).prepare_data()
    message = str(info.value)
    assert str((data_dir / folder).resolve()) in message and "--data.data_dir" in message
    assert all(name in message for name in names) and "Error downloading" in message
    assert not data_dir.exists() and (tmp_path / "kept").is_dir()  # what it made, not what was there


def test_missing_data_without_download(tmp_path: Path) -> None:
    """download=False says so; setup never downloads and says the data is not prepared."""
    with pytest.raises(UserError, match="download=False"):
        MNISTDataModule(data_dir=str(tmp_path), download=False).prepare_data()
    with pytest.raises(UserError, match="not prepared"):
        MNISTDataModule(data_dir=str(tmp_path)).setup("fit")
    assert list(tmp_path.iterdir()) == []


def test_training_loader_resumes_mid_epoch() -> None:
    """The training order is a function of (seed, epoch); a loaded state skips the batches already trained on."""
    torch.manual_seed(0)

    def loader():
        dm = PolynomialDataModule(num_samples=40, val_fraction=0.25, batch_size=4)
        dm.setup("fit")
        return dm.train_dataloader()

    first = loader()
    first.sampler.set_epoch(2)
    epoch = [y for _, y in first]
    assert len(epoch) == 8
    stopped = loader()
    stopped.sampler.set_epoch(2)
    for i, _ in enumerate(stopped):
        if i == 2:
            break
    state = stopped.state_dict()
    assert state == {"epoch": 2, "batches": 3}
    resumed = loader()
    resumed.load_state_dict(state)
    rest = [y for _, y in resumed]
    assert len(rest) == 5 and all(torch.equal(a, b) for a, b in zip(rest, epoch[3:], strict=True))
    first.sampler.set_epoch(3)
    assert not torch.equal(torch.cat([y for _, y in first]), torch.cat(epoch))
