"""K-fold cross-validation: one ``cli.py fit`` per fold of the training set, then a summary.

    python scripts/kfold.py --num_folds 5 --config configs/mnist_softmax.yaml \
        --data.data_dir ../shared/data

Every option this script does not know goes to ``cli.py fit`` unchanged (configs, overrides,
presets such as configs/logger/wandb.yaml). Fold i trains on the other k - 1 folds of the
official training set and validates on fold i; the split is seeded by ``data.seed`` and stratified
by class for classification, and the official test set is never part of it.

Each fold is its own run, ``<save_dir>/<name>/<group>/fold_<i>``, and with W&B its own W&B run in
the W&B group ``<name>/<group>``. The validation metrics of each fold's best checkpoint, their
mean and their sample standard deviation (n - 1) are printed as a table and written to
``<save_dir>/<name>/<group>/kfold.json``.

Running the same command again with the same ``--group`` (the default inside a SLURM job: the job
id, so a requeued job does this by itself) keeps the finished folds and resumes an interrupted
one from its last checkpoint. ``--launcher`` starts each fold differently, e.g. on all GPUs of a
SLURM allocation (``--launcher "srun python"``) or of a node (``--launcher "torchrun
--nproc-per-node 4"``, with configs/trainer/ddp.yaml).

Folds as separate jobs (scripts/slurm/kfold_array.sbatch, one SLURM array task per fold, whose
default group is the array's job id): ``--fold I`` trains fold I alone, and the summary is
written by whichever fold finishes last; ``--summarize`` writes it from the finished folds
without training (an error names the unfinished ones).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from runs.files import write_json
from runs.folders import experiment_dir

CLI = Path(__file__).resolve().parents[1] / "cli.py"


def default_group() -> str:
    # the tasks of a job array (one fold each) share the array's job id
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    return f"kfold-slurm-{job}" if job else time.strftime("kfold-%Y%m%d-%H%M%S")


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        allow_abbrev=False,  # never swallow a cli.py option
        epilog="Any other option is passed to `cli.py fit`.",
    )
    parser.add_argument("--num_folds", type=int, default=5, help="k, the number of folds (>= 2).")
    parser.add_argument(
        "--group",
        default=None,
        help="folder of the folds under <save_dir>/<name>/ and W&B group "
        "(default: kfold-slurm-<job id> in SLURM, else kfold-<date>-<time>).",
    )
    parser.add_argument(
        "--launcher",
        default=sys.executable,
        help='command that runs cli.py for each fold, e.g. "srun python" (default: this Python).',
    )
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--fold", type=int, default=None, help="train this fold only (0 to k - 1).")
    only.add_argument(
        "--summarize", action="store_true", help="train nothing: summarize the finished folds of --group."
    )
    args, cli_args = parser.parse_known_args(argv)
    if args.num_folds < 2:
        parser.error(f"--num_folds must be at least 2, got {args.num_folds}")
    if args.fold is not None and not 0 <= args.fold < args.num_folds:
        parser.error(
            f"--fold must be in 0..{args.num_folds - 1} for --num_folds {args.num_folds}, got {args.fold}"
        )
    if args.summarize and args.group is None:
        parser.error("--summarize needs the --group of the folds")
    return args, [a for a in cli_args if a != "--"]


def resolved_config(cli_args: list[str]) -> dict[str, Any]:
    """The fit config the folds will run with, as ``cli.py fit --print_config`` resolves it."""
    done = subprocess.run(
        [sys.executable, str(CLI), "fit", *cli_args, "--print_config"], capture_output=True, text=True
    )
    if done.returncode != 0:
        sys.exit(f"cli.py rejected the options {shlex.join(cli_args)}:\n{done.stderr.strip()}")
    return yaml.safe_load(done.stdout)


def experiment_folder(config: dict[str, Any]) -> Path:
    """``<save_dir>/<name>`` of the first logger: where the fold runs go."""
    folder = experiment_dir(config["trainer"])
    if folder is None:
        sys.exit(
            "k-fold needs a CSVLogger or TensorBoardLogger as the first trainer.logger: "
            "it names the fold folders and holds their metrics.json."
        )
    return folder


def summarize(fold_metrics: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and sample standard deviation (n - 1) over the folds of every validation metric."""
    names = sorted({k for metrics in fold_metrics for k in metrics if k.startswith("val/")})
    summary = {}
    for name in names:
        values = [metrics[name] for metrics in fold_metrics]
        summary[name] = {"mean": statistics.fmean(values), "std": statistics.stdev(values)}
    return summary


def table(fold_metrics: list[dict[str, float]], summary: dict[str, dict[str, float]], title: str) -> Table:
    view = Table(title=title)
    view.add_column("fold", justify="right")
    for name in summary:
        view.add_column(name, justify="right")
    for fold, metrics in enumerate(fold_metrics):
        view.add_row(str(fold), *(f"{metrics[name]:.4f}" for name in summary))
    view.add_section()
    view.add_row("mean ± std", *(f"{s['mean']:.4f} ± {s['std']:.4f}" for s in summary.values()))
    return view


def run_fold(
    launcher: list[str], cli_args: list[str], k: int, fold: int, group: str, wandb_group: str
) -> None:
    command = [
        *launcher,
        str(CLI),
        "fit",
        *cli_args,
        "--data.num_folds",
        str(k),
        "--data.fold",
        str(fold),
        "--run_id",
        f"{group}/fold_{fold}",
        "--run_group",
        wandb_group,
    ]
    Console().rule(f"fold {fold} of {k}: {shlex.join(command)}")
    if subprocess.run(command).returncode != 0:
        sys.exit(
            f"fold {fold} failed (see above). Run the same command with --group {group} "
            "to resume: finished folds are kept."
        )


def finished(folder: Path, fold: int) -> bool:
    return (folder / f"fold_{fold}" / "metrics.json").is_file()


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    args, cli_args = parse_args(argv)
    group = args.group or default_group()
    root = experiment_folder(resolved_config(cli_args))
    folder, k = root / group, args.num_folds
    to_train = [] if args.summarize else [args.fold] if args.fold is not None else range(k)
    for fold in to_train:
        if not finished(folder, fold):
            run_fold(shlex.split(args.launcher), cli_args, k, fold, group, wandb_group=f"{root.name}/{group}")
    unfinished = [fold for fold in range(k) if not finished(folder, fold)]
    if unfinished and args.fold is not None:  # other jobs train them; the last one summarizes
        Console().print(f"fold {args.fold} of {folder} done; folds {unfinished} are not finished yet")
        return None
    if unfinished:
        sys.exit(f"folds {unfinished} of {folder} are not finished: train them first (--fold I).")
    return summarize_folds(folder, k, group, cli_args)


def summarize_folds(folder: Path, k: int, group: str, cli_args: list[str]) -> dict[str, Any]:
    """Print the folds' table and write ``kfold.json``."""
    folds = []
    for fold in range(k):
        run_dir = folder / f"fold_{fold}"
        result = json.loads((run_dir / "metrics.json").read_text())
        folds.append(
            {
                "fold": fold,
                "run_dir": str(run_dir),
                "checkpoint": result["checkpoint"],
                "metrics": result["metrics"],
            }
        )
    fold_metrics = [fold["metrics"] for fold in folds]
    summary = summarize(fold_metrics)
    report = {
        "num_folds": k,
        "group": group,
        "cli_args": cli_args,
        "std": "sample standard deviation (n - 1) over the folds",
        "folds": folds,
        "summary": summary,
    }
    path = folder / "kfold.json"
    write_json(path, report, sort_keys=False)  # never a half-written summary
    console = Console()
    console.print(table(fold_metrics, summary, f"{k}-fold cross-validation, {folder}"))
    console.print(f"summary: {path}")
    return report


if __name__ == "__main__":
    main()
