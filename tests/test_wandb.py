"""W&B, offline: the run folder holds the config, the metric history and the pictures."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image

from cli import cli_main
from tests.conftest import CONFIGS, EXPERIMENT_CONFIGS, ROOT
from tests.wandb_offline import offline_runs

WANDB_PRESET = CONFIGS / "logger" / "wandb.yaml"
SWEEPS = sorted((CONFIGS / "sweeps").glob("*.yaml"))


def preset_with(tmp_path: Path, **extras: Any) -> Path:
    """The W&B preset with other WandbExtras options (e.g. gradient histograms at every step)."""
    preset = yaml.safe_load(WANDB_PRESET.read_text())
    for callback in preset["trainer"]["callbacks+"]:
        if callback["class_path"].endswith("WandbExtras"):
            callback["init_args"].update(extras)
    preset["trainer"]["logger+"][0]["init_args"]["log_model"] = True  # checkpoints as artifacts
    path = tmp_path / "wandb.yaml"
    path.write_text(yaml.safe_dump(preset))
    return path


def test_offline_run_holds_config_history_and_media(tmp_path: Path, mnist_dir: Path) -> None:
    cli_main(
        [
            "fit",
            "--config",
            str(CONFIGS / "mnist_cnn.yaml"),
            "--config",
            str(preset_with(tmp_path, watch="gradients", watch_log_freq=1)),
            "--data.data_dir",
            str(mnist_dir),
            "--trainer.max_epochs",
            "2",
            "--trainer.enable_progress_bar",
            "false",
            "--run_group",
            "mnist_cnn/cv",
        ]
    )
    run_dir = Path("logs/mnist_cnn/version_0")
    [run] = offline_runs(Path("logs/wandb"))
    assert run.of_type("exit"), "the run file is complete once the CLI returns"
    assert run.run.run_id == (run_dir / "wandb_run_id.txt").read_text()
    assert run.run.run_group == "mnist_cnn/cv"  # how the folds of a k-fold run are grouped

    # the whole resolved config, not only the model's hyperparameters, and the parameter counts
    config = run.config
    assert config["model"]["class_path"].endswith("Classifier")
    assert config["model"]["init_args"]["net"]["init_args"]["channels"] == [24, 32]
    assert config["data"]["class_path"].endswith("MNISTDataModule")
    assert config["trainer"]["max_epochs"] == 2
    assert config["run_dir"] == str(run_dir)
    assert config["params"]["total"] == config["params"]["net"] > 0

    # the metric history: per-epoch validation, the final evaluation, gradient histograms
    history = run.history
    val_acc = [row["val/acc"] for row in history if "val/acc" in row]
    assert len(val_acc) == 3  # two epochs, then the best checkpoint validated after fit
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    assert val_acc[-1] == pytest.approx(metrics["val/acc"])
    assert any("test/acc" in row for row in history)
    assert any(key.startswith("gradients/") for row in history for key in row)
    assert run.of_type("artifact"), "log_model: the checkpoints are logged as artifacts"

    # pictures: in the W&B run and as PNGs in the run directory
    images = run.folder / "files" / "media" / "images"
    names = [p.relative_to(images).as_posix() for p in run.media()]
    assert any(n.startswith("train/batch_") for n in names), names
    assert sum(n.startswith("val/confusion_matrix_") for n in names) == 3, names
    local = sorted(p.name for p in (run_dir / "media").iterdir())
    assert local == [
        "confusion_matrix.png",
        "confusion_matrix_epoch000.png",
        "confusion_matrix_epoch001.png",
        "train_batch.png",
    ]
    width, height = Image.open(run_dir / "media" / "train_batch.png").size
    assert width > 500 and height > 300  # a readable grid of 32 images, not a thumbnail


@pytest.mark.parametrize("config", EXPERIMENT_CONFIGS, ids=lambda p: p.stem)
def test_preset_stacks_on_every_experiment(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "--config", str(config), "--config", str(WANDB_PRESET), "--print_config"])
    assert exit_info.value.code in (0, None)
    trainer = yaml.safe_load(capsys.readouterr().out)["trainer"]
    loggers = [logger["class_path"].rsplit(".", 1)[-1] for logger in trainer["logger"]]
    assert loggers[0] != "WandbLogger" and loggers[-1] == "WandbLogger"  # the run folder stays
    callbacks = {callback["class_path"].rsplit(".", 1)[-1] for callback in trainer["callbacks"]}
    assert {"MediaLogger", "WandbExtras"} <= callbacks


def test_regression_fit_plot_reaches_wandb(tmp_path: Path) -> None:
    cli_main(
        [
            "fit",
            "--config",
            str(CONFIGS / "polynomial_regression.yaml"),
            "--config",
            str(WANDB_PRESET),
            "--trainer.max_epochs",
            "2",
            "--data.num_samples",
            "200",
            "--trainer.enable_progress_bar",
            "false",
        ]
    )
    [run] = offline_runs(Path("logs/wandb"))
    names = [p.name for p in run.media()]
    assert any(name.startswith("curve_") for name in names), names  # FitPlot's "fit/curve"
    assert not any(name.startswith("confusion_matrix") for name in names)  # not a classifier


WANDB_MODE_CHOSEN = """
from jsonargparse import Namespace
from runs.loggers import prepare_wandb_loggers
logger = Namespace(class_path="lightning.pytorch.loggers.WandbLogger",
                   init_args=Namespace(save_dir="logs", offline=False, mode=None))
prepare_wandb_loggers(Namespace(logger=[logger]))
print(logger.init_args.mode)
"""


def test_offline_exactly_when_wandb_has_no_key(tmp_path: Path) -> None:
    """Asked in fresh processes (W&B keeps credentials per process), before and after the
    installed ``wandb login`` writes its netrc file, wherever its default server is."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(NETRC=str(tmp_path / "netrc"), HOME=str(tmp_path), PYTHONPATH=str(ROOT))

    def mode() -> str:
        done = subprocess.run(
            [sys.executable, "-c", WANDB_MODE_CHOSEN],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.split()[-1]

    assert mode() == "offline"
    login = subprocess.run(
        ["wandb", "login", "--no-verify", "0123456789" * 4],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert login.returncode == 0, login.stderr[-2000:]
    assert (tmp_path / "netrc").is_file()
    assert mode() == "None"  # online: W&B decides, as it would for the run itself


def sweep_trial(sweep: dict[str, Any]) -> list[str]:
    """The command line ``wandb agent`` runs for one trial (the first value of each parameter)."""
    args = []
    for name, spec in sweep["parameters"].items():
        value = spec["values"][0] if "values" in spec else spec.get("value", spec.get("min"))
        args.append(f"--{name}={value}")
    command = []
    for part in sweep["command"]:
        if part == "${args}":
            command += args
        elif part == "${program}":
            command.append(sweep["program"])
        elif part not in ("${env}", "${interpreter}"):
            command.append(part)
    return command


@pytest.mark.parametrize("sweep_path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_trials_are_valid_cli_commands(
    sweep_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    sweep = yaml.safe_load(sweep_path.read_text())
    local = tmp_path / "data.yaml"  # the machine's configs/local/data.yaml, as an agent job writes it
    local.write_text(yaml.safe_dump({"data": {"init_args": {"data_dir": str(tmp_path)}}}))
    command = [str(local) if part == "configs/local/data.yaml" else part for part in sweep_trial(sweep)]
    assert command[:2] == ["cli.py", "fit"], shlex.join(command)
    assert sweep["metric"]["name"].startswith("val/")
    monkeypatch.chdir(CONFIGS.parent)  # the agent runs from the repository root
    with pytest.raises(SystemExit) as exit_info:
        cli_main(command[1:] + ["--print_config"])
    assert exit_info.value.code in (0, None)
    resolved = yaml.safe_load(capsys.readouterr().out)
    for name in sweep["parameters"]:
        node = resolved
        for key in name.split("."):
            node = node[key]
        assert node is not None, name
