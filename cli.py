"""Command line: ``python cli.py {fit,validate,test,predict} --config configs/<name>.yaml``.

Any LightningModule in ``lightning_modules`` and LightningDataModule in ``datamodules`` is chosen
by class name; the datamodule's facts (task, classes, input shape) are linked into the model.
After ``fit`` the best checkpoint is validated and tested and ``metrics.json`` is written next to
the run's resolved ``config.yaml``.
"""

from __future__ import annotations

import importlib
from typing import Any

import lightning as L
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from rich.console import Console

import datamodules  # noqa: F401  (registers the datamodules for selection by name)
import lightning_modules  # noqa: F401  (registers the models and networks)
from callbacks import BestCheckpoint, EpochDropoutReset, PredictionWriter, RunConfig, StateDictExport
from runs.files import write_json
from runs.folders import METRICS_FILE, prepare_run, run_dir
from runs.loggers import finish_wandb_run, prepare_wandb_loggers

DESCRIPTION = (
    "Train, evaluate and predict with any model of lightning_modules/ on any datamodule of "
    "datamodules/. Start from a config: python cli.py fit --config configs/mnist_cnn.yaml. "
    "See 'python cli.py fit --help' for every option, including the known models (--model) and "
    "datamodules (--data)."
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


class TemplateCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(BestCheckpoint, "checkpoint")
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
        for fact in ("task", "num_classes", "input_shape"):
            parser.link_arguments(f"data.{fact}", f"model.init_args.{fact}", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        # The checkpoint ranks by the model's own quality metric unless told otherwise.
        metric, mode = import_class(config.model.class_path).monitor
        if config.checkpoint.monitor is None:
            config.checkpoint.monitor, config.checkpoint.mode = metric, config.checkpoint.mode or mode
        # The default progress bar and summary give way to enable_progress_bar/enable_model_summary
        # false, instead of Lightning refusing the combination.
        trainer = config.trainer
        dropped = {PROGRESS_BAR: trainer.enable_progress_bar, MODEL_SUMMARY: trainer.enable_model_summary}
        trainer.callbacks = [
            c
            for c in trainer.callbacks or []
            if dropped.get(getattr(c, "class_path", None), True) is not False
        ]
        if self.subcommand == "fit":  # the run folder, resuming, and the W&B run it continues
            config.ckpt_path = prepare_run(trainer, config.ckpt_path, config.run_id, config.run_group)
        prepare_wandb_loggers(trainer)  # an absolute W&B folder; offline when there is no API key

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ValueError as err:
            # jsonargparse reports a constructor's ValueError (a loss that does not fit the task,
            # an unknown name, ...) inside a union-type error that dumps the whole config; the
            # constructor's own message is the one that says what to change, so raise that.
            cause = err
            while cause.__cause__ is not None:
                cause = cause.__cause__
            if cause is err:
                raise
            raise cause from None

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
            L.LightningModule,
            L.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            seed_everything_default=42,
            trainer_defaults=TRAINER_DEFAULTS,
            auto_configure_optimizers=False,
            parser_kwargs={"description": DESCRIPTION},
            args=args,
            run=run,
            save_config_callback=RunConfig,  # never over an earlier run's config; config to W&B
        )
    except BaseException:
        finish_wandb_run(exit_code=1)
        raise
    if run:
        finish_wandb_run()  # a later run in this process (notebook, tests) starts its own W&B run
    return cli


if __name__ == "__main__":
    cli_main()
