"""The run folder: where a run writes, and how a restarted run finds its way back into it.

An unnamed run gets the first logger's next ``<save_dir>/<name>/version_N``. Rank 0 picks N and
Lightning hands its choice to the other ranks, so every rank writes to, or reads from, one folder.

A named run (``--run_id ID``, or ``slurm-<job id>`` inside a SLURM batch job) lives in
``<save_dir>/<name>/ID``: a path every rank derives alike without talking to the others. Running
the same command again, as a requeued SLURM job does (same job id), finds that folder: fit
continues from its newest whole checkpoint and the W&B logger from the stored W&B run id.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import lightning as L
from jsonargparse import Namespace
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from runs.checkpoint_io import checkpoint_problem
from runs.lock import lock_run, run_record

WANDB_ID_FILE = "wandb_run_id.txt"  # in the run folder: the W&B run a restart continues
METRICS_FILE = "metrics.json"  # written by the CLI when a run is finished
FOLDER_LOGGERS = (CSVLogger, TensorBoardLogger)  # loggers whose runs are <save_dir>/<name>/<version>


def run_dir(trainer: L.Trainer) -> Path | None:
    """The run folder (the first logger's), or None without a logger.

    Under DDP ``trainer.log_dir`` is a broadcast from rank 0, so every rank must call this, not
    only the rank that then writes.
    """
    log_dir = trainer.log_dir
    return Path(log_dir) if log_dir is not None and trainer.loggers else None


def logger_specs(trainer_config: Any) -> list[Any]:
    """The logger specs (``class_path`` + ``init_args``) of a trainer config (a parsed Namespace
    or a plain dict, as ``--print_config`` writes it), as a list."""
    logger = trainer_config.get("logger")
    specs = logger if isinstance(logger, list) else [logger]
    return [spec for spec in specs if isinstance(spec, (Mapping, Namespace)) and "class_path" in spec]


def logger_class(spec: Any) -> type:
    module, _, name = spec["class_path"].rpartition(".")
    return getattr(importlib.import_module(module), name)


def experiment_dir(trainer_config: Any) -> Path | None:
    """``<save_dir>/<name>`` of the first logger, where its run folders go; None if the first
    logger keeps no folders (or there is none)."""
    specs = logger_specs(trainer_config)
    if not specs or not issubclass(logger_class(specs[0]), FOLDER_LOGGERS):
        return None
    args = specs[0].get("init_args") or {}
    return Path(args.get("save_dir") or ".") / str(args.get("name") or "")


def slurm_job() -> str | None:
    """``slurm-<job id>`` in a SLURM batch job, else None.

    Interactive allocations (job name ``bash`` or ``interactive``) count as no job, as Lightning
    counts them: every command typed there gets a folder of its own.
    """
    job_id = SLURMEnvironment.job_id()
    return None if job_id is None else f"slurm-{job_id}"


def requeued() -> bool:
    """This SLURM job runs again after a requeue (pre-emption, time limit, ``scontrol requeue``)."""
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0


def slurm_run_id(root: Path, job: str, command: list[str]) -> str:
    """The folder of a fit inside SLURM job ``job``: ``slurm-<job id>``, ``slurm-<job id>-2``, ...

    A requeued job finds the folder its earlier attempt started with the same command; any other
    fit of the job (a seed loop, a W&B agent) gets a folder of its own. Every process of a
    multi-process fit decides alike: none of them creates a folder before all have started.
    """
    taken = sorted(p.name for p in root.glob(f"{job}*") if p.name == job or p.name.startswith(f"{job}-"))
    if requeued():
        for name in taken:
            if (run_record(root / name) or {}).get("command") == command:
                return name
    if not taken:
        return job
    return next(f"{job}-{k}" for k in range(2, len(taken) + 3) if f"{job}-{k}" not in taken)


def newest_checkpoint(folder: Path) -> Path | None:
    """What a restarted run continues from: the newest checkpoint in ``folder`` that is whole
    (``checkpoints/*.ckpt`` and pre-emption ``hpc_ckpt_N.ckpt``); damaged ones are skipped."""
    candidates = [*folder.glob("hpc_ckpt_*.ckpt"), *(folder / "checkpoints").glob("*.ckpt")]
    candidates = [p for p in candidates if not p.name.startswith(".")]  # a killed writer's temporary
    for path in sorted(candidates, key=lambda p: p.stat().st_mtime, reverse=True):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        rank_zero_info(f"Skipping {path}: {problem}.")
    return None


def check_run_id(run_id: str) -> str:
    path = PurePosixPath(run_id)
    if not run_id or path.is_absolute() or ".." in path.parts:
        raise ValueError(
            f"--run_id {run_id!r} must be a relative folder name such as 'baseline' or "
            "'sweep1/lr0.01' (no leading '/', no '..'): the run lives in "
            "<save_dir>/<name>/<run_id>."
        )
    return run_id


def move_under_root_dir(trainer_config: Any) -> None:
    """``--trainer.default_root_dir D``: every logger's relative folder (and so the run folder, its
    checkpoints and results) moves under D, as Lightning's own default logger would."""
    root = trainer_config.get("default_root_dir")
    for spec in logger_specs(trainer_config) if root is not None else []:
        save_dir = spec.init_args.get("save_dir") or "."
        if not os.path.isabs(save_dir):
            spec.init_args.save_dir = os.path.join(root, save_dir)


def prepare_run(
    trainer_config: Any,
    ckpt_path: str | None,
    run_id: str | None,
    run_group: str | None,
    command: list[str],
) -> str | None:
    """Fix a named run's folder in ``trainer_config`` and return the checkpoint fit starts from.

    Sets the first logger's ``version`` to the run id and the W&B loggers' run id, group and
    name. Every rank computes the same result. A finished run (``metrics.json``) is never written
    into again.
    """
    specs = logger_specs(trainer_config)
    for spec in specs:
        if issubclass(logger_class(spec), WandbLogger):
            spec.init_args.group = spec.init_args.get("group") or run_group
    root = experiment_dir(trainer_config)
    if run_id is not None:
        check_run_id(run_id)
        if root is None:
            first = specs[0].class_path if specs else "no logger"
            raise ValueError(
                f"--run_id {run_id!r} names a folder of the first logger, which must be a CSVLogger "
                f"or TensorBoardLogger (got {first}); put one first in trainer.logger "
                "(configs/logger/wandb.yaml adds W&B after it)."
            )
    elif root is not None and (job := slurm_job()) is not None:
        run_id = slurm_run_id(root, job, command)
    if run_id is None:
        return ckpt_path  # a new version_N folder
    folder = root / run_id
    if (folder / METRICS_FILE).is_file():
        if requeued() and (run_record(folder) or {}).get("command") == command:
            rank_zero_info(f"{folder} finished before this job was requeued: nothing to do.")
            raise SystemExit(0)
        raise FileExistsError(
            f"{folder} holds a finished run ({METRICS_FILE} is there) and is never written into "
            "again. Give this run another --run_id; to train that model further, add "
            f"--ckpt_path {folder}/checkpoints/last.ckpt (same schedule, more epochs) or "
            f"--model.init_weights {folder}/model.pth (a new optimizer and schedule)."
        )
    specs[0].init_args.version = run_id
    if trainer_config.get("default_root_dir") is None:
        trainer_config.default_root_dir = str(folder)  # where Lightning's own files of the run go
    for spec in specs[1:]:
        if issubclass(logger_class(spec), WandbLogger):
            continue_wandb_run(spec.init_args, folder, f"{root.name}/{run_id}")
    if rank_zero_only.rank == 0:  # before anything changes in the folder: one process at a time
        lock_run(folder, command)
        keep_metrics_history(folder)
    if ckpt_path is not None:
        return ckpt_path
    resume_from = newest_checkpoint(folder)
    if resume_from is not None:
        rank_zero_info(f"Run {folder} exists: resuming from {resume_from}")
    return None if resume_from is None else str(resume_from)


def keep_metrics_history(folder: Path) -> None:
    """CSVLogger deletes an existing ``metrics.csv`` when it starts: move it aside first, to
    ``metrics.until-restartN.csv``, so a restarted run keeps the history logged before."""
    metrics = folder / "metrics.csv"
    if not metrics.is_file():
        return
    restart = 1
    while (target := folder / f"metrics.until-restart{restart}.csv").exists():
        restart += 1
    os.replace(metrics, target)


def continue_wandb_run(init_args: Any, folder: Path, display_name: str) -> None:
    """Continue the W&B run recorded in ``folder``, if any, and name the run after its folder."""
    stored = folder / WANDB_ID_FILE
    if init_args.get("id") is None and init_args.get("version") is None and stored.is_file():
        init_args.id = stored.read_text().strip()
    if init_args.get("resume") is None:
        init_args.resume = "allow"  # continue the run when its id is given
    if init_args.get("name") is None:
        init_args.name = display_name


def evaluate_in_run_folder(trainer_config: Any, ckpt_path: str | None, subcommand: str) -> None:
    """``validate``/``test``/``predict`` of a checkpoint of this project's runs: the first logger
    writes into ``<run folder>/<subcommand>/version_N``, beside the run that made the checkpoint,
    a new folder each time."""
    specs = logger_specs(trainer_config)
    path = Path(ckpt_path) if ckpt_path else None
    if not specs or path is None or not issubclass(logger_class(specs[0]), FOLDER_LOGGERS):
        return
    folder = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    if (folder / "config.yaml").is_file():  # a run folder of this project
        args = specs[0].init_args
        args.save_dir, args.name, args.version = str(folder), subcommand, None
