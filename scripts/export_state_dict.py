"""Write the network of a checkpoint as a ``model.pth``: its weights and what rebuilds it.

    python scripts/export_state_dict.py logs/mnist_cnn/version_0/checkpoints/last.ckpt -o net.pth

No Trainer is built: the checkpoint is read with ``torch.load(..., weights_only=True)``. Load the
file with ``lightning_modules.weights.load_network(path)``; its ``"state_dict"`` entry is what
``net.state_dict()`` would give.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from lightning_modules.weights import network_file
from runs.files import save_torch


def main(args: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("checkpoint", type=Path, help="a Lightning .ckpt of this project")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        help="the .pth to write (default: next to the checkpoint, same name)",
    )
    options = parser.parse_args(args)
    if not options.checkpoint.is_file():
        parser.error(f"no checkpoint at {options.checkpoint}")
    content = network_file(torch.load(options.checkpoint, map_location="cpu", weights_only=True))
    output = save_torch(content, options.output or options.checkpoint.with_suffix(".pth"))
    values = sum(t.numel() for t in content["state_dict"].values())
    print(f"{len(content['state_dict'])} tensors, {values:,} values -> {output}")
    print(f"network: {content['net']}")
    return output


if __name__ == "__main__":
    main()
