"""Concurrent backfills: four weeks materialized by four OS processes at once, against one HM_HOME and
one fresh DAGSTER_HOME (SQLite storage, the project's dagster.yaml), give the outputs of one-by-one
runs, byte for byte, without lock errors.

Each process does what `hm-recs run` does for its week: it opens the instance (runner.dagster_instance),
ingests the transactions from the first week up to its own (all four build the shared staging file,
which a file lock lets exactly one of them write) and materializes the week's candidate side: the
features, the taste vectors, every retriever and the filtered candidates. The catalogue (articles,
customers, images, embeddings, indexes) is taken from the baseline, as a daily run would find it.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import dagster as dg

from hm_assets.platform import guards
from hm_assets.platform.settings import LOCAL_INSTANCE_CONFIG
from hm_assets_tests.baseline import (
    FAST,
    baseline,
    child_failure,
    copy_catalogue,
    start_child,
    week_hashes,
    work_root,
)

LOCK_ERRORS = re.compile(r"database is locked|OperationalError|IntegrityError|BlockingIOError|Resource temporarily unavailable")


def run_at_once(weeks, phase: str, args_for, home: Path, root: Path, dagster_home: Path) -> None:
    children = {week: start_child(args_for(week), home, root / f"{phase}-{week}.log", dagster_home) for week in weeks}
    try:
        for week, child in children.items():
            assert child.wait(timeout=600) == 0, f"week {week} failed:\n{child_failure(root / f'{phase}-{week}.log')}"
    finally:
        for child in children.values():
            if child.poll() is None:
                child.kill()
                child.wait()
    for week in weeks:
        log = (root / f"{phase}-{week}.log").read_text(errors="replace")
        assert "CHILD DONE" in log and not LOCK_ERRORS.search(log), child_failure(root / f"{phase}-{week}.log")


def test_four_weeks_at_once_match_one_by_one():
    """Four weeks' candidate side in four processes at once: first every week's ingest, features
    and retrievers, then every week's candidates. (Week W's candidates also read
    week W-1's retriever outputs to calibrate the cap; Dagster orders that dependency in a backfill,
    the two phases do here.)"""
    from hm_assets.definitions import build_definitions
    from hm_assets.defs.runner import training_side_keys

    defs = build_definitions()

    base = baseline()
    root = work_root()
    home, dagster_home = root / "home", root / "dagster"
    copy_catalogue(base.home, home)
    weeks = base.candidate_side_weeks
    first = str(base.data_range.first_week)
    per_customer = {"candidates"}
    upstream = [k.to_user_string() for k in training_side_keys(defs) if k.to_user_string() not in per_customer]
    started = time.monotonic()
    run_at_once(
        weeks,
        "retrievers",
        lambda week: {"week": str(week), "ingest_from": first, "assets": upstream, "persistent_instance": True, "run_config": FAST},
        home, root, dagster_home,
    )
    run_at_once(
        weeks,
        "candidates",
        lambda week: {"week": str(week), "assets": sorted(per_customer), "persistent_instance": True, "run_config": FAST},
        home, root, dagster_home,
    )
    print(f"4 concurrent weeks in {time.monotonic() - started:.0f} s")

    # The same bytes as the sequential runs of the baseline, week by week ...
    for week in weeks:
        concurrent = week_hashes(home, week)
        assert {"candidates", "article_taste", "popularity_model", "customer_features", "transactions"} <= {
            name.split("/")[0] for name in concurrent
        }
        assert concurrent == {name: digest for name, digest in week_hashes(base.home, week).items() if name in concurrent}
    # ... every week of transactions the four ingests wrote over each other ...
    ingested = sorted((home / "assets" / "transactions").glob("*.parquet"))
    assert [p.stem for p in ingested] == [
        p.stem for p in sorted((base.home / "assets" / "transactions").glob("*.parquet")) if p.stem <= str(weeks[-1])
    ]
    for path in ingested:
        assert path.read_bytes() == (base.home / "assets" / "transactions" / path.name).read_bytes()
    # ... one shared staging file, and nothing half-written anywhere.
    assert sorted(p.name for p in (home / "staging").iterdir()) == [
        p.name for p in sorted((base.home / "staging").iterdir())
    ]
    assert guards.temporaries(home) == []

    # Every run is recorded as a success in the shared instance, set up with the project's dagster.yaml.
    assert (dagster_home / "dagster.yaml").read_text() == LOCAL_INSTANCE_CONFIG.read_text()
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    try:
        runs = instance.get_runs()
        assert len(runs) == 3 * len(weeks)  # the ingest, the retrievers and the candidates of each week
        assert all(run.status == dg.DagsterRunStatus.SUCCESS for run in runs)
        partitions = sorted(run.tags.get("dagster/partition") for run in runs if "dagster/partition" in run.tags)
        assert partitions == sorted(str(w) for w in weeks for _phase in ("retrievers", "candidates"))
    finally:
        instance.dispose()
