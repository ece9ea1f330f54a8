"""SLURM pre-emption, simulated on one machine: the requeue signal arrives mid-epoch, the job dies,
and the requeued job (same command, same job id) continues the same run where it stopped."""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback

from cli import cli_main
from tests.conftest import CONFIGS

EXPERIMENT = CONFIGS / "mnist_softmax.yaml"  # a linear model: the run costs little
JOB_ID = "4242"
PREEMPT_AT = 10  # 108 training samples / batch 16 = 7 steps an epoch: step 10 is mid epoch 2


class Preempted(Exception):
    """Stands for SLURM killing the job after its grace period."""


class Preempt(Callback):
    """Sends the requeue signal when ``global_step`` reaches ``at_step``, then dies. Also records
    the step training starts from, which is what a resumed job must get right."""

    def __init__(self, at_step: int = PREEMPT_AT) -> None:
        self.at_step = at_step
        self.start_step: int | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start_step = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.at_step:
            os.kill(os.getpid(), signal.SIGUSR1)  # what `sbatch --signal=USR1@120` delivers
            raise Preempted


@pytest.fixture
def slurm_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A one-task SLURM batch job as Lightning reads it from the environment, with a stand-in
    ``scontrol`` that records its arguments instead of requeueing; returns that record's path."""
    record = tmp_path / "scontrol.calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {record}\n')
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    for key, value in {
        "SLURM_JOB_ID": JOB_ID,
        "SLURM_JOB_NAME": "train",
        "SLURM_NTASKS": "1",
        "SLURM_NTASKS_PER_NODE": "1",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "SLURM_NODELIST": "localhost",
    }.items():
        monkeypatch.setenv(key, value)
    return record


def test_requeue_saves_then_resumes_at_the_same_step(
    tmp_path: Path, mnist_dir: Path, slurm_job: Path
) -> None:
    extra = tmp_path / "preempt.yaml"
    extra.write_text(
        yaml.safe_dump(
            {
                "trainer": {
                    "callbacks+": [
                        {"class_path": "tests.test_requeue.Preempt", "init_args": {"at_step": PREEMPT_AT}}
                    ]
                }
            }
        )
    )
    # the sbatch command line: the SLURM trainer preset, here on the CPU, plus W&B (offline)
    args = [
        "fit",
        "--config",
        str(EXPERIMENT),
        "--config",
        str(CONFIGS / "trainer" / "slurm.yaml"),
        "--config",
        str(CONFIGS / "logger" / "wandb.yaml"),
        "--config",
        str(extra),
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        "1",
        "--trainer.strategy",
        "auto",
        "--trainer.max_epochs",
        "2",
        "--trainer.enable_progress_bar",
        "false",
        "--data.data_dir",
        str(mnist_dir),
        "--data.batch_size",
        "16",
    ]

    with pytest.raises(Preempted):
        cli_main(args)
    run_dir = Path("logs/mnist_softmax") / f"slurm-{JOB_ID}"
    hpc = run_dir / "hpc_ckpt_1.ckpt"
    assert hpc.is_file(), sorted(p.name for p in run_dir.iterdir())
    assert torch.load(hpc, map_location="cpu", weights_only=False)["global_step"] == PREEMPT_AT
    assert slurm_job.read_text().split() == ["requeue", JOB_ID]
    wandb_id = (run_dir / "wandb_run_id.txt").read_text()
    assert not (run_dir / "metrics.json").exists()

    cli = cli_main(args)  # the requeued job: same command, same job id
    preempt = next(c for c in cli.trainer.callbacks if isinstance(c, Preempt))
    assert preempt.start_step == PREEMPT_AT
    result = json.loads((run_dir / "metrics.json").read_text())
    assert result["global_step"] == 14 and result["epochs"] == 2
    assert sorted(p.name for p in Path("logs/mnist_softmax").iterdir()) == [f"slurm-{JOB_ID}"]
    assert (run_dir / "config.yaml").is_file() and (run_dir / "config.restart1.yaml").is_file()
    before = (run_dir / "metrics.until-restart1.csv").read_text()  # the history is kept
    assert "val/acc" in before.splitlines()[0] and len(before.splitlines()) > 1  # epoch 1
    assert cli.trainer.loggers[1].experiment.id == wandb_id  # the same W&B run, continued


def test_finished_named_run_is_not_silently_reused(tmp_path: Path, mnist_dir: Path) -> None:
    args = [
        "fit",
        "--config",
        str(EXPERIMENT),
        "--run_id",
        "baseline",
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "2",
        "--trainer.enable_progress_bar",
        "false",
        "--data.data_dir",
        str(mnist_dir),
    ]
    cli_main(args)
    assert (Path("logs/mnist_softmax/baseline") / "metrics.json").is_file()
    with pytest.raises(FileExistsError, match="holds a finished run"):
        cli_main(args)
