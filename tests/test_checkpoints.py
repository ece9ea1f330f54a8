"""For every experiment config: checkpoints that validate/test/predict load under PyTorch's default
``weights_only`` loading, that reload to the same outputs, and plain ``state_dict`` exports."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from cli import cli_main
from lightning_modules.weights import load_network
from tests.conftest import EXPERIMENT_CONFIGS, ROOT

# One short epoch: enough to write the best and the last checkpoint.
SHORT = [
    "--trainer.max_epochs",
    "1",
    "--trainer.limit_train_batches",
    "2",
    "--trainer.limit_val_batches",
    "1",
    "--trainer.limit_test_batches",
    "1",
    "--trainer.limit_predict_batches",
    "1",
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
]


def no_workers(config: Path) -> list[str]:
    """Worker processes only cost start-up time on a few fake samples."""
    init_args = yaml.safe_load(config.read_text())["data"].get("init_args") or {}
    return ["--data.init_args.num_workers", "0"] if "num_workers" in init_args else []


def some_input(model: nn.Module) -> tuple[torch.Tensor, ...]:
    """A random batch shaped like the model's example input (lengths kept as they are)."""
    example = model.example_input_array
    example = example if isinstance(example, tuple) else (example,)
    g = torch.Generator().manual_seed(0)
    return tuple(torch.randn(t.shape, generator=g) if t.is_floating_point() else t for t in example)


def with_layout_of(model: nn.Module, other: nn.Module) -> nn.Module:
    """``other`` with ``model``'s memory layout: channels-last weights (configs/speed) run other
    kernels, which round differently in the last bit."""
    if any(p.dim() == 4 and not p.is_contiguous() for p in model.parameters()):
        other.to(memory_format=torch.channels_last)
    return other


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("config", EXPERIMENT_CONFIGS, ids=lambda p: p.stem)
def test_checkpoints_round_trip(config: Path, data_args, tmp_path: Path) -> None:
    flags = ["--config", str(config), *data_args(config), *no_workers(config), *SHORT]
    fit = cli_main(["fit", *flags, "--test_after_fit", "false"])
    callback = fit.trainer.checkpoint_callback
    best, last = Path(callback.best_model_path), Path(callback.last_model_path)
    assert best.is_file() and last.is_file() and best != last  # best-by-validation and last
    checkpoint = torch.load(best, weights_only=True)  # plain tensors and containers only

    # the CLI subcommands restore the checkpoint (PyTorch's default weights_only loading)
    validated = cli_main(["validate", *flags, "--ckpt_path", str(best)])
    assert torch.isfinite(validated.trainer.callback_metrics["val/loss"])
    tested = cli_main(["test", *flags, "--ckpt_path", str(best)])
    assert torch.isfinite(tested.trainer.callback_metrics["test/loss"])
    predicted = cli_main(["predict", *flags, "--ckpt_path", str(best)])
    writer = next(c for c in predicted.trainer.callbacks if hasattr(c, "write_on_epoch_end"))
    assert writer.path is not None and writer.path.is_file()

    # reloading gives the trained model's outputs (one epoch: the best weights are the final ones)
    model = fit.model.eval()
    reloaded = with_layout_of(model, type(model).load_from_checkpoint(best).eval())
    inputs = some_input(model)
    with torch.no_grad():
        expected = model(*inputs)
        torch.testing.assert_close(reloaded(*inputs), expected, rtol=0, atol=0)
    assert int(checkpoint["global_step"]) == fit.trainer.global_step > 0

    # the exported model.pth rebuilds the bare network, which gives the network's outputs (the
    # model's own may add to them, e.g. test-time flips)
    exported = Path(fit.trainer.log_dir) / "model.pth"
    net = with_layout_of(model, load_network(exported))
    with torch.no_grad():
        torch.testing.assert_close(net(*inputs), model.net(*inputs), rtol=0, atol=0)
    # and the script writes the same file from the checkpoint, without a Trainer
    script = load_script("export_state_dict")
    from_script = script.main([str(best), "-o", str(tmp_path / "net.pth")])
    by_script, by_callback = (torch.load(p, weights_only=True) for p in (from_script, exported))
    assert by_script.keys() == by_callback.keys() and by_script["net"] == by_callback["net"]
    states = by_script["state_dict"], by_callback["state_dict"]
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
