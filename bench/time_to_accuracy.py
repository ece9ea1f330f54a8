"""Time to accuracy: a config trained once per seed; median training time, mean/min accuracy.

Each run is one ``cli.py fit`` in this process with its own seed for the weights
(``seed_everything``) and for the data (the datamodule's ``seed``: split, order, augmentation).
The CLI then tests the best checkpoint (with test-time augmentation where the config asks).
Training time is the sum of the training epochs without validation or checkpointing; start-up
(data loading, the copy to the device, model set-up) and validation are reported apart. The
first ``--warmup`` runs pay the one-time costs (torch.compile, decoding images into the cache,
cuDNN autotuning): they are shown apart and left out of the statistics.

    python -m bench.time_to_accuracy --config configs/mnist_fast.yaml --seeds 5
    python -m bench.time_to_accuracy --config configs/cifar10_fast.yaml --data_dir /tmp/cifar10 \\
        --accelerator gpu --seeds 10 -- --model.init_args.net.init_args.compile true
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

from bench.common import base_parser, machine, machine_line, parse, print_table, run_cli, run_metrics, write_results

WARMUP_SEED = 1000  # warm-up runs use seeds from here, apart from the measured ones


def main(argv: list[str] | None = None) -> dict:
    parser = base_parser(__doc__.split("\n\n")[0], fits=True)
    parser.add_argument("--seeds", type=int, default=5, help="measured runs (seeds 0, 1, ...)")
    parser.add_argument("--first_seed", type=int, default=0)
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured runs first")
    parser.add_argument("--metric", default="test/acc", help="the accuracy to report")
    args = parse(parser, argv)

    seeds = [WARMUP_SEED + i for i in range(args.warmup)] + list(range(args.first_seed, args.first_seed + args.seeds))
    runs = []
    for i, seed in enumerate(seeds):
        flags = ["--seed_everything", str(seed), "--data.init_args.seed", str(seed)]
        flags += ["--data.init_args.data_dir", args.data_dir, *args.cli_args]
        with tempfile.TemporaryDirectory(prefix="bench-time-to-accuracy-") as runs_dir:
            cli, timer = run_cli(args.config, flags, args.accelerator, Path(runs_dir), args.check_sync)
            metrics = run_metrics(cli)
        if args.metric not in metrics:
            raise RuntimeError(f"{args.metric} not in the run's metrics {sorted(metrics)}: keep test_after_fit on")
        runs.append(
            {
                "seed": seed,
                "warmup": i < args.warmup,
                "accuracy": metrics[args.metric],
                "metrics": metrics,
                "train_s": sum(timer.train_s),
                "val_s": sum(timer.val_s),
                "startup_s": timer.startup_s,
                "fit_s": timer.fit_s,
                "epochs": len(timer.train_s),
                "steps": cli.trainer.global_step,
            }
        )
        del cli, timer

    measured = [r for r in runs if not r["warmup"]]
    accuracy = [r["accuracy"] for r in measured]
    summary = {"runs": len(measured)}
    summary |= {
        f"median_{key}": statistics.median(r[key] for r in measured) for key in ("train_s", "fit_s", "startup_s")
    }
    summary |= {
        "mean_accuracy": statistics.fmean(accuracy),
        "min_accuracy": min(accuracy),
        "max_accuracy": max(accuracy),
    }
    if args.warmup:  # what the first run paid on top of a measured one
        summary["one_time_train_s"] = runs[0]["train_s"] - summary["median_train_s"]
        summary["one_time_startup_s"] = runs[0]["startup_s"] - summary["median_startup_s"]

    info = machine()
    columns = ("accuracy", "train_s", "val_s", "startup_s", "fit_s", "epochs")
    rows = [("warm-up" if r["warmup"] else r["seed"], *(r[c] for c in columns)) for r in runs]
    print_table(
        f"Time to accuracy: {args.config.name} ({args.metric} mean {summary['mean_accuracy']:.4f}, "
        f"min {summary['min_accuracy']:.4f}, median train {summary['median_train_s']:.3f} s)",
        ["seed", args.metric, "train s", "val s", "start-up s", "fit s", "epochs"],
        rows,
        caption=machine_line(info),
    )
    payload = {"benchmark": "time_to_accuracy", "config": str(args.config), "argv": sys.argv[1:], "machine": info}
    payload |= {"runs": runs, "summary": summary}
    write_results("time_to_accuracy", payload, args.out)
    return payload


if __name__ == "__main__":
    main()
