"""Exports the network's weights as a plain ``state_dict``: ``torch.save(net.state_dict())``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from callbacks.atomic import atomic_path

NET_PREFIX = "net."  # TaskModule keeps its network in ``self.net``


def net_state_dict(module_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The network's entries of a LightningModule ``state_dict``, keyed as the bare network's."""
    state = {k[len(NET_PREFIX):]: v for k, v in module_state.items() if k.startswith(NET_PREFIX)}
    if not state:
        raise ValueError(
            f"No '{NET_PREFIX}*' weights in this state_dict (keys start with "
            f"{sorted({k.split('.')[0] for k in module_state})}): export needs a model that keeps "
            "its network in `self.net`, as every TaskModule does."
        )
    return state


def checkpoint_net_state_dict(ckpt_path: str | Path) -> dict[str, torch.Tensor]:
    """The network's weights in a Lightning checkpoint, read with ``weights_only=True``."""
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    return net_state_dict(checkpoint["state_dict"])


def save_state_dict(state: Mapping[str, torch.Tensor], path: str | Path) -> Path:
    """``torch.save`` to a temporary name, then rename: readers never see a half-written file."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({k: v.detach().cpu() for k, v in state.items()}, tmp)
    return path


class StateDictExport(Callback):
    """After fit, writes the network's ``state_dict`` to ``<run dir>/<filename>``: the weights of
    the best checkpoint when there is one, else the final weights. Load it into the bare network
    with ``net.load_state_dict(torch.load(path, weights_only=True))``.

    Args:
        filename: file name in the run directory; null turns the export off.
    """

    def __init__(self, filename: str | None = "model.pth") -> None:
        self.filename = filename
        self.path: Path | None = None

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.filename is None or trainer.fast_dev_run:
            return
        run_dir = trainer.log_dir or trainer.default_root_dir  # collective under DDP: all ranks
        if not trainer.is_global_zero:
            return
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        state = checkpoint_net_state_dict(best) if best else net_state_dict(pl_module.state_dict())
        self.path = save_state_dict(state, Path(run_dir) / self.filename)
