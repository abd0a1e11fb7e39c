"""One candidate asset per retriever in the registry, all with the same contract and metadata."""

# No `from __future__ import annotations`: Dagster reads each asset's config class from its annotation.

from pathlib import Path

import dagster as dg

from hm_assets.defs.assets.weekly import history, week_view
from hm_assets.defs.partitions import WeekPartitions
from hm_assets.defs.resources import HMStore
from hm_assets.pipeline.retrieval.base import RetrievalContext, Retriever, ranked_candidates, retriever_inputs, save_state, state_path
from hm_assets.pipeline.features.tables import FEATURE_TABLES
from hm_assets.pipeline.retrieval.registry import RETRIEVERS
from hm_assets.platform.metadata import stopwatch

GROUP = "retrieval"


def candidate_metadata(con, candidates: Path, customers: int, truth: Path | None) -> dict:
    """Coverage and size of a candidate file; recall when the target week's truth exists (for
    metadata only: the truth never feeds the candidates)."""
    with_candidates, rows, widest = con.execute(
        f"""
        SELECT count(*), sum(n), max(n) FROM (
            SELECT customer_key, count(*) AS n FROM read_parquet('{candidates}') GROUP BY customer_key
        )
        """
    ).fetchall()[0]
    rows = int(rows or 0)
    metadata: dict = {
        "dagster/row_count": rows,
        "customers_with_candidates": int(with_candidates),
        "customer_coverage": round(with_candidates / max(customers, 1), 4),
        "candidates_per_customer_mean": round(rows / max(with_candidates, 1), 2),
        "candidates_per_customer_max": int(widest or 0),
    }
    if truth is not None:
        purchases, found = con.execute(
            f"""
            WITH bought AS (SELECT DISTINCT customer_key, article_id FROM read_parquet('{truth}'))
            SELECT (SELECT count(*) FROM bought),
                   (SELECT count(*) FROM bought SEMI JOIN read_parquet('{candidates}') USING (customer_key, article_id))
            """
        ).fetchall()[0]
        if purchases:
            metadata["recall"] = round(found / purchases, 4)
    return metadata


def build_candidate_asset(retriever: Retriever, weeks: WeekPartitions) -> dg.AssetsDefinition:
    config_class = retriever.config_class

    @dg.asset(
        name=retriever.name,
        group_name=GROUP,
        kinds=set(retriever.kinds) | {"parquet"},
        partitions_def=weeks.weekly,
        deps=[history(weeks), *FEATURE_TABLES, *retriever.deps, *retriever.weekly_deps],
        description=retriever.description,
        metadata={"contract": "customer_key, article_id, score, rank"},
    )
    def _candidates(context: dg.AssetExecutionContext, store: HMStore, config: config_class) -> dg.MaterializeResult:
        with stopwatch() as watch, week_view(context, store, weeks) as view:
            customer_keys = view.con.sql("SELECT customer_key FROM customers").df()["customer_key"].to_numpy()
            retrieval = RetrievalContext(
                con=view.con,
                cutoff=view.cutoff,
                week_key=context.partition_key,
                customer_keys=customer_keys,
                inputs=retriever_inputs(store, [retriever], context.partition_key),
                log=context.log,
            )
            state = retriever.fit(retrieval, config)
            raw = retriever.retrieve(retrieval, config, state)
            target = store.asset_path(retriever.name, context.partition_key)
            store.write_parquet(ranked_candidates(view.con, raw, config.max_candidates, retriever.unique_pairs), target)
            # The fitted global part, for the online path (hm_assets/serving/on_demand.py) to retrieve from.
            save_state(state, state_path(store, retriever.name, context.partition_key), store.objects)
            metadata = candidate_metadata(view.con, target, len(customer_keys), store.optional("transactions", context.partition_key))
        metadata["seconds"] = watch.seconds
        return dg.MaterializeResult(metadata=metadata)

    return _candidates


def candidate_assets(weeks: WeekPartitions) -> list[dg.AssetsDefinition]:
    """One asset per registered retriever."""
    return [build_candidate_asset(r, weeks) for r in RETRIEVERS]
