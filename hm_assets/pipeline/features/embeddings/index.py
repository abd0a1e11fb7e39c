"""hnswlib cosine indexes over article embeddings, stored under HM_HOME.

An index asset ``<name>`` is two files in ``HM_HOME/assets/``:

* ``<name>-<build id>.hnsw`` — the hnswlib graph (labels 0..n-1 = row positions), and
* ``<name>.parquet`` — the article_id of each label, in label order (column ``article_id``),
  with the build parameters and the ``.hnsw`` file name in its schema metadata.

Each file is written atomically and the Parquet file is written last, so it is the commit
point: a reader that opens ``<name>.parquet`` always finds the graph that matches it (the
previous graph is kept one build longer for readers that opened the older Parquet).

Parameters (documented defaults): ``space='cosine'``, ``M=32`` (links per node; 16–48 is the
usual range, more = better recall and more memory), ``ef_construction=200``, ``ef`` (search
beam) = 128, raised to ``k`` at query time when more neighbours are asked for. Rows whose vector
is all zeros are not indexed (cosine is undefined for them).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import hnswlib
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from hm_assets.platform.object_store import ObjectStore
from hm_assets.platform.store import atomic_path

DEFAULT_M = 32
DEFAULT_EF_CONSTRUCTION = 200
DEFAULT_EF = 128


@dataclass
class IndexBuild:
    vectors_indexed: int
    skipped_zero_vectors: int
    dim: int
    seconds: float
    index_file: Path


def build_hnsw(
    vectors: np.ndarray,
    m: int = DEFAULT_M,
    ef_construction: int = DEFAULT_EF_CONSTRUCTION,
    ef: int = DEFAULT_EF,
    seed: int = 0,
    threads: int = -1,
) -> hnswlib.Index:
    """A cosine hnswlib index over ``vectors`` with labels 0..n-1 (``threads=1`` makes it reproducible)."""
    n, dim = vectors.shape
    index = hnswlib.Index(space="cosine", dim=max(dim, 1))
    index.init_index(max_elements=max(n, 1), ef_construction=ef_construction, M=m, random_seed=seed)
    if n:
        index.add_items(np.ascontiguousarray(vectors, dtype=np.float32), np.arange(n), num_threads=threads)
    index.set_ef(ef)
    return index


def save_index(
    article_ids: np.ndarray,
    vectors: np.ndarray,
    target: Path,
    m: int = DEFAULT_M,
    ef_construction: int = DEFAULT_EF_CONSTRUCTION,
    ef: int = DEFAULT_EF,
    seed: int = 0,
    threads: int = -1,
    objects: ObjectStore | None = None,
) -> IndexBuild:
    """Build the index of ``vectors`` (rows = ``article_ids``) and store it at ``target`` (.parquet) + graph,
    both uploaded to ``objects`` (the store's object store) when that shares them."""
    started = time.perf_counter()
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        vectors = vectors.reshape(len(article_ids), -1)
    nonzero = np.linalg.norm(vectors, axis=1) > 0 if vectors.shape[1] else np.zeros(len(vectors), bool)
    ids, vectors = np.asarray(article_ids, dtype=np.int32)[nonzero], vectors[nonzero]
    index = build_hnsw(vectors, m, ef_construction, ef, seed, threads)

    stem = target.name.removesuffix(".parquet")
    graph = target.with_name(f"{stem}-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}.hnsw")
    with atomic_path(graph, objects) as temporary:
        index.save_index(str(temporary))
    table = pa.table({"article_id": pa.array(ids, type=pa.int32())})
    meta = {
        "index_file": graph.name,
        "space": "cosine",
        "dim": str(vectors.shape[1]),
        "M": str(m),
        "ef_construction": str(ef_construction),
        "ef": str(ef),
        "count": str(len(ids)),
    }
    table = table.replace_schema_metadata({f"hm.{k}".encode(): v.encode() for k, v in meta.items()})
    with atomic_path(target, objects) as temporary:
        pq.write_table(table, temporary)
    _prune_old_graphs(target, stem, keep={graph.name})
    return IndexBuild(len(ids), int((~nonzero).sum()), int(vectors.shape[1]), round(time.perf_counter() - started, 2), graph)


def _prune_old_graphs(target: Path, stem: str, keep: set[str]) -> None:
    graphs = sorted(target.parent.glob(f"{stem}-*.hnsw"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    survivors = [g for g in graphs if g.name not in keep][:1]  # the previous build, for readers still on it
    for old in graphs:
        if old.name not in keep and old not in survivors:
            old.unlink(missing_ok=True)


@dataclass
class ContentIndex:
    """A loaded index: the graph plus the article_id of each label."""

    index: hnswlib.Index | None
    article_ids: np.ndarray
    ef: int = DEFAULT_EF

    def __len__(self) -> int:
        return int(len(self.article_ids))

    @cached_property
    def _labels(self) -> pd.Index:
        # built once: per query it was a hash table over the whole catalogue (105k at full scale)
        return pd.Index(self.article_ids)

    def positions(self, article_ids: np.ndarray) -> np.ndarray:
        """Label of each article (-1 when it is not indexed)."""
        return self._labels.get_indexer(np.asarray(article_ids)).astype(np.int64)

    def vectors(self, article_ids: np.ndarray) -> np.ndarray:
        """The stored (normalised) vectors of indexed articles."""
        labels = self.positions(article_ids)
        if (labels < 0).any():
            raise KeyError("some articles are not in the index")
        return np.asarray(self.index.get_items(labels.tolist()), dtype=np.float32)

    def query(self, article_ids: np.ndarray, k: int, threads: int = -1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One batched query for the ``k`` nearest other articles of each indexed article in
        ``article_ids``: the distinct indexed seeds (ascending), and for each seed's row the labels and
        cosine distances of its ``k + 1`` nearest (the seed itself among them)."""
        seeds = np.unique(np.asarray(article_ids, dtype=np.int64))
        labels = self.positions(seeds)
        seeds, labels = seeds[labels >= 0], labels[labels >= 0]
        k = min(k + 1, len(self))  # +1: the seed finds itself
        if not len(seeds) or k <= 0 or self.index is None:
            return seeds[:0], np.zeros((0, max(k, 0)), np.uint64), np.zeros((0, max(k, 0)), np.float32)
        self.index.set_ef(max(self.ef, k))
        queries = np.asarray(self.index.get_items(labels.tolist()), dtype=np.float32)
        try:
            found, distances = self.index.knn_query(queries, k=k, num_threads=threads)
        except RuntimeError:  # "cannot return the results": the beam found fewer than k; widen it
            self.index.set_ef(max(4 * k, min(len(self), 10_000)))
            found, distances = self.index.knn_query(queries, k=k, num_threads=threads)
        return seeds, found, distances

    def neighbour_arrays(
        self, article_ids: np.ndarray, k: int, threads: int = -1
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``query`` without each seed's own row: seed_article_id (int32), label, article_id (int32),
        similarity = 1 - cosine distance (float32), by seed then nearness."""
        seeds, found, distances = self.query(article_ids, k, threads)
        label = found.reshape(-1).astype(np.int64)
        seed = np.repeat(seeds, found.shape[1]).astype(np.int32)
        article = self.article_ids[label].astype(np.int32)
        similarity = (1.0 - distances.reshape(-1)).astype(np.float32)
        other = seed != article
        return seed[other], label[other], article[other], similarity[other]

    def neighbours(self, article_ids: np.ndarray, k: int, threads: int = -1) -> pd.DataFrame:
        """The ``k`` nearest other articles of each indexed article in ``article_ids`` (``query``).

        Returns (seed_article_id, article_id, similarity = 1 - cosine distance); articles that are
        not indexed give no rows; the seed itself is dropped.
        """
        seed, _, article, similarity = self.neighbour_arrays(article_ids, k, threads)
        return pd.DataFrame({"seed_article_id": seed, "article_id": article, "similarity": similarity})


def companion_files(target: Path) -> list[Path]:
    """Files an index needs besides ``target`` itself: its graph (none for an empty index)."""
    meta = pq.read_schema(target).metadata or {}
    graph = meta.get(b"hm.index_file")
    return [target.with_name(graph.decode())] if graph else []


def load_index(target: Path) -> ContentIndex:
    """Open the index stored at ``target`` (the ``<name>.parquet`` file)."""
    target = Path(target)
    if not target.exists():
        raise FileNotFoundError(f"index {target} has not been built yet; materialize it first")
    table = pq.read_table(target)
    meta = {k.decode().removeprefix("hm."): v.decode() for k, v in (table.schema.metadata or {}).items()}
    ids = table.column("article_id").to_numpy().astype(np.int32)
    ef = int(meta.get("ef", DEFAULT_EF))
    if not len(ids):
        return ContentIndex(None, ids, ef)
    index = hnswlib.Index(space="cosine", dim=int(meta["dim"]))
    index.load_index(str(target.with_name(meta["index_file"])), max_elements=len(ids))
    index.set_ef(ef)
    return ContentIndex(index, ids, ef)
