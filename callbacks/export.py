"""Exports the trained network as ``model.pth``: its weights and what rebuilds it."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from lightning_modules.weights import network_file
from runs.files import save_torch
from runs.folders import run_dir


class StateDictExport(Callback):
    """After fit, writes ``<run dir>/<filename>``: the network of the best checkpoint when there is
    one, else the final weights, with its class, options and input shape.
    ``lightning_modules.weights.load_network(path)`` rebuilds it; ``torch.load(path)["state_dict"]``
    is the plain ``state_dict``.

    Args:
        filename: file name in the run folder; null turns the export off.
    """

    def __init__(self, filename: str | None = "model.pth") -> None:
        self.filename = filename

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        folder = run_dir(trainer)
        if self.filename is None or folder is None or not trainer.is_global_zero:  # None: dry run
            return
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if best:
            checkpoint = torch.load(best, map_location="cpu", weights_only=True)
        else:
            checkpoint = {"state_dict": pl_module.state_dict(), "hyper_parameters": pl_module.hparams}
        save_torch(network_file(checkpoint), folder / self.filename)
