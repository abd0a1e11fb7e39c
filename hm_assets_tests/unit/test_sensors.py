"""New data → ingest → the live week, through the sensors and without reloading the code location."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dagster as dg

from hm_assets.definitions import build_definitions
from hm_assets.defs.assets.ingest import articles, customers
from hm_assets.defs.partitions import WeekPartitions
from hm_assets.defs.resources import HMDataset, HMStore
from hm_assets.defs.runner import LAUNCHED_BY_TAG, RANGE_END_TAG, RANGE_START_TAG
from hm_assets.defs.sensors import build_sensors
from hm_assets.pipeline.ingest.data_contract import TRANSACTIONS_FILE
from hm_assets.platform.weeks import WEEK
from hm_assets.pipeline.ingest.data_range import scan_data_range


def drop_last_week(data_dir: Path) -> list[str]:
    """Rewrite the transactions file without its last week; returns the removed lines."""
    path = data_dir / TRANSACTIONS_FILE
    header, *rows = path.read_text().splitlines(keepends=True)
    cut = (scan_data_range(data_dir).last_day - timedelta(days=6)).isoformat()
    path.write_text(header + "".join(r for r in rows if r[:10] < cut))
    return [r for r in rows if r[:10] >= cut]


def sensor_tick(new_transactions: dg.SensorDefinition, data_dir: Path, cursor: str | None):
    context = dg.build_sensor_context(cursor=cursor, resources={"dataset": HMDataset(data_dir=str(data_dir))})
    return new_transactions(context), context.cursor


def test_a_new_week_of_data_is_ingested_and_its_week_requested_without_a_reload(tiny_copy, tmp_path):
    # one code location, loaded once, with the partition sets of the session's data
    weeks = WeekPartitions.from_data()
    new_transactions, live_week_after_ingest = build_sensors(weeks)
    session_range = scan_data_range(tiny_copy)
    new_rows = drop_last_week(tiny_copy)
    earlier = scan_data_range(tiny_copy)
    assert earlier.live_week == session_range.live_week - WEEK

    request, cursor = sensor_tick(new_transactions, tiny_copy, None)
    assert isinstance(request, dg.RunRequest)
    assert request.tags[RANGE_START_TAG] == earlier.first_week.isoformat()
    assert request.tags[RANGE_END_TAG] == earlier.live_week.isoformat()
    skip, same = sensor_tick(new_transactions, tiny_copy, cursor)
    assert isinstance(skip, dg.SkipReason) and same == cursor  # nothing new, nothing requested

    resources = {"dataset": HMDataset(data_dir=str(tiny_copy)), "store": HMStore(home=str(tmp_path / "home"))}
    instance = dg.DagsterInstance.ephemeral()
    assert dg.materialize([articles, customers], resources=resources, instance=instance).success
    defs = build_definitions(weeks)
    ingest = dg.Definitions(assets=defs.assets, jobs=defs.jobs, resources=resources).resolve_job_def("ingest_transactions")

    def ingest_and_react(tags: dict) -> list[dg.RunRequest]:
        result = ingest.execute_in_process(instance=instance, tags=tags)
        context = dg.build_run_status_sensor_context(
            sensor_name="live_week_after_ingest",
            dagster_instance=instance,
            dagster_run=result.dagster_run,
            dagster_event=result.get_run_success_event(),
        )
        answer = live_week_after_ingest(context)
        return answer if isinstance(answer, list) else [answer]

    (week_run,) = ingest_and_react(request.tags)
    assert week_run.partition_key == earlier.live_week.isoformat() and week_run.asset_selection is None

    # next week's data arrives: the same code location (partitions loaded once) takes it
    with (tiny_copy / TRANSACTIONS_FILE).open("a") as handle:
        handle.writelines(new_rows)
    request, cursor = sensor_tick(new_transactions, tiny_copy, cursor)
    assert request.tags[RANGE_END_TAG] == session_range.live_week.isoformat()
    assert weeks.weekly.has_partition_key(session_range.live_week.isoformat())
    instance.report_runless_asset_event(
        dg.AssetMaterialization("recommendations", partition=earlier.live_week.isoformat())
    )
    week_run, evaluation_run = ingest_and_react(request.tags)
    assert week_run.partition_key == session_range.live_week.isoformat()
    # the previous live week now has its purchases: evaluated again
    assert evaluation_run.partition_key == earlier.live_week.isoformat()
    assert set(evaluation_run.asset_selection) == {dg.AssetKey("evaluation"), dg.AssetKey("gallery")}

    (skip,) = ingest_and_react({**request.tags, LAUNCHED_BY_TAG: "cli"})
    assert isinstance(skip, dg.SkipReason)  # hm-recs run builds its own weeks
