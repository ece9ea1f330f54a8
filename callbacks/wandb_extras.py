"""W&B beyond metrics: parameter counts, gradient histograms, offline mode without an account."""

from __future__ import annotations

import netrc
import os
import sys
from typing import Literal
from urllib.parse import urlparse

import lightning as L
from jsonargparse import Namespace
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from callbacks.run_dir import logger_class, logger_entries


def wandb_loggers(trainer: L.Trainer) -> list[WandbLogger]:
    return [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]


def parameter_counts(module: nn.Module) -> dict[str, int]:
    """Total, trainable and frozen parameters, and the total of each direct child (``net``, ...)."""
    counts = {
        "total": sum(p.numel() for p in module.parameters()),
        "trainable": sum(p.numel() for p in module.parameters() if p.requires_grad),
    }
    counts["frozen"] = counts["total"] - counts["trainable"]
    for name, child in module.named_children():
        size = sum(p.numel() for p in child.parameters())
        if size:
            counts[name] = size
    return counts


class WandbExtras(Callback):
    """Sends the model's parameter counts to W&B (config ``params``, a column to sort runs by) and,
    on request, gradient or weight histograms (``wandb.watch``). Does nothing without a W&B
    logger, and only rank 0 talks to W&B. Checkpoints as artifacts are WandbLogger's own
    ``log_model`` option (see configs/logger/wandb.yaml).

    Args:
        watch: histograms to log: "gradients", "parameters", "all", or None for none.
        watch_log_freq: training steps between two histograms.
    """

    def __init__(
        self,
        watch: Literal["gradients", "parameters", "all"] | None = None,
        watch_log_freq: int = 100,
    ) -> None:
        self.watch = watch
        self.watch_log_freq = watch_log_freq

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        for logger in wandb_loggers(trainer):
            logger.log_hyperparams({"params": parameter_counts(pl_module)})
            if self.watch is not None:
                logger.watch(pl_module, log=self.watch, log_freq=self.watch_log_freq)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or self.watch is None:
            return
        for logger in wandb_loggers(trainer):
            logger.experiment.unwatch(pl_module)


def wandb_credentials_found() -> bool:
    """An API key in the environment or in the netrc file that ``wandb login`` writes."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def prepare_wandb_loggers(trainer_config: Namespace) -> None:
    """Before the W&B loggers of a trainer config are built: make their folder absolute, and
    switch them to offline mode when no mode was chosen and there is no API key (instead of
    failing, or prompting for a key, when the run starts).

    The folder: W&B's service process outlives a run and resolves a relative folder against its
    own working directory, so a later run in a process that changed directory would write its
    history somewhere else.
    """
    for entry in logger_entries(trainer_config):
        if not issubclass(logger_class(entry), WandbLogger):
            continue
        args = entry.init_args
        args.save_dir = os.path.abspath(args.get("save_dir") or args.get("dir") or ".")
        if args.get("offline") or args.get("mode") or os.environ.get("WANDB_MODE"):
            continue  # the user chose
        if wandb_credentials_found():
            continue
        args.mode = "offline"
        wandb_dir = os.path.join(args.save_dir, "wandb")
        rank_zero_info(
            "W&B: no API key found (WANDB_API_KEY or `wandb login`): logging offline to "
            f"{wandb_dir}. Upload later with `wandb sync {wandb_dir}/offline-run-<time>-<id>` "
            "(printed at the end)."
        )


def finish_wandb_run(exit_code: int = 0) -> None:
    """End this process's W&B run, if it has one, and wait until W&B has written it out.

    The next run started in the same process (a notebook, tests) then gets its own W&B run
    instead of reusing this one, and the offline run file is complete when this returns:
    ``run.finish()`` alone leaves its last records to W&B's background service. W&B prints the
    ``wandb sync`` command of an offline run here.
    """
    wandb = sys.modules.get("wandb")  # not imported: no run was ever started
    if wandb is not None and wandb.run is not None:
        wandb.run.finish(exit_code=exit_code)
        wandb.teardown(exit_code=exit_code)
