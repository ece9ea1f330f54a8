"""Every config under configs/: experiments parse and dry-run, presets stack onto an experiment, search spaces
and sweeps name options the CLI has."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from cli import cli_main, resolved_config
from tests.conftest import CONFIGS, EXPERIMENTS

PRESETS = sorted(p for p in CONFIGS.glob("*/*.yaml") if p.parent.name not in ("search", "sweeps"))
SEARCHES = sorted((CONFIGS / "search").glob("*.yaml"))
SWEEPS = sorted((CONFIGS / "sweeps").glob("*.yaml"))


def name(path: Path) -> str:
    return path.relative_to(CONFIGS).with_suffix("").as_posix()


def contains(printed: Any, given: Any, where: str = "") -> None:
    """Assert that the resolved config ``printed`` holds every value a config file ``given`` sets
    (``key+`` appends to the list ``key``)."""
    if isinstance(given, dict):
        assert isinstance(printed, dict), where
        for key, value in given.items():
            if key.endswith("+"):
                items = printed[key[:-1]] if isinstance(printed[key[:-1]], list) else [printed[key[:-1]]]
                for item in value:
                    assert any(class_path_of(i) == item["class_path"] for i in items), f"{where}{key}"
                    contains(next(i for i in items if class_path_of(i) == item["class_path"]), item, f"{where}{key}.")
            else:
                assert key in printed, f"{where}{key} is missing"
                contains(printed[key], value, f"{where}{key}.")
    elif isinstance(given, list):
        assert isinstance(printed, list) and len(printed) == len(given), where
        for i, (p, g) in enumerate(zip(printed, given, strict=True)):
            contains(p, g, f"{where}{i}.")
    elif isinstance(given, float):
        assert printed == pytest.approx(given), where
    else:
        assert printed == given, where


def class_path_of(item: Any) -> str | None:
    return item.get("class_path") if isinstance(item, dict) else None


def test_the_configs_are_found() -> None:
    """The globs see the experiments and presets the README names."""
    assert {"mnist_cnn", "cifar10_fast", "polynomial_regression", "mnist_rnn"} <= {p.stem for p in EXPERIMENTS}
    assert {"trainer/cpu", "trainer/ddp", "logger/wandb", "debug/fast_dev_run", "speed/cpu"} <= set(map(name, PRESETS))
    assert SEARCHES and SWEEPS


@pytest.mark.parametrize("config", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_parses_to_its_own_values(config: Path) -> None:
    """--print_config of an experiment holds every value its file sets; the data's facts are linked, not set."""
    printed = resolved_config(["--config", str(config)])
    contains(printed, yaml.safe_load(config.read_text()))
    assert not {"num_classes", "task", "input_shape"} & set(printed["model"]["init_args"])


@pytest.mark.parametrize("config", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_dry_run(config: Path, data_args, tmp_path: Path) -> None:
    """fit --trainer.fast_dev_run true (then one test batch): on fake data, on the CPU (cifar10_fast's bf16
    autocast included), logging the metric its checkpoints, search space and sweep rank by, writing no file."""
    small = ["--data.batch_size", "16"]  # the whole config, on a smaller batch: seconds less compute
    cli = cli_main(["fit", "--config", str(config), *data_args(config), *small, "--trainer.fast_dev_run", "true"])
    assert cli.trainer.state.finished and cli.trainer.global_step == 1
    logged = cli.trainer.callback_metrics
    assert yaml.safe_load(config.read_text())["checkpoint"]["monitor"] in logged
    for space in (CONFIGS / "search" / config.name, CONFIGS / "sweeps" / config.name):  # what they rank by
        if space.is_file():
            spec = yaml.safe_load(space.read_text())
            assert (spec["objective"]["metric"] if "objective" in spec else spec["metric"]["name"]) in logged, space
    [result] = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)  # a dry fit does not test
    assert result and all(key.startswith("test/") for key in result)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


@pytest.mark.parametrize("preset", PRESETS, ids=name)
def test_preset_stacks_onto_an_experiment(preset: Path) -> None:
    """A preset after configs/mnist_cnn.yaml parses, and its settings land in the resolved config."""
    printed = resolved_config(["--config", str(CONFIGS / "mnist_cnn.yaml"), "--config", str(preset)])
    own = yaml.safe_load(preset.read_text())
    assert set(own) == {"trainer"}  # presets change the Trainer only
    contains(printed, own)
    assert printed["model"]["init_args"]["net"]["class_path"] == "lightning_modules.nets.cnn.CNN"  # kept
    if "logger+" in own["trainer"]:  # the CSV logger, which keeps the run folder, stays first
        assert printed["trainer"]["logger"][0]["class_path"] == "lightning.pytorch.loggers.CSVLogger"


def option(value: Any) -> str:
    """A value as cli.py takes it on the command line."""
    return value if isinstance(value, str) else json.dumps(value)


@pytest.mark.parametrize("space", SEARCHES, ids=name)
def test_search_space_names_cli_options(space: Path) -> None:
    """A search space has what scripts/search.py reads, and every key with its most unusual value is an option
    of the experiment it searches."""
    spec = yaml.safe_load(space.read_text())
    assert spec["objective"]["direction"] in ("maximize", "minimize")
    assert re.fullmatch(r"val/\w+", spec["objective"]["metric"])
    optuna = pytest.importorskip("optuna")
    for kind, module in (("sampler", optuna.samplers), ("pruner", optuna.pruners)):
        if kind in spec:
            assert hasattr(module, spec[kind]["name"]), spec[kind]
    overrides = {}
    for key, dist in spec["params"].items():
        assert dist["type"] in ("float", "int", "categorical"), key
        if dist["type"] == "categorical":
            overrides[key] = dist["choices"][-1]
        else:
            assert float(dist["low"]) < float(dist["high"]), key
            overrides[key] = float(dist["high"]) if dist["type"] == "float" else int(dist["high"])
    experiment = CONFIGS / space.name  # its metric is checked in test_experiment_dry_run
    assert experiment.is_file()
    printed = resolved_config(["--config", str(experiment), *(f"--{k}={option(v)}" for k, v in overrides.items())])
    for key, value in overrides.items():
        assert resolve(printed, key) == value, key


def resolve(tree: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        tree = tree[part]
    return tree


@pytest.mark.parametrize("sweep", SWEEPS, ids=name)
def test_sweep_names_cli_options(sweep: Path) -> None:
    """A W&B sweep runs cli.py fit with configs that exist, and every parameter with its last value (or its
    upper bound) is an option of that experiment."""
    spec = yaml.safe_load(sweep.read_text())
    assert spec["program"] == "cli.py" and spec["method"] in ("bayes", "random", "grid")
    assert spec["metric"]["goal"] in ("maximize", "minimize") and re.fullmatch(r"val/\w+", spec["metric"]["name"])
    command = spec["command"]
    assert command[:4] == ["${env}", "${interpreter}", "${program}", "fit"] and command[-1] == "${args}"
    configs = [command[i + 1] for i, word in enumerate(command) if word == "--config"]
    assert configs and all((CONFIGS.parent / c).is_file() for c in configs if not c.startswith("configs/local/"))
    assert configs[0] == f"configs/{sweep.name}"  # the experiment it sweeps
    overrides = []
    for key, dist in spec["parameters"].items():
        value = dist["values"][-1] if "values" in dist else dist["max"]
        assert "values" in dist or dist["min"] < dist["max"], key
        overrides.append(f"--{key}={option(value)}")
    stack = [str(CONFIGS.parent / c) for c in configs if not c.startswith("configs/local/")]
    printed = resolved_config([arg for c in stack for arg in ("--config", c)] + overrides)
    for key, dist in spec["parameters"].items():
        value = dist["values"][-1] if "values" in dist else dist["max"]
        got = resolve(printed, key)
        if isinstance(value, str) and value.startswith("{"):  # a class_path as JSON
            assert got["class_path"] == json.loads(value)["class_path"], key
        else:
            assert got == value, key
