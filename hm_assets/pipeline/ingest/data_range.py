"""The date range of the transactions file, read cheaply from its first and last rows: it shapes
the partition sets when the Definitions are built, and its fingerprint tells the sensor when the
file changed. Ingest validates every row; this only looks at two."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

from hm_assets.pipeline.ingest.data_contract import TRANSACTIONS_FILE
from hm_assets.platform.weeks import DataRange, fallback_range


def _first_data_line(handle) -> bytes:
    handle.readline()  # header
    return handle.readline()


def _last_data_line(handle, size: int) -> bytes:
    block = 4096
    position = size
    tail = b""
    while position > 0:
        step = min(block, position)
        position -= step
        handle.seek(position)
        tail = handle.read(step) + tail
        lines = tail.rstrip(b"\r\n").split(b"\n")
        if len(lines) > 1 or position == 0:
            return lines[-1]
    return b""


def _date_of(line: bytes) -> date:
    return date.fromisoformat(line.split(b",", 1)[0].decode("utf-8-sig").strip().strip('"')[:10])


def scan_data_range(data_dir: Path) -> DataRange | None:
    """First and last transaction day, read from the file's first and last rows.

    The Kaggle file is sorted by ``t_dat``; ingest verifies the real range, this cheap scan only
    shapes the partition set at definitions load time. Returns None when there is no readable file.
    """
    path = Path(data_dir) / TRANSACTIONS_FILE
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            first = _first_data_line(handle)
            last = _last_data_line(handle, size)
        return DataRange(_date_of(first), _date_of(last))
    except (OSError, ValueError, IndexError):
        return None


def env_data_range(data_dir: Path) -> DataRange:
    return scan_data_range(data_dir) or fallback_range()


def data_dir_fingerprint(data_dir: Path) -> str:
    path = Path(data_dir) / TRANSACTIONS_FILE
    try:
        stat = path.stat()
    except OSError:
        return "missing"
    return f"{stat.st_size}-{stat.st_mtime_ns}-{os.fspath(path)}"
