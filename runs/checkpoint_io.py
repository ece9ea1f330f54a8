"""Checkpoint files written whole or not at all, and read back with a clear word when they are not."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol

from runs.files import save_torch


class AtomicCheckpointIO(TorchCheckpointIO):
    """Every checkpoint (best, last, on a signal) goes through ``runs.files.save_torch``: a
    temporary file in the checkpoint's own folder, flushed to disk, then renamed over the target.

    Lightning's own writer stages the file in ``$TMPDIR``; on clusters that is another filesystem,
    where the final move is a copy over the previous checkpoint, and a kill during that copy
    leaves a truncated file and no good one. Remote paths (``s3://`` ...) keep Lightning's writer.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None or not _is_local_file_protocol(str(path)):
            return super().save_checkpoint(checkpoint, path, storage_options)
        save_torch(checkpoint, path)
        return None


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Any] | None, str | None]:
    """(the checkpoint, None) when ``path`` holds a whole Lightning checkpoint, else (None, what
    it is instead). Reads only the structure (the tensors are memory-mapped, not read)."""
    path = Path(path)
    if not path.is_file():
        return None, "no such file"
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        return None, "an empty file"
    if head == b"PK\x03\x04" and not zipfile.is_zipfile(path):  # its index at the end is missing
        return None, "truncated or damaged (an incomplete torch.save archive)"
    if head != b"PK\x03\x04":
        return None, "not a file torch.save wrote"
    try:
        content = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # a damaged member; a class that safe loading refuses
        return None, f"unreadable ({type(err).__name__}: {str(err).strip().splitlines()[0][:160]})"
    if isinstance(content, dict) and "pytorch-lightning_version" in content:
        return content, None
    if isinstance(content, dict) and "net" in content and "state_dict" in content:
        return None, "a model.pth (network weights only): start a run from it with --model.init_weights"
    if isinstance(content, dict) and content and all(isinstance(v, torch.Tensor) for v in content.values()):
        return None, f"a plain state_dict ({len(content)} tensors), not a Lightning checkpoint"
    keys = list(content)[:6] if isinstance(content, dict) else type(content).__name__
    return None, f"not a Lightning checkpoint (it holds {keys})"


def checkpoint_problem(path: str | os.PathLike) -> str | None:
    """What keeps ``path`` from being a Lightning checkpoint to load (None: nothing)."""
    return read_checkpoint(path)[1]
