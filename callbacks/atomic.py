"""Files written whole or not at all: write a temporary sibling, rename it over the target."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; it replaces ``path`` only if the block completes.

    Readers (other ranks, a restarted job, a person) never see a half-written file, and a failed
    write leaves neither a partial target nor the temporary file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # keep the suffix: savefig and friends choose the format from it
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | Path, payload: Any, sort_keys: bool = True) -> Path:
    return write_text(path, json.dumps(payload, indent=2, sort_keys=sort_keys) + "\n")
