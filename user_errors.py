"""A user's mistake (command line, config, data, checkpoint, environment) as a few lines on stderr
and exit status 2; a bug in the code keeps its traceback. ``CLI_DEBUG=1`` shows every traceback.

What counts as a mistake: a ``UserError``, Lightning's ``MisconfigurationException``, and any
exception this project's code raises on purpose (a ``raise`` statement in its own files: every
check of an option, a file or a checkpoint). An exception from inside a library, or one the
interpreter raises in this code (a bug), is not.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ArgumentParser, Namespace
from lightning.fabric.utilities.exceptions import MisconfigurationException

from console import BASE_CLASSES

PROJECT = Path(__file__).resolve().parent
PROJECT_PACKAGES = ("lightning_modules", "datamodules", "callbacks", "speed")
DEBUG = "CLI_DEBUG"
BOUNDS = {  # the value types of jsonargparse.typing and the project, in words
    "PositiveInt": "an integer > 0",
    "NonNegativeInt": "an integer >= 0",
    "AtLeastTwo": "an integer >= 2",
    "PositiveFloat": "a number > 0",
    "NonNegativeFloat": "a number >= 0",
    "OpenUnitInterval": "a number in (0, 1)",
    "ClosedUnitInterval": "a number in [0, 1]",
    "DropProbability": "a number in [0, 1)",
}


class UserError(ValueError):
    """A mistake in what the user gave; its message says what, where, and what to do."""


def raised_here(err: BaseException) -> bool:
    """Raised by a ``raise`` statement in this project's own code (not tests, not a library)."""
    frames = traceback.extract_tb(err.__traceback__)
    if not frames:
        return False
    where = Path(frames[-1].filename).resolve()
    ours = PROJECT in where.parents and "tests" not in where.relative_to(PROJECT).parts
    return ours and (frames[-1].line or "").lstrip().startswith("raise")


def is_user_error(err: BaseException) -> bool:
    if isinstance(err, (UserError, MisconfigurationException)):
        return True
    if not isinstance(err, Exception) or isinstance(err, (NotImplementedError, AssertionError)):
        return False
    return raised_here(err) or bool(worker_error(err))


def worker_error(err: BaseException) -> str | None:
    """A DataLoader worker's error, re-raised in the main process: its own last line, when this
    project raised it there (a damaged image, images of mixed sizes)."""
    text = str(err)
    if "in DataLoader worker process" not in text or str(PROJECT) not in text:
        return None
    last = text.strip().splitlines()[-1]
    return last.split(": ", 1)[1] if ": " in last else last


def main(run: Callable[[], Any]) -> Any:
    """Call ``run`` (the CLI); print a user's mistake in a few lines and exit 2."""
    try:
        return run()
    except Exception as err:
        if os.environ.get(DEBUG) or not is_user_error(err):
            raise
        text = worker_error(err) or str(err).strip() or type(err).__name__
        lines = text.splitlines()
        sys.stderr.write("error: " + "\n".join(lines[:4]) + f"\n  ({DEBUG}=1 shows the traceback)\n")
        raise SystemExit(2) from None


# -- constructor errors: which config key ----------------------------------------------------
def class_paths(config: Any, prefix: str = "") -> list[tuple[str, str]]:
    """(key, class_path) of every class in a config, e.g. ("model.init_args.net", "...CNN")."""
    if isinstance(config, Namespace):
        config = config.as_dict()
    found = []
    if isinstance(config, dict):
        if isinstance(config.get("class_path"), str):
            found.append((prefix, config["class_path"]))
        for key, value in config.items():
            found += class_paths(value, f"{prefix}.{key}" if prefix else key)
    elif isinstance(config, list):
        for i, value in enumerate(config):
            found += class_paths(value, f"{prefix}[{i}]")
    return found


def resolve(class_path: str) -> Any:
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None


def constructor_error(err: BaseException, config: Any) -> BaseException:
    """What to raise for jsonargparse's wrapping of a failed constructor: a UserError naming the
    config key of the class that refused its options; a bug (or anything else) as it was raised."""
    causes = [err]
    while causes[-1].__cause__ is not None:
        causes.append(causes[-1].__cause__)
    cause = next((c for c in causes if is_user_error(c)), None)
    if cause is None or isinstance(cause, UserError):
        return cause or causes[-1]  # the innermost: the bug itself, with its own traceback
    classes = {resolve(path): key for key, path in class_paths(config)}
    for frame, _ in reversed(list(traceback.walk_tb(cause.__traceback__))):  # innermost first
        owner = frame.f_locals.get("self")
        if frame.f_code.co_name == "__init__" and type(owner) in classes:
            error = UserError(f"{classes[type(owner)]} ({type(owner).__name__}): {cause}")
            error.__cause__ = cause
            return error
    return cause


# -- parse errors --------------------------------------------------------------------------------
def close(word: str, choices: list[str]) -> str:
    matches = difflib.get_close_matches(word, choices, n=3, cutoff=0.6)
    return f"\n  Did you mean {' or '.join(matches)}?" if matches else ""


def subclasses(base: type, ours_only: bool) -> list[type]:
    found, todo = [], [base]
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            if not sub.__name__.startswith("_") and (
                not ours_only or sub.__module__.split(".")[0] in PROJECT_PACKAGES
            ):
                found.append(sub)
    return found


def subclass_names(base: type, ours_only: bool) -> list[str]:
    return sorted({cls.__name__ for cls in subclasses(base, ours_only)})


def known_names(key: str) -> list[str]:
    """The names a class-valued option may take: the project's models, datamodules, networks;
    torch's optimizers and schedulers."""
    import torch

    from datamodules import SplitDataModule
    from lightning_modules import TaskModule

    if key in ("model", "data"):
        names = subclass_names(TaskModule if key == "model" else SplitDataModule, ours_only=True)
        return [name for name in names if name not in BASE_CLASSES]
    if key == "net":  # the project's networks list the input shapes they are tested on
        return sorted(
            {c.__name__ for c in subclasses(torch.nn.Module, ours_only=True) if hasattr(c, "input_shapes")}
        )
    base = {"optimizer": torch.optim.Optimizer, "scheduler": torch.optim.lr_scheduler.LRScheduler}
    return subclass_names(base[key], ours_only=False) if key in base else []


def where(argv: list[str], files: list[str], keys: list[str]) -> str:
    """'the command line', or 'configs/x.yaml:3' for the last config file that sets ``keys``."""
    flags = {"--" + ".".join(keys), "--" + ".init_args.".join(keys)}
    if any(a.split("=", 1)[0] in flags for a in argv):
        return "the command line"

    def find(node: Any, keys: list[str]) -> int | None:
        if not keys or not isinstance(node, yaml.MappingNode):
            return None
        for key, value in node.value:
            if key.value == keys[0]:
                return key.start_mark.line if len(keys) == 1 else find(value, keys[1:])
        inner = next((v for k, v in node.value if k.value == "init_args"), None)
        return find(inner, keys)

    found = "the command line"
    for file in files:
        try:
            line = find(yaml.compose(Path(file).read_text()), keys)
        except (OSError, yaml.YAMLError):
            continue
        found = f"{file}:{line + 1}" if line is not None else found
    return found


def class_options(cls: type) -> list[str]:
    probe = ArgumentParser(exit_on_error=False)
    probe.add_class_arguments(cls, skip={"params"})  # an optimizer receives params from the model
    return [a.dest for a in probe._actions if a.dest != "help" and not a.dest.endswith(".help")]


def describe_parse_error(err: argparse.ArgumentError, parser: ArgumentParser, argv: list[str]) -> str:
    """jsonargparse's error (a chain of causes, the innermost last) in at most 5 lines."""
    chain, cause = [], err
    while cause is not None:
        chain.append(str(cause))
        cause = cause.__cause__
    text = "\n".join(chain)
    keys = [k for part in chain for k in re.findall(r'^Parser key "([^"]+)"', part)]
    keys = [k for i, k in enumerate(keys) if i == 0 or keys[i - 1] != k]  # model, optimizer, ...
    classes = re.findall(r"class_path[= ]'([^']+)'", text)
    files = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("--config", "-c")]
    files += [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
    sub = getattr(parser, "subcommand", None)
    help_line = f"\n  See: python cli.py {sub} --help" if sub else "\n  See: python cli.py --help"
    flag = "--" + ".".join(keys)
    if m := re.search(r"unrecognized arguments: (\S+)", text):
        name = m[1].split("=", 1)[0]
        options = [s for a in parser._actions for s in a.option_strings if s.startswith("--")]
        return f"unknown option {name}{close(name, options)}{help_line}"
    if m := re.search(r"(?:does not accept option|Option) '([^']+)'", text):
        name, cls = m[1], resolve(classes[-1]) if classes else None
        if cls is None:  # a top-level key in a config file
            options = [s[2:] for a in parser._actions for s in a.option_strings if s.startswith("--")]
            return f"unknown option '{name}' (in {where(argv, files, name.split('.'))}){close(name, options)}"
        valid, path = class_options(cls), [*keys, name]
        located = f"--{'.'.join(path)}, on {where(argv, files, path)}"
        listed = f"\n  Options of {cls.__name__}: {', '.join(valid)}"
        return f"{cls.__name__} has no option '{name}' ({located}){close(name, valid)}{listed}"
    if m := re.search(r"Expected a dot import path string: (\S+)|has no attribute '(\w+)'", text):
        name, known = m[1] or m[2], known_names(keys[-1] if keys else "")
        listed = f"\n  Known: {', '.join(known)} (or a full class path)" if known else ""
        return f"{flag}: no class named '{name}'{close(name.rsplit('.', 1)[-1], known)}{listed}"
    if m := re.search(r"the following arguments are required: ([\w, .]+)", text):
        owner = classes[-1].rsplit(".", 1)[-1] if classes else flag
        needed = ", ".join(f"{flag}.{name.strip()} VALUE" for name in m[1].split(","))
        return f"{owner} needs {m[1]}: add {needed}{help_line}"
    if m := re.search(r"Not of type (\w+): (.*)", text):
        wanted = BOUNDS.get(m[1], f"a {m[1]}")
        return f"{flag} must be {wanted}: {m[2]} (on {where(argv, files, keys)}){help_line}"
    if m := re.search(r"Expected a (.+?)\. Got value: (.*)", text):
        wanted = re.sub(r"<class '([\w.]+)'>", r"\1", m[1])
        return f"{flag}: expected {wanted}, got {m[2]} (on {where(argv, files, keys)}){help_line}"
    return "\n".join(chain[0].strip().splitlines()[:3]) + help_line
