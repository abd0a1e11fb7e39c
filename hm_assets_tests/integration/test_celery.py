"""Scale-out, exercised: a week's steps on two Celery workers, through a real broker, each finding
its inputs only through the object store.

The module starts, on loopback ports, and stops by their own processes (hm_assets_tests/services.py):
Debian's redis-server (the Celery broker and result backend), PostgreSQL (Dagster's storage, the
`storage:` section of deploy/dagster.yaml) and a local S3 (moto: the store's object store). Two
`dagster-celery worker start` process trees (hm_assets_tests/celery_workers.py, with
deploy/celery-worker.yaml) run with one pool process each, their own empty HM_HOME and DAGSTER_HOME,
and HM_OBJECT_STORE: nothing is shared between them and this process but the object store, the
broker and the database. This process only orchestrates: the weekly job of hm_assets.distributed, whose
executor (hm_assets.platform.celery_executor.celery_executor) takes the workers' file
deploy/celery-worker.yaml, sends every step to the broker.

The object store starts as earlier runs left it (the session's baseline, hm_assets_tests/baseline.py, minus every output of
the week's selection). The reference is the same week run in this process, one step after another,
with the same customer shards, into a local home: the celery run's outputs must be the same bytes.
The second test kills one worker (SIGKILL, its whole process tree) in the middle of a shard step;
the executor notices the lost worker, the shard step's retry policy runs it again on the other
worker, and the week's outputs are again the same bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import dagster as dg
import pytest
import yaml

from hm_assets.platform.store import HMStore
from hm_assets_tests.celery_workers import CeleryWorker, start_worker, weekly_job_on_celery
from hm_assets_tests.services import environment, postgres_instance_home

SHARD_SIZE = 400  # the tiny preset's 1,500 customers in 4 candidates shards (and 8 recommendations shards)
COMPARED = {
    "candidates": ".parquet",
    "recommendations": ".parquet",
    "submission": ".csv",
    "evaluation": ".json",
}
# Lost-worker detection in the test: a ping every 2 s, lost after 2 missed in a row.
WORKER_WATCH = {"ping_interval_seconds": 2.0, "ping_timeout_seconds": 2.0, "lost_after_missed_pings": 2}
CELERY_WORKER = "Celery worker"  # dagster_celery's engine event names the worker that runs a step


@dataclass
class Week:
    week: date
    selection: list[dg.AssetKey]
    run_config: dict  # the ops' config (the baseline's quick models), as the baseline ran
    reference: Path  # the week run in this process with the same shards: a local home
    reference_seconds: float
    baseline: Path  # the home the earlier weeks come from (the session's baseline)

    @property
    def key(self) -> str:
        return self.week.isoformat()

    @property
    def asset_names(self) -> list[str]:
        return [key.to_user_string() for key in self.selection]


@dataclass
class Cluster:
    instance: dg.DagsterInstance
    dagster_home: Path
    object_store: str
    workers: dict[str, CeleryWorker]


def remove_week_outputs(home: Path, week: str, assets: list[str]) -> None:
    for asset in assets:
        for path in (home / "assets" / asset).glob(f"{week}*"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()


@pytest.fixture(scope="module")
def week() -> Week:
    """The week after the baseline's prerequisites, and the single-process reference of it."""
    from hm_assets.defs.runner import PipelineRunner
    from hm_assets_tests.baseline import FAST, baseline, project_defs, recommendation_path_keys

    base = baseline()
    reference = base.copy_home()
    defs = project_defs(Path(os.environ["HM_DATA_DIR"]), reference, customers_per_shard=SHARD_SIZE)
    selection = recommendation_path_keys(defs)
    names = [key.to_user_string() for key in selection]
    remove_week_outputs(reference, base.week.isoformat(), names)
    with dg.DagsterInstance.ephemeral() as instance:
        runner = PipelineRunner(defs, instance, FAST)
        started = time.monotonic()
        runner.materialize_week(base.week, selection)
        seconds = time.monotonic() - started
    print(f"\nweek {base.week}, {len(selection)} assets, in this process, shards of {SHARD_SIZE}: {seconds:.1f} s")
    return Week(base.week, selection, runner.run_config_for(selection), reference, seconds, base.home)


@pytest.fixture(scope="module")
def cluster(week, postgres, redis_server, s3_endpoint, tmp_path_factory):
    from dagster_celery.executor import CeleryExecutor
    from dagster_celery.make_app import make_app

    from hm_assets_tests.baseline import seed_object_store

    root = tmp_path_factory.mktemp("celery")
    object_store = f"s3://hm-recs/{root.name}"
    seed_object_store(week.baseline, object_store, week.key, week.asset_names)
    broker = {"DAGSTER_CELERY_BROKER_URL": redis_server.url(0), "DAGSTER_CELERY_BACKEND_URL": redis_server.url(1)}
    with environment(broker):
        dagster_home = postgres_instance_home(root / "dagster")
        config = yaml.safe_load((dagster_home / "dagster.yaml").read_text())
        # No compute logs: they would go to this process's DAGSTER_HOME, a folder the workers share here only.
        config["compute_logs"] = {"module": "dagster._core.storage.noop_compute_log_manager", "class": "NoOpComputeLogManager"}
        (dagster_home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        instance = dg.DagsterInstance.from_config(str(dagster_home))
        app = make_app(CeleryExecutor.for_cli(broker=broker["DAGSTER_CELERY_BROKER_URL"], backend=broker["DAGSTER_CELERY_BACKEND_URL"]).app_args())

        def answers(node: str) -> bool:
            return bool(app.control.ping(destination=[node], timeout=1.0))

        workers: dict[str, CeleryWorker] = {}
        try:
            for name in ("hm-a", "hm-b"):
                workers[name] = start_worker(name, root / name, {"HM_OBJECT_STORE": object_store}, answers)
            yield Cluster(instance, dagster_home, object_store, workers)
        finally:
            for worker in workers.values():
                worker.stop()
            instance.dispose()


def run_on_celery(cluster: Cluster, week: Week) -> tuple[dg.JobExecutionResult, float]:
    run_config = {
        **week.run_config,
        # HM_HOME and HM_OBJECT_STORE: each worker's own environment.
        "resources": {"store": {"config": {"customers_per_shard": SHARD_SIZE}}},
        # Over the executor's settings from deploy/celery-worker.yaml (the workers' file).
        "execution": {"config": {"worker_watch": WORKER_WATCH}},
    }
    started = time.monotonic()
    result = dg.execute_job(
        dg.reconstructable(weekly_job_on_celery),
        instance=cluster.instance,
        run_config=run_config,
        tags={"dagster/partition": week.key},
        asset_selection=week.selection,
        raise_on_error=False,
    )
    return result, time.monotonic() - started


def failures(result: dg.JobExecutionResult) -> str:
    return "\n".join(e.event_specific_data.error.to_string() for e in result.all_events if e.is_step_failure) or "the run failed"


def step_workers(instance: dg.DagsterInstance, run_id: str) -> list[tuple[str, str]]:
    """(step key, worker) for every step task a worker began, in order."""
    found = []
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        metadata = entry.dagster_event.engine_event_data.metadata
        if CELERY_WORKER in metadata:
            found.append((entry.dagster_event.step_key, metadata[CELERY_WORKER].value))
    return found


def step_keys(instance: dg.DagsterInstance, run_id: str, event_type: dg.DagsterEventType) -> list[str]:
    return [entry.dagster_event.step_key for entry in instance.all_logs(run_id, of_type=event_type)]


def output_bytes(path: Path) -> dict[str, bytes]:
    """An output's bytes: of its file, or of every file of its folder (a week kept as its shards' parts)."""
    if path.is_dir():
        return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
    return {"": path.read_bytes()}


def assert_outputs_are_the_reference(cluster: Cluster, week: Week, reader_home: Path) -> None:
    """The week's outputs in the object store, byte for byte those of the single-process run."""
    reader = HMStore(home=str(reader_home), object_store=cluster.object_store)
    for asset, suffix in COMPARED.items():
        ours = output_bytes(reader.require(asset, week.key, suffix))
        reference = output_bytes(week.reference / "assets" / asset / f"{week.key}{suffix}")
        assert reference and all(reference.values()), f"{asset} {week.key}{suffix} is empty in the single-process run"
        assert ours == reference, f"{asset} {week.key}{suffix} differs from the single-process run"
    assert json.loads(reader.require("evaluation", week.key, ".json").read_text())["map12_ranker"] > 0
    # Nothing left behind in the store: no shard parts, no handed-over values.
    assert reader.objects.names(reader.root / "parts") == []
    assert reader.objects.names(reader.root / "handoff") == []


def assert_nothing_went_through_a_local_folder(cluster: Cluster, run_id: str) -> None:
    """The values steps hand each other went through the object store: nothing of the run is in the
    instance's local storage folder (where Dagster's default filesystem IO manager would write)."""
    storage = cluster.dagster_home / "storage"
    assert not (storage / run_id).exists() or not any((storage / run_id).rglob("*")), sorted((storage / run_id).rglob("*"))[:5]


def test_a_week_on_two_celery_workers_matches_the_single_process_run(cluster, week, tmp_path):
    result, seconds = run_on_celery(cluster, week)
    assert result.success, failures(result)
    run_id = result.run_id
    print(f"week {week.key} on 2 Celery workers: {seconds:.1f} s (in process: {week.reference_seconds:.1f} s)")

    assert_outputs_are_the_reference(cluster, week, tmp_path / "reader")
    assert_nothing_went_through_a_local_folder(cluster, run_id)

    # Every step ran on a worker, each exactly once, and both workers ran steps and shard steps.
    assigned = step_workers(cluster.instance, run_id)
    started = step_keys(cluster.instance, run_id, dg.DagsterEventType.STEP_START)
    assert sorted(key for key, _ in assigned) == sorted(started) and len(set(started)) == len(started)
    nodes = {worker.node for worker in cluster.workers.values()}
    ran = {node: {key for key, on in assigned if on == node} for node in nodes}
    for node, keys in ran.items():
        assert any("_shard[" in key for key in keys), f"{node} ran no shard step: {sorted(keys)}"
    assert step_keys(cluster.instance, run_id, dg.DagsterEventType.STEP_FAILURE) == []
    assert step_keys(cluster.instance, run_id, dg.DagsterEventType.STEP_UP_FOR_RETRY) == []
    assert {event.dagster_event.pid for event in cluster.instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START)}.isdisjoint({os.getpid()})

    # A value crossed between workers: a shard step's work order from a plan step, or a combine
    # step's shard counts from a shard step, that ran on the other worker.
    where = dict(assigned)
    crossed = [
        (producer, consumer)
        for consumer, node in where.items()
        for producer in where
        if where[producer] != node
        and producer.split(".")[0] == consumer.split(".")[0]
        and ((producer.endswith("_plan") and "_shard[" in consumer) or ("_shard[" in producer and consumer.endswith("_combine")))
    ]
    assert crossed, "every value was handed over on one worker"
    # Each worker's cache was filled from the object store (it started empty).
    for worker in cluster.workers.values():
        fetched = list((worker.home / ".object-store" / "assets").rglob("*.json"))
        assert fetched, f"{worker.name} fetched nothing from the object store"


def test_a_worker_killed_mid_shard_its_step_is_retried_on_the_other(cluster, week, tmp_path):
    from hm_assets.platform.object_store import ObjectStore

    victim, survivor = cluster.workers["hm-a"], cluster.workers["hm-b"]
    # The week's outputs go, so the run must write them again.
    scratch = tmp_path / "scratch"
    objects = ObjectStore(cluster.object_store, scratch)
    for asset, suffix in COMPARED.items():
        objects.remove(scratch / "assets" / asset / f"{week.key}{suffix}")
    victim.stall_flag.touch()  # the victim stops at the start of the next shard step it is given

    killed: dict[str, object] = {}
    run_over = threading.Event()

    def kill_when_mid_shard() -> None:
        while not run_over.is_set() and not victim.stall_marker.exists():
            time.sleep(0.2)
        if victim.stall_marker.exists():
            killed["pool_pid"] = int(victim.stall_marker.read_text())
            os.killpg(victim.process.pid, signal.SIGKILL)  # the worker's whole process tree
            victim.process.wait()

    killer = threading.Thread(target=kill_when_mid_shard, daemon=True)
    killer.start()
    try:
        result, seconds = run_on_celery(cluster, week)
    finally:
        run_over.set()
        killer.join(timeout=60)
    assert "pool_pid" in killed, "the victim never began a shard step"
    with pytest.raises(ProcessLookupError):
        os.kill(killed["pool_pid"], 0)  # the process that ran the shard is gone
    assert result.success, failures(result)
    run_id = result.run_id
    print(f"week {week.key} on 2 Celery workers, one killed mid-shard: {seconds:.1f} s")

    # The shard step the victim began was retried: by the executor's lost-worker report and the step's
    # retry policy, on the surviving worker, where it succeeded.
    assigned = step_workers(cluster.instance, run_id)
    lost = [key for key, node in assigned if node == victim.node and "_shard[" in key]
    assert lost, f"no shard step began on {victim.node}"
    lost_step = lost[-1]
    retried = step_keys(cluster.instance, run_id, dg.DagsterEventType.STEP_UP_FOR_RETRY)
    assert retried == [lost_step]
    assert [node for key, node in assigned if key == lost_step] == [victim.node, survivor.node]
    assert lost_step in step_keys(cluster.instance, run_id, dg.DagsterEventType.STEP_SUCCESS)
    assert step_keys(cluster.instance, run_id, dg.DagsterEventType.STEP_FAILURE) == []
    notices = [
        entry.dagster_event.message
        for entry in cluster.instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
        if entry.dagster_event.step_key == lost_step
    ]
    assert any(victim.node in message and "stopped answering" in message for message in notices), notices

    assert_outputs_are_the_reference(cluster, week, tmp_path / "reader")
    assert_nothing_went_through_a_local_folder(cluster, run_id)
