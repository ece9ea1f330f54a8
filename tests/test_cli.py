"""The CLI end to end, in-process: help, every config parsed and dry-run, run files on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from cli import cli_main
from tests.conftest import CONFIGS, EXPERIMENT_CONFIGS


def run_cli(args: list[str]):
    return cli_main(args)


def test_there_are_experiment_configs() -> None:
    names = {p.name for p in EXPERIMENT_CONFIGS}
    assert {"mnist_cnn.yaml", "cifar10_cnn.yaml", "cifar10_folder_cnn.yaml"} <= names


def test_help_lists_subcommands_models_and_data(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert all(cmd in out for cmd in ("fit", "validate", "test", "predict"))
    with pytest.raises(SystemExit):
        run_cli(["fit", "--help"])
    out = capsys.readouterr().out
    for name in ("Classifier", "Regressor", "MNISTDataModule", "CIFAR10DataModule", "ImageFolderDataModule"):
        assert name in out


@pytest.mark.parametrize("config", EXPERIMENT_CONFIGS, ids=lambda p: p.stem)
def test_print_config(config: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert (
        printed["model"]["class_path"].split(".")[-1]
        == yaml.safe_load(config.read_text())["model"]["class_path"].split(".")[-1]
    )
    assert "num_classes" not in printed["model"]["init_args"]  # linked from the data, not written


@pytest.mark.parametrize("config", EXPERIMENT_CONFIGS, ids=lambda p: p.stem)
def test_fast_dev_run(config: Path, data_args, tmp_path: Path) -> None:
    cli = run_cli(["fit", "--config", str(config), "--trainer.fast_dev_run", "true", *data_args(config)])
    assert cli.trainer.state.finished
    assert cli.trainer.global_step == 1
    assert not list(tmp_path.rglob("*.ckpt"))  # a dry run leaves nothing behind


def fit_mnist(mnist_dir: Path, *extra: str):
    return run_cli(
        [
            "fit",
            "--config",
            str(CONFIGS / "mnist_cnn.yaml"),
            "--data.data_dir",
            str(mnist_dir),
            "--trainer.max_epochs",
            "2",
            "--trainer.limit_train_batches",
            "2",
            "--trainer.limit_val_batches",
            "2",
            "--trainer.enable_progress_bar",
            "false",
            "--data.batch_size",
            "16",
            *extra,
        ]
    )


def test_fit_writes_config_checkpoints_and_metrics(mnist_dir: Path, tmp_path: Path) -> None:
    cli = fit_mnist(mnist_dir)
    run_dir = tmp_path / "logs" / "mnist_cnn" / "version_0"
    assert Path(cli.trainer.log_dir) == Path("logs/mnist_cnn/version_0")
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["data"]["init_args"]["data_dir"] == str(mnist_dir)
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert "last.ckpt" in checkpoints and any(n.startswith("epoch=") and "val_acc=" in n for n in checkpoints)
    result = json.loads((run_dir / "metrics.json").read_text())
    for key in ("val/acc", "val/loss", "test/acc", "test/loss"):
        assert key in result["metrics"]
    assert 0.0 <= result["metrics"]["test/acc"] <= 1.0
    assert result["checkpoint"].endswith(".ckpt") and "last" not in result["checkpoint"]
    assert result["global_step"] == 4
    assert not list(run_dir.glob(".*tmp*"))  # no half-written files

    fit_mnist(mnist_dir)  # a second run gets its own folder and leaves the first one alone
    assert (tmp_path / "logs" / "mnist_cnn" / "version_1" / "metrics.json").is_file()
    assert json.loads((run_dir / "metrics.json").read_text()) == result


def test_metrics_json_reports_the_best_checkpoint(mnist_dir: Path, tmp_path: Path) -> None:
    cli = fit_mnist(mnist_dir)
    best_score = float(cli.trainer.checkpoint_callback.best_model_score)
    result = json.loads((tmp_path / "logs/mnist_cnn/version_0/metrics.json").read_text())
    assert result["metrics"]["val/acc"] == pytest.approx(best_score, abs=1e-6)


def test_test_after_fit_can_be_turned_off(mnist_dir: Path, tmp_path: Path) -> None:
    fit_mnist(mnist_dir, "--test_after_fit", "false")
    assert not (tmp_path / "logs" / "mnist_cnn" / "version_0" / "metrics.json").exists()


def test_missing_data_fails_with_a_clear_message(tmp_path: Path, monkeypatch) -> None:
    import datamodules

    monkeypatch.setattr(
        datamodules.MNISTDataModule, "fetch", lambda self: (_ for _ in ()).throw(OSError("no network"))
    )
    with pytest.raises(datamodules.DataNotFoundError, match="--data.data_dir"):
        run_cli(
            [
                "fit",
                "--config",
                str(CONFIGS / "mnist_cnn.yaml"),
                "--data.data_dir",
                str(tmp_path / "empty"),
                "--trainer.fast_dev_run",
                "true",
            ]
        )


class PlainHidden(torch.nn.Module):
    """A user's network whose ``hidden`` is a plain int, where the CNN's is a PositiveInt."""

    def __init__(self, num_outputs: int, hidden: int = 8) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Flatten(),
            torch.nn.LazyLinear(hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, num_outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def test_a_swapped_network_keeps_the_options_it_shares(
    mnist_dir: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    swap = ["--config", str(CONFIGS / "mnist_cnn.yaml"), "--model.net", f"{__name__}.PlainHidden"]
    with pytest.raises(SystemExit):
        run_cli(["fit", *swap, "--print_config"])
    assert yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]["net"]["init_args"] == {
        "hidden": 256
    }
    run_cli(["fit", *swap, "--data.data_dir", str(mnist_dir), "--trainer.fast_dev_run", "true"])
    assert "(channels, batch_norm, block_pool, head, hidden), only those PlainHidden also" in caplog.text
