"""Customer shards: the per-customer heavy work (candidates, pair features, scoring) runs one
contiguous range of customer keys at a time, so memory stays bounded at any scale. Outputs are
sorted by customer_key, so Parquet row-group statistics let readers skip other shards."""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class CustomerShard:
    index: int
    count: int
    low: int
    high: int

    def where(self, column: str = "customer_key") -> str:
        return f"{column} BETWEEN {self.low} AND {self.high}"

    def contains(self, keys: np.ndarray) -> np.ndarray:
        return (keys >= self.low) & (keys <= self.high)


def customer_shards(con: duckdb.DuckDBPyConnection, customers_per_shard: int) -> list[CustomerShard]:
    """Contiguous key ranges of about ``customers_per_shard`` customers each, covering every key."""
    keys = con.execute("SELECT customer_key FROM customers ORDER BY customer_key").df()["customer_key"].to_numpy()
    count = max(1, int(np.ceil(len(keys) / max(customers_per_shard, 1))))
    if count == 1:
        return [CustomerShard(0, 1, INT64_MIN, INT64_MAX)]
    cut_positions = [len(keys) * i // count for i in range(1, count)]
    cuts = [int(keys[p]) for p in cut_positions]
    lows = [INT64_MIN, *cuts]
    highs = [c - 1 for c in cuts] + [INT64_MAX]
    return [CustomerShard(i, count, low, high) for i, (low, high) in enumerate(zip(lows, highs))]
