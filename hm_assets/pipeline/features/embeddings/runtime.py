"""Where torch runs: the device, and how many CPU threads it may use."""

from __future__ import annotations

import os


def pick_device(configured: str = "") -> str:
    """``configured`` if given, else ``cuda`` when torch sees a GPU, else ``cpu``."""
    if configured:
        return configured
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def set_torch_threads(configured: int = 0) -> int:
    """Set torch's CPU threads: ``configured``, or (0) half the cores, at least 1.

    Half, because the image and text embedding steps may run at the same time, and torch threads
    that outnumber free cores spin and wait: on a busy 2-core machine two threads were at times
    several times slower than one (up to ~15x for the ViT forward pass; benchmarks/RESULTS.md).
    """
    import torch

    threads = configured if configured > 0 else max(1, (os.cpu_count() or 2) // 2)
    torch.set_num_threads(threads)
    return threads


PRECISIONS = ("auto", "float32", "bfloat16")


def native_bfloat16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX-BF16; Linux's CPU flags)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def pick_precision(configured: str, device: str) -> str:
    """``configured`` unless ``auto``: then ``bfloat16`` on a CPU with native bfloat16 arithmetic
    (measured: MiniLM 1.7-2.1x the texts per second of float32 with 98.7% of each text's 10 nearest
    neighbours unchanged, the ViT forward pass 1.8x; benchmarks/RESULTS.md), else ``float32``
    (elsewhere bfloat16 is emulated and slower; a GPU is fast enough in float32)."""
    if configured not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {configured!r}")
    if configured != "auto":
        return configured
    return "bfloat16" if device == "cpu" and native_bfloat16() else "float32"
