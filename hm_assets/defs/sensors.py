"""New data in the input folder → ingest → the week it makes predictable, with no code reload.

``new_transactions`` watches ``transactions_train.csv`` (size and modification time) and ingests
every week up to the data's live week in one run; ``live_week_after_ingest`` then materializes that
live week and re-evaluates the week before it, whose purchases are now known. Both run by default
under ``dagster dev`` (the daemon). When the data is current the partition sets follow the calendar
(``hm_assets.defs.partitions``), so next week's partition exists by the time its data arrives.
``build_sensors`` makes both with the partition sets the code location was built with.
"""

from __future__ import annotations

import dagster as dg

from hm_assets.defs.jobs import ingest_job, weekly_job
from hm_assets.defs.partitions import WeekPartitions
from hm_assets.defs.resources import HMDataset
from hm_assets.defs.runner import LAUNCHED_BY_TAG, RANGE_END_TAG, RANGE_START_TAG
from hm_assets.pipeline.ingest.data_contract import TRANSACTIONS_FILE
from hm_assets.platform.weeks import WEEK, parse_week
from hm_assets.pipeline.ingest.data_range import data_dir_fingerprint, scan_data_range


def new_transactions_request(
    context: dg.SensorEvaluationContext, dataset: HMDataset, weeks: WeekPartitions
) -> dg.RunRequest | dg.SkipReason:
    fingerprint = data_dir_fingerprint(dataset.root)
    if fingerprint == context.cursor:
        return dg.SkipReason(f"{TRANSACTIONS_FILE} unchanged")
    data_range = scan_data_range(dataset.root)
    if data_range is None:
        return dg.SkipReason(f"no readable {TRANSACTIONS_FILE} in {dataset.root}")
    live = data_range.live_week.isoformat()
    keys = weeks.transactions.get_partition_keys()
    if live not in keys:
        return dg.SkipReason(
            f"the data now reaches week {live}, past the loaded partition set (last {keys[-1]}): the data "
            "is an archive, so its partition set ends with it; reload the code location"
        )
    context.update_cursor(fingerprint)
    return dg.RunRequest(run_key=f"ingest {fingerprint}", tags={RANGE_START_TAG: keys[0], RANGE_END_TAG: live})


def weeks_after_ingest(context: dg.RunStatusSensorContext, weeks: WeekPartitions):
    run = context.dagster_run
    week = run.tags.get(RANGE_END_TAG)
    if run.tags.get(LAUNCHED_BY_TAG) == "cli" or not week:
        return dg.SkipReason("not an ingest of the sensor's (hm-recs run builds its own weeks)")
    if not weeks.weekly.has_partition_key(week):
        return dg.SkipReason(f"week {week} is not in the weekly partition set")
    built = context.instance.get_materialized_partitions(dg.AssetKey("recommendations"))
    if week in built:
        return dg.SkipReason(f"week {week} already has recommendations")
    requests = [dg.RunRequest(run_key=f"{week} after {run.run_id}", partition_key=week)]
    previous = (parse_week(week) - WEEK).isoformat()
    if previous in built:
        requests.append(
            dg.RunRequest(
                run_key=f"{previous} evaluated after {run.run_id}",
                partition_key=previous,
                asset_selection=[dg.AssetKey("evaluation"), dg.AssetKey("gallery")],
            )
        )
    return requests


def build_sensors(weeks: WeekPartitions) -> list[dg.SensorDefinition]:
    @dg.sensor(job=ingest_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
    def new_transactions(context: dg.SensorEvaluationContext, dataset: HMDataset) -> dg.RunRequest | dg.SkipReason:
        """Ingest the transactions file when it changes (a new week of data, or a correction)."""
        return new_transactions_request(context, dataset, weeks)

    @dg.run_status_sensor(
        run_status=dg.DagsterRunStatus.SUCCESS,
        monitored_jobs=[ingest_job],
        request_job=weekly_job,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def live_week_after_ingest(context: dg.RunStatusSensorContext):
        """After an ingest: the live week end to end, and the evaluation of the week before."""
        return weeks_after_ingest(context, weeks)

    return [new_transactions, live_week_after_ingest]
