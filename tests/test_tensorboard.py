"""The TensorBoard preset stacked with W&B's: event files named like the run, holding the metrics,
the resolved config and the pictures (read with TensorBoard's own EventAccumulator)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml

from cli import cli_main
from tests.conftest import CONFIGS
from tests.wandb_offline import offline_runs, once_per_session

pytest.importorskip("tensorboard")  # the optional extra: pip install -e ".[tensorboard]"
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.plugins.hparams import plugin_data_pb2  # noqa: E402

TENSORBOARD_PRESET = CONFIGS / "logger" / "tensorboard.yaml"
KEEP_ALL = {"scalars": 0, "images": 0, "tensors": 0}  # the default keeps only 4 images per tag
VALIDATION_STEPS = [4]  # one epoch of four batches (108 fake images, batch 32)


def both_presets_fit(root: Path, mnist_dir: Path) -> dict:
    args = ["fit", "--config", str(CONFIGS / "mnist_cnn.yaml"), "--config", str(CONFIGS / "logger" / "wandb.yaml")]
    args += ["--config", str(TENSORBOARD_PRESET), "--data.data_dir", str(mnist_dir), "--data.batch_size", "32"]
    args += ["--trainer.max_epochs", "1", "--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false"]
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(root)
        monkeypatch.setenv("WANDB_MODE", "offline")
        cli_main([*args, "--run_id", "base"])
    return {"root": str(root)}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Path:
    """Where one fit with both logger presets (``--run_id base``) wrote its logs."""
    return Path(once_per_session(tmp_path_factory, "tensorboard_fit", lambda r: both_presets_fit(r, mnist_dir))["root"])


@pytest.fixture(scope="module")
def events(root: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(root / "logs" / "tensorboard" / "mnist_cnn" / "base"), size_guidance=KEEP_ALL)
    accumulator.Reload()
    return accumulator


def test_every_logger_names_the_run_alike(root: Path, events: EventAccumulator) -> None:
    """TensorBoard's folder, the CSV run folder and W&B's display name: ``mnist_cnn/base`` each."""
    spec = yaml.safe_load(TENSORBOARD_PRESET.read_text())["trainer"]["logger+"][0]["init_args"]
    assert spec == {"save_dir": "logs/tensorboard", "name": None}
    assert [p.name for p in (root / "logs" / "tensorboard").iterdir()] == ["mnist_cnn"]
    assert [p.name for p in (root / "logs" / "tensorboard" / "mnist_cnn").iterdir()] == ["base"]
    assert list((root / "logs" / "tensorboard" / "mnist_cnn" / "base").glob("events.out.tfevents.*"))
    assert (root / "logs" / "mnist_cnn" / "base" / "metrics.csv").is_file()
    [run] = offline_runs(root / "logs" / "mnist_cnn" / "base" / "wandb")
    assert run.run["display_name"] == "mnist_cnn/base"


def test_scalars_are_the_logged_metrics(root: Path, events: EventAccumulator) -> None:
    """Every metric is a scalar: the step loss at each step, the validation metrics as in the CSV log."""
    assert {"train/loss", "train/loss_epoch", "train/acc", "val/loss", "val/acc"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("train/loss")] == list(range(4))
    with open(root / "logs" / "mnist_cnn" / "base" / "metrics.csv") as file:
        logged = [float(row["val/acc"]) for row in csv.DictReader(file) if row.get("val/acc")]
    assert [e.value for e in events.Scalars("val/acc")] == pytest.approx(logged)
    assert len(logged) == 1


def test_hparams_are_the_resolved_config(root: Path, events: EventAccumulator) -> None:
    """The resolved config is TensorBoard's HPARAMS (nested keys joined by "/") and its hparams.yaml."""
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["data/init_args/batch_size"].number_value == 32
    assert hparams["model/class_path"].string_value.endswith("Classifier")
    saved = yaml.safe_load((root / "logs" / "tensorboard" / "mnist_cnn" / "base" / "hparams.yaml").read_text())
    assert saved == yaml.safe_load((root / "logs" / "mnist_cnn" / "base" / "config.yaml").read_text())


def test_pictures_reach_tensorboard(events: EventAccumulator) -> None:
    """The first training batch and each validation's confusion matrix are IMAGES."""
    assert {e.step for e in events.Images("train/batch")} == {0}
    assert {e.step for e in events.Images("val/confusion_matrix")} == set(VALIDATION_STEPS)
    for tag in ("train/batch", "val/confusion_matrix"):
        image = events.Images(tag)[0]
        assert image.encoded_image_string.startswith(b"\x89PNG") and image.width > 200


def test_each_picture_once_per_step(events: EventAccumulator) -> None:
    """Stacking both presets logs each picture once per step."""
    assert [e.step for e in events.Images("train/batch")] == [0]
    assert [e.step for e in events.Images("val/confusion_matrix")] == VALIDATION_STEPS
