"""On one CUDA device (skipped without): the fast recipes' accuracy, bf16 and the sync-free step."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from bench.common import SyncCheck
from cli import cli_main
from tests.conftest import CONFIGS, real_data_dir
from tests.fake_data import write_image_folder

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
ONE_GPU = ["--trainer.accelerator", "gpu", "--trainer.devices", "1"]


@pytest.fixture(scope="module")
def cifar_folder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CIFAR-10-like image folder (32 x 32 images) for cifar10_fast."""
    return write_image_folder(tmp_path_factory.mktemp("cifar_folder"), size=(32, 32))


def test_mnist_fast_reaches_its_accuracy_with_data_on_the_gpu() -> None:
    """One epoch of mnist_fast on real MNIST, batches made on the GPU: test accuracy >= 98.5%."""
    data = real_data_dir()
    if data is None:
        pytest.skip("real MNIST not found (../shared/data or $DATA_DIR)")
    cli = cli_main(["fit", "--config", str(CONFIGS / "mnist_fast.yaml"), "--data.data_dir", str(data), *ONE_GPU])
    loader = cli.trainer.train_dataloader
    assert type(loader).__name__ == "DeviceLoader" and loader.images.is_cuda
    metrics = json.loads((cli.runs[-1].path / "metrics.json").read_text())["metrics"]
    assert metrics["test/acc"] >= 0.985, metrics


class OutputDtypes(Callback):
    """Records the dtype of the network's outputs in training steps."""

    def __init__(self) -> None:
        self.dtypes: list[torch.dtype] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.hook = pl_module.net.register_forward_hook(lambda net, args, out: self.dtypes.append(out.dtype))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.hook.remove()


def test_cifar10_fast_trains_a_few_steps_in_bf16(cifar_folder_dir: Path) -> None:
    """cifar10_fast on the GPU (bf16 autocast, data on the device): the network computes in bf16,
    steps are taken and the evaluation after fit gives finite numbers."""
    probe = OutputDtypes()
    args = ["fit", "--config", str(CONFIGS / "cifar10_fast.yaml"), "--data.data_dir", str(cifar_folder_dir)]
    cli = cli_main([*args, "--trainer.max_epochs", "3", *ONE_GPU], callbacks=[probe])
    assert cli.trainer.precision == "bf16-mixed" and cli.trainer.global_step == 3
    assert probe.dtypes and set(probe.dtypes) == {torch.bfloat16}  # training and validation steps
    metrics = json.loads((cli.runs[-1].path / "metrics.json").read_text())["metrics"]
    assert all(torch.isfinite(torch.tensor(value)) for value in metrics.values()), metrics


def test_a_training_step_never_waits_for_the_gpu(mnist_dir: Path) -> None:
    """mnist_fast on one GPU with CUDA's sync debug mode set to error inside every training step
    after the first: no step synchronizes host and device (an item(), a copy to the host, a
    data-dependent shape)."""
    args = ["fit", "--config", str(CONFIGS / "mnist_fast.yaml"), "--data.data_dir", str(mnist_dir)]
    args += ["--data.batch_size", "16", "--trainer.max_epochs", "2", *ONE_GPU]
    cli = cli_main(args, callbacks=[SyncCheck()])
    assert cli.trainer.global_step >= 10
    assert torch.cuda.get_sync_debug_mode() == 0  # back to default after the steps
