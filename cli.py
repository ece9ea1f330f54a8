"""Command line: ``python cli.py {fit,validate,test,predict} --config configs/<name>.yaml``.

Any LightningModule in ``lightning_modules`` and LightningDataModule in ``datamodules`` is chosen
by class name; the datamodule's facts (task, classes, input shape) are linked into the model.
After ``fit`` the best checkpoint is validated and tested and ``metrics.json`` is written next to
the run's resolved ``config.yaml``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichModelSummary, RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from rich.console import Console

import datamodules  # noqa: F401  (registers the datamodules for selection by name)
import lightning_modules  # noqa: F401  (registers the models and networks)
from callbacks import BestCheckpoint, PredictionWriter



def trainer_defaults() -> dict[str, Any]:
    """A local CSV logger (no account, no network), rich progress and a model summary with
    input/output sizes. Fresh callback objects for every CLI (tests build many in one process)."""
    return {
        "logger": {
            "class_path": "lightning.pytorch.loggers.CSVLogger",
            "init_args": {"save_dir": "logs", "name": "default"},
        },
        "callbacks": [RichProgressBar(), RichModelSummary(max_depth=2)],
    }


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically: a crash never leaves a half-written file behind."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


class TemplateCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(BestCheckpoint, "checkpoint")
        parser.add_lightning_class_args(PredictionWriter, "predictions")
        parser.add_argument(
            "--test_after_fit", type=bool, default=True,
            help="After fit: validate and test the best checkpoint and write metrics.json.",
        )
        for fact in ("task", "num_classes", "input_shape"):
            parser.link_arguments(f"data.{fact}", f"model.init_args.{fact}", apply_on="instantiate")

    def after_fit(self) -> None:
        if not self.config[self.subcommand].get("test_after_fit", True):
            return
        trainer, model, datamodule = self.trainer, self.model, self.datamodule
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        ckpt_path = best or None  # no checkpoint (e.g. fast_dev_run): evaluate the final weights
        metrics: dict[str, Any] = {}
        for run in (trainer.validate, trainer.test):
            for result in run(model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False):
                metrics.update({k: float(v) for k, v in result.items()})
        if trainer.is_global_zero and trainer.log_dir is not None:
            path = Path(trainer.log_dir) / "metrics.json"
            write_json(path, {"metrics": metrics, "checkpoint": best or None,
                              "epochs": trainer.current_epoch, "global_step": trainer.global_step})
            Console().print(f"[bold]metrics[/bold] {path}: " + ", ".join(
                f"{k}={v:.4f}" for k, v in sorted(metrics.items())))


def cli_main(args: list[str] | None = None) -> TemplateCLI:
    return TemplateCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=42,
        trainer_defaults=trainer_defaults(),
        auto_configure_optimizers=False,
        args=args,
    )


if __name__ == "__main__":
    cli_main()
