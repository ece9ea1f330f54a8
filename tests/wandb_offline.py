"""Reads what an offline W&B run keeps: the records of its ``run-<id>.wandb`` file.

W&B writes the run's config, history and summary only into that file (``wandb sync`` uploads it);
it is a LevelDB-style log of ``wandb.proto`` ``Record`` messages: a 7-byte header (``:W&B``, a
magic number, a version), then 32 KiB blocks of chunks, each chunk ``crc32 (4) | length (2) |
type (1) | payload``, where type 1 is a whole record and 2/3/4 the first/middle/last part of one.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

HEADER = 7
BLOCK = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> Iterator[wandb_internal_pb2.Record]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, parts = HEADER, []
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # a block's tail too short for a chunk is padding
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        payload = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind in (FULL, FIRST, MIDDLE, LAST):
            parts.append(payload)
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(parts))
            parts = []
            yield record


def item_key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


class OfflineRun:
    """The offline run folder ``<dir>/wandb/offline-run-<time>-<id>/``, decoded.

    W&B's service process writes the file after ``run.finish()`` returns: wait (up to ``wait``
    seconds) for the run's exit record, the last one it writes.
    """

    def __init__(self, folder: Path, wait: float = 30.0) -> None:
        self.folder = folder
        deadline = time.monotonic() + wait
        while True:
            try:
                self.records = list(records(next(folder.glob("run-*.wandb"))))
            except Exception:  # a record still being written
                self.records = []
            if self.of_type("exit") or time.monotonic() > deadline:
                break
            time.sleep(0.2)

    def of_type(self, kind: str) -> list[Any]:
        return [getattr(r, kind) for r in self.records if r.WhichOneof("record_type") == kind]

    @property
    def run(self) -> Any:
        return self.of_type("run")[0]

    @property
    def config(self) -> dict[str, Any]:
        """The config as the W&B dashboard shows it: the run's initial config plus its updates."""
        items = [*self.run.config.update]
        for update in self.of_type("config"):
            items += update.update
        return {item_key(i): json.loads(i.value_json) for i in items}

    @property
    def history(self) -> list[dict[str, Any]]:
        """One dict per ``log`` call (a row of the run's metric history)."""
        return [{item_key(i): json.loads(i.value_json) for i in row.item} for row in self.of_type("history")]

    def media(self) -> list[Path]:
        return sorted((self.folder / "files" / "media").rglob("*.png"))


def offline_runs(wandb_dir: Path) -> list[OfflineRun]:
    return [OfflineRun(folder) for folder in sorted(wandb_dir.glob("offline-run-*"))]
