"""Presets (configs/<kind>/*.yaml): each stacks on an experiment; the CPU ones run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from lightning.pytorch.callbacks import EarlyStopping

from cli import cli_main
from tests.conftest import CONFIGS

PRESETS = sorted(p for p in CONFIGS.glob("*/*.yaml") if p.parent.name not in ("sweeps", "search"))
# Presets that need a GPU, several processes or SLURM: parsed here, run elsewhere.
NOT_ON_ONE_CPU = {"trainer/gpu.yaml", "trainer/gpu_bf16.yaml", "trainer/ddp.yaml", "trainer/slurm.yaml"}
NOT_ON_ONE_CPU |= {"trainer/ddp_cpu.yaml"}  # runs on CPUs, in tests/test_ddp.py
EXPERIMENTS = [CONFIGS / "mnist_cnn.yaml", CONFIGS / "polynomial_regression.yaml"]


def name(preset: Path) -> str:
    return preset.relative_to(CONFIGS).as_posix()


def test_presets_are_found() -> None:
    names = {name(p) for p in PRESETS}
    assert {"debug/fast_dev_run.yaml", "debug/overfit_batches.yaml", "debug/profiler.yaml"} <= names
    assert {"debug/anomaly_detection.yaml", "callbacks/early_stopping.yaml", "trainer/gpu_bf16.yaml"} <= names


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=lambda p: p.stem)
@pytest.mark.parametrize("preset", PRESETS, ids=name)
def test_preset_stacks_on_an_experiment(preset: Path, experiment: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "--config", str(experiment), "--config", str(preset), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    own = yaml.safe_load(preset.read_text())
    for key, value in own.get("trainer", {}).items():  # the preset's plain trainer settings arrive
        if isinstance(value, (str, int, float, bool)):
            assert printed["trainer"][key] == value, key


@pytest.mark.parametrize("preset", [p for p in PRESETS if name(p) not in NOT_ON_ONE_CPU], ids=name)
def test_preset_runs(preset: Path, mnist_dir: Path) -> None:
    cli = cli_main(
        [
            "fit",
            "--config",
            str(CONFIGS / "mnist_cnn.yaml"),
            "--config",
            str(preset),
            "--data.data_dir",
            str(mnist_dir),
            "--trainer.fast_dev_run",
            "true",
        ]
    )
    assert cli.trainer.state.finished and cli.trainer.global_step == 1


def fit_with(preset: str, config: str, *extra: str):
    args = ["fit", "--config", str(CONFIGS / config), "--config", str(CONFIGS / preset)]
    return cli_main(args + ["--trainer.enable_progress_bar", "false", *extra])


@pytest.mark.parametrize(
    ("config", "metric", "mode"),
    [("mnist_cnn.yaml", "val/acc", "max"), ("polynomial_regression.yaml", "val/loss", "min")],
)
def test_early_stopping_watches_the_model_metric(config: str, metric: str, mode: str, data_args) -> None:
    data = data_args(CONFIGS / config)
    cli = fit_with("callbacks/early_stopping.yaml", config, *data, "--trainer.fast_dev_run", "1")
    [stopping] = [c for c in cli.trainer.callbacks if isinstance(c, EarlyStopping)]
    assert (stopping.monitor, stopping.mode) == (metric, mode)


def test_early_stopping_stops_a_run_that_does_not_improve() -> None:
    # a learning rate of 0: the validation loss never improves after the first epoch
    cli = fit_with(
        "callbacks/early_stopping.yaml",
        "polynomial_regression.yaml",
        "--model.optimizer.init_args.lr",
        "0.0",
        "--trainer.max_epochs",
        "20",
        "--data.num_samples",
        "100",
    )
    assert cli.trainer.current_epoch == 4  # the first epoch, then patience 3
    result = json.loads(Path("logs/polynomial_regression/version_0/metrics.json").read_text())
    assert result["epochs"] == 4


def test_overfit_batches_learns_the_few_batches(mnist_dir: Path) -> None:
    cli = fit_with(
        "debug/overfit_batches.yaml",
        "mnist_cnn.yaml",
        "--data.data_dir",
        str(mnist_dir),
        "--data.batch_size",
        "8",
        "--trainer.max_epochs",
        "15",
        "--test_after_fit",
        "false",
    )
    assert cli.trainer.num_training_batches == 4
    assert float(cli.trainer.callback_metrics["train/acc"]) == 1.0


def test_profiler_writes_its_report_into_the_run_folder(mnist_dir: Path) -> None:
    fit_with(
        "debug/profiler.yaml",
        "mnist_cnn.yaml",
        "--data.data_dir",
        str(mnist_dir),
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "3",
        "--test_after_fit",
        "false",
    )
    report = Path("logs/mnist_cnn/version_0/fit-profile.txt").read_text()
    assert "run_training_batch" in report
