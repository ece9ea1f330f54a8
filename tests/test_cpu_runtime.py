"""CPU process settings: freed memory stays in the process (no page faults at every step), and
without a CUDA device ``torch.cuda.is_available()`` stops probing NVML at every optimizer step."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import cli
from callbacks.cpu_runtime import cheap_cuda_check, keep_freed_memory

ROOT = Path(__file__).resolve().parents[1]
STEP_PAGES = 4 * (12 << 20) // 4096  # pages of one step's buffers (4 x 12 MiB)
STEPS = 20

def page_faults_with_memory_kept() -> int:
    """Minor page faults of STEPS steps that each allocate and free 4 x 12 MiB, in a fresh process
    (the allocator's settings are per process) that keeps freed memory."""
    script = textwrap.dedent(f"""
        import resource, torch
        from callbacks.cpu_runtime import keep_freed_memory
        assert keep_freed_memory()
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
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         check=True, cwd=ROOT)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_kept_memory_is_reused_without_page_faults() -> None:
    kept = page_faults_with_memory_kept()
    assert kept < STEPS * STEP_PAGES / 10, f"{kept} page faults in {STEPS} steps"


@pytest.mark.parametrize("variable", ["MALLOC_TRIM_THRESHOLD_", "LD_PRELOAD"])
def test_an_allocator_chosen_in_the_environment_is_left_alone(variable: str, monkeypatch) -> None:
    monkeypatch.setenv(variable, "1" if variable.startswith("MALLOC") else "libjemalloc.so.2")
    assert keep_freed_memory() is False


@pytest.mark.parametrize("flag", [None, "true", "false"])
def test_the_cli_flag_decides(flag: str | None, monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append(1) or True)
    args = ["--config", str(ROOT / "configs" / "polynomial_regression.yaml")]
    if flag is not None:
        args += ["--keep_freed_memory", flag]
    cli.cli_main(args, run=False)
    assert calls == ([] if flag == "false" else [1])


@pytest.mark.skipif(not torch.backends.cuda.is_built(), reason="a CPU-only build has no NVML check")
def test_without_a_cuda_device_the_cuda_check_is_the_cached_one(monkeypatch) -> None:
    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")  # as importing Lightning sets it
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert cheap_cuda_check() is True
    assert torch.cuda._nvml_based_avail() is False
    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)  # GPUs: forks stay CUDA-free
    assert cheap_cuda_check() is False
    assert torch.cuda._nvml_based_avail() is True
