"""The W&B preset, offline, read back with W&B's own reader (``wandb leet inspect``): one W&B run per
run folder across kills and requeues, its summary, config, names, tables, code, and nothing in HOME."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pytest
import torch
import yaml
from jsonargparse import Namespace

from cli import cli_main
from tests.conftest import CONFIGS, ROOT, run_cli
from tests.fake_data import write_mnist
from tests.wandb_offline import OfflineRun, media_keys, offline_runs, once_per_session

WANDB_PRESET = CONFIGS / "logger" / "wandb.yaml"
TENSORBOARD_PRESET = CONFIGS / "logger" / "tensorboard.yaml"
WANDB_FOLDERS = ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_ARTIFACT_DIR", "WANDB_CODE_DIR")  # prepare_wandb sets
MATPLOTLIB = (".cache/matplotlib", ".config/matplotlib")  # matplotlib's font cache, not W&B's


@dataclass
class Fit:
    folder: Path  # the run folder
    home: Path
    commit: str

    @cached_property
    def wandb(self) -> OfflineRun:
        [run] = offline_runs(self.folder / "wandb")
        return run


def unset_wandb_env(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """No key anywhere W&B looks, an empty HOME, and the XDG folders that would stand in for it."""
    for name in [*os.environ]:
        if name.startswith(("WANDB_", "XDG_")) or name in ("NETRC", "MPLCONFIGDIR"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(home))


def classifier_fit(root: Path, mnist_dir: Path) -> dict:
    """A fit run from a git repository with no W&B key (offline) and an empty HOME, checkpoints as
    artifacts, the last of two epochs the worst."""
    import wandb

    project, home = root / "project", root / "home"
    home.mkdir(parents=True, exist_ok=True)
    project.mkdir(exist_ok=True)
    git = ["git", "-C", str(project), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    (project / "README.md").write_text("experiments\n")
    for command in (["init", "-q"], ["add", "README.md"], ["commit", "-qm", "start"]):
        subprocess.run([*git, *command], check=True, capture_output=True, timeout=60)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=60).stdout.strip()
    args = ["fit", "--config", str(CONFIGS / "mnist_cnn.yaml"), "--config", str(WANDB_PRESET)]
    args += ["--data.data_dir", str(mnist_dir), "--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false"]
    args += ["--trainer.logger.log_model", "true", "--trainer.callbacks+", "tests.wandb_offline.SpoilLastEpoch"]
    with pytest.MonkeyPatch.context() as monkeypatch:
        unset_wandb_env(monkeypatch, home)
        monkeypatch.chdir(project)
        wandb.teardown()  # W&B keeps what it read of HOME, and its service, per process
        try:
            cli_main(args)
        finally:
            wandb.teardown()
    return {"folder": str(project / "logs" / "mnist_cnn" / "version_0"), "home": str(home), "commit": commit}


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Fit:
    fit = once_per_session(tmp_path_factory, "wandb_fit", lambda root: classifier_fit(root, mnist_dir))
    return Fit(Path(fit["folder"]), Path(fit["home"]), fit["commit"])


def test_fit_without_a_key_logs_offline_into_the_run_folder(classifier: Fit) -> None:
    """No key: the fit logs offline, into the run folder, as the W&B run whose id the folder keeps."""
    run = classifier.wandb
    assert run.run["telemetry"]["feature"]["offline"] is True
    assert run.run["run_id"] == (classifier.folder / "wandb" / "run_id.txt").read_text()
    assert [record["exit_code"] for record in run.of_type("exit")] == [0]


def test_display_name_group_and_tags(classifier: Fit) -> None:
    """Named ``<experiment>/<run folder>``, grouped by experiment, tagged with the model, net and data
    classes and the stem of each preset stacked after the experiment."""
    run = classifier.wandb.run
    assert run["display_name"] == "mnist_cnn/version_0"
    assert run["run_group"] == "mnist_cnn"
    assert sorted(run["tags"]) == ["CNN", "Classifier", "MNISTDataModule", "wandb"]


def test_test_results_in_the_summary_not_the_history(classifier: Fit) -> None:
    """The best checkpoint's test results are summary values, never history points."""
    run = classifier.wandb
    metrics = json.loads((classifier.folder / "metrics.json").read_text())["metrics"]
    summary = run.final["summary"]
    assert {k for k in metrics if k.startswith("test/")} == {"test/acc", "test/loss"}
    for key in ("test/acc", "test/loss"):
        assert summary[key] == pytest.approx(metrics[key])
    assert not [key for row in run.history for key in row if key.startswith("test/")]
    assert summary["best_checkpoint"] == json.loads((classifier.folder / "metrics.json").read_text())["checkpoint"]


def test_summary_keeps_the_best_validation_accuracy(classifier: Fit) -> None:
    """``val/acc`` in the final summary is the best of the history, not the last epoch's."""
    run = classifier.wandb
    history = [row["val/acc"] for row in run.history if "val/acc" in row]
    assert len(history) == 2 and history[-1] < max(history)  # SpoilLastEpoch made the last epoch the worst
    value = run.final["summary"]["val/acc"]
    assert (value["max"] if isinstance(value, dict) else value) == pytest.approx(max(history))


def test_config_is_the_resolved_yaml_once(classifier: Fit) -> None:
    """The run's config is config.yaml's, each top-level key set once, no model hparams beside it."""
    run = classifier.wandb
    resolved = yaml.safe_load((classifier.folder / "config.yaml").read_text())
    config = {k: v for k, v in run.final["config"].items() if k != "_wandb"}
    assert config == resolved
    updates = [key for record in run.of_type("config") for key in record["update"] if key != "_wandb"]
    assert sorted(updates) == sorted(resolved)
    assert not {"net", "optimizer", "_instantiator", "_class_path"} & set(config)


def test_predictions_table_puts_the_most_confident_misses_first(classifier: Fit) -> None:
    """``val/predictions``: image, true, predicted, confidence; misses first, by confidence."""
    rows = [row for row in classifier.wandb.history if "val/predictions._type" in row]
    assert [row["trainer/global_step"] for row in rows] == [1, 2]  # after each validation
    table = json.loads((classifier.wandb.folder / "files" / rows[-1]["val/predictions.path"]).read_text())
    assert table["columns"] == ["image", "true", "predicted", "confidence"]
    data = table["data"]
    assert len(data) == 12  # every validation sample: fewer than 64
    hit = [true == predicted for _, true, predicted, _ in data]
    assert hit == sorted(hit) and not hit[0]  # misses, then hits
    misses = [confidence for (_, _, _, confidence), h in zip(data, hit, strict=True) if not h]
    assert misses == sorted(misses, reverse=True)
    assert all(image for image, *_ in data)


def test_nothing_of_wandb_in_home(classifier: Fit) -> None:
    """With checkpoints as artifacts, W&B's cache and staging stay in the run folder; HOME gets none."""
    found = sorted(p.relative_to(classifier.home).as_posix() for p in classifier.home.rglob("*"))
    assert not [p for p in found if "wandb" in p.lower()], found
    assert all(p.startswith(MATPLOTLIB) or p in (".cache", ".config") for p in found), found
    run = classifier.wandb
    models = run.artifacts("model")
    assert models and any("best" in a["aliases"] for a in models)
    staged = [Path(c["local_path"]) for a in run.of_type("artifact") for c in a["manifest"]["contents"]]
    assert staged and all(p.is_relative_to(classifier.folder / "wandb" / "data") and p.is_file() for p in staged)
    assert (classifier.folder / "wandb" / "cache").is_dir()


def test_git_commit_and_project_code_are_recorded(classifier: Fit) -> None:
    """The run records the commit of the repository it ran in and saves every Python file of the project."""
    run = classifier.wandb
    environment = {key: value for record in run.of_type("environment") for key, value in record.items()}
    assert environment["git"]["commit"] == classifier.commit
    [code] = run.artifacts("code")
    paths = {c["path"] for c in code["manifest"]["contents"]}
    assert {"cli.py", "run/wandb.py", "callbacks/media.py", "lightning_modules/base.py"} <= paths
    assert all(p.endswith(".py") for p in paths)
    updates = [record["update"].get("_wandb", {}) for record in run.of_type("config")]
    assert [u["code_path"] for u in updates if "code_path" in u] == [code["name"]]


def test_regression_table_and_run_group(tmp_path: Path) -> None:
    """Regression: a table of x, y and the prediction (at most 64 rows); ``--run_group`` is the group."""
    args = ["fit", "--config", str(CONFIGS / "polynomial_regression.yaml"), "--config", str(WANDB_PRESET)]
    args += ["--trainer.max_epochs", "1", "--data.num_samples", "400", "--run_group", "sweep-a"]
    cli_main([*args, "--trainer.enable_progress_bar", "false"])
    [run] = offline_runs(tmp_path / "logs" / "polynomial_regression" / "version_0" / "wandb")
    assert run.run["run_group"] == "sweep-a"
    assert run.run["display_name"] == "polynomial_regression/version_0"
    assert {"Regressor", "LinearNet", "PolynomialDataModule"} <= set(run.run["tags"])
    [row] = [row for row in run.history if "val/predictions._type" in row]
    table = json.loads((run.folder / "files" / row["val/predictions.path"]).read_text())
    assert table["columns"] == ["x", "y", "prediction"]
    assert len(table["data"]) == 64  # 80 validation points
    assert all(isinstance(value, float) for point in table["data"] for value in point)


def test_no_table_is_computed_without_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mnist_dir: Path) -> None:
    """With TensorBoard and no W&B logger, MediaLogger draws pictures but builds no predictions table."""
    pytest.importorskip("tensorboard")
    import wandb
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import callbacks.media

    calls: list[str] = []
    for owner, name in ((wandb, "Image"), (wandb, "Table"), (callbacks.media.MediaLogger, "collect")):
        monkeypatch.setattr(owner, name, lambda *a, _name=name, **k: calls.append(_name))
    args = ["fit", "--config", str(CONFIGS / "mnist_cnn.yaml"), "--config", str(TENSORBOARD_PRESET)]
    cli_main([*args, "--data.data_dir", str(mnist_dir), "--trainer.enable_progress_bar", "false"])
    assert calls == []
    events = EventAccumulator(str(tmp_path / "logs" / "tensorboard" / "mnist_cnn" / "version_0"))
    events.Reload()
    assert set(events.Tags()["images"]) == {"train/batch", "val/confusion_matrix"}


def test_a_key_leaves_the_mode_to_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A key and no WANDB_MODE: prepare_wandb sets no mode (W&B goes online); it asks W&B once, no prompt."""
    import wandb

    from run.wandb import prepare_wandb

    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "0123456789" * 4)
    for name in WANDB_FOLDERS:
        monkeypatch.setenv(name, "")  # put back after the test: prepare_wandb sets them
    asked: list[dict] = []
    monkeypatch.setattr(wandb, "login", lambda **kwargs: asked.append(kwargs) or True)  # no network
    args = Namespace(save_code=True)
    prepare_wandb(args, tmp_path / "logs" / "x" / "version_0", "x", None, ["Classifier"])
    assert args.get("mode") is None and not args.get("offline")
    assert [a.get("prompt") for a in asked] == [False]
    assert os.environ["WANDB_CODE_DIR"] == str(ROOT)
    for name in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_ARTIFACT_DIR"):
        assert Path(os.environ[name]).is_relative_to(tmp_path / "logs" / "x" / "version_0" / "wandb")


def test_no_key_logs_offline_and_says_how_to_upload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """No key (empty HOME, none in the environment): offline, with the ``wandb sync`` command."""
    import wandb

    from run.wandb import prepare_wandb

    (tmp_path / "home").mkdir()
    unset_wandb_env(monkeypatch, tmp_path / "home")
    for name in WANDB_FOLDERS:
        monkeypatch.setenv(name, "")
    wandb.teardown()  # W&B keeps what it read of HOME per process
    try:
        args = Namespace()
        with caplog.at_level(logging.INFO):
            prepare_wandb(args, Path("logs/x/version_0"), "x", None, [])
    finally:
        wandb.teardown()
    assert args.mode == "offline"
    assert "wandb sync logs/x/version_0/wandb/offline-run-*" in caplog.text


def wait_for(condition, process: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the fit ended early:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"the fit did not get there in time:\n{log.read_text()[-3000:]}"
        time.sleep(0.05)


def checkpoint_step(folder: Path) -> int:
    """The global step of the run's ``last.ckpt`` (-1 while there is none)."""
    try:
        return torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True, mmap=True)["global_step"]
    except Exception:  # not there yet, or being replaced
        return -1


FULL_HISTORY = [0, *range(1, 34, 2), 34, *range(35, 68, 2), 68]  # slow_fit_args's steps, uninterrupted


def assert_one_history(folder: Path, parts: int) -> list[OfflineRun]:
    """The offline runs of a run folder are one W&B run: one id, steps rising across them, each
    picture or table logged once per step."""
    runs = offline_runs(folder / "wandb")
    run_id = (folder / "wandb" / "run_id.txt").read_text()
    assert len(runs) == parts and all(run.folder.name.endswith(f"-{run_id}") for run in runs)
    assert {run.run["run_id"] for run in runs if run.of_type("run")} == {run_id}
    rows = [row for run in runs for row in run.history]
    steps = [row["_step"] for row in rows]
    assert steps == sorted(set(steps)), steps
    assert [row["trainer/global_step"] for row in rows] == steps
    media = [(key, row["_step"]) for row in rows for key in media_keys(row)]
    assert len(media) == len(set(media)), media
    return runs


def slow_fit_args(data: Path) -> list[str]:
    """A fit of ~34 steps per epoch that a test can stop mid-epoch (``STEP_SLEEP`` slows it)."""
    args = ["fit", "--config", str(CONFIGS / "mnist_cnn.yaml"), "--config", str(WANDB_PRESET)]
    args += ["--data.data_dir", str(data), "--data.batch_size", "16", "--trainer.max_epochs", "2"]
    args += ["--trainer.log_every_n_steps", "2", "--checkpoint.every_n_train_steps", "5"]
    return [*args, "--trainer.enable_progress_bar", "false", "--trainer.callbacks+", "tests.wandb_offline.SlowSteps"]


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """``python cli.py ARGS`` in the background, from the log's folder, its output into the log."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    with open(log, "w") as output:
        command = [sys.executable, str(ROOT / "cli.py"), *args]
        return subprocess.Popen(command, cwd=log.parent, env=environment, stdout=output, stderr=subprocess.STDOUT)


def kill_and_resume(root: Path) -> dict:
    """``kill -9`` a fit mid-epoch, after a few logged steps and a ``last.ckpt``; run the same command again."""
    data = write_mnist(root / "data", n_train=600, n_test=40)
    args, folder = [*slow_fit_args(data), "--run_id", "r"], root / "logs" / "mnist_cnn" / "r"
    log = root / "killed.log"
    process = start(args, {"STEP_SLEEP": "0.1"}, log)
    try:
        wait_for(lambda: checkpoint_step(folder) >= 10, process, log)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        process.kill()
    killed_at = checkpoint_step(folder)
    done = run_cli(*args, cwd=root, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return {"folder": str(folder), "killed_at": killed_at, "output": done.stdout + done.stderr}


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return once_per_session(tmp_path_factory, "wandb_killed", kill_and_resume)


@pytest.mark.slow
def test_killed_and_resumed_run_is_one_wandb_run(killed: dict) -> None:
    """``kill -9`` mid-epoch, then the same command: one W&B run, no step logged twice."""
    folder = Path(killed["folder"])
    assert killed["killed_at"] < 34, "killed in the first epoch"
    assert "Resuming" in killed["output"]
    first, resumed = assert_one_history(folder, parts=2)
    assert resumed.history[-1]["_step"] == json.loads((folder / "metrics.json").read_text())["global_step"]


@pytest.mark.slow
def test_resumed_run_logs_every_step_from_its_checkpoint(killed: dict) -> None:
    """After ``kill -9`` and resume, W&B holds every step from the checkpoint on; of the steps before
    it, those the killed process had written (W&B writes its file every 15 s) and no other."""
    steps = [row["_step"] for run in offline_runs(Path(killed["folder"]) / "wandb") for row in run.history]
    assert [step for step in FULL_HISTORY if step > killed["killed_at"]] == [
        s for s in steps if s > killed["killed_at"]
    ]
    assert set(steps) <= set(FULL_HISTORY)


@pytest.mark.slow
def test_requeued_slurm_job_is_one_wandb_run(tmp_path: Path) -> None:
    """SIGUSR1 in a SLURM job: ``scontrol requeue``, exit 138; the job's next start continues the W&B run."""
    data = write_mnist(tmp_path / "data", n_train=600, n_test=40)
    bin_dir, calls = tmp_path / "bin", tmp_path / "scontrol.txt"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "scontrol").chmod(0o755)
    slurm = {
        "SLURM_JOB_ID": "123",
        "SLURM_JOB_NAME": "fit",
        "SLURM_NTASKS": "1",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    }
    args, folder = slow_fit_args(data), tmp_path / "logs" / "mnist_cnn" / "slurm-123"
    log = tmp_path / "stopped.log"
    process = start(args, {**slurm, "STEP_SLEEP": "0.1"}, log)
    try:
        wait_for(lambda: checkpoint_step(folder) >= 5, process, log)
        process.send_signal(signal.SIGUSR1)
        assert process.wait(timeout=120) == 128 + signal.SIGUSR1, log.read_text()[-3000:]
    finally:
        process.kill()
    assert calls.read_text().split() == ["requeue", "123"]
    stopped_at = checkpoint_step(folder)
    done = run_cli(*args, env={**slurm, "SLURM_RESTART_COUNT": "1"}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    first, resumed = assert_one_history(folder, parts=2)
    assert first.of_type("exit") and first.history[-1]["_step"] <= stopped_at < resumed.history[0]["_step"]
    # Lightning logs a batch's metrics after its callbacks: the batch a signal stops at is saved, not logged
    steps = [[row["_step"] for row in run.history] for run in (first, resumed)]
    assert steps[0] + steps[1] == [step for step in FULL_HISTORY if step != stopped_at - 1], (steps, stopped_at)
