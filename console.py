"""What the command line prints: help that fits on a screen or two, and a normal run without
third-party noise or wrapped lines in log files."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import DefaultHelpFormatter, set_dumper
from lightning.pytorch.cli import LightningArgumentParser

SUBCOMMANDS = {
    "fit": "Train, then validate and test the best checkpoint (metrics.json in the run folder).",
    "validate": "Evaluate a checkpoint (--ckpt_path) on the validation split.",
    "test": "Evaluate a checkpoint (--ckpt_path) on the test set.",
    "predict": "Write the predictions of a checkpoint (--ckpt_path) to a CSV or JSON file.",
}
EPILOG = (
    "A model's, datamodule's, network's, optimizer's or scheduler's own options: --model.help "
    "Classifier, --data.help MNISTDataModule, --model.net.help CNN, --model.optimizer.help "
    "torch.optim.SGD, --model.scheduler.help torch.optim.lr_scheduler.StepLR. A config's values: "
    "--config FILE --print_config."
)
SHOWN_CLASSES = re.compile(r"^(model|data)$|\.net$")  # options whose known classes are listed
BASE_CLASSES = {"TaskModule", "SplitDataModule", "VisionDataModule", "SyntheticDataModule"}
GROUP_TITLES = {  # instead of the first line of each class's docstring
    "trainer": "Trainer (Lightning's options)",
    "model": "Model: a LightningModule of lightning_modules/ (--model.help NAME: its options)",
    "data": "Data: a datamodule of datamodules/ (--data.help NAME: its options)",
    "checkpoint": "Checkpoints: the best by validation, and last.ckpt (always the newest state)",
    "signals": "Stopping on a signal: save last.ckpt, requeue under SLURM, exit 128 + signal",
    "predictions": "Predictions (predict)",
    "export": "Export of the trained network (model.pth)",
}
# Lines a normal run does not need: Lightning's tip to install another logger, and its note that
# the template's own model summary replaces its default one.
NOISE = ("💡 Tip: For seamless cloud logging", "Trainer already configured with model summary")


class CompactHelpFormatter(DefaultHelpFormatter):
    """One line per option: its name and the first sentence of its help. The project's classes
    are listed for ``--model``, ``--data`` and networks; every class's own options are one
    ``--<option>.help CLASS`` away."""

    def _format_usage(self, usage: Any, actions: Any, groups: Any, prefix: Any) -> str:
        prog = re.sub(r"^usage: |\s*\[[^]]*\]", "", self._prog)  # "cli.py fit": not the root's options
        return f"usage: {prog} [--config FILE] [--print_config] [options]\n\n"

    def _format_text(self, text: str) -> str:
        return super()._format_text(text if len(text) < 400 else text.split(". ")[0] + ".")

    def _format_action(self, action: argparse.Action) -> str:
        if not action.option_strings or action.help == argparse.SUPPRESS:
            return super()._format_action(action)
        text = " ".join((self._expand_help(action) if action.help else "").split())
        first = re.split(r"(?<=[.;])\s|\s\(type:", text)[0]
        classes = re.search(r"known subclasses: (.*)\)$", text)
        if classes and SHOWN_CLASSES.search(action.dest):
            paths = classes[1].split(", ")
            names = [
                p.rsplit(".", 1)[-1] for p in paths if p.startswith(("lightning_modules", "datamodules"))
            ]
            ours = sorted(name for name in names if name not in BASE_CLASSES)
            first = f"One of: {', '.join(ours)} (or a class path)."
            indent = " " * 43
            return (
                textwrap.fill(
                    f"  {', '.join(action.option_strings):<40} {first}", self._width, subsequent_indent=indent
                )
                + "\n"
            )
        line = f"  {', '.join(action.option_strings):<40} {first}"
        return (line if len(line) <= self._width else line[: self._width - 3] + "...") + "\n"


class NumberDumper(yaml.SafeDumper):
    """YAML as jsonargparse writes it, with its bounded numbers (``PositiveInt``, ...) written as
    the numbers they are: a value that a swapped class keeps (``--model.net X`` where X takes a
    plain ``int hidden``) would otherwise fail to print or save."""


NumberDumper.add_multi_representer(int, yaml.SafeDumper.represent_int)
NumberDumper.add_multi_representer(float, yaml.SafeDumper.represent_float)


def dump_yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=NumberDumper, default_flow_style=False, allow_unicode=True, sort_keys=False)


class TemplateParser(LightningArgumentParser):
    """The CLI's parser: compact help, also for the ``--<option>.help CLASS`` parsers."""

    def __init__(self, *args: Any, formatter_class: Any = CompactHelpFormatter, **kwargs: Any) -> None:
        super().__init__(*args, formatter_class=formatter_class, **kwargs)
        set_dumper("yaml", dump_yaml)


class DropLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(NOISE)


def quiet_and_wide() -> None:
    """For the command line: drop the known noise (exactly those messages), and give output that
    goes to a file (SLURM logs) a wide console instead of rich's 80 columns."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(DropLines())
    # torch deprecates LeafSpec(), which Lightning's own code still calls at every fit
    warnings.filterwarnings(
        action="ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
        module=r"lightning\.pytorch\.utilities\._pytree",
    )
    # a restarted run's folder: runs/folders.py has moved metrics.csv aside, nothing is deleted
    warnings.filterwarnings(
        action="ignore", message=r"Experiment logs directory .* exists and is not empty", category=UserWarning
    )
    if not sys.stdout.isatty() and "COLUMNS" not in os.environ:
        os.environ["COLUMNS"] = "160"


def swapped_classes(argv: list[str], files: list[str]) -> list[str]:
    """A class given on the command line (``--model.net LinearNet``) in place of the one a config
    file set keeps only those of that class's options the new class also takes: name them."""
    merged: dict[str, Any] = {}
    for file in files:
        try:
            merged = merge(merged, yaml.safe_load(Path(file).read_text()) or {})
        except (OSError, yaml.YAMLError):
            continue
    notes = []
    for flag, value in zip(argv, argv[1:], strict=False):
        node: Any = merged
        for key in flag[2:].split(".") if flag.startswith("--") else ["\0"]:
            node = node.get(key, node.get("init_args", {}).get(key)) if isinstance(node, dict) else None
        if (
            isinstance(node, dict)
            and node.get("init_args")
            and value.rsplit(".", 1)[-1] != str(node.get("class_path", "")).rsplit(".", 1)[-1]
        ):
            options = ", ".join(node["init_args"])
            notes.append(
                f"{flag} {value} replaces {node['class_path']}: of the options the config gave it "
                f"({options}), only those {value.rsplit('.', 1)[-1]} also takes are kept."
            )
    return notes


def merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        out[key] = (
            merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out
