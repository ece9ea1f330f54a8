"""Files written whole or not at all, checkpoints among them, and checkpoints checked before use."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO

from run.errors import UserError


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` that replaces it, flushed to disk, if the block completes:
    readers see the old file or the new one. Not in ``$TMPDIR``: on another filesystem the final
    move is a copy, which a kill can cut short."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        with open(tmp, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer through ``atomic_path`` (Lightning's own stages the file in
    ``$TMPDIR``). A full disk is a few lines naming the path, and the previous file stays whole."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        try:
            with atomic_path(path) as tmp:
                torch.save(checkpoint, tmp)
        except OSError as err:  # ENOSPC, EDQUOT, EROFS...: the filesystem refused
            raise UserError(f"Cannot write the checkpoint {path}: {err.strerror or err}.") from err


def check_saved(path: str | Path, name: str) -> None:
    """A UserError naming the file as ``name`` unless ``path`` is a whole file that torch.save wrote."""
    if not Path(path).is_file():
        raise UserError(f"{name}: No such file.")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive whose index is at its end
        raise UserError(f"{name} is truncated, damaged or not written by torch.save.")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A whole Lightning checkpoint (tensors memory-mapped, not read), or a UserError saying what
    the file is instead."""
    path = Path(path)
    check_saved(path, str(path))
    try:
        content = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # a damaged member, or a class that safe loading refuses
        raise UserError(f"{path} cannot be read: {str(err).strip().splitlines()[0][:200]}") from err
    if not (isinstance(content, dict) and "pytorch-lightning_version" in content):
        raise UserError(f"{path} is not a Lightning checkpoint (a plain state_dict? use --model.init_weights).")
    return content
