"""K-fold cross-validation: one ``cli.py fit`` per fold of the training set, then mean and std.

    python scripts/kfold.py --num_folds 5 --config configs/mnist_softmax.yaml --data.data_dir ../shared/data

Every other option goes to ``cli.py fit``; fold i is the run ``<save_dir>/<name>/<group>/fold_<i>``,
and the summary ``<save_dir>/<name>/<group>/kfold.json``. The README's section on k-fold says the rest."""

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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from cli import resolved_config  # noqa: E402
from run.errors import main as report_mistakes  # noqa: E402
from run.files import write_text  # noqa: E402
from run.folders import METRICS_FILE, experiment_dir  # noqa: E402

CLI = Path(__file__).resolve().parents[1] / "cli.py"


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--num_folds", type=int, default=5, help="k (>= 2).")
    parser.add_argument("--group", help="folder of the folds (default: kfold-slurm-<job id> in SLURM, else the time).")
    parser.add_argument("--launcher", default=sys.executable, help='what runs cli.py, e.g. "srun python".')
    parser.add_argument("--fold", type=int, help="train this fold only.")
    parser.add_argument("--summarize", action="store_true", help="train nothing: summarize the finished folds.")
    args, fit_args = parser.parse_known_args(argv)
    sys.argv[1:] = []  # the fit options go to the CLI as its arguments, not on this command line
    if args.num_folds < 2 or not 0 <= (args.fold or 0) < args.num_folds:
        parser.error(f"--num_folds must be >= 2 and --fold in 0..{args.num_folds - 1}")
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    group = args.group or (f"kfold-slurm-{job}" if job else time.strftime("kfold-%Y%m%d-%H%M%S"))
    root = experiment_dir(resolved_config(fit_args)["trainer"])
    if root is None:
        sys.exit("k-fold needs a CSVLogger or TensorBoardLogger first in trainer.logger: it keeps the folds.")
    folder, k = root / group, args.num_folds
    for fold in [] if args.summarize else [args.fold] if args.fold is not None else range(k):
        if not (folder / f"fold_{fold}" / METRICS_FILE).is_file():
            run = {
                "data.num_folds": k,
                "data.fold": fold,
                "run_id": f"{group}/fold_{fold}",
                "run_group": f"{root.name}/{group}",
            }
            command = [*shlex.split(args.launcher), str(CLI), "fit", *fit_args, *(f"--{k}={v}" for k, v in run.items())]
            print(f"fold {fold} of {k}: {shlex.join(command)}", flush=True)
            if subprocess.run(command).returncode:
                sys.exit(f"fold {fold} failed; the same command with --group {group} resumes it.")
    unfinished = [fold for fold in range(k) if not (folder / f"fold_{fold}" / METRICS_FILE).is_file()]
    if unfinished and args.fold is not None:  # other jobs train them; the last one summarizes
        print(f"fold {args.fold} done; folds {unfinished} of {folder} are not finished yet")
        return None
    if unfinished:
        sys.exit(f"folds {unfinished} of {folder} are not finished: train them first (--fold I).")
    folds = [json.loads((folder / f"fold_{fold}" / METRICS_FILE).read_text())["metrics"] for fold in range(k)]
    names = sorted(name for name in folds[0] if name.startswith("val/"))
    summary = {
        n: {"mean": statistics.fmean(f[n] for f in folds), "std": statistics.stdev(f[n] for f in folds)} for n in names
    }
    report = dict(num_folds=k, group=group, fit_args=fit_args, folds=folds, summary=summary, std="sample (n - 1)")
    path = write_text(folder / "kfold.json", json.dumps(report, indent=2) + "\n")
    for fold, metrics in enumerate(folds):
        print(f"fold {fold}: " + ", ".join(f"{n}={metrics[n]:.4f}" for n in names))
    print("mean ± std: " + ", ".join(f"{n}={s['mean']:.4f} ± {s['std']:.4f}" for n, s in summary.items()))
    print(f"summary: {path}")
    return report


if __name__ == "__main__":
    report_mistakes(main)
