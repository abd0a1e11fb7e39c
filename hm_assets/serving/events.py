"""The online purchase event log: every purchase ``hm-recs serve`` accepts, durably, as JSON lines.

One JSON object per line (the fields of ``PurchaseEvent``) in ``events/purchases.jsonl`` under the
store's root. An append is one write of whole lines followed by an fsync, under a lock that holds
across threads and processes, so an acknowledged event survives a kill -9 or a power cut. The next
weekly ``transactions`` partition ingests the events (``hm_assets.pipeline.ingest.ingest.write_week``).
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import threading
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

import pandas as pd

from hm_assets.platform.store import HMStore

EVENTS_FILE = "events/purchases.jsonl"
SALES_CHANNELS = (1, 2)
FRAME_DTYPES = {
    "event_id": "object",
    "t_dat": "object",  # datetime.date values, as pandas reads a Parquet DATE column
    "customer_key": "int64",
    "article_id": "int32",
    "price": "float32",
    "sales_channel_id": "int8",
}


class EventLogError(ValueError):
    """A line of the event log, other than a torn last one, that is not an event."""


def event_log_path(store: HMStore) -> Path:
    return store.root / EVENTS_FILE


def new_event_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class PurchaseEvent:
    """One accepted purchase. ``event_id`` is the idempotency key: the log keeps its first event."""

    event_id: str
    customer_id: str
    customer_key: int
    article_id: int
    t_dat: date
    price: float | None
    sales_channel_id: int
    week: str
    recorded_at: str

    def __post_init__(self) -> None:
        if not self.event_id:
            raise ValueError("a purchase event needs an event_id")
        if self.sales_channel_id not in SALES_CHANNELS:
            raise ValueError(f"sales_channel_id must be 1 or 2, not {self.sales_channel_id!r}")
        if self.price is not None and not (math.isfinite(self.price) and self.price >= 0):
            raise ValueError(f"price must be a non-negative number or missing, not {self.price!r}")

    def to_json(self) -> str:
        record = asdict(self)
        record["t_dat"] = self.t_dat.isoformat()
        return json.dumps(record, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> PurchaseEvent:
        record = json.loads(line)
        if not isinstance(record, dict):
            raise ValueError(f"expected a JSON object, got {type(record).__name__}")
        price = record["price"]
        return cls(
            event_id=str(record["event_id"]),
            customer_id=str(record["customer_id"]),
            customer_key=int(record["customer_key"]),
            article_id=int(record["article_id"]),
            t_dat=date.fromisoformat(record["t_dat"]),
            price=None if price is None else float(price),
            sales_channel_id=int(record["sales_channel_id"]),
            week=str(record["week"]),
            recorded_at=str(record["recorded_at"]),
        )


class EventLog:
    """An append-only, fsync'd JSON-lines file of purchase events."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.torn_lines = 0  # torn final lines the last read() ignored (0 or 1)
        self._lock = threading.Lock()

    def append(self, events: Sequence[PurchaseEvent]) -> None:
        """Write ``events`` durably: when this returns they are on disk. An OSError propagates."""
        if not events:
            return
        data = "".join(_checked_line(event) for event in events).encode("utf-8")
        with self._lock:
            _make_dirs(self.path.parent)
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
                created = True
            except FileExistsError:
                fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
                created = False
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                start = _drop_torn_tail(fd)
                try:
                    _write_all(fd, data)
                    os.fsync(fd)
                except OSError:
                    # Leave no partial batch behind for the caller's retry to duplicate.
                    _truncate_quietly(fd, start)
                    raise
            finally:
                os.close(fd)  # closing releases the flock
            if created:
                _fsync_dir(self.path.parent)

    def read(self) -> list[PurchaseEvent]:
        """Every complete event, the first of each event_id, in log order; [] when there is no log."""
        self.torn_lines = 0
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        lines = data.split(b"\n")
        if lines[-1]:
            # No trailing newline: a write that did not finish (never acknowledged).
            self.torn_lines = 1
        lines.pop()
        events: list[PurchaseEvent] = []
        seen: set[str] = set()
        last = len(lines) - 1
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                event = PurchaseEvent.from_json(raw.decode("utf-8"))
            except (ValueError, KeyError, TypeError) as error:
                if number - 1 == last and not self.torn_lines:
                    self.torn_lines = 1  # a last line that is not an event: torn as well
                    continue
                raise EventLogError(f"{self.path}: line {number} is not a purchase event: {error}") from error
            if event.event_id not in seen:
                seen.add(event.event_id)
                events.append(event)
        return events

    def event_ids(self) -> set[str]:
        return {event.event_id for event in self.read()}


def read_events_frame(path: Path) -> pd.DataFrame:
    """The log's events as a frame of the transactions' columns (and event_id), in log order."""
    events = EventLog(path).read()
    frame = pd.DataFrame(
        {
            "event_id": [e.event_id for e in events],
            "t_dat": [e.t_dat for e in events],
            "customer_key": [e.customer_key for e in events],
            "article_id": [e.article_id for e in events],
            "price": [math.nan if e.price is None else e.price for e in events],
            "sales_channel_id": [e.sales_channel_id for e in events],
        }
    )
    return frame.astype(FRAME_DTYPES)


def _checked_line(event: PurchaseEvent) -> str:
    """The event's line, refused unless it reads back as the same event: one unreadable line
    in the middle of the log would make the whole log unreadable."""
    line = event.to_json()
    try:
        same = PurchaseEvent.from_json(line) == event
    except (ValueError, KeyError, TypeError):
        same = False
    if not same:
        raise ValueError(f"this event would not read back from the log as written: {event!r}")
    return line + "\n"


def _make_dirs(folder: Path) -> None:
    """Create ``folder`` and missing parents, each made durable in its parent directory."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for created in reversed(missing):
        created.mkdir(exist_ok=True)
        _fsync_dir(created.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _truncate_quietly(fd: int, size: int) -> None:
    try:
        os.ftruncate(fd, size)
    except OSError:
        pass  # the original error is the one to report; read() copes with a torn tail


def _drop_torn_tail(fd: int) -> int:
    """Cut a torn last line (left by a writer killed mid-write) off the file; returns the new size.

    Called under the flock, so no live writer is mid-write. Appending after the torn bytes would
    glue them to the next event and turn them into an invalid line in the middle of the log.
    """
    size = os.fstat(fd).st_size
    position, tail = size, b""
    while position > 0 and b"\n" not in tail[:-1]:
        step = min(4096, position)
        position -= step
        tail = os.pread(fd, step, position) + tail
    cut = tail.rfind(b"\n", 0, max(len(tail) - 1, 0))  # the newline before the last line; -1: none
    last_line = tail[cut + 1 :]
    if not last_line or (last_line.endswith(b"\n") and _is_event_or_blank(last_line[:-1])):
        return size
    keep = position + cut + 1
    os.ftruncate(fd, keep)
    os.fsync(fd)
    return keep


def _is_event_or_blank(line: bytes) -> bool:
    if not line.strip():
        return True
    try:
        PurchaseEvent.from_json(line.decode("utf-8"))
    except (ValueError, KeyError, TypeError):
        return False
    return True


__all__ = [
    "EVENTS_FILE",
    "EventLog",
    "EventLogError",
    "PurchaseEvent",
    "event_log_path",
    "new_event_id",
    "read_events_frame",
]
