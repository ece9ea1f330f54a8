"""Command line: ``python cli.py {fit,validate,test,predict} --config configs/<name>.yaml``.

Any LightningModule in ``lightning_modules`` and LightningDataModule in ``datamodules`` is chosen
by class name; the datamodule's facts (task, classes, input shape) are linked into the model.
After ``fit`` the best checkpoint is validated and tested and ``metrics.json`` is written next to
the run's resolved ``config.yaml``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

from jsonargparse import Namespace
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info
from rich.console import Console

import console
import datamodules  # noqa: F401  (registers the datamodules for selection by name)
import lightning_modules  # noqa: F401  (registers the models and networks)
import user_errors
from callbacks import (
    DivergenceCheck,
    EarlyStopping,
    EpochDropoutReset,
    GracefulStop,
    PredictionWriter,
    RunCheckpoint,
    RunConfig,
    StateDictExport,
)
from datamodules import SplitDataModule
from lightning_modules import TaskModule
from runs.checkpoint_io import AtomicCheckpointIO, read_checkpoint
from runs.files import write_json
from runs.folders import METRICS_FILE, evaluate_in_run_folder, move_under_root_dir, prepare_run, run_dir
from runs.lock import release_run_locks
from runs.loggers import finish_wandb_run, prepare_tensorboard_loggers, prepare_wandb_loggers

DESCRIPTION = (
    "Train, evaluate and predict with any model of lightning_modules/ on any datamodule of "
    "datamodules/. Start from a config: python cli.py fit --config configs/mnist_cnn.yaml; "
    "every option: python cli.py fit --help."
)
# A local CSV logger: runs need no account and no network.
TRAINER_DEFAULTS = {
    "logger": {
        "class_path": "lightning.pytorch.loggers.CSVLogger",
        "init_args": {"save_dir": "logs", "name": "default"},
    },
}
# Defaults of ``trainer.callbacks`` (a config's own list replaces them; ``+=`` appends).
PROGRESS_BAR = "lightning.pytorch.callbacks.RichProgressBar"
MODEL_SUMMARY = "lightning.pytorch.callbacks.RichModelSummary"
DEFAULT_CALLBACKS = [
    {"class_path": PROGRESS_BAR},
    {"class_path": MODEL_SUMMARY, "init_args": {"max_depth": 2}},  # with input/output sizes
]


def import_class(class_path: str) -> type:
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def check_checkpoint(path: str, model: Any) -> None:
    """Before Lightning loads ``--ckpt_path``: what is wrong with it, in one line; and, since
    Lightning then rebuilds the checkpoint's own model, say so when it is not the config's."""
    checkpoint, problem = read_checkpoint(path)
    if problem:
        raise user_errors.UserError(f"--ckpt_path {path} is {problem}.")
    hparams = checkpoint.get("hyper_parameters") or {}
    saved = [hparams.get("_class_path", "?"), (hparams.get("net") or {}).get("class_path", "?")]
    given = [model.class_path, str(model.init_args.get("net", {}).get("class_path", "?"))]
    names = [[path.rsplit(".", 1)[-1] for path in paths] for paths in (saved, given)]
    if names[0] != names[1]:
        held, configured = " with a ".join(names[0]), " with a ".join(names[1])
        rank_zero_info(f"--ckpt_path holds a {held} network: that model runs, not {configured}.")


class TemplateCLI(LightningCLI):
    def setup_parser(self, add_subcommands: bool, main_kwargs: dict, subparser_kwargs: dict) -> None:
        for name, text in console.SUBCOMMANDS.items():
            subparser_kwargs.setdefault(name, {}).update(description=text, epilog=console.EPILOG)
        super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)
        if add_subcommands:  # the summaries `cli.py --help` lists (argparse keeps them privately)
            for choice in self.parser._subcommands_action._choices_actions:
                choice.help = console.SUBCOMMANDS.get(choice.dest, choice.help)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        # the command is recorded in the run folder: a requeued SLURM job finds its run by it
        self.command = [str(a) for a in (sys.argv[1:] if args is None else args)]
        self.save_config_kwargs["command"] = self.command
        try:
            super().parse_arguments(parser, args)
        except argparse.ArgumentError as err:  # a mistake in a flag or a config file
            sub = next((a for a in self.command if a in self.subcommands()), None)
            sub_parser = getattr(self, "_subcommand_parsers", {}).get(sub, parser)  # for suggestions
            raise user_errors.UserError(
                user_errors.describe_parse_error(err, sub_parser, self.command)
            ) from err
        files = [str(path) for path in self.config.get("config") or []]
        config = self.config[self.config.subcommand] if self.config.get("subcommand") else self.config
        files += [str(path) for path in config.get("config") or []]
        for note in console.swapped_classes(self.command, files):
            rank_zero_info(note)
        if config.get("ckpt_path") not in (None, "last", "best", "hpc"):
            check_checkpoint(config.ckpt_path, config.model)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
        parser.add_lightning_class_args(GracefulStop, "signals")  # after the checkpoint: it saves last
        parser.add_lightning_class_args(DivergenceCheck, "divergence")
        parser.add_lightning_class_args(PredictionWriter, "predictions")
        parser.add_lightning_class_args(EpochDropoutReset, "epoch_dropout")
        parser.add_lightning_class_args(StateDictExport, "export")
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="After fit: validate and test the best checkpoint and write metrics.json.",
        )
        parser.add_argument(
            "--run_id",
            type=str | None,
            default=None,
            help="fit: name of the run folder <save_dir>/<name>/<run_id> of the first logger "
            "(default: version_N; slurm-<job id> in a SLURM job). Running again with the same id "
            "resumes: training continues from the folder's newest checkpoint and W&B from its run.",
        )
        parser.add_argument(
            "--run_group",
            type=str | None,
            default=None,
            help="fit: W&B group of the run (the folds of a k-fold run share one).",
        )
        parser.set_defaults({"trainer.callbacks": DEFAULT_CALLBACKS})
        for key, group in parser.groups.items():
            group.title = console.GROUP_TITLES.get(key, group.title)
        for fact in ("task", "num_classes", "input_shape"):
            parser.link_arguments(f"data.{fact}", f"model.init_args.{fact}", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        # The checkpoint ranks by the model's own quality metric unless told otherwise.
        metric, mode = import_class(config.model.class_path).monitor
        if config.checkpoint.monitor is None:
            config.checkpoint.monitor, config.checkpoint.mode = metric, config.checkpoint.mode or mode
        for callback in config.trainer.callbacks or []:  # early stopping likewise
            stopping = issubclass(import_class(callback.class_path), EarlyStopping)
            if stopping and callback.init_args.monitor is None:
                callback.init_args.monitor = metric
                callback.init_args.mode = callback.init_args.mode or mode
        # The default progress bar and summary give way to enable_progress_bar/enable_model_summary
        # false, instead of Lightning refusing the combination.
        trainer = config.trainer
        dropped = {PROGRESS_BAR: trainer.enable_progress_bar, MODEL_SUMMARY: trainer.enable_model_summary}
        trainer.callbacks = [
            c
            for c in trainer.callbacks or []
            if dropped.get(getattr(c, "class_path", None), True) is not False
        ]
        # checkpoints written whole or not at all, whatever other plugins a preset brings
        plugins = trainer.plugins if isinstance(trainer.plugins, list) else [trainer.plugins]
        if not any("CheckpointIO" in getattr(p, "class_path", type(p).__name__) for p in plugins if p):
            atomic = Namespace(class_path=f"{AtomicCheckpointIO.__module__}.AtomicCheckpointIO")
            trainer.plugins = [p for p in plugins if p] + [atomic]
        move_under_root_dir(trainer)
        if self.subcommand == "fit":  # the run folder, resuming, and the W&B run it continues
            config.ckpt_path = prepare_run(
                trainer, config.ckpt_path, config.run_id, config.run_group, self.command
            )
        elif self.subcommand is not None:
            evaluate_in_run_folder(trainer, config.ckpt_path, self.subcommand)
        prepare_wandb_loggers(trainer)  # an absolute W&B folder; offline when there is no API key
        prepare_tensorboard_loggers(trainer)  # TensorBoard runs named after the run

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except Exception as err:
            # jsonargparse wraps a constructor's error in one that dumps the whole config: name the
            # key whose class refused its options, with the constructor's own message instead
            config = self.config[self.subcommand] if self.subcommand else self.config
            raise user_errors.constructor_error(err, config)  # noqa: B904 (its cause is set)

    def after_fit(self) -> None:
        if not self.config[self.subcommand].get("test_after_fit", True):
            return
        trainer, model, datamodule = self.trainer, self.model, self.datamodule
        epochs, steps = trainer.current_epoch, trainer.global_step  # before a restore resets them
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        ckpt_path = best or None  # no checkpoint (e.g. fast_dev_run): evaluate the final weights
        metrics: dict[str, Any] = {}
        for run in (trainer.validate, trainer.test):
            for result in run(model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False):
                metrics.update({k: float(v) for k, v in result.items()})
        folder = run_dir(trainer)
        if trainer.is_global_zero and folder is not None:
            checkpoint = trainer.checkpoint_callback
            monitor = {"metric": checkpoint.monitor, "mode": checkpoint.mode} if checkpoint else None
            result = {"metrics": metrics, "monitor": monitor, "checkpoint": best or None}
            result.update(epochs=epochs, global_step=steps)
            path = write_json(folder / METRICS_FILE, result)
            Console().print(
                f"[bold]metrics[/bold] {path}: "
                + ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))
            )


def cli_main(args: list[str] | None = None, run: bool = True) -> TemplateCLI:
    """Parse ``args`` (default: ``sys.argv``) and run the subcommand; with ``run=False`` there is
    no subcommand: the datamodule, model and trainer are built and returned unrun."""
    try:
        cli = TemplateCLI(
            TaskModule,
            SplitDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            seed_everything_default=42,
            trainer_defaults=TRAINER_DEFAULTS,
            auto_configure_optimizers=False,
            parser_class=console.TemplateParser,
            parser_kwargs={"description": DESCRIPTION, "exit_on_error": False, "allow_abbrev": False},
            args=args,
            run=run,
            save_config_callback=RunConfig,  # the run folder's config, lock and clean-up
        )
    except BaseException as err:
        finish_wandb_run(exit_code=err.code if isinstance(err, SystemExit) and err.code else 1)
        raise
    finally:
        release_run_locks()
    if run:
        finish_wandb_run()  # a later run in this process (notebook, tests) starts its own W&B run
    return cli


if __name__ == "__main__":
    console.quiet_and_wide()
    user_errors.main(cli_main)
