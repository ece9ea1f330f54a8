"""Tiny datasets written in the real on-disk formats (IDX, CIFAR python batches, image folders)."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _images(n: int, shape: tuple[int, ...], labels: np.ndarray, seed: int) -> np.ndarray:
    """uint8 images whose mean brightness depends on the label, so a model can learn a little."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 120, size=(n, *shape))
    return (base + (labels.reshape(-1, *[1] * len(shape)) * 13)).clip(0, 255).astype(np.uint8)


def _write_idx(path: Path, array: np.ndarray) -> None:
    type_code = 0x08  # unsigned byte
    header = struct.pack(">HBB", 0, type_code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, n_train: int = 120, n_test: int = 40, seed: int = 0) -> Path:
    """``root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` as torchvision reads them."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, size=n)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", _images(n, (28, 28), labels, seed + n))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


def write_cifar10(root: Path, n_per_batch: int = 20, seed: int = 0) -> Path:
    """``root/cifar-10-batches-py/`` with five training batches, a test batch and the meta file.

    torchvision checks the real files' md5 sums: tests patch ``CIFAR10._check_integrity``.
    """
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        labels = rng.integers(0, 10, size=n_per_batch)
        data = _images(n_per_batch, (3, 32, 32), labels, seed + i).reshape(n_per_batch, -1)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels.tolist()}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CIFAR_CLASSES}, f)
    return root


def write_image_folder(
    root: Path,
    classes: tuple[str, ...] = ("cat", "dog", "frog"),
    n_train: int = 8,
    n_test: int = 4,
    size: tuple[int, int] = (20, 16),
    seed: int = 0,
) -> Path:
    """``root/{train,test}/<class>/NNNN.{jpg,png}`` (alternating formats, RGB, HxW = ``size``)."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for label, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            images = _images(n, (3, *size), np.full(n, label * 3), int(rng.integers(1 << 30)))
            for i, image in enumerate(images):
                pil = Image.fromarray(image.transpose(1, 2, 0))  # (H, W, 3)
                pil.save(folder / (f"{i:04d}.png" if i % 2 else f"{i:04d}.jpg"), quality=95)
    return root
