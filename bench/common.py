"""Shared pieces of the benchmarks: timing callbacks, the CLI run, a hand-written loop, output.

Run the benchmarks from the repository root as modules (``python -m bench.overhead ...``).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn

from cli import TemplateCLI, cli_main
from run.files import write_text
from run.folders import METRICS_FILE

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
AUTOCAST = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def sync(device: torch.device | str) -> None:
    """Wait for the device, so that wall-clock time covers the work queued on it."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").is_file():
        names = [line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")]
        cpu = names[0].split(":", 1)[1].strip() if names else cpu
    info = {"cpu": cpu, "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    info |= {"torch": torch.__version__, "lightning": L.__version__, "python": platform.python_version()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def machine_line(info: dict[str, Any]) -> str:
    where = info.get("gpu") or f"{info['cpu']}, {info['cpu_cores']} cores"
    return f"{where}; torch {info['torch']}, lightning {info['lightning']}"


def base_parser(description: str, fits: bool = False) -> argparse.ArgumentParser:
    """The options every benchmark takes; ``fits``: also those of one that runs ``cli.py fit``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data_dir", default="../shared/data", help="folder that holds the data")
    parser.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu"], help="gpu: one CUDA device")
    parser.add_argument("--out", type=Path, help="JSON file to write (default: bench/results/<benchmark>-<time>.json)")
    parser.add_argument("--threads", type=int, help="CPU threads of torch (default: torch's choice)")
    if fits:
        parser.add_argument("--config", type=Path, default=ROOT / "configs" / "mnist_fast.yaml")
        parser.add_argument("--check_sync", action="store_true", help="fail on a sync inside a training step (CUDA)")
        parser.add_argument("cli_args", nargs="*", help="more cli.py flags (after --)")
    return parser


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    return args


def write_results(name: str, payload: dict[str, Any], out: Path | None) -> Path:
    """Write ``payload`` as JSON, whole or not at all, and print where."""
    path = write_text(out or RESULTS / f"{name}-{datetime.now():%Y%m%d-%H%M%S}.json", json.dumps(payload, indent=2))
    print(f"results: {path}")
    return path


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], caption: str = "") -> None:
    lines = [title, " | ".join(columns)]
    lines += [" | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row) for row in rows]
    print("\n".join(lines + ([caption] if caption else [])))


class FitTimer(Callback):
    """Times a fit: each training epoch without its validation, the validations, the start-up.

    An epoch's training time runs from its start to the start of its validation (or its end), so
    it leaves out validation and checkpoint writing; the device is synchronized at each mark. Also
    keeps a copy of the network as training starts (after the callbacks listed before it, such as
    ``InitFromData``), for a hand-written loop to start from the same weights.
    """

    def __init__(self) -> None:
        self.train_s: list[float] = []
        self.train_cpu_s: list[float] = []  # CPU time of this process, all threads
        self.val_s: list[float] = []
        self.startup_s = self.fit_s = 0.0
        self.initial_net: nn.Module | None = None
        self._fit_start = self._epoch_start = self._val_start = self._cpu_start = 0.0
        self._epoch_open = False

    def _now(self, pl_module: L.LightningModule) -> float:
        sync(pl_module.device)
        return time.perf_counter()

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_start = self._now(pl_module)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.initial_net = copy.deepcopy(pl_module.net)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.train_s and not self._epoch_open:
            self.startup_s = self._now(pl_module) - self._fit_start
        self._epoch_open = True
        self._epoch_start, self._cpu_start = self._now(pl_module), time.process_time()

    def _close_epoch(self, pl_module: L.LightningModule) -> None:
        if self._epoch_open:
            self.train_s.append(self._now(pl_module) - self._epoch_start)
            self.train_cpu_s.append(time.process_time() - self._cpu_start)
            self._epoch_open = False

    @staticmethod
    def _fit_validation(trainer: L.Trainer) -> bool:
        """A validation inside fit, not its sanity check nor the evaluation after it."""
        return trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._fit_validation(trainer):
            self._close_epoch(pl_module)
            self._val_start = self._now(pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._fit_validation(trainer):
            self.val_s.append(self._now(pl_module) - self._val_start)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._close_epoch(pl_module)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.fit_s = self._now(pl_module) - self._fit_start


class SyncCheck(Callback):
    """Makes a host-device synchronization inside a training step (batch start to batch end) an
    error, with CUDA's sync debug mode, from the second step on (the first sets up optimizer state
    once). Does nothing without CUDA."""

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        if pl_module.device.type == "cuda" and trainer.global_step > 0:
            torch.cuda.set_sync_debug_mode("error")

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.set_sync_debug_mode("default")


def run_cli(
    config: Path, args: Sequence[str], accelerator: str, runs_dir: Path, check_sync: bool = False
) -> tuple[TemplateCLI, FitTimer]:
    """``cli.py fit --config config *args`` in this process, timed by a FitTimer. The run folder
    goes under ``runs_dir``, a temporary folder: a benchmark leaves only its results behind."""
    flags = ["fit", "--config", str(config), "--trainer.default_root_dir", str(runs_dir), *args]
    if accelerator == "gpu":
        flags += ["--trainer.accelerator", "gpu", "--trainer.devices", "1"]
    timer = FitTimer()
    return cli_main(flags, callbacks=[timer, SyncCheck()] if check_sync else [timer]), timer


def run_metrics(cli: TemplateCLI) -> dict[str, float]:
    """The metrics the CLI wrote after fit (best checkpoint's validation and test)."""
    path = cli.runs[-1].path / METRICS_FILE if cli.runs else None
    return json.loads(path.read_text())["metrics"] if path and path.is_file() else {}


def hand_written_fit(
    model: L.LightningModule, net: nn.Module, loader: Iterable, steps: int, precision: str
) -> tuple[float, float, int, int]:
    """Train ``net`` the plain PyTorch way: the model's loss, optimizer and schedule (stepped as
    ``TaskModule.configure_optimizers`` sets), ``loader``'s batches, ``steps`` steps.

    Returns (wall seconds, CPU seconds of this process, steps, samples).
    """
    device = model.device
    net = net.to(device).train()
    init = getattr(net, "init_from_data", None)
    if callable(init):  # as callbacks.speed.InitFromData does, before the clock starts
        init(next(iter(loader))[0].to(device))
    optimizer = model.optimizer(net.parameters())
    scheduler, per_step = None, False
    if model.scheduler is not None:  # a one-cycle schedule (total_steps left open) steps every batch
        options = (model.hparams.get("scheduler") or {}).get("init_args", {})
        per_step = options.get("total_steps", 0) is None
        scheduler = model.scheduler(optimizer, total_steps=steps) if per_step else model.scheduler(optimizer)
    dtype = AUTOCAST.get(str(precision))
    done = samples = epoch = 0
    sync(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    while done < steps:
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = model.loss(net(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if per_step:
                scheduler.step()
            done, samples = done + 1, samples + len(y)
            if done == steps:
                break
        if scheduler is not None and not per_step:
            scheduler.step()
        epoch += 1
    sync(device)
    return time.perf_counter() - start, time.process_time() - cpu_start, done, samples
