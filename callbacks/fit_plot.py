"""The fitted curve of a regression model against the data's true curve: coefficients and a plot."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from matplotlib.figure import Figure

from callbacks.media import log_image, save_figure
from runs.folders import run_dir


def coefficients(features: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Least-squares (bias, w_1, ..., w_k) of ``y ~ bias + features @ w``.

    ``features`` (N, k), ``y`` (N,) -> (1 + k,).
    """
    design = torch.cat([torch.ones(len(features), 1), features], dim=1).double()  # (N, 1 + k)
    return torch.linalg.lstsq(design, y.double().unsqueeze(1)).solution.squeeze(1)  # (1 + k,)


class FitPlot(Callback):
    """For data that knows its curve: ``datamodule.true_curve(x)`` and the model inputs
    ``datamodule.features(x)`` of a 1-D ``x`` (as PolynomialDataModule has).

    After each validation epoch it logs the coefficients of the model's curve, a least-squares fit
    of its outputs on ``[1, features(x)]`` over a grid (a linear model's own weights):
    ``fit/bias``, ``fit/w1``, ... and ``fit/coef_error``, the largest distance to the true
    curve's coefficients. At the end of fit and of validate (the CLI validates the best checkpoint
    after fit) it saves both curves as a PNG in the run directory and hands the file to every
    logger that takes images (``log_image``, e.g. W&B).

    Args:
        x_min: left end of the plotted range (the data's).
        x_max: right end of the plotted range.
        num_points: grid points the curves are evaluated on.
        filename: PNG file name in the run directory.
    """

    def __init__(
        self, x_min: float = -3.0, x_max: float = 3.0, num_points: int = 200, filename: str = "fit.png"
    ) -> None:
        if not x_min < x_max:
            raise ValueError(f"FitPlot needs x_min < x_max, got {x_min} and {x_max}")
        self.x = torch.linspace(x_min, x_max, num_points)  # (P,)
        self.filename = filename
        self.path: Path | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        datamodule = trainer.datamodule
        if not (hasattr(datamodule, "true_curve") and hasattr(datamodule, "features")):
            raise ValueError(
                f"FitPlot needs a datamodule that knows its true curve (true_curve(x) and "
                f"features(x)), such as PolynomialDataModule, not {type(datamodule).__name__}: "
                "remove FitPlot from trainer.callbacks for this data."
            )

    @torch.no_grad()
    def curves(self, trainer: L.Trainer, pl_module: L.LightningModule) -> tuple[torch.Tensor, ...]:
        """(features (P, k), true y (P,), fitted y (P,)) on the grid, on the CPU."""
        datamodule = trainer.datamodule
        features = datamodule.features(self.x)  # (P, k)
        was_training = pl_module.training
        fitted = pl_module.eval()(features.to(pl_module.device)).squeeze(-1).float().cpu()  # (P,)
        pl_module.train(was_training)
        return features, datamodule.true_curve(self.x), fitted

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        features, true, fitted = self.curves(trainer, pl_module)
        if not torch.isfinite(fitted).all():
            return  # a diverged model has no curve to fit (the divergence check stops the run)
        fit, target = coefficients(features, fitted), coefficients(features, true)
        pl_module.log("fit/bias", float(fit[0]))
        for i, w in enumerate(fit[1:].tolist(), start=1):
            pl_module.log(f"fit/w{i}", w)
        pl_module.log("fit/coef_error", float((fit - target).abs().max()))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.save(trainer, pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:
            self.save(trainer, pl_module)

    def save(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        folder = run_dir(trainer)
        if folder is None or not trainer.is_global_zero:  # None: a dry run keeps no files
            return
        features, true, fitted = self.curves(trainer, pl_module)
        if not torch.isfinite(fitted).all():
            return
        fit = coefficients(features, fitted)
        figure = Figure(figsize=(6, 4), layout="constrained")  # no pyplot: no global figure state
        axes = figure.subplots()
        axes.plot(self.x, true, label="true curve")
        axes.plot(self.x, fitted, "--", label="model")
        axes.set(
            xlabel="x",
            ylabel="y",
            title="fitted coefficients (bias, w): " + ", ".join(f"{c:.3f}" for c in fit.tolist()),
        )
        axes.legend()
        self.path = save_figure(figure, folder / self.filename)
        log_image(trainer, "fit/curve", self.path, "fitted and true curve")
