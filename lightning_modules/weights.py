"""A network's weights on disk: ``model.pth`` files and the network part of a Lightning checkpoint.

``model.pth`` holds the network's ``state_dict`` together with what rebuilds the network: its
class path and options, ``num_outputs`` and the input shape its lazy layers are built on. So
``load_network("model.pth")`` needs nothing else, and weights never load into a network of
another shape (lazy layers would otherwise take any shape without a word).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

NET_PREFIX = "net."  # TaskModule keeps its network in ``self.net``


def net_state(module_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The network's entries of a LightningModule ``state_dict``, keyed as the bare network's."""
    state = {
        k[len(NET_PREFIX) :]: v.detach().cpu() for k, v in module_state.items() if k.startswith(NET_PREFIX)
    }
    if not state:
        raise ValueError(
            f"No '{NET_PREFIX}*' weights in this state_dict (keys start with "
            f"{sorted({k.split('.')[0] for k in module_state})}): the model must keep its network "
            "in `self.net`, as every TaskModule does."
        )
    return state


def network_file(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The ``model.pth`` content for a Lightning checkpoint dict (or ``{"state_dict": ...,
    "hyper_parameters": ...}`` made from a live model)."""
    hparams = checkpoint.get("hyper_parameters") or {}
    spec = hparams.get("net")
    multiclass = hparams.get("task") == "multiclass"
    return {
        "net": dict(spec) if isinstance(spec, Mapping) else None,  # None: built in Python code
        "num_outputs": int(hparams["num_classes"]) if multiclass else 1,
        "input_shape": list(hparams.get("input_shape") or []),
        "state_dict": net_state(checkpoint["state_dict"]),
    }


def network_state(content: Any, path: str | Path) -> dict[str, torch.Tensor]:
    """The network weights in the loaded content of ``path`` (see ``read_network_state``)."""
    if isinstance(content, Mapping) and "state_dict" in content:
        state = content["state_dict"]
        return net_state(state) if "pytorch-lightning_version" in content else dict(state)
    if isinstance(content, Mapping) and all(isinstance(v, torch.Tensor) for v in content.values()):
        return dict(content)
    raise ValueError(f"{path} holds no network weights (a {type(content).__name__}).")


def read_network_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The network weights in ``path``: a ``model.pth`` of this project, a Lightning checkpoint
    of a TaskModule, or a plain ``state_dict`` of the bare network."""
    return network_state(torch.load(path, map_location="cpu", weights_only=True), path)


def described(content: Any, state: Mapping[str, torch.Tensor]) -> str:
    """What a weights file holds, in words, for error messages."""
    spec = content.get("net") if isinstance(content, Mapping) else None
    if spec:
        kind = f"a model.pth of {spec['class_path']} with {content['num_outputs']} outputs"
    elif isinstance(content, Mapping) and "pytorch-lightning_version" in content:
        kind = "a Lightning checkpoint"
    else:
        kind = "a state_dict"
    return f"{kind}, {len(state)} tensors"


def load_weights(net: nn.Module, path: str | Path) -> None:
    """Load the network weights in ``path`` (see ``read_network_state``) into ``net``, strictly.

    A file that does not fit, with keys missing, unexpected or of another shape, is a ValueError
    whose one line names them and says what the file holds.
    """
    if not Path(path).is_file():
        raise ValueError(f"{path}: no such file (a model.pth or a checkpoint was expected).")
    content = torch.load(path, map_location="cpu", weights_only=True)
    state, own = network_state(content, path), net.state_dict()
    missing, unexpected = sorted(own.keys() - state.keys()), sorted(state.keys() - own.keys())
    shapes = [
        f"{key} {tuple(state[key].shape)} in the file, {tuple(own[key].shape)} in the network"
        for key in sorted(own.keys() & state.keys())
        if state[key].shape != own[key].shape
    ]
    problems = [
        f"{len(missing)} missing ({listed(missing)})" if missing else "",
        f"{len(unexpected)} unexpected ({listed(unexpected)})" if unexpected else "",
        f"shapes differ: {listed(shapes)}" if shapes else "",
    ]
    if any(problems):
        raise ValueError(
            f"{path} does not fit the network: {'; '.join(p for p in problems if p)}. "
            f"The file holds {described(content, state)}."
        )
    net.load_state_dict(state)


def listed(items: Sequence[str], most: int = 3) -> str:
    return ", ".join(items[:most]) + (f", ... ({len(items) - most} more)" if len(items) > most else "")


def build_network(spec: Mapping[str, Any], num_outputs: int, input_shape: Sequence[int]) -> nn.Module:
    """``class_path(num_outputs, **init_args)`` with its lazy layers built on ``input_shape``."""
    module, _, name = spec["class_path"].rpartition(".")
    net = getattr(importlib.import_module(module), name)(
        num_outputs=num_outputs, **(spec.get("init_args") or {})
    )
    with torch.no_grad():
        net.eval()(torch.zeros(2, *input_shape))
    return net


def load_network(path: str | Path) -> nn.Module:
    """The network of a ``model.pth``, built and loaded (strictly), in eval mode."""
    content = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(content, Mapping) or content.get("net") is None:
        raise ValueError(
            f"{path} does not say which network it holds (not a model.pth written by this "
            "project's export): build the network yourself and load_state_dict its weights."
        )
    net = build_network(content["net"], content["num_outputs"], content["input_shape"])
    net.load_state_dict(content["state_dict"])
    return net.eval()
