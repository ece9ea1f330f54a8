"""Logger set-up before the Trainer exists, and the end of a run's W&B run."""

from __future__ import annotations

import os
import sys
from typing import Any

from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_info

from runs.folders import logger_class, logger_specs


def wandb_has_credentials() -> bool:
    """Whether W&B itself finds a key (environment, settings files, or what ``wandb login``
    wrote), asked without a prompt and without contacting the server: the public
    ``wandb.login`` ends by asking the server whose key it is (to print "logged in as"), which
    starts W&B's service and waits on the network, so its silent form is called where it exists."""
    import wandb

    try:
        from wandb.sdk.wandb_login import _login

        return bool(_login(prompt=False, verify=False, update_api_key=False, _silent=True)[0])
    except (ImportError, TypeError):  # a W&B release without it
        return bool(wandb.login(prompt=False, verify=False))


def prepare_wandb_loggers(trainer_config: Any) -> None:
    """Before the W&B loggers of a trainer config are built: make their folder absolute, and
    switch them to offline mode when no mode was chosen and W&B has no key (instead of failing,
    or prompting for a key, when the run starts).

    The folder: W&B's service process outlives a run and resolves a relative folder against its
    own working directory, so a later run in a process that changed directory would write its
    history somewhere else.
    """
    for spec in logger_specs(trainer_config):
        if not issubclass(logger_class(spec), WandbLogger):
            continue
        args = spec.init_args
        args.save_dir = os.path.abspath(args.get("save_dir") or args.get("dir") or ".")
        if args.get("offline") or args.get("mode") or os.environ.get("WANDB_MODE"):
            continue  # the user chose
        if wandb_has_credentials():
            continue
        args.mode = "offline"
        wandb_dir = os.path.join(args.save_dir, "wandb")
        rank_zero_info(
            "W&B: no API key found (WANDB_API_KEY or `wandb login`): logging offline to "
            f"{wandb_dir}. Upload later with `wandb sync {wandb_dir}/offline-run-<time>-<id>` "
            "(printed at the end)."
        )


def prepare_tensorboard_loggers(trainer_config: Any) -> None:
    """A TensorBoard logger after the first logger, left without a ``name``, follows the run: it
    takes the first logger's name, and its version when the run is named (``--run_id``, SLURM),
    so a resumed run keeps writing into the same TensorBoard run (configs/logger/tensorboard.yaml)."""
    specs = logger_specs(trainer_config)
    for spec in specs[1:]:
        if issubclass(logger_class(spec), TensorBoardLogger) and spec.init_args.get("name") is None:
            first = specs[0].get("init_args") or {}
            spec.init_args.name = first.get("name")
            if spec.init_args.get("version") is None:
                spec.init_args.version = first.get("version")


def finish_wandb_run(exit_code: int = 0) -> None:
    """End this process's W&B run, if it started one, and wait until W&B has written it out.

    WandbLogger leaves its run open when fit ends, so a later run in the same process (a notebook,
    the tests) would continue it; W&B prints the ``wandb sync`` command of an offline run here.
    """
    wandb = sys.modules.get("wandb")  # not imported: no run was ever started
    if wandb is not None and wandb.run is not None:
        wandb.run.finish(exit_code=exit_code)
