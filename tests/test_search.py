"""scripts/search.py: Optuna trials as in-process fits, several workers on one journal, failures
and signals; and the template without Optuna installed."""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import runpy
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import CONFIGS, ROOT, run_cli

SCRIPT = ROOT / "scripts" / "search.py"
PROJECT = ("cli", "callbacks", "datamodules", "lightning_modules", "run")
FIT = ["--config", str(CONFIGS / "polynomial_regression.yaml"), "--data.num_samples", "200"]
STUDY = Path("logs/polynomial_regression/space")  # <save_dir>/<experiment>/<space file's name>


@pytest.fixture
def without_optuna():
    """Optuna made unimportable, and the project's modules imported afresh under that condition."""
    saved = sys.modules.copy()
    for name in list(sys.modules):
        if name.split(".")[0] in (*PROJECT, "optuna", "optuna_integration"):  # an earlier test may have imported them
            del sys.modules[name]
    sys.modules["optuna"] = sys.modules["optuna_integration"] = None  # import raises ImportError
    try:
        yield
    finally:
        for name in set(sys.modules) - set(saved):
            del sys.modules[name]
        sys.modules.update(saved)


def test_the_template_runs_without_optuna(without_optuna: None, capsys: pytest.CaptureFixture[str]) -> None:
    """Every module of the project imports and a fit runs with Optuna unimportable; search.py says
    what to install."""
    for package in PROJECT[1:]:
        for module in pkgutil.walk_packages([str(ROOT / package)], prefix=f"{package}."):
            importlib.import_module(module.name)
    cli = importlib.import_module("cli")
    cli.cli_main(["fit", *FIT, "--trainer.fast_dev_run", "1"])
    assert not any(name.split(".")[0] in ("optuna", "optuna_integration") for name in sys.modules if sys.modules[name])
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    assert stop.value.code == "scripts/search.py needs Optuna: pip install -e '.[search]'"


LR = "model.init_args.optimizer.init_args.lr"


def write_space(tmp_path: Path, params: dict | None = None, **extra: object) -> Path:
    """A search space file: learning rate and loss, the median pruner from the second epoch on."""
    space = {
        "objective": {"metric": "val/mse", "direction": "minimize"},
        "params": params
        or {
            LR: {"type": "float", "low": 1e-3, "high": 0.02, "log": True},
            "model.init_args.loss": {"type": "categorical", "choices": ["mse", "huber"]},
        },
        "pruner": {"name": "MedianPruner", "n_startup_trials": 2, "n_warmup_steps": 1},
        **extra,
    }
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def load_study():
    optuna = pytest.importorskip("optuna")
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(STUDY / "journal.log")))
    return optuna.load_study(study_name="space", storage=storage)


def states(study) -> list[str]:
    return [trial.state.name for trial in study.trials]


@pytest.mark.slow
def test_two_workers_share_a_study_and_best_yaml_reproduces_the_best_trial(tmp_path: Path) -> None:
    """Two workers at once on one journal: every trial complete or pruned, --trials reached (each
    worker checks after its own trial, so one may start the trial that overshoots by one), and the
    printed best.yaml command reproduces the best trial's value."""
    pytest.importorskip("optuna")
    space = write_space(tmp_path)
    command = [sys.executable, str(SCRIPT), "--space", str(space), "--trials", "4", *FIT, "--trainer.max_epochs", "3"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    workers = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outputs = [worker.communicate(timeout=600)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    study = load_study()
    assert set(states(study)) <= {"COMPLETE", "PRUNED"} and 4 <= len(study.trials) <= 5
    best = study.best_trial
    assert (STUDY / "best.yaml").read_text() == (STUDY / f"trial_{best.number}" / "config.yaml").read_text()

    printed = [line for line in outputs[0].splitlines() if line.startswith("its whole config: ")][-1]
    done = run_cli(*printed.split()[5:], timeout=300)  # python cli.py fit --config .../best.yaml
    assert done.returncode == 0, done.stderr[-3000:]
    [metrics] = [p for p in Path("logs/polynomial_regression").rglob("metrics.json") if "trial_" not in str(p)]
    assert json.loads(metrics.read_text())["metrics"]["val/mse"] == pytest.approx(best.value, rel=1e-6)


@pytest.mark.slow
def test_a_trial_that_raises_fails_and_the_worker_goes_on(tmp_path: Path) -> None:
    """Two of three grid points have a negative learning rate: those trials raise and are FAIL in
    the study, and the worker runs on until the grid is done; best.yaml is the one good trial's."""
    pytest.importorskip("optuna")
    rates = [-1.0, -2.0, 0.01]
    grid = {"name": "GridSampler", "search_space": {LR: rates}}
    space = write_space(tmp_path, {LR: {"type": "categorical", "choices": rates}}, sampler=grid)
    done = run_cli(
        "--space", str(space), "--trials", "2", *FIT, "--trainer.max_epochs", "2", script="scripts/search.py"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    study = load_study()
    assert sorted(states(study)) == ["COMPLETE", "FAIL", "FAIL"]
    assert study.best_trial.params == {LR: 0.01}
    assert (STUDY / "best.yaml").is_file()


@pytest.mark.slow
def test_sigterm_fails_the_trial_at_hand_and_stops_the_worker(tmp_path: Path) -> None:
    """SIGTERM during a trial: the trial is FAIL in the study, no other trial starts, the worker
    exits 143 (128 + SIGTERM)."""
    pytest.importorskip("optuna")
    space = write_space(tmp_path)
    command = [sys.executable, str(SCRIPT), "--space", str(space), "--trials", "3", *FIT]
    command += ["--trainer.max_epochs", "100000"]  # the trial is still training when the signal comes
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env = {k: v for k, v in env.items() if not k.startswith("SLURM_")}
    worker = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        last = STUDY / "trial_0" / "checkpoints" / "last.ckpt"
        deadline = time.monotonic() + 240
        while not last.is_file() and worker.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert last.is_file(), "no training epoch ended"
        worker.send_signal(signal.SIGTERM)
        output = worker.communicate(timeout=120)[0]
    finally:
        worker.kill()
    assert worker.returncode == 143, output[-3000:]
    assert states(load_study()) == ["FAIL"]
