"""Per-article embedding cache: the embedding asset's own Parquet file is the cache.

File layout (one row per embedded article)::

    article_id    int32
    content_hash  string                          -- see below
    vector        fixed_size_list<float32>[dim]   -- DuckDB reads it as a FLOAT[] list

plus Parquet schema metadata (``hm.*`` keys: model identity, dimension, how it was made).

``content_hash`` is a hash of everything that determines the vector: the article's own inputs
(image file size + mtime, the text string, the attribute values) *and* the identity of the
model/encoding that turns them into a vector. On re-materialization, a row whose
(article_id, content_hash) is unchanged reuses the stored vector; everything else is embedded.
Change the model and every hash changes, so nothing stale is ever reused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from hm_assets.platform.object_store import ObjectStore
from hm_assets.platform.store import atomic_path

METADATA_PREFIX = "hm."


def stable_hash(*parts: object, length: int = 20) -> str:
    """A short, stable hex digest of ``parts`` (joined with a separator no part contains)."""
    digest = hashlib.blake2b(digest_size=16)
    for part in parts:
        digest.update(str(part).encode("utf-8", "surrogatepass"))
        digest.update(b"\x1f")
    return digest.hexdigest()[:length]


@dataclass
class Embeddings:
    """Vectors of articles, in ``article_ids`` order."""

    article_ids: np.ndarray  # int32 (n,)
    content_hashes: np.ndarray  # object (n,)
    vectors: np.ndarray  # float32 (n, dim)
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1]) if self.vectors.ndim == 2 else 0

    def __len__(self) -> int:
        return int(len(self.article_ids))

    @classmethod
    def empty(cls, dim: int = 0) -> "Embeddings":
        return cls(np.empty(0, np.int32), np.empty(0, object), np.empty((0, dim), np.float32))


def write_embeddings(embeddings: Embeddings, target: Path, objects: ObjectStore | None = None) -> int:
    """Atomically write ``embeddings`` to ``target`` (Parquet; uploaded to ``objects`` when that
    shares it); returns the row count."""
    dim = embeddings.dim
    flat = pa.array(np.ascontiguousarray(embeddings.vectors, dtype=np.float32).reshape(-1), type=pa.float32())
    table = pa.table(
        {
            "article_id": pa.array(embeddings.article_ids.astype(np.int32), type=pa.int32()),
            "content_hash": pa.array(embeddings.content_hashes.astype(str).tolist(), type=pa.string()),
            "vector": (
                pa.FixedSizeListArray.from_arrays(flat, dim)
                if dim > 0
                else pa.array([[] for _ in range(len(embeddings))], type=pa.list_(pa.float32()))  # no model ran
            ),
        }
    )
    meta = {f"{METADATA_PREFIX}{k}": str(v) for k, v in embeddings.metadata.items()}
    meta[f"{METADATA_PREFIX}dim"] = str(dim)
    table = table.replace_schema_metadata({k.encode(): v.encode() for k, v in meta.items()})
    with atomic_path(target, objects) as temporary:
        pq.write_table(table, temporary, compression="zstd")
    return table.num_rows


def read_embeddings(path: Path) -> Embeddings:
    """Read a file written by ``write_embeddings``."""
    table = pq.read_table(path)
    raw = table.schema.metadata or {}
    meta = {
        k.decode()[len(METADATA_PREFIX):]: v.decode() for k, v in raw.items() if k.decode().startswith(METADATA_PREFIX)
    }
    dim = int(meta.get("dim", "0"))
    flat = table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    return Embeddings(
        article_ids=table.column("article_id").to_numpy().astype(np.int32),
        content_hashes=np.asarray(table.column("content_hash").to_pylist(), dtype=object),
        vectors=flat.reshape(len(table), dim) if len(table) else np.empty((0, dim), np.float32),
        metadata=meta,
    )


@dataclass
class CacheOutcome:
    embeddings: Embeddings
    embedded: int  # vectors computed in this run
    reused: int  # vectors taken from the previous file
    failed_ids: np.ndarray  # articles asked for whose vector could not be computed (e.g. corrupt image)


EmbedFn = Callable[[pd.DataFrame], tuple[np.ndarray, np.ndarray]]


def embed_with_cache(wanted: pd.DataFrame, previous: Path | None, embed: EmbedFn, dim: int | None = None) -> CacheOutcome:
    """Vectors for ``wanted`` (columns article_id, content_hash, plus whatever ``embed`` needs).

    Rows whose (article_id, content_hash) is in ``previous`` reuse that vector; the others go to
    ``embed(rows) -> (vectors float32 (m, dim), ok bool (m,))``; rows with ``ok`` False get no
    vector and are reported in ``failed_ids``. The result keeps ``wanted``'s order.
    """
    wanted = wanted.reset_index(drop=True)
    old = read_embeddings(previous) if previous is not None and Path(previous).exists() else None
    reuse_pos = np.full(len(wanted), -1, dtype=np.int64)
    if old is not None and len(old):
        lookup = pd.Series(np.arange(len(old)), index=pd.MultiIndex.from_arrays([old.article_ids, old.content_hashes]))
        lookup = lookup[~lookup.index.duplicated()]
        keys = pd.MultiIndex.from_arrays([wanted["article_id"].to_numpy(np.int32), wanted["content_hash"].to_numpy()])
        reuse_pos = lookup.reindex(keys).fillna(-1).to_numpy(np.int64)
    reuse = reuse_pos >= 0
    todo = wanted[~reuse]
    if len(todo):
        new_vectors, ok = embed(todo)
        new_vectors = np.asarray(new_vectors, dtype=np.float32)
        ok = np.asarray(ok, dtype=bool)
    else:
        width = dim if dim is not None else (old.dim if old is not None else 0)
        new_vectors, ok = np.empty((0, width), np.float32), np.empty(0, bool)
    if reuse.any() and len(todo) and new_vectors.shape[1] != old.dim:
        raise ValueError(f"cached vectors have dimension {old.dim} but the model gives {new_vectors.shape[1]}")
    width = new_vectors.shape[1] if len(todo) else (old.dim if reuse.any() else (dim or 0))
    vectors = np.zeros((len(wanted), width), dtype=np.float32)
    if reuse.any():
        vectors[reuse] = old.vectors[reuse_pos[reuse]]
    keep = reuse.copy()
    if len(todo):
        todo_pos = np.flatnonzero(~reuse)
        vectors[todo_pos] = new_vectors
        keep[todo_pos[ok]] = True
    result = Embeddings(
        article_ids=wanted["article_id"].to_numpy(np.int32)[keep],
        content_hashes=wanted["content_hash"].to_numpy(object)[keep],
        vectors=vectors[keep],
    )
    failed = todo["article_id"].to_numpy(np.int32)[~ok] if len(todo) else np.empty(0, np.int32)
    return CacheOutcome(result, embedded=int(ok.sum()), reused=int(reuse.sum()), failed_ids=failed)

