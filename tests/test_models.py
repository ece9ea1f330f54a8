"""Every experiment config fits and predicts; predictions files; loss/task checks through the CLI;
the hand-written SGD update against torch's; the regression fit plot."""

from __future__ import annotations

import csv
import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.model_summary import ModelSummary

from callbacks import FitPlot
from cli import cli_main
from lightning_modules import Classifier, Regressor
from tests.conftest import CONFIGS, EXPERIMENT_CONFIGS, ROOT

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def read_predictions(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("config", EXPERIMENT_CONFIGS, ids=lambda p: p.stem)
def test_fit_then_predict(config: Path, data_args) -> None:
    cli = cli_main(
        [
            "fit",
            "--config",
            str(config),
            *data_args(config),
            *QUIET,
            "--trainer.fast_dev_run",
            "true",
            "--test_after_fit",
            "false",
        ]
    )
    model = cli.model
    # the model summary knows every model's input and output sizes (example_input_array)
    summary = ModelSummary(model, max_depth=1)
    net = summary.layer_names.index("net")
    assert "?" not in (str(summary.in_sizes[net]), str(summary.out_sizes[net]))

    cli.trainer.predict(model, datamodule=cli.datamodule)
    writer = next(c for c in cli.trainer.callbacks if hasattr(c, "write_on_epoch_end"))
    rows = read_predictions(writer.path)
    assert rows and all(row["target"] != "" for row in rows)
    if isinstance(model, Classifier):
        k = min(writer.topk, model.num_classes)
        for row in rows:
            classes = [int(c) for c in row["topk_classes"].split("|")]
            probs = [float(p) for p in row["topk_probs"].split("|")]
            assert len(classes) == len(probs) == k
            assert int(row["pred"]) == classes[0]
            assert float(row["prob"]) == pytest.approx(probs[0], rel=1e-5)  # CSV lists: 6 digits
            assert probs == sorted(probs, reverse=True)
            assert 0 <= probs[-1] and sum(probs) <= 1 + 1e-5
            assert all(0 <= c < model.num_classes for c in classes)
    else:
        assert isinstance(model, Regressor)
        assert all(torch.isfinite(torch.tensor(float(row["pred"]))) for row in rows)


def test_predictions_as_json(tmp_path: Path) -> None:
    config = CONFIGS / "logistic_regression.yaml"
    output = tmp_path / "out" / "predictions.json"
    cli = cli_main(
        [
            "predict",
            "--config",
            str(config),
            *QUIET,
            "--predictions.format",
            "json",
            "--predictions.output",
            str(output),
        ]
    )
    rows = json.loads(output.read_text())
    assert len(rows) == cli.datamodule.num_test
    assert set(rows[0]) == {"index", "pred", "prob", "topk_classes", "topk_probs", "target"}
    assert len(rows[0]["topk_probs"]) == 2 and sum(rows[0]["topk_probs"]) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("config", "flags", "message"),
    [
        (
            "mnist_cnn",
            ["--model.loss", "huber"],
            "HuberLoss is for regression targets, but the data is a multiclass task. "
            "Losses that fit a multiclass task: cross_entropy",
        ),
        (
            "mnist_cnn",
            ["--model.loss", "label_smoothing_ce"],
            "Unknown loss 'label_smoothing_ce'. Valid names: mse, mae, huber, log_mse, log_cosh, "
            "bce_with_logits, cross_entropy",
        ),
        (
            "polynomial_regression",
            ["--model.loss", "cross_entropy"],
            "is for multiclass targets, but the data is a regression task",
        ),
        ("logistic_regression", ["--model.loss", "torch.nn.MSELoss"], "the data is a binary task"),
        ("polynomial_regression", ["--model.loss", "log_mse"], "needs targets >= 0"),
        ("mnist_cnn", ["--model.loss", "torch.nn.SmoothL1Loss"], "is for regression targets"),
    ],
    ids=[
        "huber-on-multiclass",
        "typo",
        "ce-on-regression",
        "mse-on-binary",
        "log-mse-negative",
        "smooth-l1-on-multiclass",
    ],
)
def test_misconfigurations_fail_before_training(
    config: str, flags: list[str], message: str, data_args, tmp_path: Path
) -> None:
    path = CONFIGS / f"{config}.yaml"
    with pytest.raises(ValueError, match=re.escape(message)):
        cli_main(["fit", "--config", str(path), *data_args(path), *QUIET, *flags])
    assert not list(tmp_path.rglob("*.ckpt"))  # stopped before the first training step


def short_polynomial_fit(config: str, *flags: str):
    return cli_main(
        [
            "fit",
            "--config",
            str(CONFIGS / f"{config}.yaml"),
            *QUIET,
            "--trainer.max_epochs",
            "3",
            "--data.init_args.num_samples",
            "160",
            "--test_after_fit",
            "false",
            *flags,
        ]
    )


def test_hand_written_update_matches_sgd() -> None:
    by_optimizer = short_polynomial_fit("polynomial_regression")
    by_hand = short_polynomial_fit("polynomial_regression_manual")
    assert type(by_hand.trainer.optimizers[0]).__name__ == "PlainSGD"
    assert type(by_optimizer.trainer.optimizers[0]) is torch.optim.SGD
    assert by_hand.trainer.global_step == by_optimizer.trainer.global_step == 3 * 4  # 128 / 32
    start = cli_main(["--config", str(CONFIGS / "polynomial_regression.yaml")], run=False).model
    for (name, hand), (_, sgd), (_, initial) in zip(
        by_hand.model.named_parameters(),
        by_optimizer.model.named_parameters(),
        start.named_parameters(),
        strict=True,
    ):
        torch.testing.assert_close(hand, sgd, rtol=1e-6, atol=1e-7, msg=name)
        assert not torch.allclose(hand, initial), f"{name} never moved: the comparison is empty"
    assert Path(by_hand.trainer.checkpoint_callback.best_model_path).is_file()


class ImageLogger(CSVLogger):
    """A CSV logger that also takes images, as W&B's does."""

    def __init__(self, save_dir: str) -> None:
        super().__init__(save_dir, name="images")
        self.images: list[tuple[str, list[str]]] = []

    def log_image(self, key: str, images: list[str], step: int | None = None, **kwargs) -> None:
        self.images.append((key, images))


def test_fit_plot_and_coefficients(tmp_path: Path) -> None:
    cli = short_polynomial_fit("polynomial_regression", "--trainer.max_epochs", "1")
    plot = next(c for c in cli.trainer.callbacks if isinstance(c, FitPlot))
    assert plot.path is not None and plot.path.parent == Path(cli.trainer.log_dir)
    assert plot.path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = cli.trainer.callback_metrics
    assert {"fit/bias", "fit/w1", "fit/w2", "fit/w3", "fit/coef_error"} <= set(metrics)
    weight, bias = cli.model.net.linear.weight[0], cli.model.net.linear.bias[0]  # a linear model:
    assert float(metrics["fit/bias"]) == pytest.approx(float(bias), abs=1e-4)  # its own weights
    assert float(metrics["fit/w3"]) == pytest.approx(float(weight[2]), abs=1e-4)
    true = torch.tensor([0.9, 0.5, 3.0, 2.4])
    fitted = torch.tensor([float(metrics[k]) for k in ("fit/bias", "fit/w1", "fit/w2", "fit/w3")])
    largest = float((fitted - true).abs().max())
    assert float(metrics["fit/coef_error"]) == pytest.approx(largest, abs=1e-5)

    logger = ImageLogger(str(tmp_path / "logs"))
    cli.trainer.loggers = [logger]
    cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)
    assert [key for key, _ in logger.images] == ["fit/curve"]
    assert Path(logger.images[0][1][0]).is_file()


def test_inspect_script_prints_every_parameter(capsys: pytest.CaptureFixture[str]) -> None:
    path = ROOT / "scripts" / "inspect_model.py"
    spec = importlib.util.spec_from_file_location("inspect_model", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(["--config", str(CONFIGS / "mnist_softmax.yaml")])
    out = capsys.readouterr().out
    assert "net.linear.weight" in out and "[10, 784]" in out and "7,840" in out
    assert "7,850" in out  # the total: weights and biases
    model = cli_main(["--config", str(CONFIGS / "mnist_rnn.yaml")], run=False).model
    rows = script.parameter_rows(model)
    assert [name for name, *_ in rows] == [name for name, _ in model.named_parameters()]
    assert sum(count for _, _, count, _ in rows) == sum(p.numel() for p in model.parameters())


def test_predict_options_apply_to_a_checkpoint(tmp_path: Path) -> None:
    # Lightning rebuilds the model from a checkpoint's hyperparameters; how predictions are
    # written (top-k, format) belongs to the writer, so it still follows the command line.
    config = CONFIGS / "logistic_regression.yaml"
    fit = cli_main(
        ["fit", "--config", str(config), *QUIET, "--trainer.max_epochs", "1", "--test_after_fit", "false"]
    )
    ckpt = fit.trainer.checkpoint_callback.best_model_path
    output = tmp_path / "top1.json"
    cli_main(
        [
            "predict",
            "--config",
            str(config),
            *QUIET,
            "--ckpt_path",
            ckpt,
            "--predictions.topk",
            "1",
            "--predictions.format",
            "json",
            "--predictions.output",
            str(output),
        ]
    )
    rows = json.loads(output.read_text())
    assert all(len(row["topk_classes"]) == len(row["topk_probs"]) == 1 for row in rows)
    assert all(row["topk_classes"][0] == row["pred"] for row in rows)
