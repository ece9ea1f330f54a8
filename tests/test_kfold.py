"""scripts/kfold.py: one fit per fold, a summary of their validation metrics, folds kept across runs."""

from __future__ import annotations

import importlib.util
import json
import statistics
from pathlib import Path

import pytest

from tests.conftest import CONFIGS, ROOT


def load_kfold():
    spec = importlib.util.spec_from_file_location("kfold_script", ROOT / "scripts" / "kfold.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


kfold = load_kfold()
GROUP = Path("logs/mnist_softmax/g")  # <save_dir>/<experiment>/<group>, under the test's folder


@pytest.fixture
def fit_args(mnist_dir: Path) -> list[str]:
    return ["--config", str(CONFIGS / "mnist_softmax.yaml"), "--data.data_dir", str(mnist_dir)]


def finished(fold: int, metrics: dict[str, float], root: Path = Path()) -> None:
    """A fold's run folder as a finished fit leaves it (its metrics.json)."""
    path = root / GROUP / f"fold_{fold}" / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"metrics": metrics}))


def test_summarize_names_the_unfinished_folds(fit_args: list[str]) -> None:
    """--summarize with a fold not finished trains nothing and exits naming that fold."""
    finished(0, {"val/acc": 0.5})
    with pytest.raises(SystemExit) as stop:
        kfold.main(["--num_folds", "3", "--group", "g", "--summarize", *fit_args])
    assert "folds [1, 2] of logs/mnist_softmax/g are not finished" in str(stop.value.code)
    assert not (GROUP / "kfold.json").exists() and not (GROUP / "fold_1").exists()


def test_finished_folds_are_kept_and_summarized(fit_args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """With every fold finished, a run of the group trains nothing (a launcher that fails is never
    started) and writes the mean and sample std of each validation metric."""
    finished(0, {"val/acc": 0.5, "val/loss": 1.0, "test/acc": 0.4})
    finished(1, {"val/acc": 0.7, "val/loss": 2.0, "test/acc": 0.6})
    report = kfold.main(["--num_folds", "2", "--group", "g", "--launcher", "false", *fit_args])
    assert "fold 0 of 2" not in capsys.readouterr().out
    assert report == json.loads((GROUP / "kfold.json").read_text())
    assert report["summary"] == {
        "val/acc": {"mean": pytest.approx(0.6), "std": pytest.approx(statistics.stdev([0.5, 0.7]))},
        "val/loss": {"mean": 1.5, "std": pytest.approx(statistics.stdev([1.0, 2.0]))},
    }


def test_folds_are_found_under_default_root_dir(fit_args: list[str]) -> None:
    """--trainer.default_root_dir D moves the folds under D, where the summary finds them."""
    for fold in (0, 1):
        finished(fold, {"val/acc": 0.5 + fold / 10}, Path("runs"))
    report = kfold.main(
        ["--num_folds", "2", "--group", "g", "--summarize", *fit_args, "--trainer.default_root_dir", "runs"]
    )
    assert report["summary"]["val/acc"]["mean"] == pytest.approx(0.55)
    assert (Path("runs") / GROUP / "kfold.json").is_file() and not Path("logs").exists()


def test_a_fold_outside_the_folds_is_refused(fit_args: list[str]) -> None:
    """--fold 2 of 2 folds is a usage error, before anything runs."""
    with pytest.raises(SystemExit) as stop:
        kfold.main(["--num_folds", "2", "--fold", "2", *fit_args])
    assert stop.value.code == 2 and not Path("logs").exists()


def fold_metrics(k: int) -> list[dict[str, float]]:
    return [json.loads((GROUP / f"fold_{i}" / "metrics.json").read_text())["metrics"] for i in range(k)]


@pytest.mark.slow
def test_two_folds_then_a_rerun_that_trains_nothing(fit_args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Two folds through the DataLoader path: kfold.json holds both folds' metrics, their mean and
    std; the same command with the same group again trains nothing and leaves the folds as they are."""
    command = ["--num_folds", "2", "--group", "g", *fit_args, "--data.device_resident", "false"]
    report = kfold.main([*command, "--trainer.max_epochs", "1"])
    folds = fold_metrics(2)
    assert report["folds"] == folds and folds[0] != folds[1]  # each fold validates on its own half
    for name in ("val/acc", "val/loss"):
        values = [fold[name] for fold in folds]
        assert report["summary"][name] == {"mean": statistics.fmean(values), "std": statistics.stdev(values)}
    assert json.loads((GROUP / "kfold.json").read_text()) == report
    assert "fold 1 of 2" in capsys.readouterr().out

    written = {p: p.stat().st_mtime_ns for p in GROUP.rglob("*") if p.is_file() and p.name != "kfold.json"}
    again = kfold.main([*command, "--trainer.max_epochs", "1"])
    assert "of 2: " not in capsys.readouterr().out  # no fold started
    assert again["summary"] == report["summary"]
    assert {p: p.stat().st_mtime_ns for p in written} == written


@pytest.mark.slow
def test_one_fold_per_job_and_the_last_summarizes(fit_args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """--fold 0 then --fold 1 (as SLURM array tasks run them, data on the device): the first reports
    the other fold unfinished and writes no summary; the second writes it."""
    command = ["--num_folds", "2", "--group", "g", *fit_args, "--trainer.max_epochs", "1"]
    assert kfold.main([*command, "--fold", "0"]) is None
    assert "folds [1] of logs/mnist_softmax/g are not finished yet" in capsys.readouterr().out
    assert not (GROUP / "kfold.json").exists()
    report = kfold.main([*command, "--fold", "1"])
    assert report["folds"] == fold_metrics(2)
    assert set(report["summary"]) == {"val/acc", "val/loss"}
