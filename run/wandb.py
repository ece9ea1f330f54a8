"""W&B set-up before the Trainer exists: one W&B run per run folder, online when W&B has a key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from run.errors import UserError


def stored_step(run: Any) -> int:
    """The highest step an earlier start of this W&B run stored: online, W&B resumes the run after
    it; offline, W&B's own reader finds it in the earlier offline folders of the run (a process
    killed with kill -9 may not have written its last steps: those are logged again)."""
    if not run.offline:
        return run.starting_step - 1
    last = -1
    for folder in Path(run.dir).parents[1].glob(f"offline-run-*-{run.id}"):
        if folder != Path(run.dir).parent:
            read = [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(folder)]
            for line in subprocess.run(read, capture_output=True, text=True, timeout=120).stdout.splitlines():
                if '"type":"history"' in line:
                    last = max(last, json.loads(line)["history"]["step"]["num"])
    return last


class WandbLogger(LightningWandbLogger):
    """Lightning's WandbLogger whose history is one line across restarts: W&B's step is the
    trainer's global step, a step an earlier start of the run stored is not logged again (a
    resumed run replays it exactly), and epoch-end training metrics, which Lightning logs one step
    behind validation's, join the current step instead of going back."""

    @rank_zero_only
    def log_metrics(self, metrics: Any, step: int | None = None) -> None:
        if step is None:
            return super().log_metrics(metrics)
        if not hasattr(self, "_last_step"):
            self._stored, self._last_step = stored_step(self.experiment), -1
        if step > self._stored:
            self._last_step = step = max(step, self._last_step)
            self.experiment.log({**metrics, "trainer/global_step": step}, step=step)
            self._pending = True  # W&B holds a step's row until a later step comes
        return None

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if getattr(self, "_pending", False):  # the last row out, also when a signal stopped the run
            self.experiment.log({"trainer/global_step": self._last_step}, step=self._last_step, commit=True)
            self._pending = False
        super().finalize(status)


def prepare_wandb(args: Any, folder: Path, experiment: str, group: str | None, tags: list[str]) -> None:
    """Fill a W&B logger's ``init_args``: its files in the run folder, the run's id (kept there, so
    a restart continues the same W&B run), name, group and tags; offline when W&B has no key. W&B's
    own folders go into the run folder too (its defaults are in the home folder, a quota problem on
    clusters), through its environment variables, which ``cli_main`` puts back after the run."""
    if rank_zero_only.rank:  # only rank 0 talks to W&B (other processes may name another version_N)
        return
    args.save_dir = str(folder.resolve())
    id_file = folder / "wandb" / "run_id.txt"
    if args.get("id") is None:
        args.id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:8]
    id_file.parent.mkdir(parents=True, exist_ok=True)
    id_file.write_text(args.id)
    args.name = args.get("name") or f"{experiment}/{folder.name}"
    args.group = args.get("group") or group or experiment
    args.tags, args.resume = args.get("tags") or tags, args.get("resume") or "allow"
    os.environ.update(
        {f"WANDB_{name}_DIR": str(folder / "wandb" / name.lower()) for name in ("DATA", "CACHE", "ARTIFACT")}
    )
    if args.get("save_code"):  # every Python file of the project, not only cli.py
        os.environ["WANDB_CODE_DIR"] = str(Path(__file__).resolve().parents[1])
    mode = os.environ.get("WANDB_MODE") or args.get("mode")
    import wandb

    try:  # what W&B itself finds: WANDB_API_KEY, its settings, or what `wandb login` wrote
        has_key = (
            args.get("offline") or mode in ("offline", "disabled", "dryrun") or wandb.login(prompt=False, verify=False)
        )
    except wandb.errors.Error as err:  # e.g. a malformed WANDB_API_KEY
        raise UserError(f"W&B refused its API key: {err}") from err
    if has_key:
        return
    if mode == "online":
        raise UserError(
            "WANDB_MODE=online, but W&B has no API key: run `wandb login` or set "
            "WANDB_API_KEY, or unset WANDB_MODE to log offline."
        )
    args.mode = "offline"  # not `offline`: W&B has read its settings already, and log_model works offline
    rank_zero_info(f"W&B: no API key, logging offline; upload later: wandb sync {folder}/wandb/offline-run-*")
