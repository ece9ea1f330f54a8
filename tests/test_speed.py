"""The opt-in speed layer: scoped process settings, channels-last weights, and a default path that
never imports it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from cli import cli_main
from speed.runtime import NVML_CHECK, CPUSpeedups, set_malloc_thresholds
from tests.conftest import CONFIGS, ROOT

STEP_PAGES = 4 * (12 << 20) // 4096  # pages of one step's buffers (4 x 12 MiB)
STEPS = 20


def page_faults(keep_freed_memory: bool) -> int:
    """Minor page faults of STEPS steps that each allocate and free 4 x 12 MiB, in a fresh process
    (the allocator's settings are per process)."""
    script = textwrap.dedent(f"""
        import resource, torch
        from speed.runtime import MMAP_THRESHOLD, TRIM_THRESHOLD, set_malloc_thresholds
        if {keep_freed_memory}:
            assert set_malloc_thresholds(MMAP_THRESHOLD, TRIM_THRESHOLD)
        def step():
            buffers = [torch.ones(3 << 20) for _ in range(4)]
            del buffers
        step()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range({STEPS}):
            step()
        print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}  # no MALLOC_* or LD_PRELOAD
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True, cwd=ROOT
    )
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_kept_memory_is_reused_without_page_faults() -> None:
    kept, default = page_faults(True), page_faults(False)
    assert kept < STEPS * STEP_PAGES / 10, f"{kept} page faults in {STEPS} steps"
    assert kept < default / 3, f"{kept} page faults kept, {default} by default"


@pytest.mark.parametrize("variable", ["MALLOC_TRIM_THRESHOLD_", "LD_PRELOAD"])
def test_an_allocator_chosen_in_the_environment_is_left_alone(variable: str, monkeypatch) -> None:
    monkeypatch.setenv(variable, "1" if variable.startswith("MALLOC") else "libjemalloc.so.2")
    assert set_malloc_thresholds(1 << 20, 1 << 20) is False


@pytest.mark.skipif(not torch.backends.cuda.is_built(), reason="a CPU-only build has no NVML check")
def test_cuda_check_is_cheap_during_fit_only_and_never_with_a_gpu(monkeypatch) -> None:
    monkeypatch.setenv(NVML_CHECK, "1")  # as importing Lightning sets it
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    speedups = CPUSpeedups(keep_freed_memory=False)
    speedups.setup(None, None, "fit")
    assert os.environ[NVML_CHECK] == "0" and torch.cuda._nvml_based_avail() is False
    speedups.teardown(None, None, "fit")
    assert os.environ[NVML_CHECK] == "1"  # undone when fit ends
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)  # GPUs: forks stay CUDA-free
    speedups.setup(None, None, "fit")
    assert os.environ[NVML_CHECK] == "1"


def test_default_path_imports_nothing_from_the_speed_layer(tmp_path, mnist_dir) -> None:
    """``configs/mnist_cnn.yaml`` end to end: no speed module, no process-wide setting."""
    script = textwrap.dedent(f"""
        import os, sys
        before = dict(os.environ)
        from cli import cli_main
        cli_main(["fit", "--config", {str(CONFIGS / "mnist_cnn.yaml")!r}, "--trainer.fast_dev_run",
                  "true", "--data.data_dir", {str(mnist_dir)!r}])
        print(sorted(m for m in sys.modules if m == "speed" or m.startswith("speed.")))
        changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))
        print(changed)
    """)
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    modules, changed = out.stdout.strip().splitlines()[-2:]
    assert modules == "[]"
    assert "PYTORCH_NVML_BASED_CUDA_CHECK" not in changed  # Lightning's own import sets it, not us


def test_channels_last_stores_conv_weights_nhwc_before_the_optimizer(mnist_dir) -> None:
    cli = cli_main(
        [
            "fit",
            "--config",
            str(CONFIGS / "mnist_cnn.yaml"),
            "--config",
            str(CONFIGS / "speed" / "cpu.yaml"),
            "--data.data_dir",
            str(mnist_dir),
            "--trainer.fast_dev_run",
            "true",
        ]
    )
    convs = [m for m in cli.model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    optimizer_params = {id(p) for group in cli.trainer.optimizers[0].param_groups for p in group["params"]}
    assert all(id(c.weight) in optimizer_params for c in convs)  # the optimizer holds these very tensors
