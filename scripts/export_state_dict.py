"""Write the network's weights of a checkpoint as a plain ``state_dict`` file.

    python scripts/export_state_dict.py logs/mnist_cnn/version_0/checkpoints/last.ckpt -o net.pth

No Trainer is built: the checkpoint is read with ``torch.load(..., weights_only=True)``. The file
holds what ``torch.save(net.state_dict())`` would: load it into the bare network, built with the
options printed here, with ``net.load_state_dict(torch.load(path, weights_only=True))``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from callbacks.export import net_state_dict, save_state_dict


def main(args: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="a Lightning .ckpt of this project")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="the .pth to write (default: next to the checkpoint, same name)")
    options = parser.parse_args(args)
    if not options.checkpoint.is_file():
        parser.error(f"no checkpoint at {options.checkpoint}")
    checkpoint = torch.load(options.checkpoint, map_location="cpu", weights_only=True)
    output = options.output or options.checkpoint.with_suffix(".pth")
    state = net_state_dict(checkpoint["state_dict"])
    save_state_dict(state, output)
    net = checkpoint.get("hyper_parameters", {}).get("net")
    print(f"{len(state)} tensors, {sum(t.numel() for t in state.values()):,} values -> {output}")
    if net is not None:
        print(f"network: {net}")  # class_path and init_args; num_outputs comes from the data
    return output


if __name__ == "__main__":
    main()
