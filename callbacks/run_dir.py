"""The run directory: where a run writes, and how a restarted run finds its way back into it.

An unnamed run gets the first logger's next ``<save_dir>/<name>/version_N``. Rank 0 picks N and
Lightning hands its choice to the other ranks (``trainer.log_dir`` and the checkpoint folder are
broadcast), so every rank writes to, or reads from, one folder.

A named run (``--run_id ID``, or ``slurm-<job id>`` inside a SLURM batch job) lives in
``<save_dir>/<name>/ID``: a path every rank derives alike without talking to the others. Running
the same command again, as a requeued SLURM job does (same job id), finds that folder: fit
continues from its newest checkpoint and the W&B logger from the stored W&B run id.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path, PurePosixPath

from jsonargparse import Namespace
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

WANDB_ID_FILE = "wandb_run_id.txt"  # in the run directory: the W&B run a restart continues
METRICS_FILE = "metrics.json"  # written by the CLI when a run is finished


def slurm_run_id() -> str | None:
    """``slurm-<job id>`` in a SLURM batch job (a requeued job keeps its id), else None.

    Interactive allocations (job name ``bash`` or ``interactive``) count as no job, as Lightning
    counts them: every command typed there would otherwise share one run directory.
    """
    job_id = SLURMEnvironment.job_id()
    return None if job_id is None else f"slurm-{job_id}"


def newest_checkpoint(run_dir: Path) -> Path | None:
    """What a restarted run continues from: the newer of Lightning's pre-emption checkpoints
    (``hpc_ckpt_N.ckpt``, saved on the requeue signal) and ``checkpoints/last.ckpt``."""
    candidates = [*run_dir.glob("hpc_ckpt_*.ckpt"), run_dir / "checkpoints" / "last.ckpt"]
    existing = [path for path in candidates if path.is_file()]
    return max(existing, key=lambda path: path.stat().st_mtime, default=None)


def logger_entries(trainer_config: Namespace) -> list[Namespace]:
    """The logger specs (``class_path`` + ``init_args``) of a trainer config, as a list."""
    logger = trainer_config.get("logger")
    entries = logger if isinstance(logger, list) else [logger]
    return [entry for entry in entries if isinstance(entry, Namespace) and "class_path" in entry]


def logger_class(entry: Namespace) -> type:
    module, _, name = entry.class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def check_run_id(run_id: str) -> str:
    path = PurePosixPath(run_id)
    if not run_id or path.is_absolute() or ".." in path.parts:
        raise ValueError(
            f"--run_id {run_id!r} must be a relative folder name such as 'baseline' or "
            "'sweep1/lr0.01' (no leading '/', no '..'): the run lives in "
            "<save_dir>/<name>/<run_id>."
        )
    return run_id


def prepare_run(
    trainer_config: Namespace, ckpt_path: str | None, run_id: str | None, run_group: str | None
) -> str | None:
    """Fix a named run's directory in ``trainer_config`` and return the checkpoint fit starts from.

    Sets the first logger's ``version`` to the run id, the trainer's ``default_root_dir`` to the
    run directory (where Lightning saves and looks for pre-emption checkpoints), and the W&B
    loggers' run id, group and name. Every rank computes the same result.
    """
    explicit = run_id is not None
    run_id = check_run_id(run_id) if explicit else slurm_run_id()
    entries = logger_entries(trainer_config)
    for entry in entries:
        if issubclass(logger_class(entry), WandbLogger):
            entry.init_args.group = entry.init_args.get("group") or run_group
            if entry.init_args.get("resume") is None:
                entry.init_args.resume = "allow"  # continue the run when its id is given
    if run_id is None:
        return ckpt_path
    first = entries[0] if entries else None
    if first is None or not issubclass(logger_class(first), (CSVLogger, TensorBoardLogger)):
        if not explicit:
            return ckpt_path  # no run folder to name: Lightning's own SLURM handling still applies
        raise ValueError(
            f"--run_id {run_id!r} names a folder of the first logger, which must be a CSVLogger or "
            f"TensorBoardLogger (got {first.class_path if first else 'no logger'}); put one first "
            "in trainer.logger (configs/logger/wandb.yaml adds W&B after it)."
        )
    args = first.init_args
    args.version = run_id
    run_dir = Path(args.get("save_dir") or ".") / str(args.get("name") or "") / run_id
    if trainer_config.get("default_root_dir") is None:
        trainer_config.default_root_dir = str(run_dir)
    for entry in entries[1:]:
        if issubclass(logger_class(entry), WandbLogger):
            configure_wandb_resume(entry.init_args, run_dir, f"{args.get('name')}/{run_id}")
    if ckpt_path is not None:
        return ckpt_path
    if (run_dir / METRICS_FILE).is_file():
        raise FileExistsError(
            f"{run_dir} holds a finished run ({METRICS_FILE} is there). Give this run another "
            "--run_id, or to train that model further pass "
            f"--ckpt_path {run_dir}/checkpoints/last.ckpt with a new --run_id."
        )
    resume_from = newest_checkpoint(run_dir)
    if resume_from is None:
        return None
    rank_zero_info(f"Run {run_dir} exists: resuming from {resume_from}")
    if rank_zero_only.rank == 0:
        keep_metrics_history(run_dir)
    return str(resume_from)


def keep_metrics_history(run_dir: Path) -> None:
    """CSVLogger deletes an existing ``metrics.csv`` when it starts: move it aside first, to
    ``metrics.until-restartN.csv``, so a resumed run keeps the history logged before the restart."""
    metrics = run_dir / "metrics.csv"
    if not metrics.is_file():
        return
    restart = 1
    while (target := run_dir / f"metrics.until-restart{restart}.csv").exists():
        restart += 1
    os.replace(metrics, target)


def configure_wandb_resume(init_args: Namespace, run_dir: Path, display_name: str) -> None:
    """Continue the W&B run recorded in ``run_dir``, if any, and name the run after its folder."""
    stored = stored_wandb_id(run_dir)
    if init_args.get("id") is None and init_args.get("version") is None and stored is not None:
        init_args.id = stored
    if init_args.get("name") is None:
        init_args.name = display_name


def stored_wandb_id(run_dir: str | Path) -> str | None:
    path = Path(run_dir) / WANDB_ID_FILE
    return path.read_text().strip() if path.is_file() else None
