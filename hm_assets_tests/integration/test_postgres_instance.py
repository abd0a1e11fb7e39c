"""The production storage on a real PostgreSQL server: a week run by the multiprocess executor, its
steps in separate processes and its customers in several shards, gives the outputs of the plain
in-process run, and every run and step event is in the database.

The module starts its own PostgreSQL (the `postgres` fixture, hm_assets_tests/services.py: Debian's
initdb/pg_ctl, found under /usr/lib/postgresql/*/bin) in a temporary folder, listening on a free port
of 127.0.0.1 only, as the `postgres` OS user when the tests run as root (PostgreSQL refuses to run as
root), with password authentication. The Dagster instance uses the `storage:` section of
deploy/dagster.yaml unchanged, its DAGSTER_PG_* variables pointing at that server, and the local
DefaultRunLauncher. The tests skip where the PostgreSQL server binaries are not installed, except
under `make test` (HM_REQUIRE_SERVERS), whose scripts/system-packages installs them.

The comparison baseline is the session's baseline run (hm_assets_tests/baseline.py) (in process, one process, an ephemeral
instance, the default shard size) of the same tiny data in a home of its own.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import closing
from pathlib import Path

import dagster as dg
import pandas as pd
import yaml

from hm_assets_tests.services import DEPLOY_PROFILE, postgres_instance_home

SHARD_SIZE = 400  # the tiny preset's 1,500 customers in 4 shards
COMPARED = ("candidates", "recommendations")


def weekly_recommendations_job() -> dg.JobDefinition:
    """The project's weekly job, rebuilt by every step process of the multiprocess executor
    (``dg.reconstructable`` points at this module-level function). Its resources read HM_HOME and
    HM_DATA_DIR unless the run config sets them, as the test does."""
    from hm_assets.definitions import build_definitions

    defs = build_definitions()

    return defs.resolve_job_def("weekly_recommendations")


def sorted_rows(frame: pd.DataFrame) -> pd.DataFrame:
    keys = [c for c in ("customer_key", "article_id", "rank") if c in frame.columns]
    assert keys, f"no key columns among {list(frame.columns)}"
    return frame.sort_values(keys, kind="mergesort").reset_index(drop=True)


# --- the tests ------------------------------------------------------------------------------------


def test_deploy_profile_opens_on_postgres_with_its_queue_and_pools(postgres, tmp_path):
    """deploy/dagster.yaml's storage, run queue and concurrency sections, loaded into a real instance:
    the schema is created in the database, the queue limits and the default pool limit are those of
    the file, and a named pool limit (set as `dagster instance concurrency set` does) is kept in
    PostgreSQL."""
    home = postgres_instance_home(tmp_path / "dagster", "run_coordinator", "concurrency")
    deploy = yaml.safe_load(DEPLOY_PROFILE.read_text())
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        concurrency = instance.get_concurrency_config()
        runs = deploy["concurrency"]["runs"]
        assert concurrency.run_queue_config.max_concurrent_runs == runs["max_concurrent_runs"]
        assert len(concurrency.run_queue_config.tag_concurrency_limits) == len(runs["tag_concurrency_limits"])
        assert concurrency.pool_config.default_pool_limit == deploy["concurrency"]["pools"]["default_limit"]
        instance.event_log_storage.set_concurrency_slots("hm-duckdb", 3)
    finally:
        instance.dispose()
    reopened = dg.DagsterInstance.from_config(str(home))
    try:
        assert reopened.event_log_storage.get_concurrency_info("hm-duckdb").slot_count == 3
    finally:
        reopened.dispose()
    with closing(postgres.connect()) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
        tables = {row[0] for row in cursor.fetchall()}
    assert {"runs", "event_logs", "jobs", "job_ticks", "concurrency_limits", "concurrency_slots"} <= tables


def test_a_week_on_postgres_with_the_multiprocess_executor_matches_the_plain_run(postgres, tmp_path):
    from hm_assets.defs.runner import PipelineRunner, training_side_keys
    from hm_assets_tests.baseline import (
        FAST,
        baseline,
        copy_catalogue,
        project_defs,
        recommendation_path_keys,
        work_root,
    )

    base = baseline()  # the plain run: in process, one process, ephemeral instance, default shard size
    week = base.week
    home = work_root() / "home"
    copy_catalogue(base.home, home)  # articles, customers, images, embeddings: no week depends on them changing
    dagster_home = postgres_instance_home(tmp_path / "dagster")
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    try:
        started = time.monotonic()
        # The earlier weeks, in process as hm_assets.defs.runner does, recorded on the PostgreSQL instance.
        defs = project_defs(Path(os.environ["HM_DATA_DIR"]), home)
        runner = PipelineRunner(defs, instance, FAST)
        prerequisite_runs = [runner.ingest_weeks(base.data_range.first_week, week)]
        for earlier in (w for w in base.candidate_side_weeks if w < week):
            prerequisite_runs.append(runner.materialize_week(earlier, training_side_keys(defs)))
        prerequisites_s = time.monotonic() - started

        # The target week: steps in their own processes, customers in shards of SHARD_SIZE.
        selection = recommendation_path_keys(defs)
        run_config = {
            **runner.run_config_for(selection),
            "resources": {
                "store": {"config": {"home": str(home), "customers_per_shard": SHARD_SIZE}},
                "dataset": {"config": {"data_dir": os.environ["HM_DATA_DIR"]}},
            },
            # Two processes at a time (two cores). The forkserver has the project imported once, so a
            # step process starts in a fraction of a second instead of importing it again (spawn).
            "execution": {
                "config": {
                    "multiprocess": {
                        "max_concurrent": 2,
                        "start_method": {"forkserver": {"preload_modules": [__name__, "hm_assets.definitions"]}},
                    }
                }
            },
        }
        started = time.monotonic()
        result = dg.execute_job(
            dg.reconstructable(weekly_recommendations_job),
            instance=instance,
            run_config=run_config,
            tags={"dagster/partition": week.isoformat()},
            asset_selection=selection,
        )
        week_s = time.monotonic() - started
        failures = [e.event_specific_data.error.to_string() for e in result.all_events if e.is_step_failure]
        assert result.success, "\n".join(failures) or "the run failed"
        print(f"prerequisite weeks in process: {prerequisites_s:.0f} s; week {week} multiprocess: {week_s:.0f} s")

        # Same outputs as the plain run.
        for asset in COMPARED:
            plain = pd.read_parquet(base.home / "assets" / asset / f"{week}.parquet")
            sharded = pd.read_parquet(home / "assets" / asset / f"{week}.parquet")
            assert len(plain) > 0
            pd.testing.assert_frame_equal(sorted_rows(sharded), sorted_rows(plain), obj=f"{asset} {week}")
        evaluation = f"evaluation/{week}.json"
        assert json.loads((home / "assets" / evaluation).read_text()) == json.loads((base.home / "assets" / evaluation).read_text())

        # The week ran in several shards, its steps in processes other than this one.
        run_id = result.run_id
        candidates = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("candidates"), asset_partitions=[week.isoformat()]), limit=1
        ).records[0]
        assert candidates.run_id == run_id
        assert candidates.asset_materialization.metadata["customer_shards"].value >= 2
        step_starts = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START)
        step_pids = {event.dagster_event.pid for event in step_starts}
        assert step_pids and os.getpid() not in step_pids and len(step_pids) >= 2

        # Every run and its events are in PostgreSQL (read with psycopg2, not through Dagster).
        run_ids = [*prerequisite_runs, run_id]
        with closing(postgres.connect()) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT run_id, status FROM runs")
            stored = dict(cursor.fetchall())
            cursor.execute(
                "SELECT dagster_event_type, count(*) FROM event_logs WHERE run_id = %s GROUP BY dagster_event_type", (run_id,)
            )
            event_counts = dict(cursor.fetchall())
            cursor.execute(
                "SELECT DISTINCT asset_key FROM event_logs WHERE run_id = %s AND dagster_event_type = 'ASSET_MATERIALIZATION'",
                (run_id,),
            )
            materialized = {row[0] for row in cursor.fetchall()}
            cursor.execute("SELECT count(DISTINCT step_key) FROM event_logs WHERE run_id = %s AND dagster_event_type = 'STEP_SUCCESS'", (run_id,))
            succeeded_steps = cursor.fetchone()[0]
        assert stored == {rid: "SUCCESS" for rid in run_ids}
        assert materialized == {key.to_string() for key in selection}
        assert event_counts[dg.DagsterEventType.STEP_START.value] == len(step_starts) == succeeded_steps
        assert event_counts.get(dg.DagsterEventType.STEP_FAILURE.value, 0) == 0
        assert event_counts[dg.DagsterEventType.RUN_SUCCESS.value] == 1
    finally:
        instance.dispose()
