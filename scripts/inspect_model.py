"""Print a config's model parameter by parameter: name, shape, count, trainable.

    python scripts/inspect_model.py --config configs/mnist_cnn.yaml [--model.init_args... ...]

Takes the same flags as ``cli.py fit`` (without the subcommand). The model is built as a run
would build it, lazy layers included, but nothing is trained and no data is read.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from torch import nn

from cli import cli_main


def parameter_rows(model: nn.Module) -> list[tuple[str, tuple[int, ...], int, bool]]:
    """(name, shape, count, trainable) of every parameter, in ``named_parameters`` order."""
    return [(name, tuple(p.shape), p.numel(), p.requires_grad) for name, p in model.named_parameters()]


def parameter_table(model: nn.Module) -> Table:
    rows = parameter_rows(model)
    table = Table(title=f"{type(model).__name__} parameters")
    for column, justify in (("name", "left"), ("shape", "left"), ("count", "right"), ("trainable", "center")):
        table.add_column(column, justify=justify)
    for name, shape, count, trainable in rows:
        table.add_row(name, str(list(shape)), f"{count:,}", "yes" if trainable else "no")
    trainable_total = sum(count for *_, count, trainable in rows if trainable)
    total = sum(count for _, _, count, _ in rows)
    table.add_section()
    table.add_row("total", "", f"{total:,}", f"{trainable_total:,} trainable")
    return table


def main(args: list[str] | None = None) -> Table:
    """Build the model from ``args`` (default: the command line) and print its table."""
    model = cli_main(args, run=False).model
    table = parameter_table(model)
    Console().print(table)
    return table


if __name__ == "__main__":
    main()  # flags from sys.argv
