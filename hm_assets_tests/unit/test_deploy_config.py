"""The production instance profiles in deploy/ pass Dagster's own configuration checks, without a
cluster, a broker or a database.

Two layers, as Dagster loads a dagster.yaml:

1. the instance schema (``dagster_instance_config``: the top-level keys, ``storage: postgres``, the
   run queue, ``concurrency`` pools and runs, run monitoring, retention) and ``InstanceRef.from_dir``,
   which turns every pluggable section into the class it names;
2. each named class's own config schema (``process_config(klass.config_type(), ...)``, the step
   before ``ConfigurableClassData.rehydrate`` constructs it), with the ``env:`` values resolved from a
   test environment. K8sRunLauncher is not constructed (that loads the in-cluster Kubernetes
   config); CeleryRunLauncher is (a Celery app connects to its broker only when it sends a task).

The class checks need the `deploy` extra (dagster-k8s, dagster-celery); without it they skip,
naming the missing package. dagster-postgres is in the `test` extra.

The run-config profiles (deploy/celery-worker.yaml, deploy/k8s-job-executor.yaml) are validated as
the run config of the project's weekly job built with that executor.
"""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._config import process_config, resolve_to_config_type
from dagster._core.errors import DagsterInvalidConfigError
from dagster._core.instance.config import dagster_instance_config
from dagster._core.instance.ref import InstanceRef
from dagster._serdes import ConfigurableClassData

from hm_assets.platform.settings import PROJECT_ROOT

DEPLOY = PROJECT_ROOT / "deploy"
PROFILES = ["dagster.yaml", "dagster-celery.yaml"]

ENVIRONMENT = {
    "DAGSTER_PG_HOST": "dagster-postgresql.dagster.svc",
    "DAGSTER_PG_PORT": "5432",
    "DAGSTER_PG_USER": "dagster",
    "DAGSTER_PG_PASSWORD": "secret",
    "DAGSTER_PG_DB": "dagster",
    "HM_RECS_IMAGE": "registry.example/hm-recs:1",
    "DAGSTER_K8S_NAMESPACE": "hm-recs",
    "DAGSTER_CELERY_BROKER_URL": "pyamqp://guest@rabbitmq.dagster.svc:5672//",
    "DAGSTER_CELERY_BACKEND_URL": "rpc://",
}
PACKAGE_OF_MODULE = {"dagster_k8s": "dagster-k8s", "dagster_celery": "dagster-celery", "dagster_postgres": "dagster-postgres"}


@pytest.fixture
def deploy_env(monkeypatch):
    for name, value in ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    return ENVIRONMENT


def instance_ref(profile: str, tmp_path: Path) -> InstanceRef:
    return InstanceRef.from_dir(str(tmp_path), config_dir=str(DEPLOY), config_filename=profile)


def import_or_skip(module_name: str):
    top = module_name.split(".")[0]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and error.name.split(".")[0] == top:
            package = PACKAGE_OF_MODULE.get(top, top)
            pytest.skip(f"{package} is not installed (pip install -e '.[deploy]'): its class config is not checked")
        raise


def class_config(data: ConfigurableClassData) -> dict:
    """What ``ConfigurableClassData.rehydrate`` checks before it constructs the class: the class exists,
    is configurable, and its config (``env:`` values resolved) passes the class's own schema."""
    module = import_or_skip(data.module_name)
    klass = getattr(module, data.class_name)
    result = process_config(resolve_to_config_type(klass.config_type()), data.config_dict)
    if not result.success:
        raise DagsterInvalidConfigError(f"{data.module_name}.{data.class_name}", result.errors, data.config_dict)
    return result.value


@pytest.mark.parametrize("profile", PROFILES)
def test_profile_passes_the_instance_schema(profile, tmp_path):
    config, custom_class = dagster_instance_config(str(DEPLOY), config_filename=profile)
    assert custom_class is None
    assert config["telemetry"] == {"enabled": False}
    assert set(config["storage"]) == {"postgres"}
    assert config["storage"]["postgres"]["postgres_db"]["hostname"] == {"env": "DAGSTER_PG_HOST"}
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    runs = config["concurrency"]["runs"]
    assert runs["max_concurrent_runs"] > 0
    assert any(limit["key"] == "dagster/backfill" for limit in runs["tag_concurrency_limits"])
    assert config["concurrency"]["pools"]["default_limit"] > 0
    assert config["run_monitoring"]["enabled"] is True

    ref = instance_ref(profile, tmp_path)
    assert (ref.storage_data.module_name, ref.storage_data.class_name) == ("dagster_postgres", "DagsterPostgresStorage")
    assert ref.run_coordinator_data.class_name == "QueuedRunCoordinator"
    assert ref.run_launcher_data.class_name == {"dagster.yaml": "K8sRunLauncher", "dagster-celery.yaml": "CeleryRunLauncher"}[profile]


@pytest.mark.parametrize("profile", PROFILES)
def test_postgres_storage_and_run_queue_pass_their_class_schemas(profile, tmp_path, deploy_env):
    ref = instance_ref(profile, tmp_path)
    storage = class_config(ref.storage_data)
    assert storage["postgres_db"] == {
        "hostname": deploy_env["DAGSTER_PG_HOST"],
        "port": 5432,
        "username": deploy_env["DAGSTER_PG_USER"],
        "password": deploy_env["DAGSTER_PG_PASSWORD"],
        "db_name": deploy_env["DAGSTER_PG_DB"],
        "params": {},
        "scheme": "postgresql+psycopg2",
    }
    for data in (ref.run_storage_data, ref.event_storage_data, ref.schedule_storage_data):
        assert class_config(data)["postgres_db"]["db_name"] == deploy_env["DAGSTER_PG_DB"]
    coordinator = class_config(ref.run_coordinator_data)
    assert coordinator["dequeue_interval_seconds"] == 5


def test_k8s_run_launcher_config(tmp_path, deploy_env):
    ref = instance_ref("dagster.yaml", tmp_path)
    assert (ref.run_launcher_data.module_name, ref.run_launcher_data.class_name) == ("dagster_k8s", "K8sRunLauncher")
    config = class_config(ref.run_launcher_data)
    assert config["job_image"] == deploy_env["HM_RECS_IMAGE"]
    assert config["job_namespace"] == deploy_env["DAGSTER_K8S_NAMESPACE"]
    assert config["load_incluster_config"] is True
    assert config["instance_config_map"] and config["service_account_name"]
    # The run pods get the database address and the project's folders; HM_HOME lives on the shared volume.
    assert {"DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_DB", "HM_HOME", "HM_DATA_DIR"} <= set(
        config["env_vars"]
    )
    assert config["postgres_password_secret"]  # exposed to the pods as DAGSTER_PG_PASSWORD
    mounted = {mount["name"] for mount in config["volume_mounts"]}
    assert mounted and mounted <= {volume["name"] for volume in config["volumes"]}


def test_celery_run_launcher_is_constructed_without_a_broker(tmp_path, deploy_env):
    ref = instance_ref("dagster-celery.yaml", tmp_path)
    config = class_config(ref.run_launcher_data)
    assert config["broker"] == deploy_env["DAGSTER_CELERY_BROKER_URL"]
    launcher = ref.run_launcher_data.rehydrate()
    assert type(launcher).__name__ == "CeleryRunLauncher"
    assert launcher.celery.conf.broker_url == deploy_env["DAGSTER_CELERY_BROKER_URL"]
    assert launcher.default_queue == "dagster"


def test_celery_worker_config_is_the_celery_executor_config(deploy_env):
    import_or_skip("dagster_celery")
    from dagster_celery.cli import get_validated_config

    config = get_validated_config(str(DEPLOY / "celery-worker.yaml"))
    assert config["broker"] == deploy_env["DAGSTER_CELERY_BROKER_URL"]
    assert config["backend"] == deploy_env["DAGSTER_CELERY_BACKEND_URL"]


def weekly_job_with(executor_name: str) -> dg.JobDefinition:
    """The weekly job of ``hm_assets.distributed`` (the code location on a cluster executor)."""
    from hm_assets.distributed import build_distributed_definitions

    return build_distributed_definitions(executor_name).resolve_job_def("weekly_recommendations")


def test_the_weekly_job_runs_under_k8s_job_executor_handing_values_over_through_the_store(deploy_env):
    """hm_assets.distributed with HM_STEP_EXECUTOR=k8s: the weekly job with every step in a pod of
    its own, its executor configured by deploy/k8s-job-executor.yaml (valid against
    k8s_job_executor's schema), and no step needs a disk another step wrote: the only values that
    pass between steps (the customer shards' work orders and counts) go through the store's handoff
    IO manager, which the object store shares (hm_assets/platform/handoff.py); every other input is
    a Nothing dependency and every asset reads its upstream files through the store itself."""
    from dagster._core.execution.api import create_execution_plan

    from hm_assets.platform.handoff import HANDOFF_IO_MANAGER_KEY, handoff_io_manager

    import_or_skip("dagster_k8s")
    job = weekly_job_with("k8s")
    block = yaml.safe_load((DEPLOY / "k8s-job-executor.yaml").read_text())["execution"]["config"]
    config = dg.validate_run_config(job, {})["execution"]["k8s"]  # a run needs no execution config
    assert config["job_namespace"] == deploy_env["DAGSTER_K8S_NAMESPACE"]
    assert config["max_concurrent"] == block["max_concurrent"] and "HM_OBJECT_STORE" in config["env_vars"]
    assert dg.validate_run_config(job, {"execution": {"config": {"max_concurrent": 4}}})["execution"]["k8s"]["max_concurrent"] == 4
    assert create_execution_plan(job, {}).step_keys_to_execute

    ops = {op.name: op for op in job.graph.iterate_op_defs()}
    sharded = sorted(name.removesuffix("_shard") for name in ops if name.endswith("_shard"))
    assert sharded == ["candidates", "recommendations"]
    value_inputs = {(name, i.name) for name, op in ops.items() for i in op.input_defs if not i.dagster_type.is_nothing}
    assert value_inputs == {(f"{a}_shard", "task") for a in sharded} | {(f"{a}_combine", "summaries") for a in sharded}
    for asset in sharded:
        for op in (ops[f"{asset}_plan"], ops[f"{asset}_shard"]):
            assert [out.io_manager_key for out in op.output_defs] == [HANDOFF_IO_MANAGER_KEY]
    assert job.resource_defs[HANDOFF_IO_MANAGER_KEY] is handoff_io_manager


def test_the_celery_executor_is_configured_by_the_workers_file(deploy_env):
    """hm_assets.distributed with HM_STEP_EXECUTOR=celery: the executor
    (hm_assets.platform.celery_executor.celery_executor) takes deploy/celery-worker.yaml's block, the
    workers' own config, with the settings its lost-worker retry relies on (task_track_started; no
    late acknowledgement, no prefetched task); a run may lay its own settings over it."""
    import_or_skip("dagster_celery")
    from hm_assets.platform.celery_executor import celery_executor

    job = weekly_job_with("celery")
    config = dg.validate_run_config(job, {})["execution"][celery_executor.name]
    assert (config["broker"], config["backend"]) == (deploy_env["DAGSTER_CELERY_BROKER_URL"], deploy_env["DAGSTER_CELERY_BACKEND_URL"])
    celery_settings = config["config_source"]
    assert celery_settings["task_track_started"] is True and celery_settings["task_acks_late"] is False
    assert celery_settings["worker_prefetch_multiplier"] == 1 and celery_settings["worker_disable_prefetch"] is True
    watched = {"execution": {"config": {"worker_watch": {"ping_interval_seconds": 2.0}}}}
    assert dg.validate_run_config(job, watched)["execution"]["celery"]["worker_watch"]["ping_interval_seconds"] == 2.0
    with pytest.raises(dg.DagsterInvalidConfigError):
        dg.validate_run_config(job, {"execution": {"config": {"worker_wacth": {}}}})


# The checks above are not vacuous: the same functions reject the mistakes one would make.


def _broken_copy(tmp_path: Path, edit) -> Path:
    folder = tmp_path / "broken"
    folder.mkdir()
    config = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    edit(config)
    (folder / "dagster.yaml").write_text(yaml.safe_dump(config))
    return folder


def test_the_instance_schema_rejects_misplaced_or_misspelt_keys(tmp_path):
    # The run-queue limits in the run coordinator's config next to `concurrency` (Dagster 1.13 rejects both).
    both = _broken_copy(tmp_path, lambda c: c["run_coordinator"]["config"].update(max_concurrent_runs=3))
    with pytest.raises(DagsterInvalidConfigError, match="max_concurrent_runs"):
        dagster_instance_config(str(both))
    shutil.rmtree(both)
    # The deprecated default_op_concurrency_limit next to `pools`.
    old = _broken_copy(tmp_path, lambda c: c["concurrency"].update(default_op_concurrency_limit=2))
    with pytest.raises(DagsterInvalidConfigError, match="default_op_concurrency_limit"):
        dagster_instance_config(str(old))
    shutil.rmtree(old)
    # A misspelt storage key.
    typo = _broken_copy(tmp_path, lambda c: c["storage"]["postgres"]["postgres_db"].update(host="x"))
    with pytest.raises(DagsterInvalidConfigError):
        dagster_instance_config(str(typo))


def test_the_launcher_schema_rejects_a_misspelt_key(tmp_path, deploy_env):
    import_or_skip("dagster_k8s")
    ref = instance_ref("dagster.yaml", tmp_path)
    data = ref.run_launcher_data
    config = {**data.config_dict, "namespace": "hm-recs"}  # the launcher's key is job_namespace
    broken = ConfigurableClassData(data.module_name, data.class_name, yaml.safe_dump(config))
    with pytest.raises(DagsterInvalidConfigError, match="namespace"):
        class_config(broken)
