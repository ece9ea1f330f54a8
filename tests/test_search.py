"""Optuna search: a space's mistakes, workers sharing one study, pruning, dead workers, the best config."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from cli import cli_main
from tests.conftest import CONFIGS, ROOT

optuna = pytest.importorskip("optuna")

SEARCH = ROOT / "scripts" / "search.py"
SPACES = sorted((CONFIGS / "search").glob("*.yaml"))
LR = "model.init_args.optimizer.init_args.lr"
# The cheapest real runs: polynomial regression needs no data files; 2 epochs of 5 steps.
FIT = [
    "--config",
    str(CONFIGS / "polynomial_regression.yaml"),
    "--trainer.max_epochs=2",
    "--data.num_samples=200",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]


def search_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("search", SEARCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_space(folder: Path, space: dict) -> Path:
    path = folder / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def search_command(space: Path, *args: str) -> list[str]:
    return [sys.executable, str(SEARCH), "--space", str(space), "--heartbeat", "1", *args, *FIT]


def journal(path: Path):
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


@pytest.mark.parametrize("space", SPACES, ids=lambda p: p.stem)
def test_every_space_resolves_in_its_experiment(space: Path, capsys: pytest.CaptureFixture) -> None:
    search = search_script()
    _, distributions = search.load_space(space)
    for key, dist in distributions.items():  # every choice of a categorical, both ends of a range
        for value in getattr(dist, "choices", None) or (dist.low, dist.high):
            with pytest.raises(SystemExit) as exit_info:
                cli_main(
                    [
                        "fit",
                        "--config",
                        str(CONFIGS / space.name),
                        *search.overrides({key: value}),
                        "--print_config",
                    ]
                )
            assert exit_info.value.code == 0
            printed = yaml.safe_load(capsys.readouterr().out)
            for part in key.split("."):
                printed = printed[part]
            assert printed == (json.loads(value) if isinstance(value, str) and value[:1] in "{[" else value)


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ("params: [", "space.yaml, line 1: expected the node content"),
        ("params: {}", "a space is a mapping with 'params'"),
        (f"params: {{{LR}: {{type: float, low: 0.001, high: 0.1}}}}\ntrials: 3", "unknown key trials"),
        (
            f"params: {{{LR}: {{type: normal, low: 0.001, high: 0.1}}}}",
            "type must be float, int or categorical",
        ),
        (f"params: {{{LR}: {{type: float, low: 0.001, hi: 0.1}}}}", "a float takes high, log, low, step"),
        (f"params: {{{LR}: {{type: float, low: 0.1, high: 0.001}}}}", f"{LR}: `low <= high` must hold"),
        (
            f"params: {{{LR}: {{type: float, low: 0.001, high: 0.1}}}}\npruner: {{name: Median}}",
            "unknown pruner",
        ),
        (
            f"params: {{{LR}: {{type: float, low: 0.001, high: 0.1}}}}\nsampler: {{name: TPESampler, x: 1}}",
            "'x'",
        ),
    ],
)
def test_a_mistake_in_the_space_ends_in_one_message(space: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(space)
    with pytest.raises(SystemExit) as exit_info:
        search_script().main(["--space", str(path), *FIT])
    assert message in str(exit_info.value.code) and len(str(exit_info.value.code).splitlines()) == 1


def test_a_rejected_option_is_answered_in_a_few_lines(tmp_path: Path) -> None:
    space = write_space(tmp_path, {"params": {LR: {"type": "float", "low": 0.001, "high": 0.1}}})
    with pytest.raises(SystemExit) as exit_info:  # cli.py's own message, without its usage text
        search_script().main(["--space", str(space), "--config", "missing.yaml"])
    message = str(exit_info.value.code)
    assert "missing.yaml" in message and len(message.splitlines()) <= 5


def test_two_workers_share_one_study_prune_fail_and_the_best_config_reproduces(tmp_path: Path) -> None:
    # The study is seeded with two good, two hopeless and one impossible learning rate, so that
    # whichever worker takes which trial, the threshold pruner stops the hopeless ones (val/loss
    # ~640 at epoch 0) and SGD refuses the negative one (a crashed run).
    storage = tmp_path / "journal.log"
    study = optuna.create_study(storage=journal(storage), study_name="s", direction="minimize")
    for lr in (0.005, 1e-6, -1.0, 0.005, 1e-6):
        study.enqueue_trial({LR: lr})
    space = {"params": {LR: {"type": "float", "low": -1.0, "high": 0.1}}}
    space["pruner"] = {"name": "ThresholdPruner", "upper": 100.0}
    path = write_space(tmp_path, space)
    args = ["--study", "s", "--storage", str(storage), "--trials", "4"]
    workers = [subprocess.Popen(search_command(path, *args, "--worker", str(i))) for i in (0, 1)]
    assert [worker.wait(timeout=400) for worker in workers] == [0, 0]

    trials = optuna.load_study(study_name="s", storage=journal(storage)).get_trials()
    assert [trial.number for trial in trials] == [0, 1, 2, 3, 4]  # each recorded once, none lost
    assert {trial.params[LR]: trial.state.name for trial in trials} == {
        0.005: "COMPLETE",
        1e-6: "PRUNED",
        -1.0: "FAIL",
    }
    assert Counter(trial.state.name for trial in trials) == {"COMPLETE": 2, "PRUNED": 2, "FAIL": 1}
    assert len({trial.user_attrs["worker"]["pid"] for trial in trials}) == 2  # both worked
    folder = Path("logs/polynomial_regression/s")
    for trial in trials:
        run_dir = folder / f"trial_{trial.number}"
        if trial.state.name == "FAIL":
            assert (
                "cli.py exited with 1: ValueError: Invalid learning rate" in trial.user_attrs["fail_reason"]
            )
            continue
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert (config["run_id"], config["run_group"]) == (
            f"s/trial_{trial.number}",
            "polynomial_regression/s",
        )
        if trial.state.name == "PRUNED":
            assert list(trial.intermediate_values) == [0]
            assert "ThresholdPruner at epoch 0" in json.loads((run_dir / "pruned.json").read_text())["reason"]
        else:
            assert list(trial.intermediate_values) == [0, 1]
            metrics = json.loads((run_dir / "metrics.json").read_text())
            assert trial.value == metrics["metrics"]["val/loss"]

    summary = json.loads((folder / "search.json").read_text())
    assert summary["states"] == {"COMPLETE": 2, "PRUNED": 2, "FAIL": 1}
    assert all(Path(summary["plots"][name]).is_file() for name in ("history", "importances", "intermediate"))
    cli_main(["fit", "--config", summary["best"]["config"], "--run_id", "rerun"])
    metrics = json.loads(Path("logs/polynomial_regression/rerun/metrics.json").read_text())
    assert metrics["metrics"]["val/loss"] == pytest.approx(summary["best"]["value"], abs=1e-6)


def running(text: str) -> bool:
    """Whether a process whose command line holds ``text`` is alive (Linux)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                return True
        except OSError:
            continue
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and PR_SET_PDEATHSIG")
def test_a_killed_workers_trial_is_marked_failed_and_its_run_ends(tmp_path: Path) -> None:
    space = write_space(tmp_path, {"params": {LR: {"type": "categorical", "choices": [0.01]}}})
    command = [*search_command(space, "--study", "k", "--trials", "1"), "--trainer.max_epochs=100000"]
    worker = subprocess.Popen(command)
    folder = Path("logs/polynomial_regression/k")
    deadline = time.time() + 120
    while not (folder / "trial_0" / "config.yaml").is_file() and time.time() < deadline:  # training
        time.sleep(0.5)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    deadline = time.time() + 60
    while running("k/trial_0") and time.time() < deadline:  # the run ends with its worker
        time.sleep(0.5)
    assert not running("k/trial_0")

    study = optuna.load_study(study_name="k", storage=journal(folder / "journal.log"))
    assert [trial.state.name for trial in study.get_trials()] == ["RUNNING"]  # until a worker looks
    search_script().reap(study)  # what every worker does before each trial and every heartbeat
    (trial,) = study.get_trials()
    assert trial.state.name == "FAIL"
    assert f"its worker (pid {worker.pid} on" in trial.user_attrs["fail_reason"]


def test_a_silent_workers_trial_is_marked_failed(tmp_path: Path) -> None:
    search = search_script()
    study = optuna.create_study()
    silent, alive = study.ask(), study.ask()
    for trial, host, pid in ((silent, "elsewhere", 1), (alive, "elsewhere", 1)):
        log = tmp_path / f"{trial.number}.log"
        log.touch()
        trial.set_user_attr("worker", {"host": host, "pid": pid, "heartbeat": 1.0})
        trial.set_user_attr("log", str(log))
    old = time.time() - 31  # more than 30 heartbeats ago
    os.utime(tmp_path / "0.log", (old, old))
    search.reap(study)
    assert [trial.state.name for trial in study.get_trials()] == ["FAIL", "RUNNING"]
    assert "was silent for 31 s" in study.get_trials()[0].user_attrs["fail_reason"]


def test_without_optuna_the_callback_does_nothing_and_the_search_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna now fails
    args = ["fit", *FIT, "--trainer.fast_dev_run=true", "--trainer.callbacks+=callbacks.OptunaPruning"]
    assert cli_main(args).trainer.state.finished
    with pytest.raises(SystemExit, match=r"pip install -e '\.\[search\]'"):
        search_script()
