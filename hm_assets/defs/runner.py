"""Run the Dagster materializations for target weeks, in the order their dependencies need.

Used by ``hm-recs run`` and ``make demo``: the same asset definitions and jobs as the UI and the
sensors, executed in process against a Dagster instance, as runs of the project's code location
(the UI shows them with its own).
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import dagster as dg
import yaml
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.execution.api import execute_run
from dagster._core.definitions.repository_definition.valid_definitions import SINGLETON_REPOSITORY_NAME
from dagster._core.remote_origin import ManagedGrpcPythonEnvCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from hm_assets.platform.settings import DEFAULT_TRAINING_WEEKS, LOCAL_INSTANCE_CONFIG, PROJECT_ROOT, hm_home
from hm_assets.platform.weeks import WEEK, DataRange, parse_week

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
# Runs started by `hm-recs run` carry it (value "cli"): the CLI builds the weeks it needs itself.
LAUNCHED_BY_TAG = "hm/launched_by"


def dagster_instance() -> dg.DagsterInstance:
    """The persistent local instance (DAGSTER_HOME, default HM_HOME/dagster) with the project's dagster.yaml."""
    from hm_assets.pipeline.ingest.ingest import file_lock

    home = Path(os.environ.setdefault("DAGSTER_HOME", str(hm_home() / "dagster")))
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    # Runs started at once on a fresh DAGSTER_HOME race to create its SQLite storages (alembic
    # "table alembic_version already exists"): the first creates them, under a lock.
    with file_lock(home / ".instance.lock"):
        if not config.exists():
            shutil.copyfile(LOCAL_INSTANCE_CONFIG, config)
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


def code_location_repository() -> RemoteRepositoryOrigin:
    """Where the UI finds the project's jobs: the code location of its ``workspace.yaml``."""
    workspace = yaml.safe_load((PROJECT_ROOT / "workspace.yaml").read_text())
    module = workspace["load_from"][0]["python_module"]
    target = LoadableTargetOrigin(
        executable_path=sys.executable, module_name=module["module_name"], working_directory=str(PROJECT_ROOT)
    )
    location = ManagedGrpcPythonEnvCodeLocationOrigin(target, module["location_name"])
    return RemoteRepositoryOrigin(location, SINGLETON_REPOSITORY_NAME)


class PipelineRunner:
    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance, run_config: dict | None = None):
        self.defs = defs
        self.instance = instance
        self.run_config = run_config or {}
        self.job = defs.resolve_job_def("weekly_recommendations")
        self.ingest = defs.resolve_job_def("ingest_transactions")
        self.catalogue = defs.resolve_job_def("catalogue_snapshot")
        self.repository = code_location_repository()

    def _execute(
        self,
        job: dg.JobDefinition,
        selection: list[dg.AssetKey],
        tags: dict[str, str] | None = None,
        partition_key: str | None = None,
    ) -> dg.JobExecutionResult:
        """One run in this process, one step after another, recorded as a run of the project's
        code location (``workspace.yaml``): the UI lists it with its own runs (Overview timeline,
        the job's page, re-execution), tagged ``hm/launched_by=cli``."""
        chosen = frozenset(selection)
        run_tags = {LAUNCHED_BY_TAG: "cli", **(tags or {})}
        if partition_key is not None:
            if job.partitions_def is None or not job.partitions_def.has_partition_key(partition_key):
                raise ValueError(f"{partition_key} is not a partition of job {job.name}")
            run_tags.update(job.get_tags_for_partition_key(partition_key, selected_asset_keys=chosen))
        run_config = {**self.run_config_for(selection), "execution": {"config": {"in_process": {}}}}
        run = self.instance.create_run_for_job(
            job_def=job, run_config=run_config, tags=run_tags, asset_selection=chosen, remote_job_origin=RemoteJobOrigin(self.repository, job.name)
        )
        return execute_run(InMemoryJob(job), run, self.instance, raise_on_error=True)

    def run_config_for(self, selection: list[dg.AssetKey]) -> dict:
        ops = self.run_config.get("ops", {})
        wanted = {key.to_user_string() for key in selection}
        return {"ops": {name: cfg for name, cfg in ops.items() if name in wanted}} if ops else {}

    def snapshot_catalogue(self) -> str:
        keys = list(self.catalogue.asset_layer.executable_asset_keys)
        return self._execute(self.catalogue, keys).run_id

    def ingest_weeks(self, first: date, last: date) -> str:
        tags = {RANGE_START_TAG: first.isoformat(), RANGE_END_TAG: last.isoformat()}
        return self._execute(self.ingest, [dg.AssetKey("transactions")], tags=tags).run_id

    def backtest_report(self) -> str:
        report = self.defs.resolve_job_def("backtest_report")
        return self._execute(report, list(report.asset_layer.executable_asset_keys)).run_id

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
    """What a ranker needs from earlier weeks: everything above it (candidates, feature tables, taste)."""
    return [key for key in weekly_ancestors(defs, "ranker") if key != dg.AssetKey("ranker")]


def weekly_keys(defs: dg.Definitions) -> list[dg.AssetKey]:
    job = defs.resolve_job_def("weekly_recommendations")
    return sorted(job.asset_layer.executable_asset_keys, key=lambda k: k.to_user_string())


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
    from hm_assets.platform.guards import remove_stale_temporaries

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
    # Runs here execute in process, one step at a time: an embedding step owns every core (the
    # assets' default of half is for executors that run both embedding steps at once).
    for name in ("image_embeddings", "text_embeddings"):
        embedding = ops.get(name, {}).get("config", {})
        ops[name] = {"config": {**embedding, "torch_threads": embedding.get("torch_threads") or (os.cpu_count() or 1)}}
    run_config["ops"] = ops
    runner = PipelineRunner(defs, instance, run_config)
    log("catalogue snapshot (articles, customers, images, embeddings) ...")
    runner.snapshot_catalogue()
    log(f"ingest transactions {data_range.first_week} .. {min(target, data_range.live_week)} ...")
    runner.ingest_weeks(data_range.first_week, max(target, data_range.first_week))
    for week in plan.training_side:
        log(f"week {week}: candidates, feature tables and taste (the ranker's training data) ...")
        runner.materialize_week(week, training_side_keys(defs))
    for week in plan.full:
        log(f"week {week}: full pipeline ...")
        runner.materialize_week(week, weekly_keys(defs))
    runner.backtest_report()
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
