"""The fitted curve of a regression model against the data's true curve: coefficients and a plot."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from matplotlib.figure import Figure

from callbacks.media import log_picture
from run.errors import UserError
from run.files import atomic_path


def coefficients(features: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Least-squares (bias, w_1, ..., w_k) of ``y ~ bias + features @ w``; (N, k), (N,) -> (1 + k,)."""
    design = torch.cat([torch.ones(len(features), 1), features], dim=1).double()
    return torch.linalg.lstsq(design, y.double().unsqueeze(1)).solution.squeeze(1)


class FitPlot(Callback):
    """For data that knows its curve (PolynomialDataModule: ``true_curve(x)``, ``features(x)``):
    after each validation the coefficients of the model's curve (a least-squares fit of its outputs)
    as ``fit/bias``, ``fit/w1``, ... and ``fit/coef_error`` (the largest distance to the true ones);
    at the end of fit both curves in ``<run folder>/fit.png``, and to W&B and TensorBoard.

    Args:
        x_min: left end of the range.
        x_max: right end of the range.
        num_points: grid points the curves are evaluated on.
    """

    def __init__(self, x_min: float = -3.0, x_max: float = 3.0, num_points: int = 200) -> None:
        self.x = torch.linspace(x_min, x_max, num_points)  # (P,)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not hasattr(trainer.datamodule, "true_curve"):
            raise UserError(
                f"FitPlot needs data that knows its true curve (PolynomialDataModule), not "
                f"{type(trainer.datamodule).__name__}: remove it from trainer.callbacks."
            )

    @torch.no_grad()
    def curves(self, trainer: L.Trainer, pl_module: L.LightningModule) -> tuple[torch.Tensor, ...]:
        """(features (P, k), true y (P,), model y (P,)) on the grid, on the CPU."""
        features = trainer.datamodule.features(self.x)
        training = pl_module.training
        fitted = pl_module.eval()(features.to(pl_module.device)).squeeze(-1).float().cpu()
        pl_module.train(training)
        return features, trainer.datamodule.true_curve(self.x), fitted

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        features, true, fitted = self.curves(trainer, pl_module)
        if not torch.isfinite(fitted).all():
            return  # a diverged model has no curve (the checkpoint refuses it)
        fit, target = coefficients(features, fitted), coefficients(features, true)
        names = ["fit/bias", *(f"fit/w{i}" for i in range(1, len(fit)))]
        values = {name: float(c) for name, c in zip(names, fit, strict=True)} | {
            "fit/coef_error": float((fit - target).abs().max())
        }
        pl_module.log_dict(values, sync_dist=True)  # the same on every rank; the mean says so without a warning

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        folder = trainer.log_dir  # a broadcast: every rank calls it
        features, true, fitted = self.curves(trainer, pl_module)
        if not trainer.is_global_zero or trainer.fast_dev_run or not torch.isfinite(fitted).all():
            return
        figure = Figure(figsize=(6, 4), layout="constrained")  # no pyplot: no global figure state
        axes = figure.subplots()
        axes.plot(self.x, true, label="true curve")
        axes.plot(self.x, fitted, "--", label="model")
        axes.set(
            xlabel="x",
            ylabel="y",
            title="fitted (bias, w): " + ", ".join(f"{c:.3f}" for c in coefficients(features, fitted).tolist()),
        )
        axes.legend()
        with atomic_path(Path(folder) / "fit.png") as tmp:
            figure.savefig(tmp, dpi=100)
        log_picture(trainer, "fit/curve", figure, "fitted and true curve")
