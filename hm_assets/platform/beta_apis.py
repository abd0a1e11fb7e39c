"""Dagster APIs this code location relies on on purpose that Dagster 1.13 marks beta or preview.

Each construction prints a notice in every process that loads the code (the UI, each run, each
step process), which users read as a problem. They are silenced here, for these APIs only, where
they are built:
- ``allow_nonexistent_upstream_partitions`` on the weekly partition mappings: week W reads every
  earlier week, also those before the data starts;
- ``backfill_policy`` on ``transactions``: a range of weeks is ingested in one run;
- ``partitions_def`` on asset checks: the weekly assets' checks are per week;
- ``resource_defs`` on the sharded (graph) assets: their handoff IO manager travels with them
  (``hm_assets/platform/fanout.py``).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

NOTICES = (
    (dg.BetaWarning, r"Parameter `allow_nonexistent_upstream_partitions` of initializer"),
    (dg.BetaWarning, r"Parameter `backfill_policy` of function `asset`"),
    (dg.PreviewWarning, r"Specifying a partitions_def on an AssetCheckSpec"),
    (dg.BetaWarning, r"Parameter `resource_defs` of static method"),
)


@contextmanager
def beta_apis() -> Iterator[None]:
    """Inside: the notices of the APIs above are not shown (every other warning is)."""
    with warnings.catch_warnings():
        for category, message in NOTICES:
            warnings.filterwarnings("ignore", category=category, message=message)
        yield


def week_window(start_offset: int, end_offset: int) -> dg.TimeWindowPartitionMapping:
    """Weeks ``start_offset``..``end_offset`` relative to the partition; weeks outside the
    upstream partition set are allowed (and skipped)."""
    with beta_apis():
        return dg.TimeWindowPartitionMapping(
            start_offset=start_offset, end_offset=end_offset, allow_nonexistent_upstream_partitions=True
        )
