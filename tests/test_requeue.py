"""SLURM pre-emption, simulated on one machine: the requeue signal arrives mid-epoch, the job saves,
requeues itself and exits, and the requeued job (same command, same job id) continues the same run
where it stopped; other fits in the same job get folders of their own."""

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

from callbacks import TrainingInterrupted
from cli import cli_main
from tests.conftest import CONFIGS

EXPERIMENT = CONFIGS / "mnist_softmax.yaml"  # a linear model: the run costs little
JOB_ID = "4242"
PREEMPT_AT = 10  # 108 training samples / batch 16 = 7 steps an epoch: step 10 is mid epoch 2


class Preempt(Callback):
    """Sends a signal to this process when ``global_step`` reaches ``at_step``, as SLURM does; also
    records the step training starts from, which is what a resumed job must get right."""

    def __init__(self, at_step: int = PREEMPT_AT, signal_name: str = "SIGUSR1") -> None:
        self.at_step = at_step
        self.signal = signal.Signals[signal_name]
        self.start_step: int | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start_step = trainer.global_step

    def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.at_step:
            os.kill(os.getpid(), self.signal)


def one_short_epoch(mnist_dir: Path, *extra: str) -> list[str]:
    """``cli.py fit`` arguments: one epoch of two steps of the linear model on the fake digits."""
    short = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2"]
    quiet = ["--trainer.enable_progress_bar", "false"]
    return ["fit", "--config", str(EXPERIMENT), *short, *quiet, "--data.data_dir", str(mnist_dir), *extra]


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


def sbatch_command(tmp_path: Path, mnist_dir: Path, *extra: str, signal_name: str = "SIGUSR1") -> list[str]:
    """The sbatch command line: the SLURM trainer preset, here on the CPU, plus W&B (offline)."""
    preempt = tmp_path / "preempt.yaml"
    callback = {"class_path": "tests.test_requeue.Preempt", "init_args": {"signal_name": signal_name}}
    preempt.write_text(yaml.safe_dump({"trainer": {"callbacks+": [callback]}}))
    return [
        "fit",
        "--config",
        str(EXPERIMENT),
        "--config",
        str(CONFIGS / "trainer" / "slurm.yaml"),
        "--config",
        str(CONFIGS / "logger" / "wandb.yaml"),
        "--config",
        str(preempt),
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
        *extra,
    ]


@pytest.mark.parametrize("signal_name", ["SIGUSR1", "SIGTERM"])
def test_requeue_saves_then_resumes_at_the_same_step(
    tmp_path: Path, mnist_dir: Path, slurm_job: Path, monkeypatch: pytest.MonkeyPatch, signal_name: str
) -> None:
    args = sbatch_command(tmp_path, mnist_dir, signal_name=signal_name)
    with pytest.raises(TrainingInterrupted) as stopped:
        cli_main(args)
    assert stopped.value.code == 128 + signal.Signals[signal_name]
    run_dir = Path("logs/mnist_softmax") / f"slurm-{JOB_ID}"
    last = run_dir / "checkpoints" / "last.ckpt"
    # the signal came during step 11: that batch is finished, then saved
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == PREEMPT_AT + 1
    assert slurm_job.read_text().split() == ["requeue", JOB_ID]
    wandb_id = (run_dir / "wandb_run_id.txt").read_text()
    assert not (run_dir / "metrics.json").exists()

    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    cli = cli_main(args)  # the requeued job: same command, same job id
    preempt = next(c for c in cli.trainer.callbacks if isinstance(c, Preempt))
    assert preempt.start_step == PREEMPT_AT + 1
    result = json.loads((run_dir / "metrics.json").read_text())
    assert result["global_step"] == 14 and result["epochs"] == 2
    assert sorted(p.name for p in Path("logs/mnist_softmax").iterdir()) == [f"slurm-{JOB_ID}"]
    assert (run_dir / "config.yaml").is_file() and (run_dir / "config.restart1.yaml").is_file()
    before = (run_dir / "metrics.until-restart1.csv").read_text()  # the history is kept
    assert "val/acc" in before.splitlines()[0] and len(before.splitlines()) > 1  # epoch 1
    assert cli.trainer.loggers[1].experiment.id == wandb_id  # the same W&B run, continued

    with pytest.raises(SystemExit) as again:  # requeued once more: that fit is done already
        cli_main(args)
    assert again.value.code == 0


def test_other_fits_in_one_job_get_their_own_folders(
    tmp_path: Path, mnist_dir: Path, slurm_job: Path
) -> None:
    args = one_short_epoch(mnist_dir)
    for seed in (1, 2):  # a seed loop inside one batch job
        cli_main([*args, "--seed_everything", str(seed)])
    runs = sorted(p.name for p in Path("logs/mnist_softmax").iterdir())
    assert runs == [f"slurm-{JOB_ID}", f"slurm-{JOB_ID}-2"]
    assert all((Path("logs/mnist_softmax") / run / "metrics.json").is_file() for run in runs)


def test_finished_named_run_is_never_written_into(tmp_path: Path, mnist_dir: Path) -> None:
    args = one_short_epoch(mnist_dir, "--run_id", "baseline")
    cli_main(args)
    folder = Path("logs/mnist_softmax/baseline")
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    for extra in ([], ["--ckpt_path", str(folder / "checkpoints" / "last.ckpt")]):
        with pytest.raises(FileExistsError, match="holds a finished run"):
            cli_main([*args, *extra])
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before


def test_default_root_dir_holds_everything_the_run_writes(tmp_path: Path, mnist_dir: Path) -> None:
    cli_main(
        one_short_epoch(
            mnist_dir,
            *("--config", str(CONFIGS / "logger" / "wandb.yaml")),
            *("--trainer.default_root_dir", "elsewhere", "--run_id", "moved"),
        )
    )
    cli_main(
        [
            "predict",
            "--config",
            str(EXPERIMENT),
            "--trainer.default_root_dir",
            "elsewhere",
            "--data.data_dir",
            str(mnist_dir),
            "--trainer.enable_progress_bar",
            "false",
            "--ckpt_path",
            "elsewhere/logs/mnist_softmax/moved/checkpoints/last.ckpt",
        ]
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere"]
    run = tmp_path / "elsewhere" / "logs" / "mnist_softmax" / "moved"
    assert (run / "metrics.json").is_file() and (run / "model.pth").is_file()
    assert list((run / "predict").glob("version_0/predictions.csv"))  # evaluations beside their run
    assert list((tmp_path / "elsewhere" / "logs" / "wandb").glob("offline-run-*"))


def test_a_damaged_last_checkpoint_of_a_trained_run_is_rewritten(tmp_path: Path, mnist_dir: Path) -> None:
    """Killed after its last epoch, before it finished: the restart skips the damaged ``last.ckpt``,
    resumes from the best checkpoint with nothing left to train, and still leaves a whole one."""
    # no metrics.json: the run is not finished
    args = one_short_epoch(mnist_dir, "--run_id", "cut", "--test_after_fit", "false")
    cli_main(args)
    last = Path("logs/mnist_softmax/cut/checkpoints/last.ckpt")
    whole = torch.load(last, weights_only=True)
    last.write_bytes(last.read_bytes()[:1000])
    cli_main(args)
    rewritten = torch.load(last, weights_only=True)
    assert rewritten["global_step"] == whole["global_step"]
    assert all(torch.equal(v, rewritten["state_dict"][k]) for k, v in whole["state_dict"].items())
