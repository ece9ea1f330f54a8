"""The run folder: ``<save_dir>/<name>/version_N`` of the first logger, or ``.../<run id>`` for a
named run (``--run_id``, ``slurm-<job id>``), a path every process derives alike and the same
command finds again (a requeued job's); its lock; the checkpoint a restart resumes from."""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path, PurePosixPath
from typing import IO, Any

from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from run.errors import UserError
from run.files import read_checkpoint

try:
    import fcntl
except ImportError:  # Windows: no POSIX locks
    fcntl = None

LOCK_FILE, METRICS_FILE = "run.lock", "metrics.json"  # held while training; written when finished


def logger_specs(trainer_config: Any) -> list[Any]:
    """The ``class_path``/``init_args`` specs of a trainer config's loggers."""
    logger = trainer_config.get("logger")
    return [s for s in (logger if isinstance(logger, list) else [logger]) if hasattr(s, "get") and s.get("class_path")]


def experiment_dir(trainer_config: Any) -> Path | None:
    """``[<default_root_dir>/]<save_dir>/<name>`` of the first logger, when it keeps run folders (CSV,
    TensorBoard)."""
    specs = logger_specs(trainer_config)
    if not specs or not specs[0]["class_path"].endswith(("CSVLogger", "TensorBoardLogger")):
        return None
    args = specs[0].get("init_args") or {}
    save_dir = Path(trainer_config.get("default_root_dir") or ".", args.get("save_dir") or ".")
    return save_dir / str(args.get("name") or "lightning_logs")


def run_record(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / LOCK_FILE).read_text() or "{}")
    except (OSError, ValueError):
        return {}


def run_name(root: Path, run_id: str | None, command: list[str]) -> str:
    """``run_id``; in a SLURM batch job ``slurm-<job id>`` (``-2``, ``-3``... for more fits in the
    job; a requeued job takes the folder its command started); else the next ``version_N``."""
    if run_id is not None:
        if not run_id or PurePosixPath(run_id).is_absolute() or ".." in PurePosixPath(run_id).parts:
            raise UserError(f"--run_id {run_id!r} must be a relative folder name such as 'baseline'.")
        return run_id
    taken = sorted(p.name for p in root.glob("*") if p.is_dir()) if root.is_dir() else []
    job = SLURMEnvironment.job_id()  # None in an interactive allocation: every command is new
    if job is None:
        numbers = [int(n[8:]) for n in taken if n.startswith("version_") and n[8:].isdigit()]
        return f"version_{max(numbers, default=-1) + 1}"
    ours = [n for n in taken if n == f"slurm-{job}" or n.startswith(f"slurm-{job}-")]
    if int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0:
        ours_by_command = [n for n in ours if run_record(root / n).get("command") == command]
        if ours_by_command:
            return ours_by_command[0]
    return f"slurm-{job}" if not ours else f"slurm-{job}-{len(ours) + 1}"


class RunFolder:
    """A fit's folder: chosen before the Trainer exists, locked by rank 0 while it trains."""

    def __init__(self, root: Path, name: str, command: list[str]) -> None:
        self.name, self.path, self.command = name, root / name, command
        self.fresh, self._lock = not self.path.exists(), None

    def check_unfinished(self) -> None:
        if not (self.path / METRICS_FILE).is_file():
            return
        if run_record(self.path).get("command") == self.command and os.environ.get("SLURM_RESTART_COUNT"):
            rank_zero_info(f"{self.path} finished before this job was requeued: nothing to do.")
            raise SystemExit(0)
        raise UserError(
            f"{self.path} holds a finished run and is never written into again. Give another "
            f"--run_id, or start from its weights: --model.init_weights {self.path}/checkpoints/last.ckpt"
        )

    @rank_zero_only
    def lock(self) -> None:
        """One process per folder: POSIX locks work on NFS and Lustre, and die with the process."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            handle: IO[str] = open(self.path / LOCK_FILE, "a+")  # noqa: SIM115 (held while the run lives)
        except OSError as err:
            raise UserError(
                f"Cannot write the run folder {self.path}: {err.strerror or err} "
                "(--trainer.default_root_dir, or the logger's save_dir)."
            ) from err
        try:
            if fcntl is not None:
                fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            holder = run_record(self.path)
            raise UserError(
                f"{self.path} is in use by process {holder.get('pid')} on {holder.get('host')}: "
                "wait for it to end, or give this run another --run_id."
            ) from None
        for stale in [*self.path.glob(".*.tmp*"), *self.path.glob("checkpoints/.*.tmp*")]:
            stale.unlink()  # what a writer killed mid-write left (run/files.py); nobody else writes here now
        if (self.path / "metrics.csv").is_file():  # CSVLogger deletes the one a restarted run finds
            restart = 1 + len(list(self.path.glob("metrics.until-restart*.csv")))
            os.replace(self.path / "metrics.csv", self.path / f"metrics.until-restart{restart}.csv")
        handle.truncate(0)
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": self.command}) + "\n")
        handle.flush()
        self._lock = handle

    def release(self, failed: bool) -> None:
        """Unlock; a failed fit that trained nothing in a folder it made removes the folder."""
        if self._lock is None:
            return
        self._lock.close()
        self._lock = None
        trained = (self.path / "metrics.csv").exists() or any((self.path / "checkpoints").glob("*.ckpt"))
        if failed and self.fresh and not trained:
            shutil.rmtree(self.path, ignore_errors=True)
            rank_zero_info(f"Removed {self.path}: the run failed before training.")

    def resume_checkpoint(self) -> str | None:
        """The whole checkpoint furthest in training (its own step and epoch; the newest file on a
        tie); damaged ones are skipped with a line that says why."""
        found = []
        for path in (self.path / "checkpoints").glob("[!.]*.ckpt"):
            try:
                checkpoint = read_checkpoint(path)
            except UserError as skipped:
                rank_zero_info(f"Skipping {skipped}")
                continue
            found.append(
                (checkpoint.get("global_step", 0), checkpoint.get("epoch", 0), path.stat().st_mtime, str(path))
            )
        if not found:
            return None
        step, *_, best = max(found)
        rank_zero_info(f"Resuming {self.path} from {best} (step {step}).")
        return best
