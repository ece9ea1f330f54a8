"""Every GPU benchmark target in one command, one JSON: time to accuracy of ``mnist_fast`` and
``cifar10_fast`` (compiled), the fit-loop overhead with the sync check, and the data path.

    tar xzf ../shared/data/cifar10-jpeg.tar.gz -C /tmp/cifar10
    python -m bench.gpu --data_dir ../shared/data --cifar_dir /tmp/cifar10

Targets (one H200): MNIST >= 99.0% mean over 10 seeds within 0.45 s of training; CIFAR-10 JPEG
copy >= 90.8% within 1.6 s; no host-device sync inside a training step. Options after ``--`` go
to every ``cli.py fit`` (a short check: ``--seeds 1 --rounds 1 --epochs 1 -- --trainer.max_steps 5``).
"""

from __future__ import annotations

import sys

from bench import data_path, overhead, time_to_accuracy
from bench.common import ROOT, base_parser, machine, parse, write_results


def main(argv: list[str] | None = None) -> dict:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--cifar_dir", default="/tmp/cifar10", help="the extracted CIFAR-10 JPEG copy")
    parser.add_argument("--seeds", type=int, default=10, help="measured runs of each time to accuracy")
    parser.add_argument("--rounds", type=int, default=5, help="overhead rounds")
    parser.add_argument("--epochs", type=int, default=3, help="data path epochs")
    parser.add_argument("cli_args", nargs="*", help="more cli.py flags (after --)")
    args = parse(parser, argv)
    gpu = ["--accelerator", "gpu", "--threads", str(args.threads)] if args.threads else ["--accelerator", "gpu"]
    mnist, cifar = [*gpu, "--data_dir", args.data_dir], [*gpu, "--data_dir", args.cifar_dir]
    seeds = ["--seeds", str(args.seeds), "--check_sync"]
    parts = {
        "mnist_fast": (time_to_accuracy, [*mnist, *seeds, "--", *args.cli_args]),
        "cifar10_fast": (
            time_to_accuracy,
            [*cifar, *seeds, "--config", str(ROOT / "configs" / "cifar10_fast.yaml"), "--", *args.cli_args]
            + ["--model.init_args.net.init_args.compile", "true"],
        ),
        "overhead": (overhead, [*mnist, "--rounds", str(args.rounds), "--check_sync", "--", *args.cli_args]),
        "data_path": (data_path, [*mnist, "--epochs", str(args.epochs)]),
    }
    payload = {"benchmark": "gpu", "argv": sys.argv[1:], "machine": machine()}
    for name, (script, options) in parts.items():  # each part also writes its own file, beside --out if given
        out = ["--out", str(args.out.with_name(f"{args.out.stem}-{name}.json"))] if args.out else []
        payload[name] = script.main([*out, *options])
    write_results("gpu", payload, args.out)
    return payload


if __name__ == "__main__":
    main()
