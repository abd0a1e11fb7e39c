"""Asset files on object storage, shared by runs on different nodes.

With ``HMStore.object_store`` (or ``HM_OBJECT_STORE``) set to an fsspec URI — ``s3://bucket/prefix``
(s3fs; endpoint and credentials from the usual AWS variables), ``gs://…``, ``file:///shared/…`` —
the local ``HM_HOME`` becomes a per-node cache of it:

- every output is written locally as always (temporary sibling, then rename) and then uploaded to a
  temporary key that is moved into place, so a reader sees the previous object or the new one. The
  upload goes to the ``ObjectStore`` the write is given (``HMStore.atomic_path``/``HMStore.write_parquet``
  pass the store's own); nothing is registered per process;
- every input is read through ``HMStore.require``/``HMStore.fetch``: downloaded when the local
  copy is missing or differs from the object (its size and ETag or modification time are recorded
  per file under ``.object-store/``);
- ``HMStore.exists`` and ``HMStore.partitions`` ask the object store.

DuckDB only ever reads local files, so SQL needs no credentials or extensions. Only ``assets/``,
``parts/`` (shard parts waiting to be combined) and ``handoff/`` (the small values steps hand each
other, ``hm_assets/platform/handoff.py``) are shared; the ingest staging cache, DuckDB spill folders
and Dagster's own storage stay local.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import fsspec

SHARED_FOLDERS = ("assets", "parts", "handoff")
STAMPS = ".object-store"


def visible_files(folder: Path) -> list[Path]:
    """Every file under ``folder``, sorted, without dot-named ones (writes in progress, stamps)."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


class ObjectStore:
    """An fsspec location mirrored by a local cache root: one per ``HMStore`` (``HMStore.objects``)."""

    def __init__(self, uri: str, cache_root: Path) -> None:
        self.uri = uri
        self.fs, base = fsspec.core.url_to_fs(uri)
        self.base = base.rstrip("/")
        self.cache_root = cache_root

    def shares(self, local: Path) -> bool:
        try:
            relative = local.relative_to(self.cache_root)
        except ValueError:
            return False
        return bool(relative.parts) and relative.parts[0] in SHARED_FOLDERS

    def key(self, local: Path) -> str:
        return f"{self.base}/{local.relative_to(self.cache_root).as_posix()}"

    def _stamp_file(self, local: Path) -> Path:
        return self.cache_root / STAMPS / f"{local.relative_to(self.cache_root).as_posix()}.json"

    def _fresh(self, key: str) -> str:
        # Listings are cached per process (s3fs); other nodes may have written since.
        self.fs.invalidate_cache(key)
        return key

    def _stamp(self, key: str) -> str | None:
        try:
            info = self.fs.info(self._fresh(key))
        except FileNotFoundError:
            return None
        version = info.get("ETag") or info.get("etag") or info.get("LastModified") or info.get("mtime") or info.get("created")
        return f"{info.get('size')}:{version}"

    def _remember(self, local: Path, stamp: str | None) -> None:
        record = self._stamp_file(local)
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"stamp": stamp}))

    def remembered(self, local: Path) -> str | None:
        """The object's stamp (size and version) when ``local`` was last fetched or uploaded."""
        record = self._stamp_file(local)
        return json.loads(record.read_text())["stamp"] if record.exists() else None

    def upload(self, local: Path) -> None:
        """Publish a finished local file (or every file of a finished folder: its files first, then
        the object's files that the folder no longer has are removed, so the object never lacks a
        file it should have; a reader fetching meanwhile may still mix old and new files)."""
        if local.is_dir():
            key = self.key(local)
            if self.fs.isfile(self._fresh(key)):
                self.fs.rm(key)  # an earlier version was a file
            files = visible_files(local)
            for file in files:
                self.upload(file)
            published = {self.key(file) for file in files}
            for remote in self.fs.find(self._fresh(key)):
                if remote.rstrip("/") not in published:
                    self.fs.rm(remote)
            return
        key = self.key(local)
        folder, name = key.rsplit("/", 1)
        # dot-named: a reader listing the folder skips it (``fetch``, pandas, pyarrow)
        temporary = f"{folder}/.{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.fs.makedirs(folder, exist_ok=True)
        self.fs.put_file(str(local), temporary)
        if self.fs.isdir(self._fresh(key)):  # an earlier version was a folder: a move would go into it
            self.fs.rm(key, recursive=True)
        self.fs.mv(temporary, key)
        self._remember(local, self._stamp(key))

    def fetch(self, local: Path) -> bool:
        """Bring the local copy up to date with the object; False when there is no such object."""
        key = self.key(local)
        if self.fs.isdir(self._fresh(key)):
            if local.exists() and not local.is_dir():
                local.unlink()
            found = set()
            for remote in self.fs.find(key):
                if remote.rsplit("/", 1)[-1].startswith("."):  # another writer's upload in progress
                    continue
                file = self.cache_root / remote[len(self.base) + 1 :]
                if self.fetch(file):
                    found.add(file)
            # A folder is read whole (an asset written as a folder of Parquet files): files the object no longer
            # has, from an earlier version of it, must not be read with the new ones.
            kept = visible_files(local) if local.is_dir() else []
            for stale in set(kept) - found:
                stale.unlink()
            return bool(found)
        stamp = self._stamp(key)
        if stamp is None:
            return False
        if local.exists() and self.remembered(local) == stamp:
            return True
        local.parent.mkdir(parents=True, exist_ok=True)
        if local.is_dir():  # an earlier version of it was a folder
            shutil.rmtree(local)
        temporary = local.with_name(f".{local.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            self.fs.get_file(key, str(temporary))
            os.replace(temporary, local)
        finally:
            temporary.unlink(missing_ok=True)
        self._remember(local, stamp)
        return True

    def exists(self, local: Path) -> bool:
        return bool(self.fs.exists(self._fresh(self.key(local))))

    def names(self, local_folder: Path) -> list[str]:
        key = self._fresh(self.key(local_folder))
        if not self.fs.isdir(key):
            return []
        return sorted(entry.rsplit("/", 1)[-1] for entry in self.fs.ls(key, detail=False))

    def remove(self, local: Path) -> None:
        key = self.key(local)
        if self.fs.exists(key):
            self.fs.rm(key, recursive=True)
