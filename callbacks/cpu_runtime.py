"""Process settings that make CPU training steps cheaper; both change speed only, not results.

``keep_freed_memory``: glibc's ``malloc`` hands blocks of more than 128 KiB (a threshold it
adapts upwards, not always far enough) straight to the kernel with ``mmap`` and returns them
with ``munmap`` when freed, and gives the top of the heap back whenever more than 128 KiB of it
is free. A training step allocates and frees the same activation-sized buffers every time, so
the kernel maps and zeroes fresh pages at every step: a small CNN on MNIST trains up to twice
as slowly on a CPU as it does with the memory kept. ``mallopt`` fixes both thresholds for the
rest of the process: blocks up to 32 MiB (glibc's maximum) come from the heap, and up to 1 GiB
of free heap is kept. The price is that the process keeps its peak memory until it exits, as
jemalloc and tcmalloc (the allocators PyTorch's CPU tuning guide suggests) do anyway.

``cheap_cuda_check``: importing Lightning sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1``, so that
``torch.cuda.is_available()`` asks NVML instead of initializing CUDA (a process that forks its
workers must not have initialized CUDA). Until CUDA is initialized, each such call loads the
NVML library again, and every ``optimizer.step()`` makes one (a CUDA-graph capture check): on a
machine without an NVIDIA GPU, with the usual CUDA build of PyTorch, that is about 0.5 ms per
step for nothing. Where NVML sees no device there is no CUDA to protect, so the plain check
(cached after its first call) is put back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

import torch

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc refuses more than 32 MiB (HEAP_MAX_SIZE / 2) on 64-bit
TRIM_THRESHOLD = 1 << 30
# The user chose an allocator or its settings: leave them alone.
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES", "LD_PRELOAD")


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds (see the module docstring). Returns whether they
    were set: not on other systems or C libraries, nor when the environment already chooses
    (one of ``USER_SETTINGS`` is set)."""
    if not sys.platform.startswith("linux") or any(os.environ.get(k) for k in USER_SETTINGS):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version"):  # glibc only (musl has no such thresholds)
        return False
    mallopt = libc.mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )


def cheap_cuda_check() -> bool:
    """Turn Lightning's NVML-based ``torch.cuda.is_available()`` back into PyTorch's own, cached
    check when there is no CUDA device to see (see the module docstring). Returns whether it did."""
    if os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") != "1" or not torch.backends.cuda.is_built():
        return False
    if torch.cuda.device_count() > 0:  # asks NVML: does not initialize CUDA
        return False
    os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "0"
    return True
