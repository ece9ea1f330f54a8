"""Data path: epochs per second of the device-resident loader against the DataLoader path.

Both paths make the same training batches (normalized; with ``--augment``, randomly cropped and,
where the dataset allows, flipped) and deliver them on the device; nothing trains, so this is
the input pipeline alone. The first epoch (the DataLoader's workers starting, the device path's
one copy to the device) is timed apart; the next ``--epochs`` give epochs per second.

    python -m bench.data_path --epochs 3
    python -m bench.data_path --accelerator gpu --num_workers 8 --pin_memory
    python -m bench.data_path --datamodule datamodules.image_folder.ImageFolderDataModule --data_dir /tmp/cifar10
"""

from __future__ import annotations

import importlib
import sys
import time
from typing import Any

import lightning as L
import torch

from bench.common import base_parser, machine, machine_line, parse, print_table, sync, write_results
from datamodules.vision import VisionDataModule


def epoch_seconds(loader: Any, epoch: int, device: torch.device) -> tuple[float, int]:
    """Wall time of one pass over ``loader`` with every batch on ``device``; samples seen."""
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    samples = 0
    sync(device)
    start = time.perf_counter()
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        samples += len(y)
    sync(device)
    return time.perf_counter() - start, samples


def main(argv: list[str] | None = None) -> dict:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--datamodule", default="datamodules.mnist.MNISTDataModule", help="a VisionDataModule")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per path")
    parser.add_argument("--augment", choices=["off", "on", "both"], default="both")
    parser.add_argument("--num_workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--pin_memory", action="store_true", help="DataLoader pinned memory")
    args = parse(parser, argv)

    module, _, name = args.datamodule.rpartition(".")
    cls = getattr(importlib.import_module(module), name, None) if module else None
    if not (isinstance(cls, type) and issubclass(cls, VisionDataModule)):
        raise SystemExit(f"--datamodule {args.datamodule!r} is not the class path of a VisionDataModule")
    trainer = L.Trainer(
        accelerator=args.accelerator,
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    device = trainer.strategy.root_device
    augments = {"off": [False], "on": [True], "both": [False, True]}[args.augment]
    rows = []
    for augment in augments:
        for resident in (False, True):
            dm = cls(
                data_dir=args.data_dir,
                batch_size=args.batch_size,
                augment=augment,
                device_resident=resident,
                num_workers=args.num_workers,
                pin_memory=args.pin_memory,
                persistent_workers=args.num_workers > 0,
            )
            dm.trainer = trainer  # as Trainer.fit attaches it: the loader learns the device
            dm.prepare_data()
            dm.setup("fit")
            start = time.perf_counter()
            loader = dm.train_dataloader()  # the device path copies the data to the device here
            samples = epoch_seconds(loader, 0, device)[1]
            first = time.perf_counter() - start
            seconds = sum(epoch_seconds(loader, e, device)[0] for e in range(1, args.epochs + 1))
            rows.append(
                {
                    "path": "device-resident" if resident else "DataLoader",
                    "augment": augment,
                    "first_epoch_s": first,
                    "epochs_per_s": args.epochs / seconds,
                    "samples_per_s": samples * args.epochs / seconds,
                    "samples": samples,
                }
            )
            del loader, dm
    for row in rows:  # speed-up over the DataLoader with the same augmentation
        base = next(r for r in rows if r["augment"] == row["augment"] and r["path"] == "DataLoader")
        row["speedup"] = row["epochs_per_s"] / base["epochs_per_s"]

    info = machine()
    print_table(
        f"Data path: {name}, batch {args.batch_size}, {rows[0]['samples']} samples per epoch",
        ["path", "augment", "first epoch s", "epochs/s", "samples/s", "speed-up"],
        [
            (r["path"], r["augment"], r["first_epoch_s"], r["epochs_per_s"], r["samples_per_s"], r["speedup"])
            for r in rows
        ],
        caption=f"{machine_line(info)}; DataLoader workers: {args.num_workers}",
    )
    payload = {"benchmark": "data_path", "argv": sys.argv[1:], "machine": info, "rows": rows}
    write_results("data_path", payload, args.out)
    return payload


if __name__ == "__main__":
    main()
