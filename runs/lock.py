"""One process per run folder: ``run.lock`` is locked while a run trains there and records who
started it (and with which command), which a requeued job reads to find its folder again."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import IO, Any

from lightning.pytorch.utilities import rank_zero_warn

try:
    import fcntl
except ImportError:  # Windows: no POSIX locks, no protection
    fcntl = None

LOCK_FILE = "run.lock"
_held: dict[Path, tuple[IO[str], bool]] = {}  # folder -> (lock file, started here); this process's


class RunInUse(RuntimeError):
    """Another live process trains in this run folder."""


def run_record(folder: Path) -> dict[str, Any] | None:
    """What the last process that ran in ``folder`` recorded (None: no run started there)."""
    try:
        return json.loads((folder / LOCK_FILE).read_text() or "null")
    except (OSError, ValueError):
        return None


def lock_run(folder: Path, command: list[str]) -> None:
    """Lock ``folder`` for this process until ``release_run_locks``, or raise ``RunInUse`` naming
    the process that holds it. POSIX locks: they work on NFS and Lustre, and die with the process."""
    if fcntl is None or folder.resolve() in _held:
        return
    new = not (folder / LOCK_FILE).exists()
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / LOCK_FILE, "a+")  # noqa: SIM115 (held open while the run lives)
    try:
        fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (BlockingIOError, PermissionError):
        handle.seek(0)
        holder = json.loads(handle.read() or "{}")
        handle.close()
        raise RunInUse(
            f"{folder} is in use by process {holder.get('pid', '?')} on {holder.get('host', '?')} "
            f"(started {holder.get('started', '?')}): wait for it to end, or give this run another "
            "--run_id."
        ) from None
    except OSError as err:  # a filesystem without locks: run unprotected rather than not at all
        rank_zero_warn(f"Cannot lock {folder} ({err}); two runs there would not be stopped.")
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": command,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "slurm_job": os.environ.get("SLURM_JOB_ID"),
        "attempt": int(os.environ.get("SLURM_RESTART_COUNT", 0)),
    }
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps(record) + "\n")
    handle.flush()
    _held[folder.resolve()] = (handle, new)


def started_here(folder: Path) -> bool:
    """Whether this process locked ``folder`` and no run had been there before."""
    return _held.get(folder.resolve(), (None, False))[1]


def release_run_locks() -> None:
    for handle, _ in _held.values():
        handle.close()  # closing the file releases its lock
    _held.clear()
