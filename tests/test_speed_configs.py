"""The fast recipes: exact seeded repeats, the cheap step logging, flip TTA, the speed-run net."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from cli import cli_main
from lightning_modules import CNN, Classifier
from speed import SpeedrunNet
from speed.speedrun import ScaledBias, patch_whitening
from tests.conftest import CONFIGS

FAST_CONFIGS = [CONFIGS / "mnist_fast.yaml", CONFIGS / "cifar10_fast.yaml"]
QUIET = ["--trainer.enable_model_summary", "false", "--test_after_fit", "false"]


@pytest.mark.parametrize("config", FAST_CONFIGS, ids=lambda p: p.stem)
def test_seeded_runs_repeat_exactly(config: Path, data_args) -> None:
    """Two runs with one seed end with the same weights, bit for bit (device-resident data,
    augmentation, whitening from a data batch, bf16 autocast on the CPU)."""
    args = [
        "fit",
        "--config",
        str(config),
        *data_args(config),
        *QUIET,
        "--trainer.max_epochs",
        "2",
        "--data.init_args.batch_size",
        "32",
    ]
    runs = [cli_main(args).model for _ in range(2)]
    first, second = (run.state_dict() for run in runs)
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key
    if isinstance(runs[0].net, SpeedrunNet):
        assert bool(runs[0].net.whiten.fitted)  # Classifier handed it a training batch


def logged_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize(("every", "train_metrics"), [(1, "true"), (2, "true"), (1, "false")])
def test_step_loss_logged_where_the_logger_reads_it(every: int, train_metrics: str, mnist_dir: Path) -> None:
    """``train/loss_step`` lands on the steps of ``log_every_n_steps``, and ``train/loss_epoch``
    is the batch-size-weighted mean of every step's loss (fake MNIST: 118 training samples, so
    batches of 32, 32, 32 and 22). Training accuracy is there unless ``log_train_metrics`` is
    false (mnist_fast's own setting); validation accuracy always is."""
    cli = cli_main(
        [
            "fit",
            "--config",
            str(CONFIGS / "mnist_fast.yaml"),
            *QUIET,
            "--data.init_args.data_dir",
            str(mnist_dir),
            "--data.init_args.batch_size",
            "32",
            "--trainer.log_every_n_steps",
            str(every),
            "--model.init_args.log_train_metrics",
            train_metrics,
        ]
    )
    rows = logged_rows(Path(cli.trainer.log_dir))
    names = {"train/loss_step", "train/loss_epoch", "val/loss", "val/acc"}
    assert names <= set(rows[0])
    assert ("train/acc" in rows[0]) == (train_metrics == "true")
    steps = {int(r["step"]): float(r["train/loss_step"]) for r in rows if r["train/loss_step"]}
    assert sorted(steps) == [s for s in range(4) if (s + 1) % every == 0]
    epoch = [float(r["train/loss_epoch"]) for r in rows if r["train/loss_epoch"]]
    assert len(epoch) == 1
    if every == 1:
        sizes = [32, 32, 32, 22]
        mean = sum(steps[s] * n for s, n in enumerate(sizes)) / sum(sizes)
        assert epoch[0] == pytest.approx(mean, rel=1e-5)
    assert "train/loss" in cli.trainer.callback_metrics


def test_tta_flip_averages_the_mirrored_logits() -> None:
    torch.manual_seed(0)
    net = lambda num_outputs: CNN(num_outputs, channels=[4], hidden=8)  # noqa: E731
    model = Classifier(net, num_classes=3, input_shape=(3, 8, 8), tta_flip=True)
    x = torch.randn(5, 3, 8, 8)
    with torch.no_grad():
        model.eval()
        expected = (model.net(x) + model.net(x.flip(-1))) / 2
        torch.testing.assert_close(model(x), expected)
        assert not torch.allclose(model(x), model.net(x))
        model.train()
        torch.testing.assert_close(model(x), model.net(x))


def correlated_images(n: int = 64) -> torch.Tensor:
    """Images whose channels and neighbouring pixels are strongly correlated."""
    base = torch.randn(n, 1, 16, 16).cumsum(-1).cumsum(-2) / 8
    noise = 0.1 * torch.randn(n, 2, 16, 16)
    return torch.cat([base, 0.5 * base + noise[:, :1], -base + noise[:, 1:]], dim=1)


def test_whitening_filters_decorrelate_patches() -> None:
    x = correlated_images()
    filters = patch_whitening(x, kernel_size=2, filters=24, eps=1e-6)  # (24, 3, 2, 2)
    out = torch.nn.functional.conv2d(x, filters[:12])  # the eigen-filters, not their negatives
    moment = out.permute(1, 0, 2, 3).flatten(1)
    moment = moment @ moment.T / moment.shape[1]  # (12, 12)
    torch.testing.assert_close(moment, torch.eye(12), atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="at most 24"):
        patch_whitening(x, kernel_size=2, filters=26, eps=1e-6)
    flat = torch.cat([x[:, :1]] * 3, dim=1)  # channels repeated: a rank-deficient moment
    assert torch.isfinite(patch_whitening(flat, kernel_size=2, filters=24, eps=5e-4)).all()


def test_speedrun_net_fits_once_and_keeps_its_filters() -> None:
    net = SpeedrunNet(10, widths=(8, 16, 16))
    x = correlated_images(8)
    assert net(x).shape == (8, 10)  # lazy whitening layer materialized by the first batch
    assert "whiten.weight" not in dict(net.named_parameters())  # frozen: a buffer
    net.init_from_data(x)
    fitted = net.whiten.weight.clone()
    net.init_from_data(torch.randn_like(x))  # later batches change nothing
    assert torch.equal(net.whiten.weight, fitted)
    restored = SpeedrunNet(10, widths=(8, 16, 16))
    restored.load_state_dict(net.state_dict())
    assert bool(restored.whiten.fitted) and torch.equal(restored.whiten.weight, fitted)
    net.eval(), restored.eval()
    torch.testing.assert_close(restored(x), net(x))


def test_scaled_bias_learns_lr_scale_times_faster() -> None:
    plain, scaled = ScaledBias(4), ScaledBias(4, lr_scale=64.0)
    x = torch.zeros(2, 4, 3, 3)
    for layer in (plain, scaled):
        optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
        layer(x).sum().backward()
        optimizer.step()
    step = lambda layer: layer(x)[0, :, 0, 0]  # noqa: E731  (the bias in effect, per channel)
    torch.testing.assert_close(step(scaled), 64 * step(plain))
