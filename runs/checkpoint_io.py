"""Checkpoint files written whole or not at all, and read back with a clear word when they are not."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

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


def checkpoint_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be a Lightning checkpoint, found without loading it (None: it looks
    whole). A checkpoint is a zip archive that ``torch.save`` wrote; a truncated copy has lost its
    index at the end."""
    path = Path(path)
    if not path.is_file():
        return "no such file"
    if path.stat().st_size == 0:
        return "empty file"
    try:
        with zipfile.ZipFile(path) as archive:
            if not any(name.endswith("data.pkl") for name in archive.namelist()):
                return "a zip archive, but not one that torch.save wrote"
    except zipfile.BadZipFile:
        return "truncated or damaged (not a complete torch.save archive)"
    return None
