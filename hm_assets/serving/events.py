"""The online purchase event log: every purchase ``hm-recs serve`` accepts, durably, as JSON lines.

One JSON object per line (the fields of ``PurchaseEvent``) in ``events/purchases.jsonl`` under the
store's root. An append is one write of whole lines followed by an fsync, under a lock that holds
across threads and processes, so an acknowledged event survives a kill -9 or a power cut. The next
weekly ``transactions`` partition ingests the events (``hm_assets.pipeline.ingest.ingest.write_week``).

The log is also what the workers of one ``hm-recs serve`` share: each keeps a ``LogPosition`` (the
byte offset past the last complete line it applied) and reads only what was appended after it
(``EventLog.read_since``). Complete lines never move: the only bytes ever cut off are a torn last
line (a write killed half-way, never acknowledged), and a reader never consumes that.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import threading
import uuid
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path

import pandas as pd

from hm_assets.platform.store import HMStore

EVENTS_FILE = "events/purchases.jsonl"
CUSTOMER_LOCKS_FOLDER = "events/locks"
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


def customer_locks_path(store: HMStore) -> Path:
    return store.root / CUSTOMER_LOCKS_FOLDER


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


@dataclass(frozen=True)
class LogPosition:
    """How far a reader has read the log: the file it read (device, inode; None before there was
    one) and the byte offset just past the last complete line it consumed."""

    file: tuple[int, int] | None = None
    offset: int = 0


@dataclass(frozen=True)
class LogTail:
    """What ``read_since`` found after a position: the events of the complete lines, in log order,
    duplicates included; the position after them. ``restarted``: the file is not the one the position
    was taken in, or is shorter than its offset (replaced or cut by hand), so ``events`` are the whole
    log again. ``torn``: the log ends with a torn line (not consumed; the next append cuts it off)."""

    events: list[PurchaseEvent] = field(default_factory=list)
    position: LogPosition = LogPosition()
    restarted: bool = False
    torn: bool = False


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
        with self.locked() as log:
            log.append(events)

    @contextmanager
    def locked(self) -> Iterator[LockedLog]:
        """The log held exclusively (threads of this process and other processes) with any torn last
        line cut off: read what others appended, then append, with nobody writing in between."""
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
                _drop_torn_tail(fd)
                yield LockedLog(fd, self.path)
            finally:
                os.close(fd)  # closing releases the flock
            if created:
                _fsync_dir(self.path.parent)

    def changed_since(self, position: LogPosition) -> bool:
        """Whether the log may hold lines after ``position`` (a stat, no lock, no read)."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return position.file is not None
        return (stat.st_dev, stat.st_ino) != position.file or stat.st_size != position.offset

    def read_since(self, position: LogPosition, wait: bool = True) -> LogTail | None:
        """The complete events appended after ``position`` (``LogPosition()``: all of them), read
        under a shared lock so that a batch whose write has not finished (or fails and is cut off
        again) is never seen. ``wait=False``: None instead of waiting while someone appends."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return LogTail(restarted=position.file is not None)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH if wait else fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return None
            return _tail(fd, self.path, position)
        finally:
            os.close(fd)

    def read(self) -> list[PurchaseEvent]:
        """Every complete event, the first of each event_id, in log order; [] when there is no log."""
        tail = self.read_since(LogPosition())
        assert tail is not None
        self.torn_lines = int(tail.torn)
        events: list[PurchaseEvent] = []
        seen: set[str] = set()
        for event in tail.events:
            if event.event_id not in seen:
                seen.add(event.event_id)
                events.append(event)
        return events

    def event_ids(self) -> set[str]:
        return {event.event_id for event in self.read()}


class LockedLog:
    """The log while ``EventLog.locked`` holds it."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd = fd
        self.path = path

    def read_since(self, position: LogPosition) -> LogTail:
        return _tail(self._fd, self.path, position)

    def append(self, events: Sequence[PurchaseEvent]) -> LogPosition:
        """Write ``events`` durably; the position just past them (the end of the log)."""
        data = "".join(_checked_line(event) for event in events).encode("utf-8")
        stat = os.fstat(self._fd)
        start = stat.st_size
        try:
            write_all(self._fd, data)
            os.fsync(self._fd)
        except OSError:
            # Leave no partial batch behind for the caller's retry to duplicate.
            _truncate_quietly(self._fd, start)
            raise
        return LogPosition((stat.st_dev, stat.st_ino), start + len(data))


class CustomerLocks:
    """One customer at a time, across the threads and processes of every server on a store: an
    exclusive flock on one of ``buckets`` files (the bucket from a hash that is the same in every
    process), opened for each acquisition, so that two threads of one process exclude each other too."""

    def __init__(self, folder: Path, buckets: int) -> None:
        self.folder = Path(folder)
        self.buckets = int(buckets)

    def bucket(self, name: str) -> int:
        return zlib.crc32(name.encode("utf-8")) % self.buckets

    @contextmanager
    def hold(self, name: str) -> Iterator[None]:
        path = self.folder / f"customer-{self.bucket(name):04d}.lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the flock


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


def _tail(fd: int, path: Path, position: LogPosition) -> LogTail:
    """The complete lines of ``fd`` after ``position`` (caller holds a flock on it)."""
    stat = os.fstat(fd)
    file = (stat.st_dev, stat.st_ino)
    restarted = position.file is not None and (position.file != file or stat.st_size < position.offset)
    start = 0 if restarted else position.offset
    data = os.pread(fd, stat.st_size - start, start) if stat.st_size > start else b""
    events, consumed, torn = _parse_lines(data, path, start)
    return LogTail(events, LogPosition(file, start + consumed), restarted, torn)


def _parse_lines(data: bytes, path: Path, offset: int) -> tuple[list[PurchaseEvent], int, bool]:
    """The events of ``data``'s complete lines (read from byte ``offset`` of the log), the bytes they
    take, and whether the data ends with a torn line. A last line without its newline, or a last
    complete line that is not an event, is torn: not consumed (``_drop_torn_tail`` cuts it off
    before the next append). Any other line that is not an event is an error."""
    lines = data.split(b"\n")
    torn = bool(lines.pop())  # the bytes after the last newline: a write that did not finish
    events: list[PurchaseEvent] = []
    consumed = 0
    last = len(lines) - 1
    for index, raw in enumerate(lines):
        if raw.strip():
            try:
                events.append(PurchaseEvent.from_json(raw.decode("utf-8")))
            except (ValueError, KeyError, TypeError) as error:
                if index == last and not torn:
                    return events, consumed, True
                where = f"line {index + 1}" + (f" after byte {offset}" if offset else "")
                raise EventLogError(f"{path}: {where} is not a purchase event: {error}") from error
        consumed += len(raw) + 1
    return events, consumed, torn


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


def write_all(fd: int, data: bytes) -> None:
    """``data`` written whole to ``fd`` (``os.write`` may write less than it is given)."""
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
    "CUSTOMER_LOCKS_FOLDER",
    "EVENTS_FILE",
    "CustomerLocks",
    "EventLog",
    "EventLogError",
    "LockedLog",
    "LogPosition",
    "LogTail",
    "PurchaseEvent",
    "customer_locks_path",
    "event_log_path",
    "new_event_id",
    "read_events_frame",
    "write_all",
]
