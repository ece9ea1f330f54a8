"""TensorBoard preset: the event files hold the metrics, the resolved config and the pictures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli import cli_main
from tests.conftest import CONFIGS
from tests.wandb_offline import offline_runs

pytest.importorskip("tensorboard")  # the optional extra: pip install -e ".[tensorboard]"
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.plugins.hparams import plugin_data_pb2  # noqa: E402

TENSORBOARD_PRESET = CONFIGS / "logger" / "tensorboard.yaml"
KEEP_ALL = {"scalars": 0, "images": 0, "tensors": 0}  # the default keeps only 4 images per tag


def fit(mnist_dir: Path, *presets: Path, run_id: str | None = None) -> None:
    args = ["fit", "--config", str(CONFIGS / "mnist_cnn.yaml")]
    for preset in presets:
        args += ["--config", str(preset)]
    args += ["--data.data_dir", str(mnist_dir), "--data.batch_size", "16", "--trainer.max_epochs", "2"]
    args += ["--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2"]
    args += ["--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false"]
    cli_main(args + (["--run_id", run_id] if run_id else []))


def events(log_dir: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(log_dir), size_guidance=KEEP_ALL)
    accumulator.Reload()
    return accumulator


def test_event_files_hold_metrics_config_and_pictures(mnist_dir: Path) -> None:
    fit(mnist_dir, TENSORBOARD_PRESET)
    log_dir = Path("logs/tensorboard/mnist_cnn/version_0")  # named after the experiment
    run = events(log_dir)
    tags = run.Tags()

    expected = {"train/loss_step", "train/loss_epoch", "train/acc", "val/acc", "val/loss", "test/acc"}
    assert expected <= set(tags["scalars"])
    assert [e.step for e in run.Scalars("train/loss_step")] == [0, 1, 2, 3]
    metrics = json.loads(Path("logs/mnist_cnn/version_0/metrics.json").read_text())["metrics"]
    [test_acc] = run.Scalars("test/acc")  # the best checkpoint, tested after fit
    assert test_acc.value == pytest.approx(metrics["test/acc"])

    # pictures: the first training batch, the confusion matrix of each epoch and of the best checkpoint
    assert len(run.Images("train/batch")) == 1
    assert len(run.Images("val/confusion_matrix")) == 3
    image = run.Images("train/batch")[0]
    assert image.encoded_image_string.startswith(b"\x89PNG") and image.width > 500

    # the resolved config: as text, and as hyperparameters with nested keys joined by "/"
    [text] = run.Tensors("config/text_summary")
    config_text = text.tensor_proto.string_val[0].decode()
    assert "MNISTDataModule" in config_text and "batch_size: 16" in config_text
    content = run.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["data/init_args/batch_size"].number_value == 16
    assert hparams["model/class_path"].string_value.endswith("Classifier")


def test_named_run_and_both_presets_stacked(mnist_dir: Path) -> None:
    fit(mnist_dir, CONFIGS / "logger" / "wandb.yaml", TENSORBOARD_PRESET, run_id="baseline")
    run = events(Path("logs/tensorboard/mnist_cnn/baseline"))  # the run's own id as the version
    # both presets add MediaLogger: the first one logs to both loggers, the second does nothing
    assert len(run.Images("train/batch")) == 1
    [wandb_run] = offline_runs(Path("logs/wandb"))
    names = [p.relative_to(wandb_run.folder).as_posix() for p in wandb_run.media()]
    assert sum("train/batch_" in name for name in names) == 1, names
    assert len(list(Path("logs/mnist_cnn/baseline/media").glob("*.png"))) == 4
