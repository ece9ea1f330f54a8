"""Print a config's model parameter by parameter: name, shape, count, trainable.

    python scripts/inspect_model.py --config configs/mnist_cnn.yaml [other cli.py fit options]

The model is built as a run builds it, lazy layers included; nothing is trained, no data is read.
The names are what ``--model.freeze`` takes (without ``net.``).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from cli import cli_main  # noqa: E402
from run.errors import main as report_mistakes  # noqa: E402


def main(argv: list[str] | None = None) -> list[tuple[str, tuple[int, ...], int, bool]]:
    args = sys.argv[1:] if argv is None else argv
    sys.argv[1:] = []  # they go to the CLI as its arguments
    model = cli_main(args, run=False).model
    rows = [(name, tuple(p.shape), p.numel(), p.requires_grad) for name, p in model.named_parameters()]
    for name, shape, count, trainable in rows:
        print(f"{name:<40} {str(list(shape)):<20} {count:>12,} {'trainable' if trainable else 'frozen'}")
    print(f"{'total':<40} {'':<20} {sum(r[2] for r in rows):>12,} ({sum(r[2] for r in rows if r[3]):,} trainable)")
    return rows


if __name__ == "__main__":
    report_mistakes(main)
