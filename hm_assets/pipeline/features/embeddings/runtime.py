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
