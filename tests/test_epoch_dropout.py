"""EpochDropout: one mask per epoch from (seed, epoch), reset by a callback, kept by checkpoints."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from callbacks import EpochDropoutReset
from cli import cli_main
from lightning_modules.nets import EpochDropout
from tests.conftest import CONFIGS

P, SEED, PIXELS = 0.5, 3, 784


def reference_keep(epoch: int, shape: tuple[int, ...] = (PIXELS,)) -> torch.Tensor:
    """The keep-pattern a fresh layer draws for ``epoch``: what every run must use then."""
    layer = EpochDropout(P, seed=SEED)
    layer.reset(epoch)
    return layer.mask(torch.Size(shape), torch.device("cpu"), torch.float32) != 0


def test_mask_fixed_within_an_epoch_and_resampled_across() -> None:
    layer = EpochDropout(P, seed=SEED).train()
    x = torch.ones(8, 100)
    first, second = layer(x), layer(2 * x)
    torch.testing.assert_close(second, 2 * first)  # the same units dropped in every batch
    assert torch.equal(first[0], first[-1])  # and for every sample of the batch
    assert set(first.unique().tolist()) == {0.0, 1 / (1 - P)}  # kept units are rescaled
    layer.reset(1)
    assert not torch.equal(layer(x), first)  # a new epoch, a new mask
    layer.reset(0)
    torch.testing.assert_close(layer(x), first)  # a function of (seed, epoch)


def test_identity_in_eval_and_at_zero_probability() -> None:
    x = torch.randn(4, 50)
    assert torch.equal(EpochDropout(P).eval()(x), x)
    assert torch.equal(EpochDropout(0.0).train()(x), x)
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\)"):
        EpochDropout(1.0)


def test_every_rank_draws_the_same_mask() -> None:
    """Ranks differ in their global RNG state; the mask must not depend on it."""
    masks = []
    for rank in range(4):
        torch.manual_seed(1000 + rank)
        torch.rand(rank + 1)  # a different amount of earlier random work on each rank
        layer = EpochDropout(P, seed=SEED).train()
        layer.reset(5)
        masks.append(layer(torch.ones(2, PIXELS))[0] != 0)
    assert all(torch.equal(m, masks[0]) for m in masks)
    assert torch.equal(masks[0], reference_keep(5))


def test_loaded_state_replaces_a_cached_mask() -> None:
    trained = EpochDropout(P, seed=SEED)
    trained.reset(2)
    state = trained.state_dict()
    assert int(state["epoch"]) == 2  # the epoch travels with the weights
    fresh = EpochDropout(P, seed=SEED).train()
    x = torch.ones(1, PIXELS)
    fresh(x)  # caches epoch 0's mask
    fresh.load_state_dict(state)
    assert torch.equal(fresh(x)[0] != 0, reference_keep(2))


class MaskProbe(Callback):
    """Records which units the model's EpochDropout keeps in every training batch."""

    def __init__(self, stale_epoch: int | None = None) -> None:
        self.stale_epoch = stale_epoch  # set the layer to this epoch after the sanity check
        self.kept: list[tuple[int, torch.Tensor]] = []  # (trainer epoch, keep pattern)
        self.epoch = -1

    @staticmethod
    def layer(pl_module: L.LightningModule) -> EpochDropout:
        (layer,) = [m for m in pl_module.modules() if isinstance(m, EpochDropout)]
        return layer

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        def record(module: EpochDropout, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
            if module.training:
                self.kept.append((self.epoch, (output[0] != 0).cpu()))

        self.layer(pl_module).register_forward_hook(record)

    def on_sanity_check_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.stale_epoch is not None:
            self.layer(pl_module).reset(self.stale_epoch)

    def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
        self.epoch = trainer.current_epoch


def fit(mnist_dir: Path, probe: MaskProbe, max_epochs: int, ckpt_path: str | None = None):
    cli = cli_main(
        [
            "--config",
            str(CONFIGS / "mnist_softmax.yaml"),
            "--data.data_dir",
            str(mnist_dir),
            "--data.batch_size",
            "32",
            "--trainer.max_epochs",
            str(max_epochs),
            "--trainer.num_sanity_val_steps",
            "1",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.enable_model_summary",
            "false",
            "--export.filename",
            "null",
            "--model.init_args.net.init_args.epoch_dropout",
            str(P),
            "--model.init_args.net.init_args.seed",
            str(SEED),
            "--model.init_args.scheduler",
            "null",  # a one-cycle schedule cannot be extended on resume
        ],
        run=False,
    )
    assert any(isinstance(c, EpochDropoutReset) for c in cli.trainer.callbacks)  # every run has it
    cli.trainer.callbacks.append(probe)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path)
    return cli


def test_callback_resets_every_epoch_from_the_first(mnist_dir: Path) -> None:
    probe = MaskProbe(stale_epoch=7)  # a stale mask left over when training starts
    fit(mnist_dir, probe, max_epochs=3)
    assert sorted({epoch for epoch, _ in probe.kept}) == [0, 1, 2]
    assert len(probe.kept) > 3 * 2  # several batches per epoch
    for epoch, keep in probe.kept:
        assert torch.equal(keep, reference_keep(epoch)), f"epoch {epoch} used another epoch's mask"
    assert not torch.equal(reference_keep(0), reference_keep(1))  # the comparison has teeth


def test_resumed_run_continues_with_the_same_masks(mnist_dir: Path) -> None:
    first = fit(mnist_dir, MaskProbe(), max_epochs=1)
    last = Path(first.trainer.checkpoint_callback.last_model_path)
    state = torch.load(last, weights_only=True)["state_dict"]
    assert int(state["net.dropout.epoch"]) == 0  # the mask's state is in the checkpoint

    probe = MaskProbe()
    resumed = fit(mnist_dir, probe, max_epochs=3, ckpt_path=str(last))
    assert resumed.trainer.current_epoch == 3
    assert sorted({epoch for epoch, _ in probe.kept}) == [1, 2]  # continued, not restarted
    for epoch, keep in probe.kept:
        assert torch.equal(keep, reference_keep(epoch))
