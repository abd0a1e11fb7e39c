"""Run the Dagster materializations for target weeks, in the order their dependencies need.

Used by ``hm-recs run`` and ``make demo``: the same asset definitions and jobs as the UI and the
schedule, executed in process against a Dagster instance (runs show up in the UI).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import dagster as dg

from hm_assets.settings import DEFAULT_TRAINING_WEEKS, PROJECT_ROOT, hm_home
from hm_assets.weeks import WEEK, DataRange, parse_week

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def dagster_instance() -> dg.DagsterInstance:
    """The persistent local instance (DAGSTER_HOME, default HM_HOME/dagster) with the project's dagster.yaml."""
    from hm_assets.ingest import file_lock

    home = Path(os.environ.setdefault("DAGSTER_HOME", str(hm_home() / "dagster")))
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    # Runs started at once on a fresh DAGSTER_HOME race to create its SQLite storages (alembic
    # "table alembic_version already exists"): the first creates them, under a lock.
    with file_lock(home / ".instance.lock"):
        if not config.exists():
            shutil.copyfile(PROJECT_ROOT / "dagster.yaml", config)
        return dg.DagsterInstance.get()


@dataclass
class WeekPlan:
    target: date
    training_side: list[date] = field(default_factory=list)
    full: list[date] = field(default_factory=list)


def plan_weeks(data_range: DataRange, target: date, training_weeks: int, backtest_weeks: int) -> WeekPlan:
    """Weeks to run fully (the target and its backtest weeks) and the earlier weeks whose labelled
    candidates the rankers train on. A week needs at least one earlier week of history."""
    earliest_useful = data_range.first_week + WEEK
    full = [target - i * WEEK for i in range(max(backtest_weeks, 1) - 1, -1, -1)]
    full = [w for w in full if w >= earliest_useful] or [target]
    training: list[date] = []
    for i in range(training_weeks, 0, -1):
        week = full[0] - i * WEEK
        if week >= earliest_useful:
            training.append(week)
    return WeekPlan(target=target, training_side=training, full=full)


@dataclass
class RunReport:
    week: str
    run_ids: list[str] = field(default_factory=list)


class PipelineRunner:
    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance, run_config: dict | None = None):
        self.defs = defs
        self.instance = instance
        self.run_config = run_config or {}
        self.job = defs.resolve_job_def("weekly_recommendations")
        self.catalogue = defs.resolve_job_def("catalogue_snapshot")

    def _execute(self, job: dg.JobDefinition, selection: list[dg.AssetKey], **kwargs) -> dg.ExecuteInProcessResult:
        result = job.execute_in_process(
            instance=self.instance, asset_selection=selection, raise_on_error=True, run_config=self.run_config_for(selection), **kwargs
        )
        return result

    def run_config_for(self, selection: list[dg.AssetKey]) -> dict:
        ops = self.run_config.get("ops", {})
        wanted = {key.to_user_string() for key in selection}
        return {"ops": {name: cfg for name, cfg in ops.items() if name in wanted}} if ops else {}

    def snapshot_catalogue(self) -> str:
        keys = list(self.catalogue.asset_layer.executable_asset_keys)
        return self._execute(self.catalogue, keys).run_id

    def ingest_weeks(self, first: date, last: date) -> str:
        tags = {RANGE_START_TAG: first.isoformat(), RANGE_END_TAG: last.isoformat()}
        return self._execute(self.job, [dg.AssetKey("transactions")], tags=tags).run_id

    def materialize_week(self, week: date, selection: list[dg.AssetKey]) -> str:
        return self._execute(self.job, selection, partition_key=week.isoformat()).run_id


def weekly_ancestors(defs: dg.Definitions, root: str) -> list[dg.AssetKey]:
    """``root`` and its weekly-partitioned ancestors, short of the ingested transactions."""
    graph = defs.resolve_asset_graph()
    keys: set[dg.AssetKey] = set()
    frontier = [dg.AssetKey(root)]
    while frontier:
        key = frontier.pop()
        if key in keys or key == dg.AssetKey("transactions") or not graph.get(key).is_partitioned:
            continue
        keys.add(key)
        frontier.extend(graph.get(key).parent_keys)
    return sorted(keys, key=lambda k: k.to_user_string())


def training_side_keys(defs: dg.Definitions) -> list[dg.AssetKey]:
    """Everything up to the pair features: what a ranker needs from earlier weeks."""
    return weekly_ancestors(defs, "pair_features")


def weekly_keys(defs: dg.Definitions) -> list[dg.AssetKey]:
    job = defs.resolve_job_def("weekly_recommendations")
    return sorted(
        (k for k in job.asset_layer.executable_asset_keys if k != dg.AssetKey("transactions")),
        key=lambda k: k.to_user_string(),
    )


def run_weeks(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    data_range: DataRange,
    target: date,
    training_weeks: int = DEFAULT_TRAINING_WEEKS,
    backtest_weeks: int = 1,
    run_config: dict | None = None,
    log=print,
) -> WeekPlan:
    from hm_assets.guards import remove_stale_temporaries

    for leftover in remove_stale_temporaries(hm_home()):
        log(f"removed {leftover.name}, left behind by an interrupted run")
    plan = plan_weeks(data_range, target, training_weeks, backtest_weeks)
    if len(plan.training_side) < training_weeks:
        log(f"the data has {len(plan.training_side)} week(s) before {plan.full[0]} to learn from; the ranker is asked "
            f"for {len(plan.training_side)} instead of {training_weeks}")
    ranker_config = {"training_weeks": len(plan.training_side)}
    run_config = dict(run_config or {})
    ops = dict(run_config.get("ops", {}))
    ops["ranker"] = {"config": {**ops.get("ranker", {}).get("config", {}), **ranker_config}}
    run_config["ops"] = ops
    runner = PipelineRunner(defs, instance, run_config)
    log("catalogue snapshot (articles, customers, images, embeddings) ...")
    runner.snapshot_catalogue()
    log(f"ingest transactions {data_range.first_week} .. {min(target, data_range.live_week)} ...")
    runner.ingest_weeks(data_range.first_week, max(target, data_range.first_week))
    for week in plan.training_side:
        log(f"week {week}: candidates and pair features (ranker training data) ...")
        runner.materialize_week(week, training_side_keys(defs))
    for week in plan.full:
        log(f"week {week}: full pipeline ...")
        runner.materialize_week(week, weekly_keys(defs))
    report = defs.resolve_job_def("backtest_report")
    report.execute_in_process(instance=instance, raise_on_error=True)
    return plan


def target_week(data_range: DataRange, week: str | None) -> date:
    if week is None:
        return data_range.live_week
    day = parse_week(week)
    if day < data_range.first_week + WEEK or day > data_range.live_week:
        raise ValueError(
            f"week {week} is outside the data: choose a Wednesday from {data_range.first_week + WEEK} "
            f"to {data_range.live_week} (the week after the data ends)"
        )
    return day
