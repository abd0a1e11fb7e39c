"""The code location with every step of a run sent to a cluster: each step (each customer shard of
candidates and recommendations among them) runs wherever the executor puts it.

``HM_STEP_EXECUTOR`` chooses the executor (README.md "Scaling out", deploy/README.md):

- ``celery`` (default): ``hm_assets.platform.celery_executor.celery_executor``, one Celery task per
  step, configured by deploy/celery-worker.yaml, the file the workers are started with
  (``dagster-celery worker start -A dagster_celery.app -y deploy/celery-worker.yaml``);
- ``k8s``: ``dagster_k8s.k8s_job_executor``, one Kubernetes Job per step, configured by
  deploy/k8s-job-executor.yaml.

Either way the nodes share only the object store (``HM_OBJECT_STORE``: asset files, shard parts and
the values steps hand each other) and the Dagster instance (PostgreSQL). Load it as a code location:
``dagster code-server start -m hm_assets.distributed`` (or ``dagster dev -m hm_assets.distributed``).
"""

from __future__ import annotations

import os

import dagster as dg
import yaml

from hm_assets.definitions import build_definitions
from hm_assets.platform.settings import PROJECT_ROOT

STEP_EXECUTOR_ENV = "HM_STEP_EXECUTOR"


DEPLOY = PROJECT_ROOT / "deploy"
# The run config of each executor: the workers read the Celery one too, so runs and workers agree.
EXECUTOR_CONFIG = {"celery": DEPLOY / "celery-worker.yaml", "k8s": DEPLOY / "k8s-job-executor.yaml"}


def base_executor(name: str) -> dg.ExecutorDefinition:
    if name == "celery":
        from hm_assets.platform.celery_executor import celery_executor

        return celery_executor
    if name == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    raise ValueError(f"{STEP_EXECUTOR_ENV}={name!r}: expected 'celery' or 'k8s'")


def step_executor(name: str) -> dg.ExecutorDefinition:
    """The executor, configured by its file in deploy/: a run needs no `execution:` config (the
    sensors' runs have none); what a run's `execution: config:` gives is laid over the file's
    settings (e.g. `worker_watch`), and the executor's own schema checks the result when the run
    starts (`env:` values are read then, in the run's process)."""
    executor = base_executor(name)
    block = yaml.safe_load(EXECUTOR_CONFIG[name].read_text())["execution"]["config"]
    return executor.configured(lambda given: {**block, **(given or {})}, config_schema=dg.Permissive(), name=executor.name)


def with_executor(defs: dg.Definitions, executor: dg.ExecutorDefinition) -> dg.Definitions:
    """``defs`` whose jobs run their steps with ``executor`` (those that name none of their own)."""
    return dg.Definitions.merge(defs, dg.Definitions(executor=executor))


def build_distributed_definitions(executor_name: str | None = None) -> dg.Definitions:
    return with_executor(build_definitions(), step_executor(executor_name or os.environ.get(STEP_EXECUTOR_ENV, "celery")))


@dg.definitions
def defs() -> dg.Definitions:
    """Built when the code location is loaded (not when this module is imported)."""
    return build_distributed_definitions()
