"""The sbatch scripts, run by bash with a stand-in ``srun``: the environment they activate, the
CPUs they pass on, the command they start; and the data folder a sweep agent's trials read."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from cli import cli_main
from tests.conftest import CONFIGS, ROOT

SLURM = ROOT / "scripts" / "slurm"
SCRIPTS = sorted(SLURM.glob("*.sbatch"))
JOB = {
    "SLURM_JOB_ID": "123",
    "SLURM_CPUS_PER_TASK": "8",
    "SLURM_NTASKS_PER_NODE": "4",
    "SLURM_JOB_NUM_NODES": "2",
    "SLURM_JOB_NODELIST": "node[1-2]",
    "SLURM_ARRAY_JOB_ID": "77",
    "SLURM_ARRAY_TASK_ID": "3",
}


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A folder to submit from (the scripts use paths relative to the repository root), with
    ``srun`` and ``wandb`` stand-ins that record their arguments, and a virtualenv stand-in."""
    shutil.copytree(SLURM, tmp_path / "scripts" / "slurm")
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for tool in ("srun", "wandb"):
        (stubs / tool).write_text(f'#!/bin/bash\necho "{tool} $*" >> "$RECORD"\n')
        (stubs / tool).chmod(0o755)
    venv = tmp_path / "venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "activate").write_text(f'export PATH="{venv}:$PATH"\n')
    (venv / "python").write_text('#!/bin/bash\necho "Python 3.99 (the venv)"\n')
    (venv / "python").chmod(0o755)
    return tmp_path


def submit(checkout: Path, script: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    path = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PYTHON_ENV"))}
    path.update(JOB, RECORD=str(checkout / "record.txt"), PATH=f"{checkout / 'bin'}:{os.environ['PATH']}")
    path.update(env)
    return subprocess.run(
        ["bash", str(SLURM / script), *args], cwd=checkout, env=path, capture_output=True, text=True
    )


def recorded(checkout: Path) -> list[str]:
    return (checkout / "record.txt").read_text().splitlines()


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_are_executable_and_parse(script: Path) -> None:
    assert os.access(script, os.X_OK)
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0


@pytest.mark.parametrize("script", ["single_node.sbatch", "multi_node.sbatch"])
def test_fit_scripts_activate_the_environment_and_pass_the_cpus(checkout: Path, script: str) -> None:
    done = submit(checkout, script, "configs/mnist_cnn.yaml", "--data.data_dir", "/data", PYTHON_ENV="venv")
    assert done.returncode == 0, done.stderr
    assert f"python: {checkout}/venv/bin/python (Python 3.99 (the venv))" in done.stdout
    [command] = recorded(checkout)
    assert command.startswith("srun --cpus-per-task=8 python cli.py fit --config configs/mnist_cnn.yaml ")
    assert command.endswith("--trainer.devices 4 --trainer.num_nodes 2 --data.data_dir /data")


def test_without_python_env_the_submitting_shells_python_runs(checkout: Path) -> None:
    done = submit(checkout, "single_node.sbatch", "configs/mnist_cnn.yaml")
    assert done.returncode == 0, done.stderr
    assert f"python: {shutil.which('python')}" in done.stdout


def test_an_unusable_python_env_stops_the_job(checkout: Path) -> None:
    done = submit(checkout, "single_node.sbatch", "configs/mnist_cnn.yaml", PYTHON_ENV="nowhere")
    assert done.returncode == 1
    assert "PYTHON_ENV=nowhere is neither a virtualenv" in done.stderr
    assert not (checkout / "record.txt").exists()  # nothing started


def test_kfold_array_task_trains_its_fold(checkout: Path) -> None:
    config = ["--config", "configs/mnist_softmax.yaml"]
    done = submit(checkout, "kfold_array.sbatch", "--num_folds", "5", *config)
    assert done.returncode == 0, done.stderr
    [command] = recorded(checkout)
    assert command == "srun --cpus-per-task=8 python scripts/kfold.py --fold 3 --num_folds 5 " + " ".join(
        config
    )


def test_sweep_agent_trials_read_the_jobs_data_folder(
    checkout: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = checkout / "shared data"
    data.mkdir()
    done = submit(checkout, "wandb_agent.sbatch", "me/proj/abc123", str(data), "--count", "5")
    assert done.returncode == 0, done.stderr
    assert recorded(checkout) == ["srun --cpus-per-task=8 wandb agent --count 5 me/proj/abc123"]
    written = checkout / "configs" / "local" / "data.yaml"
    assert sorted(p.name for p in written.parent.iterdir()) == ["data.yaml"]  # no temporary left

    # a trial: the sweep's command, run from the folder the job wrote configs/local/data.yaml in
    sweep = yaml.safe_load((CONFIGS / "sweeps" / "mnist_cnn.yaml").read_text())
    assert "configs/local/data.yaml" in sweep["command"]
    command = [part for part in sweep["command"] if not part.startswith("${")]
    monkeypatch.chdir(checkout)
    shutil.copytree(CONFIGS, checkout / "configs", dirs_exist_ok=True)
    with pytest.raises(SystemExit):
        cli_main(command + ["--print_config"])
    assert yaml.safe_load(capsys.readouterr().out)["data"]["init_args"]["data_dir"] == str(data)


def test_sweep_trials_of_one_job_get_their_own_run_folders(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "123")  # an agent job runs many trials, one fit each
    fit = ["fit", "--config", str(CONFIGS / "polynomial_regression.yaml"), "--trainer.max_epochs", "1"]
    fit += ["--trainer.enable_progress_bar", "false", "--data.num_samples", "64"]
    for learning_rate in ("0.01", "0.02"):
        cli_main([*fit, "--model.optimizer.init_args.lr", learning_rate])
    runs = sorted(p.name for p in Path("logs/polynomial_regression").iterdir())
    assert runs == ["slurm-123", "slurm-123-2"]
