"""Hyperparameter search with Optuna: every trial is a ``cli.py fit`` run, pruned at epoch ends.

    python scripts/search.py --space configs/search/polynomial_regression.yaml --trials 20 \
        --config configs/polynomial_regression.yaml --checkpoint.monitor val/mse

The space (configs/search/) maps ``cli.py`` keys to distributions and may name Optuna's sampler and
pruner; every other option goes to ``cli.py fit``. The objective is the metric the checkpoint
monitors, read from each run's ``metrics.json``. Everything lands in ``<save_dir>/<name>/<study>/``:
trial n's run ``trial_<n>/`` (with W&B, a run in the group ``<name>/<study>``) and output
``trial_logs/trial_<n>.log``, the study's ``journal.log`` (Optuna's journal file: no server), and
at the end ``best.yaml`` (for ``cli.py fit --config``), three PNG plots and ``search.json``.

The same command started several times, or as SLURM array tasks (scripts/slurm/search.sbatch),
works on one study until ``--trials`` trials are complete or pruned; run again, it resumes the study
(``--trials 0`` only shows it). A running trial's worker touches the trial's log file every
heartbeat; a trial whose worker is gone (its pid, on this host) or silent for 30 heartbeats is
marked failed by the next worker that looks.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import json
import math
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from rich import box
from rich.console import Console
from rich.table import Table

from callbacks import optuna_pruning as pruning
from runs.files import atomic_path, write_json, write_text
from runs.folders import METRICS_FILE, experiment_dir

try:
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
    from optuna.trial import TrialState
except ModuleNotFoundError:
    sys.exit("scripts/search.py needs Optuna: pip install -e '.[search]'")

CLI = Path(__file__).resolve().parents[1] / "cli.py"
DEFAULT_PRUNER = {"name": "MedianPruner", "n_startup_trials": 3, "n_warmup_steps": 1}
NUMBER = {"low", "high", "log", "step"}
FIELDS = {"float": NUMBER, "int": NUMBER, "categorical": {"choices"}}
STALE_BEATS = 30  # heartbeats a running trial's log may stay untouched before its worker counts as dead
OPTIONS = {  # this script's own options; every other one goes to cli.py fit
    "--space": dict(required=True, help="search space YAML (configs/search/)."),
    "--trials": dict(type=int, default=20, help="complete + pruned trials to reach, all workers (0: show)."),
    "--study": dict(help="study name and folder in <save_dir>/<name>/ (default: the space file's name)."),
    "--storage": dict(help="journal file or Optuna storage URL (default: <study folder>/journal.log)."),
    "--worker": dict(type=int, help="index added to a sampler seed (default: $SLURM_ARRAY_TASK_ID or 0)."),
    "--max_failures": dict(type=int, default=3, help="stop after this many failed trials in a row."),
    "--heartbeat": dict(type=float, default=10.0, help="seconds between a running trial's signs of life."),
}


class Stopped(Exception):
    """SIGTERM or SIGINT to the worker: scancel, a SLURM time limit, Ctrl-C."""


class Search(NamedTuple):
    """What the trials of this worker share."""

    cli_args: list[str]
    folder: Path  # <save_dir>/<name>/<study>
    storage: str
    pruner: dict[str, Any]
    distributions: dict[str, Any]
    metric: str
    mode: str
    worker: int
    heartbeat: float


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    for name, options in OPTIONS.items():
        parser.add_argument(name, **options)
    args, cli_args = parser.parse_known_args(argv)
    if taken := [arg for arg in cli_args if arg.split("=")[0] in ("--run_id", "--run_group")]:
        parser.error(f"{taken[0]}: the search names each trial's run itself")
    return args, [arg for arg in cli_args if arg != "--"]


def load_space(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The space file -> (its contents, one Optuna distribution per cli.py key)."""
    try:
        space = yaml.safe_load(path.read_text())
    except yaml.MarkedYAMLError as err:
        sys.exit(f"{path}, line {err.problem_mark.line + 1}: {err.problem} (not valid YAML)")
    except OSError as err:
        sys.exit(f"cannot read the space: {err}")
    if not isinstance(space, dict) or not isinstance(space.get("params"), dict) or not space["params"]:
        sys.exit(f"{path}: a space is a mapping with 'params': a cli.py key -> a distribution each")
    if unknown := sorted(set(space) - {"params", "sampler", "pruner"}):
        sys.exit(f"{path}: unknown key {', '.join(unknown)}; a space holds params, sampler and pruner")
    return space, {key: distribution(key, spec) for key, spec in space["params"].items()}


def distribution(key: str, spec: Any) -> Any:
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind not in FIELDS:
        sys.exit(f"{key}: type must be float, int or categorical, got {kind!r}")
    options = {name: value for name, value in spec.items() if name != "type"}
    required = {"choices"} if kind == "categorical" else {"low", "high"}
    if set(options) - FIELDS[kind] or required - set(options):
        sys.exit(f"{key}: a {kind} takes {', '.join(sorted(FIELDS[kind]))} (needs {', '.join(required)})")
    try:
        if kind == "categorical":  # a dict or list choice (class_path, init_args) as JSON: cli.py reads it
            return CategoricalDistribution(
                [json.dumps(c) if isinstance(c, dict | list) else c for c in spec["choices"]]
            )
        number = float if kind == "float" else int  # float(): YAML reads 1e-4 (no dot) as a string
        cls = FloatDistribution if kind == "float" else IntDistribution
        return cls(**{name: bool(v) if name == "log" else number(v) for name, v in options.items()})
    except (TypeError, ValueError) as err:
        sys.exit(f"{key}: {err}")


def overrides(params: dict[str, Any]) -> list[str]:
    """``--key=value`` in one token, so that a value starting with '-' is never read as an option;
    strings as they are, anything else as JSON (true, null, 0.001)."""
    return [f"--{key}={v if isinstance(v, str) else json.dumps(v)}" for key, v in params.items()]


def make_sampler(spec: dict[str, Any], worker: int) -> Any:
    options = dict(spec)
    name = str(options.pop("name", None))
    if not (name.endswith("Sampler") and hasattr(optuna.samplers, name)):
        raise ValueError(f"unknown sampler {name!r}; see optuna.samplers")
    if options.get("seed") is not None:  # one seed in every worker would draw the same trials in each
        options["seed"] = int(options["seed"]) + worker
    return getattr(optuna.samplers, name)(**options)


def print_config(cli_args: list[str]) -> str:
    """The config ``cli.py fit`` resolves from these options, as YAML; a rejected option ends here."""
    done = subprocess.run(
        [sys.executable, str(CLI), "fit", *cli_args, "--print_config"], capture_output=True, text=True
    )
    if done.returncode != 0:  # jsonargparse's lines from "error:" on say what is wrong, not its usage text
        error = done.stderr[done.stderr.rfind("error:") :] if "error:" in done.stderr else done.stderr
        sys.exit(f"cli.py rejected the options:\n{error.strip()}")
    return done.stdout


def objective(config: dict[str, Any]) -> tuple[str, str]:
    """The metric and mode the checkpoint monitors: ``--checkpoint.monitor``, else the model's own
    (as cli.py fills it in; each trial's metrics.json is checked against it)."""
    if (checkpoint := config.get("checkpoint") or {}).get("monitor"):
        return checkpoint["monitor"], checkpoint.get("mode") or "min"
    module, _, name = config["model"]["class_path"].rpartition(".")
    return getattr(importlib.import_module(module), name).monitor


def open_study(name: str, search: Search, params: dict[str, Any], sampler: Any) -> Any:
    direction = "maximize" if search.mode == "max" else "minimize"
    storage = pruning.open_storage(search.storage)
    study = optuna.create_study(
        storage=storage, study_name=name, direction=direction, sampler=sampler, load_if_exists=True
    )
    # What defines the study: its first worker records it, every later one must agree. The cli.py
    # options may differ (a data path on another cluster); each trial's config.yaml holds its own.
    defining = {"objective": [search.metric, search.mode], "params": params, "pruner": search.pruner}
    for key, value in defining.items():
        if (stored := study.user_attrs.get(key)) is None:
            study.set_user_attr(key, value)
        elif stored != json.loads(json.dumps(value)):
            sys.exit(f"study {name!r} was started with {key} {stored}; give this one another --study")
    return study


def trial_id(trial: Any) -> int:
    # Optuna's only handle on a trial for another process, what Study.ask gives Trial(); not public.
    return trial._trial_id


def finish(study: Any, trial: Any, state: TrialState, value: float | None = None, **attrs: Any) -> str:
    """Record the end of a trial and return its state in the study: FAIL when a worker that took this
    one for dead got there first."""
    try:
        live = optuna.trial.Trial(study, trial_id(trial))
        for key, attr in attrs.items():
            live.set_user_attr(key, attr)
        return study.tell(trial.number, value, state=state, skip_if_finished=True).state.name
    except optuna.exceptions.UpdateFinishedTrialError:
        return TrialState.FAIL.name


def stale_reason(trial: Any, now: float) -> str | None:
    """Why a running trial has lost its worker; None while it looks alive."""
    worker = trial.user_attrs.get("worker", {})
    if worker.get("host") == socket.gethostname():
        try:
            os.kill(worker["pid"], 0)
        except ProcessLookupError:
            return f"its worker (pid {worker['pid']} on {worker['host']}) is gone"
        except PermissionError:
            pass  # alive: another user's process
    try:
        silent = now - os.stat(trial.user_attrs["log"]).st_mtime
    except (KeyError, OSError):  # the worker died between ask and starting the run
        silent = now - trial.datetime_start.timestamp()
    if silent > STALE_BEATS * worker.get("heartbeat", OPTIONS["--heartbeat"]["default"]):
        return f"its worker ({worker.get('host')}, pid {worker.get('pid')}) was silent for {silent:.0f} s"
    return None


def reap(study: Any) -> None:
    """Fail every running trial whose worker is gone. Only Optuna's RDB storage has heartbeats of its
    own; without these, a journal's dead trials would stay RUNNING forever."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if reason := stale_reason(trial, time.time()):
            finish(study, trial, TrialState.FAIL, fail_reason=reason)
            print(f"trial {trial.number}: FAIL, {reason}", flush=True)


def die_with_worker() -> None:
    """In a trial's process before exec (Linux): SIGTERM when its worker dies, even by SIGKILL, so
    that no orphaned run keeps the device."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def run_trial(study: Any, trial: Any, search: Search) -> tuple[str, str]:
    """One trial as a ``cli.py fit`` process, its end recorded: (state, what to print)."""
    name, study_name = f"trial_{trial.number}", study.study_name
    run_dir, log = search.folder / name, search.folder / "trial_logs" / f"{name}.log"
    command = [sys.executable, str(CLI), "fit", *search.cli_args, *overrides(trial.params)]
    group = f"{search.folder.parent.name}/{study_name}"  # W&B group <name>/<study>
    command += ["--run_id", f"{study_name}/{name}", "--run_group", group]
    command += ["--trainer.callbacks+=callbacks.OptunaPruning"]
    worker = dict(host=socket.gethostname(), pid=os.getpid(), index=search.worker, heartbeat=search.heartbeat)
    for key, value in {"worker": worker, "log": str(log), "run_dir": str(run_dir)}.items():
        trial.set_user_attr(key, value)
    env = {**os.environ, pruning.ENV_STORAGE: search.storage, pruning.ENV_STUDY: study_name}
    env.update({pruning.ENV_TRIAL_ID: str(trial_id(trial)), pruning.ENV_PRUNER: json.dumps(search.pruner)})
    print(f"[worker {os.getpid()}] trial {trial.number}: {' '.join(overrides(trial.params))}", flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        out.write(shlex.join(command) + "\n\n")
        out.flush()
        preexec = die_with_worker if sys.platform.startswith("linux") else None
        child = subprocess.Popen(command, stdout=out, stderr=out, env=env, preexec_fn=preexec)
        try:
            while True:
                try:
                    returncode = child.wait(timeout=search.heartbeat)  # a signal still lands at once
                    break
                except subprocess.TimeoutExpired:
                    os.utime(log)  # the sign of life other workers read
                    reap(study)  # meanwhile, the trials of dead workers
        finally:
            if child.poll() is None:  # this worker is stopping: end its run first (which saves a checkpoint)
                child.terminate()
                try:
                    child.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    child.kill()
    if (run_dir / pruning.PRUNED_FILE).is_file():
        reason = json.loads((run_dir / pruning.PRUNED_FILE).read_text())["reason"]
        return finish(study, trial, TrialState.PRUNED, pruned=reason), reason
    value, problem = read_objective(run_dir, search.metric, search.mode)
    if returncode != 0:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
        problem = f"cli.py exited with {returncode}: {lines[-1][:300]} (see {log})"
    if problem is None:
        return finish(study, trial, TrialState.COMPLETE, value), f"{search.metric}={value:.6g}"
    return finish(study, trial, TrialState.FAIL, fail_reason=problem), problem


def read_objective(run_dir: Path, metric: str, mode: str) -> tuple[float | None, str | None]:
    """The run's objective from its metrics.json, or why there is none."""
    try:
        result = json.loads((run_dir / METRICS_FILE).read_text())
    except FileNotFoundError:
        return None, f"no {METRICS_FILE} in {run_dir} (--test_after_fit false?)"
    if result.get("monitor") != {"metric": metric, "mode": mode}:
        return None, f"the run's checkpoint monitored {result.get('monitor')}, the study {metric} ({mode})"
    value = result["metrics"].get(metric)
    return (value, None) if value is not None and math.isfinite(value) else (None, f"{metric}={value}")


def work(study: Any, search: Search, target: int, max_failures: int) -> None:
    """Run trials until the study holds ``target`` complete or pruned ones."""
    failures = 0
    while True:
        reap(study)
        states = Counter(trial.state.name for trial in study.get_trials(deepcopy=False))
        if (done := states["COMPLETE"] + states["PRUNED"]) >= target:
            return
        if done + states["RUNNING"] >= target:  # others' trials reach it, or die and are replaced
            time.sleep(search.heartbeat)
            continue
        trial = study.ask(search.distributions)
        try:
            state, note = run_trial(study, trial, search)
        except Stopped as stop:
            finish(study, trial, TrialState.FAIL, fail_reason=f"its worker got {stop}")
            raise
        print(f"[worker {os.getpid()}] trial {trial.number}: {state}, {note}", flush=True)
        if (failures := failures + 1 if state == "FAIL" else 0) >= max_failures:
            sys.exit(f"{failures} trials in a row failed, the last: {note}. Stopping this worker.")


def trial_table(study: Any, metric: str, best: Any) -> Table:
    trials = study.get_trials(deepcopy=False)
    keys = list(dict.fromkeys(key for trial in trials for key in trial.params))
    caption = "pruned: the value of the epoch it stopped at"
    table = Table(title=f"study {study.study_name}", caption=caption, box=box.SIMPLE_HEAD)
    for column in ("#", "state", metric, "epochs", "time", *(key.rsplit(".", 1)[-1] for key in keys)):
        table.add_column(column, justify="right")
    for trial in trials:
        value = "" if trial.value is None else f"{trial.value:.5g}"
        seconds = f"{trial.duration.total_seconds():.0f} s" if trial.duration else ""
        params = [f"{v:.3g}" if isinstance(v, float) else str(v)[:40] for v in map(trial.params.get, keys)]
        epochs = str(len(trial.intermediate_values))
        row = [str(trial.number), trial.state.name, value, epochs, seconds, *params]
        table.add_row(*row, style="bold green" if best and trial.number == best.number else None)
    return table


def write_best_config(study: Any, best: Any, search: Search) -> Path:
    """The best trial's whole resolved config, without the pruning: ``cli.py fit --config`` runs it."""
    path = search.folder / "best.yaml"
    header = f"# best trial {best.number} of study {study.study_name}: {search.metric}={best.value!r}\n"
    if not (path.is_file() and path.read_text().startswith(header)):  # not yet written by any worker
        config = print_config([*search.cli_args, *overrides(best.params)])
        write_text(path, f"{header}#   python cli.py fit --config {path}\n{config}")
    return path


def save_plots(study: Any, folder: Path) -> dict[str, str]:
    """Optuna's matplotlib plots as PNG files; one that needs more finished trials says so instead."""
    import matplotlib

    matplotlib.use("Agg")  # files only: a compute node has no display
    import matplotlib.pyplot as plt
    from optuna.importance import PedAnovaImportanceEvaluator  # needs no scikit-learn
    from optuna.visualization import matplotlib as plots

    drawings = {
        "history": lambda: plots.plot_optimization_history(study),
        "importances": lambda: plots.plot_param_importances(study, evaluator=PedAnovaImportanceEvaluator()),
        "intermediate": lambda: plots.plot_intermediate_values(study),
    }
    saved = {}
    if sum(trial.state == TrialState.COMPLETE for trial in study.get_trials(deepcopy=False)) < 2:
        saved["importances"] = "not drawn: fewer than 2 complete trials"  # Optuna would draw equal bars
        del drawings["importances"]
    for name, draw in drawings.items():
        with warnings.catch_warnings():
            # Optuna marks every plot function experimental; that is no news to the user.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                figure = draw().figure
            except ValueError as err:
                saved[name] = f"not drawn: {err}"
                continue
        with atomic_path(folder / f"{name}.png") as tmp:
            figure.savefig(tmp, dpi=120, bbox_inches="tight")
        plt.close(figure)
        saved[name] = str(folder / f"{name}.png")
    return saved


def report(study: Any, search: Search) -> dict[str, Any]:
    """The table of trials, best.yaml, the plots and search.json."""
    trials = study.get_trials(deepcopy=False)
    best = study.best_trial if any(trial.state == TrialState.COMPLETE for trial in trials) else None
    console = Console(width=None if sys.stdout.isatty() else 160)  # a log file takes a wide table
    console.print(trial_table(study, search.metric, best))
    summary: dict[str, Any] = {"study": study.study_name, "objective": [search.metric, search.mode]}
    summary["states"] = dict(Counter(trial.state.name for trial in trials))
    if best is not None:
        path = write_best_config(study, best, search)
        summary["best"] = {"trial": best.number, "value": best.value, "params": best.params}
        summary["best"]["config"] = str(path)
        console.print(f"best: trial {best.number}, {search.metric}={best.value:.6g}; its whole config:")
        console.print(f"  python cli.py fit --config {path}", soft_wrap=True)  # one line, to copy
    summary["plots"] = save_plots(study, search.folder)
    rows = [{"number": t.number, "state": t.state.name, "value": t.value, **t.user_attrs} for t in trials]
    summary["trials"] = rows
    path = write_json(search.folder / "search.json", summary, sort_keys=False)
    console.print(f"summary: {path}", soft_wrap=True)
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args, cli_args = parse_args(argv)
    space, distributions = load_space(Path(args.space))
    pruner = space.get("pruner") or DEFAULT_PRUNER
    worker = args.worker if args.worker is not None else int(os.environ.get("SLURM_ARRAY_TASK_ID", 0))
    try:
        pruning.make_pruner(pruner)
        sampler = make_sampler(space.get("sampler") or {"name": "TPESampler"}, worker)
    except (TypeError, ValueError) as err:
        sys.exit(f"{args.space}: {err}")
    # One point of the space through cli.py, which checks the options and every key of the space.
    first = {key: d.choices[0] if hasattr(d, "choices") else d.low for key, d in distributions.items()}
    config = yaml.safe_load(print_config([*cli_args, *overrides(first)]))
    if (root := experiment_dir(config["trainer"])) is None:
        sys.exit("trainer.logger must start with a CSVLogger or TensorBoardLogger: it holds the trials")
    name = args.study or Path(args.space).stem
    folder = root / name
    storage = args.storage or str(folder / "journal.log")
    if "://" not in storage:  # a journal file, which the trials' processes open too
        storage = os.path.abspath(storage)
        os.makedirs(os.path.dirname(storage), exist_ok=True)
    metric, mode = objective(config)
    search = Search(cli_args, folder, storage, pruner, distributions, metric, mode, worker, args.heartbeat)
    study = open_study(name, search, space["params"], sampler)

    def stop(signum: int, frame: Any) -> None:
        raise Stopped(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        work(study, search, args.trials, args.max_failures)
    except Stopped as err:
        print(f"[worker {os.getpid()}] {err}: the same command resumes the study", file=sys.stderr)
        sys.exit(128 + signal.Signals[str(err)].value)
    return report(study, search)


if __name__ == "__main__":
    main()
