"""What every benchmark records about the machine and the memory of the process it measures."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import psutil


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> str:
    ram = psutil.virtual_memory().total / 2**30
    load = os.getloadavg()[0]
    return (
        f"{os.cpu_count()} cores ({cpu_model()}), {ram:.0f} GiB RAM, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, load average at start {load:.2f}"
    )


def tree_rss(process: psutil.Process) -> int:
    """Resident memory of a process and all its children, in bytes (0 once it has exited)."""
    try:
        processes = [process, *process.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for proc in processes:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            pass
    return total


def world_homes(description: str) -> list[tuple[Path, Path]]:
    """The ``--home HOME --data-dir DATA_DIR`` pairs of a benchmark over kept world homes (a world's
    ``HM_HOME`` left by ``bench_quality.py --keep-homes`` and its data set, with ``oracle.csv``)."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--home", action="append", required=True, type=Path)
    parser.add_argument("--data-dir", action="append", required=True, type=Path)
    args = parser.parse_args()
    if len(args.home) != len(args.data_dir):
        parser.error("give one --data-dir per --home")
    return list(zip(args.home, args.data_dir))
