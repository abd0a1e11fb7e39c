"""One candidate asset per retriever in the registry, all with the same contract and metadata."""

# No `from __future__ import annotations`: Dagster reads each asset's config class from its annotation.

import dagster as dg
import pandas as pd

from hm_assets.assets.features import feature_assets
from hm_assets.assets.weekly import HISTORY, week_view
from hm_assets.metadata import stopwatch
from hm_assets.metrics import recall
from hm_assets.partitions import weekly_partitions_def
from hm_assets.resources import HMStore
from hm_assets.retrievers.base import RetrievalContext, Retriever, finalize_candidates
from hm_assets.retrievers.registry import RETRIEVERS
from hm_assets.store import write_parquet

GROUP = "retrieval"


def read_truth(store: HMStore, week_key: str) -> pd.DataFrame | None:
    """The target week's purchases, for metadata only (never an input to candidates)."""
    path = store.asset_path("transactions", week_key)
    if not path.exists():
        return None
    truth = pd.read_parquet(path, columns=["customer_key", "article_id"])
    return truth if len(truth) else None


def candidate_metadata(candidates: pd.DataFrame, truth: pd.DataFrame | None, customers: int) -> dict:
    per_customer = candidates.groupby("customer_key").size() if len(candidates) else pd.Series(dtype=int)
    metadata: dict = {
        "dagster/row_count": len(candidates),
        "customers_with_candidates": int(per_customer.size),
        "customer_coverage": round(per_customer.size / max(customers, 1), 4),
        "candidates_per_customer_mean": round(float(per_customer.mean()), 2) if per_customer.size else 0.0,
        "candidates_per_customer_max": int(per_customer.max()) if per_customer.size else 0,
    }
    if truth is not None:
        metadata["recall"] = round(recall(candidates, truth), 4)
    return metadata


def build_candidate_asset(retriever: Retriever) -> dg.AssetsDefinition:
    config_class = retriever.config_class

    @dg.asset(
        name=retriever.name,
        group_name=GROUP,
        kinds=set(retriever.kinds) | {"parquet"},
        partitions_def=weekly_partitions_def,
        deps=[HISTORY, *feature_assets, *retriever.deps],
        description=retriever.description,
        metadata={"contract": "customer_key, article_id, score, rank"},
    )
    def _candidates(context: dg.AssetExecutionContext, store: HMStore, config: config_class) -> dg.MaterializeResult:
        with stopwatch() as watch, week_view(context, store) as view:
            customer_keys = view.con.sql("SELECT customer_key FROM customers").df()["customer_key"].to_numpy()
            retrieval = RetrievalContext(
                con=view.con,
                cutoff=view.cutoff,
                week_key=context.partition_key,
                customer_keys=customer_keys,
                inputs={dep: store.asset_path(dep) for dep in retriever.deps},
                log=context.log,
            )
            raw = retriever.generate(retrieval, config)
            candidates = finalize_candidates(raw, config.max_candidates)
            write_parquet(candidates, store.asset_path(retriever.name, context.partition_key))
        metadata = candidate_metadata(candidates, read_truth(store, context.partition_key), len(customer_keys))
        metadata["seconds"] = watch.seconds
        return dg.MaterializeResult(metadata=metadata)

    return _candidates


candidate_assets = [build_candidate_asset(r) for r in RETRIEVERS]
