"""Files written whole or not at all: a temporary sibling, flushed to disk, renamed over the target."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; it replaces ``path`` only if the block completes.

    The temporary file sits in the target's own folder (never in ``$TMPDIR``, which is often
    another filesystem, where a rename becomes a copy that a kill can cut short). Readers (other
    ranks, a restarted job, a person) never see a half-written file, and a failed or killed
    write leaves at most a hidden ``.<name>.tmp<pid>`` file, which nothing reads.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")  # suffix: savefig's format
    try:
        yield tmp
        with open(tmp, "rb+") as written:  # on disk before the rename makes it visible
            os.fsync(written.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | Path, payload: Any, sort_keys: bool = True) -> Path:
    return write_text(path, json.dumps(payload, indent=2, sort_keys=sort_keys) + "\n")


def save_torch(obj: Any, path: str | Path) -> Path:
    """``torch.save`` through a temporary file."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete what writers killed mid-write left in ``folder`` (``.<name>.tmp<pid>`` files); call
    it only while no other process writes there (the run's lock is held)."""
    stale = [p for p in Path(folder).rglob(".*.tmp*") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
