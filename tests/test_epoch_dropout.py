"""EpochDropout: one mask per epoch drawn from (seed, epoch) alone, kept by the state_dict, reset by the
EpochDropoutReset callback at every training epoch start."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from callbacks.epoch_dropout import EpochDropoutReset
from cli import cli_main
from lightning_modules.nets.layers import EpochDropout
from tests.conftest import CONFIGS

P, SEED, WIDTH = 0.5, 3, 256


def reference_keep(epoch: int, p: float = P, seed: int = SEED, width: int = WIDTH) -> torch.Tensor:
    """The units a fresh layer keeps in ``epoch``: what every rank and every resumed run must use then."""
    layer = EpochDropout(p, seed=seed).train()
    layer.reset(epoch)
    return layer(torch.ones(1, width))[0] != 0


def test_mask_fixed_within_an_epoch_and_new_in_the_next() -> None:
    """Every batch and every sample of an epoch drop the same units; reset(epoch) draws another mask."""
    layer = EpochDropout(P, seed=SEED).train()
    x = torch.ones(8, 100)
    first, second = layer(x), layer(2 * x)
    torch.testing.assert_close(second, 2 * first)
    assert all(torch.equal(first[0], row) for row in first)
    assert set(first.unique().tolist()) == {0.0, 1 / (1 - P)}  # kept units are rescaled
    layer.reset(1)
    assert not torch.equal(layer(x), first)
    layer.reset(0)
    torch.testing.assert_close(layer(x), first)


def test_identity_in_eval_and_at_zero_probability() -> None:
    """Evaluation and p = 0 leave the input as it is."""
    x = torch.randn(4, 50)
    assert torch.equal(EpochDropout(P).eval()(x), x)
    assert torch.equal(EpochDropout(0.0).train()(x), x)


def test_mask_depends_on_seed_and_epoch_alone() -> None:
    """Two layers agree whatever the global RNG did before (DDP ranks); another seed gives another mask."""
    masks = []
    for rank in range(3):
        torch.manual_seed(1000 + rank)
        torch.rand(rank + 1)  # a different amount of earlier random work on each rank
        layer = EpochDropout(P, seed=SEED).train()
        layer.reset(5)
        masks.append(layer(torch.ones(2, WIDTH))[0] != 0)
    assert all(torch.equal(m, masks[0]) for m in masks) and torch.equal(masks[0], reference_keep(5))
    assert not torch.equal(reference_keep(5, seed=SEED + 1), masks[0])
    assert abs(float(masks[0].float().mean()) - (1 - P)) < 0.15  # about 1 - p of the units kept


def test_state_dict_keeps_the_epoch() -> None:
    """The epoch travels with the weights, and a loaded state replaces a mask cached before."""
    trained = EpochDropout(P, seed=SEED)
    trained.reset(2)
    state = trained.state_dict()
    fresh = EpochDropout(P, seed=SEED).train()
    x = torch.ones(1, WIDTH)
    fresh(x)  # caches epoch 0's mask
    fresh.load_state_dict(state)
    assert int(fresh.epoch) == 2 and torch.equal(fresh(x)[0] != 0, reference_keep(2))


class MaskProbe(Callback):
    """Records, for every training batch, the trainer's epoch, the layer's epoch and its input and output."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int, torch.Tensor, torch.Tensor]] = []
        self.epoch = -1

    @staticmethod
    def layer(pl_module: L.LightningModule) -> EpochDropout:
        (layer,) = [m for m in pl_module.modules() if isinstance(m, EpochDropout)]
        return layer

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        def record(module: EpochDropout, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
            if module.training:
                self.seen.append((self.epoch, int(module.epoch), inputs[0].detach().cpu(), output.detach().cpu()))

        self.layer(pl_module).register_forward_hook(record)

    def on_sanity_check_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.layer(pl_module).reset(7)  # a stale mask left when training starts

    def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
        self.epoch = trainer.current_epoch


def test_callback_resets_the_mask_at_every_epoch_start(mnist_dir: Path) -> None:
    """In a real fit every training batch of epoch e runs with the layer at epoch e and its (seed, e) mask."""
    probe = MaskProbe()
    cli = cli_main(
        [
            "fit",
            "--config",
            str(CONFIGS / "mnist_cnn.yaml"),
            "--data.data_dir",
            str(mnist_dir),
            "--data.batch_size",
            "32",
            "--trainer.max_epochs",
            "2",
            "--model.net.epoch_dropout",
            "0.2",
            "--model.net.seed",
            str(SEED),
            "--model.net.channels",
            "[4, 8]",
            "--model.net.hidden",
            "32",
            "--test_after_fit",
            "false",
        ],
        callbacks=[probe],
    )
    assert any(isinstance(c, EpochDropoutReset) for c in cli.trainer.callbacks)  # every run has it
    assert sorted({epoch for epoch, *_ in probe.seen}) == [0, 1] and len(probe.seen) == 2 * 4  # 108 / 32
    for epoch, layer_epoch, x, out in probe.seen:
        assert layer_epoch == epoch
        scale = reference_keep(epoch, p=0.2, width=32) / 0.8  # the (seed, epoch) mask, rescaled
        assert torch.equal(out, x * scale), f"epoch {epoch} used another mask"
    assert not torch.equal(reference_keep(0, p=0.2, width=32), reference_keep(1, p=0.2, width=32))
    assert int(MaskProbe.layer(cli.model).epoch) == 1
