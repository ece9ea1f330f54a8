"""Hyperparameter search with Optuna: each trial a ``cli.py fit`` run, pruned at validation ends.

    python scripts/search.py --space configs/search/polynomial_regression.yaml --trials 20 \\
        --config configs/polynomial_regression.yaml

Every other option goes to ``cli.py fit``; each trial is a run ``<save_dir>/<name>/<study>/trial_<n>``
in Optuna's journal ``<save_dir>/<name>/<study>/journal.log``, shared by every worker started alike.
The README's section on search says the rest."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from cli import cli_main, resolved_config  # noqa: E402
from run.errors import UserError  # noqa: E402
from run.errors import main as report_mistakes  # noqa: E402
from run.folders import METRICS_FILE, experiment_dir  # noqa: E402

try:  # an optional extra: the template runs without it
    import optuna
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState
    from optuna_integration import PyTorchLightningPruningCallback
except ModuleNotFoundError:
    sys.exit("scripts/search.py needs Optuna: pip install -e '.[search]'")


def suggest(trial: optuna.Trial, key: str, spec: dict[str, Any]) -> str:
    """``--key=value`` for one point of the space; dicts and lists (a class_path) as JSON."""
    kind, options = spec.get("type"), {k: v for k, v in spec.items() if k != "type"}
    if kind == "categorical":
        choices = [json.dumps(c) if isinstance(c, dict | list) else c for c in options["choices"]]
        value = trial.suggest_categorical(key, choices)
    elif kind in ("float", "int"):
        number = float if kind == "float" else int  # YAML reads 1e-4 (no dot) as a string
        bounds = {k: number(v) if k in ("low", "high", "step") else v for k, v in options.items()}
        value = (trial.suggest_float if kind == "float" else trial.suggest_int)(key, **bounds)
    else:
        raise UserError(f"{key}: type must be float, int or categorical, not {kind!r}")
    return f"--{key}={value if isinstance(value, str) else json.dumps(value)}"


def build(module: Any, spec: dict[str, Any]) -> Any:
    """Optuna's sampler or pruner ``spec["name"]`` with the spec's other keys as its options."""
    options = dict(spec)
    return getattr(module, options.pop("name"))(**options)


def main(argv: list[str] | None = None) -> optuna.Study:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--space", required=True, help="the search space (configs/search/*.yaml).")
    parser.add_argument("--trials", type=int, default=20, help="complete + pruned trials to reach, all workers.")
    parser.add_argument("--study", help="the study's name and folder (default: the space file's name).")
    args, fit_args = parser.parse_known_args(argv)
    sys.argv[1:] = []  # the fit options go to the CLI as its arguments, not on this command line
    space = yaml.safe_load(Path(args.space).read_text())
    metric, direction = space["objective"]["metric"], space["objective"]["direction"]
    root = experiment_dir(resolved_config(fit_args)["trainer"])
    if root is None:
        sys.exit("a search needs a CSVLogger or TensorBoardLogger first in trainer.logger: it keeps the trials.")
    name = args.study or Path(args.space).stem
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name=name,
        storage=optuna.storages.JournalStorage(JournalFileBackend(str(folder / "journal.log"))),
        direction=direction,
        sampler=build(optuna.samplers, space.get("sampler") or {"name": "TPESampler"}),
        pruner=build(optuna.pruners, space.get("pruner") or {"name": "MedianPruner"}),
        load_if_exists=True,
    )
    stopped: list[SystemExit] = []

    def objective(trial: optuna.Trial) -> float:
        overrides = [suggest(trial, key, spec) for key, spec in space["params"].items()]
        mode = "max" if direction == "maximize" else "min"
        run = [f"--run_id={name}/trial_{trial.number}", f"--run_group={root.name}/{name}"]
        run += [f"--checkpoint.monitor={metric}", f"--checkpoint.mode={mode}"]
        try:
            cli_main(["fit", *fit_args, *overrides, *run], callbacks=[PyTorchLightningPruningCallback(trial, metric)])
        except SystemExit as signal_stop:  # a signal: this trial fails, the worker stops
            stopped.append(signal_stop)
            trial.study.stop()
            raise RuntimeError(f"stopped by a signal (exit status {signal_stop.code})") from signal_stop
        return json.loads((folder / f"trial_{trial.number}" / METRICS_FILE).read_text())["metrics"][metric]

    done = optuna.study.MaxTrialsCallback(args.trials, states=(TrialState.COMPLETE, TrialState.PRUNED))
    study.optimize(objective, callbacks=[done], catch=(Exception,))
    if stopped:
        sys.exit(stopped[0].code)
    if any(t.state == TrialState.COMPLETE for t in study.trials):
        best = study.best_trial
        shutil.copyfile(folder / f"trial_{best.number}" / "config.yaml", folder / "best.yaml")
        print(f"best: trial {best.number}, {metric}={best.value:.6g} {best.params}")
        print(f"its whole config: python cli.py fit --config {folder / 'best.yaml'}")
    return study


if __name__ == "__main__":
    report_mistakes(main)
