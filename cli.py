"""``python cli.py {fit,validate,test,predict} --config configs/<name>.yaml``: LightningCLI, with the
datamodule's facts linked into the model; ``fit`` trains in a run folder (``run/folders.py``), then
validates and tests the best checkpoint and writes ``metrics.json`` beside ``config.yaml``."""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch import Callback
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import WandbLogger

from callbacks import Checkpoint, EpochDropoutReset, GracefulStop, PredictionWriter, RunConfig
from datamodules.base import SplitDataModule
from lightning_modules.base import TaskModule
from run.errors import UserError, main
from run.files import AtomicCheckpointIO, read_checkpoint, write_text
from run.folders import METRICS_FILE, RunFolder, experiment_dir, logger_specs, run_name

CSV_LOGGER = {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "logs"}}


def check_duplicate_keys(path: str) -> None:
    """YAML keeps the last of a key given twice in one mapping; a config file here may not."""
    try:
        nodes = [yaml.compose(Path(path).read_text())]
    except (OSError, yaml.YAMLError):  # jsonargparse says what is wrong with the file
        return
    while nodes:
        node = nodes.pop()
        if isinstance(node, yaml.MappingNode):
            keys = [key.value for key, _ in node.value]
            twice = [key for key, _ in node.value if keys.count(key.value) > 1]
            if twice:
                raise UserError(
                    f"{path}, line {twice[-1].start_mark.line + 1}: key {twice[-1].value!r} appears twice "
                    "in one mapping (YAML would keep only the last): merge them."
                )
            nodes += [value for _, value in node.value]
        elif isinstance(node, yaml.SequenceNode):
            nodes += node.value


def flat(tree: Any, prefix: str = "") -> dict[str, str]:
    """``{"a.b": value}`` of nested mappings, values as JSON (tuples and lists alike)."""
    if hasattr(tree, "items"):
        return {k: v for key, value in tree.items() for k, v in flat(value, f"{prefix}{key}.").items()}
    return {prefix[:-1]: json.dumps(tree, default=str)}


def check_resume(path: str, config: Any) -> None:
    """A fit resumed from ``path`` trains the model and data it was trained with, or stops here."""
    checkpoint = read_checkpoint(path)
    changed = []
    for part, saved in (("model", "hyper_parameters"), ("data", "datamodule_hyper_parameters")):
        given = flat(config[part].init_args)
        for key, value in flat(checkpoint.get(saved) or {}).items():
            if given.get(key, value) != value:
                changed.append(f"--{part}.{key} {given[key]} (the checkpoint's: {value})")
    if changed:
        raise UserError(
            f"{path} was trained with other options than these:\n"
            + "\n".join(changed[:4])
            + "\nResume with the checkpoint's options, or start a new run from its weights: "
            f"--model.init_weights {path}"
        )


class TemplateCLI(LightningCLI):
    def __init__(self, *args: Any, runs: list[RunFolder], **kwargs: Any) -> None:
        self.runs = runs  # the run folders this command opened, released by cli_main
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(Checkpoint, "checkpoint")
        parser.add_lightning_class_args(GracefulStop, "signals")
        parser.add_lightning_class_args(EpochDropoutReset, "epoch_dropout")
        parser.add_lightning_class_args(PredictionWriter, "predictions")
        parser.add_argument(
            "--run_id",
            type=str | None,
            default=None,
            help="fit: the run folder's name (default version_N; slurm-<job id> in SLURM). "
            "The same id again resumes the run.",
        )
        parser.add_argument(
            "--run_group", type=str | None, default=None, help="fit: the W&B group (default: the experiment)."
        )
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="fit: then validate and test the best checkpoint and write metrics.json.",
        )
        for fact in ("task", "num_classes", "input_shape"):
            parser.link_arguments(f"data.{fact}", f"model.init_args.{fact}", apply_on="instantiate")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        self.command = [str(a) for a in (sys.argv[1:] if args is None else args)]  # a requeued job finds its run by it
        for flag, value in zip(self.command, self.command[1:], strict=False):
            if flag in ("--config", "-c"):
                check_duplicate_keys(value)
        super().parse_arguments(parser, args)
        config = self.config.get(self.config.get("subcommand") or "", self.config)
        if config.get("ckpt_path") and self.config.subcommand == "fit":  # before LightningCLI takes its options
            check_resume(config.ckpt_path, config)
        elif config.get("ckpt_path"):  # what is wrong with it, in a line, before LightningCLI loads it
            read_checkpoint(config.ckpt_path)

    def before_instantiate_classes(self) -> None:
        if self.subcommand is None:  # run=False: the classes are built, nothing runs
            return
        config = self.config[self.subcommand]
        given = self.save_config_kwargs["given"] = config.clone()  # config.yaml: the options, not this run's set-up
        given.run_id = None  # --config config.yaml trains a new run
        config.weights_only = True if config.get("weights_only", True) is None else config.weights_only
        plugins = config.trainer.get("plugins") or []
        if SLURMEnvironment.detect() and not any("Environment" in str(p) for p in plugins):
            # GracefulStop requeues the job: Lightning's own requeue stays off
            environment = {"class_path": f"{SLURMEnvironment.__module__}.SLURMEnvironment"}
            config.trainer.plugins = [*plugins, {**environment, "init_args": {"auto_requeue": False}}]
        if self.subcommand == "fit":
            self.prepare_run(config)
        else:
            self.prepare_evaluation(config)

    def prepare_evaluation(self, config: Any) -> None:
        """validate, test, predict: trained weights, no logger, predictions beside the checkpoint."""
        weights = config.ckpt_path or config.model.init_args.get("init_weights")
        if not weights:
            raise UserError(
                f"`{self.subcommand}` needs trained weights: --ckpt_path CHECKPOINT or "
                "--model.init_weights FILE (a state_dict or checkpoint)."
            )
        config.trainer.logger, self.save_config_callback = False, None
        folder = Path(weights).parent.parent if Path(weights).parent.name == "checkpoints" else Path(weights).parent
        config.predictions.output = config.predictions.output or str(folder / "predictions.csv")

    def prepare_run(self, config: Any) -> None:
        """fit: the run folder, locked; the loggers named after it; the checkpoint to resume from."""
        trainer = config.trainer
        root = experiment_dir(trainer)  # joins default_root_dir itself: before the loop below does
        for spec in logger_specs(trainer) if trainer.get("default_root_dir") else []:  # every logger's files too
            spec.init_args.save_dir = os.path.join(trainer.default_root_dir, spec.init_args.get("save_dir") or ".")
        if root is None or trainer.get("fast_dev_run"):
            return
        run = RunFolder(root, run_name(root, config.run_id, self.command), self.command)
        run.check_unfinished()
        if config.ckpt_path is None:
            config.ckpt_path = run.resume_checkpoint()
            if config.ckpt_path:  # checked before the lock: a refused resume changes nothing
                check_resume(config.ckpt_path, config)
        self.runs.append(run)
        run.lock()
        classes = (config.model.class_path, config.model.init_args.net.class_path, config.data.class_path)
        presets = [Path(str(c)).stem for c in config.get("config") or []][1:]
        tags = [path.rsplit(".", 1)[-1] for path in classes] + presets
        for spec in logger_specs(trainer):
            if spec.class_path.endswith("WandbLogger"):
                from run.wandb import prepare_wandb  # W&B's set-up, and wandb, only for runs that log there

                prepare_wandb(spec.init_args, run.path, root.name, config.run_group, tags)
            else:  # CSV and TensorBoard: <save_dir>/<experiment>/<run name>
                spec.init_args.name, spec.init_args.version = spec.init_args.get("name") or root.name, run.name

    def before_fit(self) -> None:
        if type(self.trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # not one a config chose
            self.trainer.strategy.checkpoint_io = AtomicCheckpointIO()

    def after_fit(self) -> None:
        trainer, config = self.trainer, self.config.fit
        if not config.test_after_fit or trainer.fast_dev_run:
            return
        best = getattr(trainer.checkpoint_callback, "best_model_path", "") or None  # None: the final weights
        loggers, trainer.loggers = trainer.loggers, []  # results of the best checkpoint, not history points
        metrics: dict[str, float] = {}
        for evaluate in (trainer.validate, trainer.test):
            for result in evaluate(
                self.model, datamodule=self.datamodule, ckpt_path=best, verbose=False, weights_only=True
            ):
                metrics.update({k: float(v) for k, v in result.items()})
        trainer.loggers = loggers
        if not trainer.is_global_zero or not self.runs:
            return
        checkpoint = trainer.checkpoint_callback
        result = {
            "metrics": metrics,
            "checkpoint": best,
            "epochs": trainer.current_epoch,
            "global_step": trainer.global_step,
            "monitor": {"metric": checkpoint.monitor, "mode": checkpoint.mode} if checkpoint else None,
        }
        path = write_text(self.runs[-1].path / METRICS_FILE, json.dumps(result, indent=2, sort_keys=True) + "\n")
        for logger in loggers:
            if isinstance(logger, WandbLogger):
                best_values = {k: v for k, v in metrics.items() if k.startswith("test/") or k == checkpoint.monitor}
                logger.experiment.summary.update(best_values | {"best_checkpoint": best})
        print(f"metrics {path}: " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())))


def cli_main(args: Sequence[str] | None = None, run: bool = True, callbacks: Sequence[Callback] = ()) -> TemplateCLI:
    """Parse ``args`` (default: ``sys.argv``) and run the subcommand. ``run=False``: no subcommand;
    the datamodule, model and trainer are built and returned. ``callbacks`` join the config's."""
    runs: list[RunFolder] = []
    environment = dict(os.environ)  # W&B's folders are set there for one run: put back afterwards
    failed = True
    try:
        cli = TemplateCLI(
            TaskModule,
            SplitDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            seed_everything_default=42,
            trainer_defaults={"logger": CSV_LOGGER, "callbacks": list(callbacks)},
            auto_configure_optimizers=False,
            save_config_callback=RunConfig,
            save_config_kwargs={"overwrite": True},  # a resumed run rewrites it: same model and data
            parser_kwargs={"exit_on_error": False, "allow_abbrev": False},
            args=args,
            run=run,
            runs=runs,
        )
        failed = False
        return cli
    finally:
        for folder in runs:
            folder.release(failed)
        if "wandb" in sys.modules and sys.modules["wandb"].run is not None:
            sys.modules["wandb"].run.finish(exit_code=int(failed))  # a later run in this process starts its own
        os.environ.clear()
        os.environ.update(environment)  # the W&B folders were this run's


def resolved_config(fit_args: Sequence[str]) -> dict[str, Any]:
    """The fit config as ``cli.py fit --print_config`` resolves it (a mistake in it ends here)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.suppress(SystemExit):
        cli_main(["fit", *fit_args, "--print_config"])
    return yaml.safe_load(printed.getvalue())


if __name__ == "__main__":
    main(cli_main)
