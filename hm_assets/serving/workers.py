"""``hm-recs serve --workers N``: N uvicorn worker processes answering on one port.

One process answers at most ~13 purchases/s: the recomputation after a purchase is Python that holds
the interpreter lock. Several processes use several cores. Each worker loads the week itself (its
own copy in memory, read-only files) and answers every endpoint; what they share lives in files:

* online purchases: the store's event log, the truth every worker catches up with before it answers
  anything that depends on a customer's purchases (``RecommendationService._catch_up``); one
  customer's purchases are serialized across processes by ``events.CustomerLocks``;
* ``POST /admin/reload``: it reaches one worker, which writes the request to ``reload.json`` of the
  server's folder; every worker's poller follows it (``ReloadRequests``);
* metrics: prometheus_client's multiprocess files in ``metrics/`` of that folder (``metrics.py``);
* computed lists: each list a worker computes (after a purchase, say) is appended to ``lists.jsonl``
  of that folder, and another worker asked for the same list takes it from there instead of
  computing it again (``SharedLists``): with random routing, every purchase would otherwise cost a
  second computation on the next read that lands on another worker.

The parent process (uvicorn's supervisor: it restarts a worker that dies) creates the folder, writes
``config.json`` (what every worker builds its app from, ``ServeConfig``), names both in the
environment the workers inherit (``HM_SERVE_CONFIG``, ``PROMETHEUS_MULTIPROC_DIR``) and removes the
folder when it exits.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from hm_assets.serving.events import write_all
from hm_assets.serving.metrics import MULTIPROCESS_VARIABLE

CONFIG_VARIABLE = "HM_SERVE_CONFIG"


@dataclass(frozen=True)
class WorkerGroup:
    """The workers of one server: how many, and the folder they share."""

    count: int
    folder: Path

    @property
    def metrics_dir(self) -> Path:
        return self.folder / "metrics"

    @property
    def reload_file(self) -> Path:
        return self.folder / "reload.json"

    @property
    def config_file(self) -> Path:
        return self.folder / "config.json"

    @property
    def lists_file(self) -> Path:
        return self.folder / "lists.jsonl"


@dataclass(frozen=True)
class ServeConfig:
    """``hm-recs serve``'s options, as every worker of a multi-worker server reads them."""

    home: str
    week: str | None
    reload_seconds: float
    threads: int | None
    computed_lists: int | None
    workers: int
    folder: str

    @property
    def group(self) -> WorkerGroup:
        return WorkerGroup(self.workers, Path(self.folder))

    @classmethod
    def from_environment(cls) -> ServeConfig:
        path = os.environ.get(CONFIG_VARIABLE)
        if not path:
            raise RuntimeError(f"{CONFIG_VARIABLE} is not set: a worker app is started by hm-recs serve --workers N")
        return cls(**json.loads(Path(path).read_text()))


@contextmanager
def worker_folder(config: ServeConfig) -> Iterator[WorkerGroup]:
    """The server's shared folder for the block (``config.folder`` is ignored: a new temporary folder),
    with ``config.json`` written and ``HM_SERVE_CONFIG`` and ``PROMETHEUS_MULTIPROC_DIR`` set in
    os.environ for the workers started inside the block to inherit; both restored, the folder removed
    after."""
    folder = Path(tempfile.mkdtemp(prefix="hm-recs-serve-"))
    group = WorkerGroup(config.workers, folder)
    group.metrics_dir.mkdir()
    written = ServeConfig(**{**asdict(config), "folder": str(folder)})
    group.config_file.write_text(json.dumps(asdict(written), indent=1) + "\n")
    values = {CONFIG_VARIABLE: str(group.config_file), MULTIPROCESS_VARIABLE: str(group.metrics_dir)}
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield group
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True)
class ReloadRequest:
    """A ``POST /admin/reload``: serve ``week`` and stay on it, or (None) the newest and follow."""

    id: str
    week: str | None


class ReloadRequests:
    """The newest reload request of a server, in one file its workers' pollers read; replaced whole
    (a rename), so a reader sees the old request or the new one."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def publish(self, week: str | None) -> ReloadRequest:
        request = ReloadRequest(uuid.uuid4().hex, week)
        temporary = self.path.with_name(f".{self.path.name}.{request.id}.tmp")
        temporary.write_text(json.dumps(asdict(request)))
        os.replace(temporary, self.path)
        return request

    def current(self) -> ReloadRequest | None:
        try:
            return ReloadRequest(**json.loads(self.path.read_text()))
        except FileNotFoundError:
            return None


SHARED_LISTS_BYTES = 64 * 2**20  # ~20,000 lists: past it the file starts again, empty


class SharedLists:
    """The lists the workers of one server computed, for the others to answer without computing them
    again: a JSON line per list (week, key as ``service.computed_key`` makes it, items) appended to one
    file under an exclusive flock; each worker keeps its offset and takes the lines appended since. A
    cache: everything a list depends on is in its key and week, so a list taken is never stale, and
    one missed is computed. The file starts again, empty, when it passes ``limit`` bytes; a reader
    whose offset is then past its end reads it from the start (a line it reads from the middle does
    not parse and is skipped)."""

    def __init__(self, path: Path, limit: int = SHARED_LISTS_BYTES) -> None:
        self.path = Path(path)
        self.limit = int(limit)
        self._offset = 0
        self._lock = threading.Lock()

    def publish(self, week: str, key: tuple, items: list[dict]) -> None:
        customer_key, bought, k = key
        line = json.dumps({"week": week, "key": [customer_key, list(bought), k], "items": items}, separators=(",", ":"))
        data = (line + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_size + len(data) > self.limit:
                os.ftruncate(fd, 0)
            write_all(fd, data)
        finally:
            os.close(fd)  # releases the flock

    def taken(self, wait: bool = True) -> list[tuple[str, tuple, list[dict]]]:
        """(week, key, items) of every list appended since the last call; ``wait=False``: [] rather than
        wait while a list is being appended (or another thread of this worker reads)."""
        if not self._lock.acquire(blocking=wait):
            return []
        try:
            try:
                if os.stat(self.path).st_size == self._offset:
                    return []
                fd = os.open(self.path, os.O_RDONLY)
            except FileNotFoundError:
                return []
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH if wait else fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    return []
                size = os.fstat(fd).st_size
                if size < self._offset:
                    self._offset = 0
                data = os.pread(fd, size - self._offset, self._offset)
            finally:
                os.close(fd)
            complete = data.rfind(b"\n") + 1
            self._offset += complete
        finally:
            self._lock.release()
        lists = []
        for line in data[:complete].split(b"\n")[:-1]:
            try:
                record = json.loads(line)
                customer_key, bought, k = record["key"]
                lists.append((str(record["week"]), (int(customer_key), tuple(int(a) for a in bought), int(k)), record["items"]))
            except (ValueError, KeyError, TypeError):
                continue
        return lists


__all__ = [
    "CONFIG_VARIABLE", "ReloadRequest", "ReloadRequests", "ServeConfig", "SharedLists", "WorkerGroup", "worker_folder",
]
