"""Fit-loop overhead: the same training through ``cli.py fit`` and through a hand-written loop.

Each round trains the config's network from the same initial weights, on the same batches (the
datamodule's own training loader), with the same loss, optimizer and schedule, for the same
number of steps: once through the template's CLI (Lightning) and once through a plain PyTorch
loop, alternating which goes first, in this one process. Only the training steps are timed (no
start-up, validation or checkpointing). ratio = hand-written time / Lightning time, so 1.0 means
Lightning costs nothing extra and 0.97 means it runs at 97% of the hand-written throughput.

The headline is the median of the per-round ratios: the two runs of a round are seconds apart,
so a slow phase of a shared machine (on small VMs kernel speed drifts by ±10% over minutes) hits
both, where a ratio of separate medians would mix phases. Runs of a whole epoch amortize
Lightning's one-time cost of its first step (~10 ms); ``--max_steps`` shortens them. The ratio of
CPU times (this process's, all threads) is shown too.

    python -m bench.overhead --config configs/mnist_fast.yaml --rounds 10
    python -m bench.overhead --accelerator gpu --check_sync
"""

from __future__ import annotations

import copy
import gc
import statistics
import sys
import tempfile
from pathlib import Path

from bench.common import (
    base_parser,
    hand_written_fit,
    machine,
    machine_line,
    parse,
    print_table,
    run_cli,
    write_results,
)


def main(argv: list[str] | None = None) -> dict:
    parser = base_parser(__doc__.split("\n\n")[0], fits=True)
    parser.add_argument("--rounds", type=int, default=10, help="timed Lightning/hand-written pairs")
    parser.add_argument("--max_steps", type=int, default=-1, help="training steps per run (-1: the config's epochs)")
    args = parse(parser, argv)
    flags = ["--data.init_args.data_dir", args.data_dir, "--test_after_fit", "false"]
    flags += ["--trainer.max_steps", str(args.max_steps), *args.cli_args]

    def lightning() -> tuple:
        with tempfile.TemporaryDirectory(prefix="bench-overhead-") as runs_dir:  # its run folder
            cli, timer = run_cli(args.config, flags, args.accelerator, Path(runs_dir), args.check_sync)
        return cli, timer, sum(timer.train_s), sum(timer.train_cpu_s), cli.trainer.global_step

    def hand_written(cli, timer) -> tuple[float, float, int, int]:
        net = copy.deepcopy(timer.initial_net)  # the Lightning run's initial weights (channels-last too), every time
        loader = cli.datamodule.train_dataloader()
        return hand_written_fit(cli.model, net, loader, cli.trainer.global_step, cli.trainer.precision)

    # warm-up pair, not counted: imports, allocator, kernel caches
    cli, timer, *_ = lightning()
    hand_written(cli, timer)
    rounds = []
    for r in range(args.rounds):
        order = ("lightning", "hand-written") if r % 2 == 0 else ("hand-written", "lightning")
        wall: dict[str, float] = {}
        cpu: dict[str, float] = {}
        for side in order:
            if side == "lightning":
                del cli, timer
                gc.collect()
                cli, timer, wall[side], cpu[side], steps = lightning()
            else:
                wall[side], cpu[side], hand_steps, samples = hand_written(cli, timer)
        if hand_steps != steps:
            raise RuntimeError(f"step counts differ: Lightning {steps}, hand-written {hand_steps}")
        hand, light = wall["hand-written"], wall["lightning"]
        rounds.append(
            {"order": list(order), "steps": steps, "samples": samples, "lightning_s": light, "hand_written_s": hand}
            | {"ratio": hand / light, "lightning_cpu_s": cpu["lightning"], "hand_written_cpu_s": cpu["hand-written"]}
            | {"cpu_ratio": cpu["hand-written"] / cpu["lightning"]}
        )

    def median(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    light, hand = median("lightning_s"), median("hand_written_s")
    samples = rounds[0]["samples"]
    ratios = sorted(r["ratio"] for r in rounds)
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    summary = {
        "lightning_s": light,
        "hand_written_s": hand,
        "ratio": median("ratio"),
        "ratio_q1": quartiles[0],
        "ratio_q3": quartiles[2],
        "ratio_of_medians": hand / light,
        "cpu_ratio": median("cpu_ratio"),
        "lightning_samples_per_s": samples / light,
        "hand_written_samples_per_s": samples / hand,
        "steps": rounds[0]["steps"],
        "samples": samples,
    }
    info = machine()
    print_table(
        f"Fit-loop overhead: {args.config.name}, {samples} samples in {rounds[0]['steps']} steps",
        ["round", "first", "Lightning s", "hand-written s", "ratio", "CPU-time ratio"],
        [
            (i, r["order"][0], r["lightning_s"], r["hand_written_s"], r["ratio"], r["cpu_ratio"])
            for i, r in enumerate(rounds)
        ]
        + [("median", "", light, hand, summary["ratio"], summary["cpu_ratio"])],
        caption=f"{machine_line(info)}; ratio = hand-written time / Lightning time; "
        f"ratio quartiles {quartiles[0]:.3f}-{quartiles[2]:.3f}",
    )
    payload = {"benchmark": "overhead", "config": str(args.config), "argv": sys.argv[1:], "machine": info}
    payload |= {"rounds": rounds, "summary": summary}
    write_results("overhead", payload, args.out)
    return payload


if __name__ == "__main__":
    main()
