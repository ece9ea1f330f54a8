"""Every GPU benchmark target in one command, one JSON: time to accuracy of ``mnist_fast`` and
``cifar10_fast`` (compiled), the fit-loop overhead with the sync check, and the data path.

    tar xzf ../shared/data/cifar10-jpeg.tar.gz -C /tmp/cifar10
    python -m bench.gpu --data_dir ../shared/data --cifar_dir /tmp/cifar10

Targets (one H200): MNIST >= 99.0% mean over 10 seeds within 0.45 s of training; CIFAR-10 JPEG
copy >= 90.8% within 1.6 s; no host-device sync inside a training step.
"""

from __future__ import annotations

import sys

from bench import data_path, overhead, time_to_accuracy
from bench.common import ROOT, base_parser, machine, parse, write_results


def main(argv: list[str] | None = None) -> dict:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--cifar_dir", default="/tmp/cifar10", help="the extracted CIFAR-10 JPEG copy")
    parser.add_argument("--seeds", type=int, default=10)
    args = parse(parser, argv)
    gpu = ["--accelerator", "gpu", "--data_dir", args.data_dir]
    payload = {
        "benchmark": "gpu",
        "argv": sys.argv[1:],
        "machine": machine(),
        "mnist_fast": time_to_accuracy.main([*gpu, "--seeds", str(args.seeds), "--check_sync"]),
        "cifar10_fast": time_to_accuracy.main(
            [
                "--accelerator",
                "gpu",
                "--data_dir",
                args.cifar_dir,
                "--seeds",
                str(args.seeds),
                "--config",
                str(ROOT / "configs" / "cifar10_fast.yaml"),
                "--check_sync",
                "--",
                "--model.init_args.net.init_args.compile",
                "true",
            ]
        ),
        "overhead": overhead.main([*gpu, "--rounds", "5", "--check_sync"]),
        "data_path": data_path.main([*gpu, "--epochs", "3"]),
    }
    write_results("gpu", payload, args.out)
    return payload


if __name__ == "__main__":
    main()
