"""Asset checks: complete recommendations, known articles, no duplicate candidates, no leakage."""


import dagster as dg
import duckdb

from hm_assets.platform.beta_apis import beta_apis
from hm_assets.defs.partitions import WeekPartitions
from hm_assets.defs.resources import HMStore
from hm_assets.pipeline.evaluation.quality_checks import duplicate_pairs, leakage_problems, recommendation_problems


def _result(problems: list[str]) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=not problems,
        metadata={"problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems) or "none")},
    )


def twelve_known_articles_for_every_customer(context: dg.AssetCheckExecutionContext, store: HMStore) -> dg.AssetCheckResult:
    """Every customer has exactly 12 distinct recommendations, all of them articles in the catalogue."""
    key = context.partition_key
    problems = recommendation_problems(
        duckdb.connect(), store.require("recommendations", key), store.require("customers"), store.require("articles")
    )
    return _result(problems)


def no_duplicate_candidate_pairs(context: dg.AssetCheckExecutionContext, store: HMStore) -> dg.AssetCheckResult:
    """Each (customer, article) appears once in the filtered union."""
    duplicates = duplicate_pairs(duckdb.connect(), store.require("candidates", context.partition_key))
    return _result([f"{duplicates} duplicated (customer, article) pairs"] if duplicates else [])


def no_feature_from_target_week(context: dg.AssetCheckExecutionContext, store: HMStore) -> dg.AssetCheckResult:
    """No feature table of week W was computed from a transaction dated on or after W."""
    key = context.partition_key
    problems = leakage_problems(
        duckdb.connect(),
        store.require("customer_transaction_stats", key),
        store.require("article_transaction_stats", key),
        store.require("customer_features", key),
    )
    return _result(problems)


def asset_checks(weeks: WeekPartitions) -> list[dg.AssetChecksDefinition]:
    """The blocking checks of the weekly assets, per week."""
    with beta_apis():  # partitioned asset checks (hm_assets/platform/beta_apis.py)
        return [
            dg.asset_check(asset="recommendations", partitions_def=weeks.weekly, blocking=True)(
                twelve_known_articles_for_every_customer
            ),
            dg.asset_check(asset="candidates", partitions_def=weeks.weekly, blocking=True)(no_duplicate_candidate_pairs),
            dg.asset_check(
                asset="customer_transaction_stats",
                partitions_def=weeks.weekly,
                additional_deps=["article_transaction_stats", "customer_features"],
                blocking=True,
            )(no_feature_from_target_week),
        ]
