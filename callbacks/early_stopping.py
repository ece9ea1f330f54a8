"""Early stopping on the model's own quality metric."""

from __future__ import annotations

from typing import Literal

from lightning.pytorch.callbacks import EarlyStopping as LightningEarlyStoppingCallback


class EarlyStopping(LightningEarlyStoppingCallback):
    """Lightning's ``EarlyStopping`` whose ``monitor`` may be left out: the CLI then fills in the
    model's own quality metric and mode, as for the checkpoint (``val/acc``, max for classifiers;
    ``val/loss``, min for regressors), so one preset serves every model.

    Args:
        monitor: logged metric to watch (default: the model's own).
        mode: "min" or "max" (default: the model's own).
        patience: validations without improvement before training stops.
        min_delta: smallest change that counts as an improvement.
        stopping_threshold: stop as soon as the metric reaches this value.
        divergence_threshold: stop as soon as the metric is worse than this value.
    """

    def __init__(
        self,
        monitor: str | None = None,
        mode: Literal["min", "max"] | None = None,
        patience: int = 3,
        min_delta: float = 0.0,
        stopping_threshold: float | None = None,
        divergence_threshold: float | None = None,
    ) -> None:
        if monitor is None:
            raise ValueError(
                "EarlyStopping needs a metric to watch: name one (monitor: val/loss, mode: min), "
                "or run it through cli.py, which fills in the model's own."
            )
        super().__init__(
            monitor=monitor,
            mode=mode or "min",
            patience=patience,
            min_delta=min_delta,
            stopping_threshold=stopping_threshold,
            divergence_threshold=divergence_threshold,
        )
