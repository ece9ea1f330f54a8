"""Pruning for ``scripts/search.py``: each epoch's monitored validation metric goes to the running
Optuna trial, and training stops when the trial's pruner says so.

The search adds this callback to every trial (``--trainer.callbacks+=callbacks.OptunaPruning``)
and names the trial in the environment (``OPTUNA_SEARCH_*``). Without that environment the
callback does nothing and never imports optuna, so a trial's ``config.yaml`` reruns as a plain run,
without optuna installed.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info

from runs.files import write_json
from runs.folders import run_dir

ENV_STORAGE = "OPTUNA_SEARCH_STORAGE"  # journal file path or storage URL
ENV_STUDY = "OPTUNA_SEARCH_STUDY"
ENV_TRIAL_ID = "OPTUNA_SEARCH_TRIAL_ID"  # the storage's trial id, not the study's trial number
ENV_PRUNER = "OPTUNA_SEARCH_PRUNER"  # {"name": "MedianPruner", ...options} as JSON
PRUNED_FILE = "pruned.json"  # in the run folder: why the run stopped early


def open_storage(storage: str) -> Any:
    """A journal file (a path: no server, fit for a shared filesystem) or any storage URL that
    Optuna takes (``sqlite:///search.db``, ``postgresql://...``)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    if "://" in storage:
        return storage
    return optuna.storages.JournalStorage(JournalFileBackend(storage))


def make_pruner(spec: Mapping[str, Any]) -> Any:
    """``{"name": "MedianPruner", "n_warmup_steps": 1}`` -> ``MedianPruner(n_warmup_steps=1)``."""
    import optuna

    options = dict(spec)
    name = options.pop("name", None)
    known = sorted(n for n in dir(optuna.pruners) if n.endswith("Pruner") and n != "BasePruner")
    if name not in known:
        raise ValueError(f"unknown pruner {name!r}; Optuna's pruners: {', '.join(known)}")
    return getattr(optuna.pruners, name)(**options)


class OptunaPruning(Callback):
    """Reports the metric the checkpoint monitors, once per epoch, to the trial named by the
    ``OPTUNA_SEARCH_*`` environment, and stops fit cleanly (checkpoints, ``metrics.json``) when
    the trial is pruned. A non-finite value prunes at once: Optuna ranks such a pruned trial last,
    which teaches the sampler to avoid the region, where a failed trial would teach it nothing.
    ``trainer.min_epochs`` delays the stop.
    """

    def __init__(self) -> None:
        self._trial: Any = None
        self._run_dir = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._run_dir = run_dir(trainer)  # every rank calls it: a broadcast under DDP
        if stage == "fit" and trainer.is_global_zero and ENV_TRIAL_ID in os.environ:
            import optuna

            study = optuna.load_study(
                study_name=os.environ[ENV_STUDY],
                storage=open_storage(os.environ[ENV_STORAGE]),
                pruner=make_pruner(json.loads(os.environ[ENV_PRUNER])),
            )
            # The public way to report to a trial another process asked for (Study.ask does the same).
            self._trial = optuna.trial.Trial(study, int(os.environ[ENV_TRIAL_ID]))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return  # not an epoch's result: the sanity check, or the CLI's validate after fit
        reason = self._report(trainer) if self._trial is not None else None
        reason = trainer.strategy.broadcast(reason, src=0)  # every rank stops together
        if reason:
            rank_zero_info(f"OptunaPruning: stopping after epoch {trainer.current_epoch}: {reason}")
            trainer.should_stop = True

    def _report(self, trainer: L.Trainer) -> str | None:
        """Report this epoch's value; the reason to stop, or None to go on."""
        from optuna.exceptions import UpdateFinishedTrialError

        checkpoint = trainer.checkpoint_callback
        metric = checkpoint.monitor if checkpoint else None
        value = trainer.callback_metrics.get(metric) if metric else None
        if value is None:
            return None  # ModelCheckpoint names the missing metric itself
        value, epoch = float(value), trainer.current_epoch
        try:
            self._trial.report(value, epoch)
            pruned = not math.isfinite(value) or self._trial.should_prune()
        except UpdateFinishedTrialError:
            # A worker that went silent had its trial failed by another; nothing is recorded any more.
            return "the trial was already finished in the study (its worker was taken for dead)"
        if not pruned:
            return None
        rule = type(self._trial.study.pruner).__name__ if math.isfinite(value) else "a non-finite value"
        reason = f"pruned by {rule} at epoch {epoch}: {metric}={value:.6g}"
        if self._run_dir is not None:
            write_json(self._run_dir / PRUNED_FILE, {"epoch": epoch, "metric": metric, "reason": reason})
        return reason
