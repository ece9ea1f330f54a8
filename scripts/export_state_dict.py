"""Write the network of a checkpoint as a plain ``state_dict``: what ``net.load_state_dict`` takes.

    python scripts/export_state_dict.py logs/mnist_cnn/version_0/checkpoints/last.ckpt -o net.pth

Load it into the network built with the same options, or start a run from it with
``--model.init_weights net.pth``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from run.errors import main as report_mistakes  # noqa: E402
from run.files import atomic_path, read_checkpoint  # noqa: E402


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("checkpoint", help="a Lightning checkpoint of this project")
    parser.add_argument("-o", "--output", help="the file to write (default: beside the checkpoint, .pth)")
    args = parser.parse_args(argv)
    state = read_checkpoint(args.checkpoint)["state_dict"]
    net = {key[4:]: value for key, value in state.items() if key.startswith("net.")}  # TaskModule.net
    output = Path(args.output or Path(args.checkpoint).with_suffix(".pth"))
    with atomic_path(output) as tmp:
        torch.save(net, tmp)
    print(f"{len(net)} tensors, {sum(t.numel() for t in net.values()):,} values -> {output}")
    return output


if __name__ == "__main__":
    report_mistakes(main)
