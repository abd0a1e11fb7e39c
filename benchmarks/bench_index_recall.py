"""Recall and build time of the content indexes' hnswlib graphs at several (M, ef_construction).

For each stored embeddings file under ``HOME/assets`` (``text``, ``image``, ``attribute``), a graph
is built on one thread (as the index assets build it: reproducible) for each setting, then
``--queries`` random articles ask for their ``--k`` nearest with the assets' search beam (ef 128).
Recall is the share of the found neighbours at least as close as the exact k-th nearest (cosine,
by brute force), so ties at the k-th distance count as found (attribute vectors have many).

    python benchmarks/bench_index_recall.py --home /tmp/bench_full
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from hm_assets.pipeline.features.embeddings.cache import read_embeddings
from hm_assets.pipeline.features.embeddings.index import DEFAULT_EF, build_hnsw

SETTINGS = ((32, 200), (32, 100), (16, 200), (16, 100))


def exact_kth(unit: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    kth = np.empty(len(queries), np.float32)
    for start in range(0, len(queries), 500):
        rows = queries[start : start + 500]
        kth[start : start + len(rows)] = -np.partition(-(unit[rows] @ unit.T), k - 1, axis=1)[:, k - 1]
    return kth


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", required=True)
    parser.add_argument("--sources", default="text,image,attribute")
    parser.add_argument("--k", type=int, default=30)
    parser.add_argument("--queries", type=int, default=2000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print("| embeddings | vectors | dim | M | ef_construction | build s (1 thread) | recall@%d |" % args.k)
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for source in args.sources.split(","):
        vectors = np.asarray(read_embeddings(f"{args.home}/assets/{source}_embeddings.parquet").vectors, np.float32)
        vectors = vectors[np.linalg.norm(vectors, axis=1) > 0]
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        queries = rng.choice(len(unit), min(args.queries, len(unit)), replace=False)
        kth = exact_kth(unit, queries, args.k)
        for m, construction in SETTINGS:
            started = time.perf_counter()
            index = build_hnsw(vectors, m, construction, DEFAULT_EF, seed=0, threads=1)
            seconds = time.perf_counter() - started
            _, distances = index.knn_query(unit[queries], k=args.k, num_threads=1)
            recall = float(np.mean(1.0 - distances >= kth[:, None] - 1e-6))
            print(f"| {source} | {len(vectors):,} | {vectors.shape[1]} | {m} | {construction} | {seconds:.1f} | {recall:.4f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
