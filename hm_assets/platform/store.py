"""Output storage under HM_HOME: one Parquet file per asset (and partition), DuckDB as the engine.

Every write goes to a temporary sibling first and is renamed into place, so a killed run
leaves the last good file intact and readers never see half a file. Concurrent runs never
share a DuckDB database file: each step opens its own in-memory DuckDB over the Parquet files.

Outputs are written through the store (``HMStore.atomic_path``, ``HMStore.write_parquet``), which
uploads them to its own object store when it has one. The module-level ``atomic_path`` and
``write_parquet`` upload only to the ``objects`` they are given: without it (scratch files) they
stay local.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import dagster as dg
import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

# DuckDB's types appear in annotations only (strings here, resolved by type checkers): a DuckDB
# type held at run time by an annotation object (a union alias, a resolved return type) kept
# DuckDB's module alive to interpreter exit when torch was loaded too, and nanobind printed
# "leaked 27 instances" after every hm-recs command (hm_assets_tests/integration/test_quiet.py checks it).
if TYPE_CHECKING:
    from duckdb import DuckDBPyConnection as DuckDBConnection

    TableLike = pd.DataFrame | pa.Table | duckdb.DuckDBPyRelation

from pydantic import PrivateAttr

from hm_assets.platform.object_store import ObjectStore, visible_files
from hm_assets.platform.settings import hm_home, hm_object_store, hm_serve_url


def _temporary_sibling(target: Path) -> Path:
    return target.with_name(f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


@contextmanager
def atomic_path(target: Path, objects: ObjectStore | None = None) -> Iterator[Path]:
    """Yield a temporary path; on success it replaces ``target`` (a file in one rename, a folder in
    two: ``_replace_dir``) and is uploaded to ``objects`` when that shares it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_sibling(target)
    try:
        yield temporary
        if temporary.is_dir() or target.is_dir():
            _replace_dir(temporary, target)
        else:
            os.replace(temporary, target)
        if objects is not None and objects.shares(target):
            objects.upload(target)
    finally:
        remove_local(temporary)


def _replace_dir(source: Path, target: Path) -> None:
    """Replace ``target`` by ``source`` where either is a folder (a rename cannot swap those in one step):
    the old one is renamed aside first, then removed. Between the two renames a reader finds neither;
    if the second fails, the old one is put back."""
    retired = None
    if target.exists():
        retired = _temporary_sibling(target)
        os.replace(target, retired)
    try:
        os.replace(source, target)
    except OSError:
        if retired is not None:
            os.replace(retired, target)
        raise
    if retired is not None:
        remove_local(retired)


def remove_local(path: Path) -> None:
    """Delete a local file or folder (nothing when it is absent)."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def write_parquet(
    table: TableLike, target: Path, objects: ObjectStore | None = None, metadata: Mapping[str, str] | None = None
) -> int:
    """Atomically write a table to ``target`` (uploaded to ``objects`` when that shares it), with
    ``metadata`` as the file's key-value metadata; returns the row count."""
    with atomic_path(target, objects) as temporary:
        if isinstance(table, duckdb.DuckDBPyRelation):
            if metadata:
                pairs = ", ".join(f"{_sql_text(k)}: {_sql_text(v)}" for k, v in metadata.items())
                table.query("hm_written", f"COPY (SELECT * FROM hm_written) TO {_sql_text(str(temporary))} "
                                          f"(FORMAT parquet, COMPRESSION zstd, KV_METADATA {{{pairs}}})")
            else:
                table.write_parquet(str(temporary), compression="zstd")
            return pq.ParquetFile(temporary).metadata.num_rows
        if isinstance(table, pd.DataFrame):
            table = pa.Table.from_pandas(table, preserve_index=False)
        if metadata:
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
        pq.write_table(table, temporary, compression="zstd")
        return table.num_rows


def _sql_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _as_arrow(table: TableLike) -> pa.Table:
    if isinstance(table, duckdb.DuckDBPyRelation):
        return table.to_arrow_table()
    if isinstance(table, pd.DataFrame):
        return pa.Table.from_pandas(table, preserve_index=False)
    return table


class ParquetAppender:
    """Appends tables (e.g. one per customer shard) as row groups of one Parquet file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.writer: pq.ParquetWriter | None = None
        self.rows = 0

    def append(self, table: TableLike) -> int:
        arrow = _as_arrow(table)
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, arrow.schema, compression="zstd")
        elif arrow.schema != self.writer.schema:
            arrow = arrow.cast(self.writer.schema)
        self.writer.write_table(arrow)
        self.rows += arrow.num_rows
        return arrow.num_rows

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class HMStore(dg.ConfigurableResource):
    """The project's output folder and the DuckDB engine settings used over it."""

    home: str = ""
    duckdb_memory_limit: str = "6GB"
    duckdb_threads: int = 2
    customers_per_shard: int = 100_000
    # An fsspec URI (s3://bucket/prefix, gs://..., file:///shared/...) the asset files are shared
    # through; HM_HOME is then this node's cache of it (hm_assets/platform/object_store.py). Default:
    # $HM_OBJECT_STORE, else none (local files only).
    object_store: str = ""

    _objects: ObjectStore | None = PrivateAttr(default=None)

    @property
    def root(self) -> Path:
        return Path(self.home).expanduser().resolve() if self.home else hm_home()

    @property
    def objects(self) -> ObjectStore | None:
        """This store's object store (None without one), created on first use."""
        uri = self.object_store or hm_object_store()
        if not uri:
            return None
        root = self.root
        # The defaults come from the environment (HM_HOME, HM_OBJECT_STORE), which may change
        # between uses of one instance (tests); the object store follows them.
        if self._objects is None or (self._objects.uri, self._objects.cache_root) != (uri, root):
            self._objects = ObjectStore(uri, root)
        return self._objects

    @contextmanager
    def atomic_path(self, target: Path) -> Iterator[Path]:
        """``atomic_path`` for an output of this store: uploaded to its object store, if any."""
        with atomic_path(target, self.objects) as temporary:
            yield temporary

    def write_parquet(self, table: TableLike, target: Path, metadata: Mapping[str, str] | None = None) -> int:
        """``write_parquet`` for an output of this store: uploaded to its object store, if any."""
        return write_parquet(table, target, self.objects, metadata)

    def fetch(self, path: Path) -> Path:
        """``path`` (a file or folder under the store) present and current locally."""
        objects = self.objects
        if objects is not None and objects.shares(path):
            objects.fetch(path)
        return path

    def version(self, path: Path) -> str:
        """A short hash that changes whenever the file (or a file of the folder) at ``path`` is written
        again: of each file's object-store stamp where the store shares it (the same on every node),
        else of its size and modification time."""
        objects = self.objects
        files = visible_files(path) if path.is_dir() else [path]
        stamps = []
        for file in files:
            stamp = objects.remembered(file) if objects is not None and objects.shares(file) else None
            if stamp is None:
                info = file.stat()
                stamp = f"{info.st_size}:{info.st_mtime_ns}"
            stamps.append(f"{file.relative_to(path.parent).as_posix()}={stamp}")
        return hashlib.sha256(";".join(stamps).encode()).hexdigest()[:16]

    def exists(self, asset: str, partition: str | None = None, suffix: str = ".parquet") -> bool:
        path = self.asset_path(asset, partition, suffix)
        objects = self.objects
        return objects.exists(path) if objects is not None else path.exists()

    def partitions(self, asset: str, suffix: str = ".parquet") -> list[str]:
        """The partition keys of ``asset`` that have a file with ``suffix``, sorted."""
        return sorted(n[: -len(suffix)] for n in self.names(self.asset_dir(asset)) if n.endswith(suffix))

    def names(self, folder: Path) -> list[str]:
        """The names in a folder of the store (on its object store, if any), sorted; dot-named
        entries (writes in progress) left out."""
        objects = self.objects
        if objects is not None:
            names = objects.names(folder)
        else:
            names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
        return sorted(n for n in names if not n.startswith("."))

    def remove(self, path: Path) -> None:
        """Delete a file or folder of the store, here and on the object store."""
        remove_local(path)
        objects = self.objects
        if objects is not None and objects.shares(path):
            objects.remove(path)

    def asset_dir(self, asset: str) -> Path:
        return self.root / "assets" / asset

    def asset_path(self, asset: str, partition: str | None = None, suffix: str = ".parquet") -> Path:
        if partition is None:
            return self.root / "assets" / f"{asset}{suffix}"
        return self.asset_dir(asset) / f"{partition}{suffix}"

    def require(self, asset: str, partition: str | None = None, suffix: str = ".parquet") -> Path:
        path = self.fetch(self.asset_path(asset, partition, suffix))
        if not path.exists():
            where = f"partition {partition} of " if partition else ""
            raise FileNotFoundError(
                f"{where}asset '{asset}' has not been materialized yet (expected {path}); "
                f"materialize it first"
            )
        return path

    def optional(self, asset: str, partition: str | None = None, suffix: str = ".parquet") -> Path | None:
        """The local path of an output that may not exist yet (None then)."""
        path = self.fetch(self.asset_path(asset, partition, suffix))
        return path if path.exists() else None

    def relative(self, path: Path) -> str:
        """``path`` as metadata shows it: relative to the store's root (HM_HOME), so that it means
        the same on every machine that shares the store; a path outside the store stays as it is."""
        try:
            return Path(path).resolve().relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def url(self, path: Path) -> str:
        """The http address of a file of the store, as ``hm-recs serve`` serves it."""
        return f"{hm_serve_url()}/files/{quote(self.relative(path))}"

    def scratch_dir(self) -> Path:
        path = self.root / "tmp"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def connect(self) -> DuckDBConnection:
        """A private in-memory DuckDB with the configured memory budget, spilling under HM_HOME."""
        spill = self.scratch_dir() / f"duckdb-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        con = duckdb.connect(
            config={
                "memory_limit": self.duckdb_memory_limit,
                "threads": self.duckdb_threads,
                "temp_directory": str(spill),
            }
        )
        return con
