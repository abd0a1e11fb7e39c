"""``dagster_celery``'s executor, plus what it lacks for a lost worker: the step is retried.

``dagster_celery.celery_executor`` sends every step to the broker as a task and waits for the task's
result (the step's events) in the result backend. When the worker running a step dies — SIGKILL, OOM
kill, a lost node — nothing ever writes that result: the run waits forever (or, when only the pool
process died and Celery reports ``WorkerLostError``, the run fails without the step's retry policy
being consulted). The multiprocess and Kubernetes executors handle the same event by reporting a
step failure through ``Executor.log_failure_or_retry_event_after_error``, which applies the op's
``RetryPolicy``. This executor does the same for Celery:

- a task that Celery reports as failed outside the step (``WorkerLostError`` and the like) becomes
  that step's failure, or its retry when the op has a retry policy with attempts left;
- a task that started on a worker (``task_track_started``: the result backend then records the
  worker's name) that stops answering ``ping`` (``lost_after_missed_pings`` in a row, one ping every
  ``ping_interval_seconds`` at most) is reported the same way, and the step is sent again: another
  worker takes it. The task is revoked first, in case its worker was only slow to answer.

Workers must run with ``task_track_started: true`` (deploy/celery-worker.yaml); without it a lost
worker is not noticed and the step waits, as with dagster_celery's own executor. Keep
``task_acks_late`` off: the broker must not deliver the lost task again, Dagster runs the retry.
The customer-shard steps have a retry policy (``hm_assets/platform/fanout.py``).
"""

from __future__ import annotations

import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
from celery import states
from celery.exceptions import TaskRevokedError
from dagster._core.events import DagsterEvent, EngineEventData
from dagster._core.execution.retries import RetryMode
from dagster._serdes import serialize_value
from dagster._utils.error import SerializableErrorInfo, serializable_error_info_from_exc_info
from dagster_celery.core_execution_loop import core_celery_execution_loop
from dagster_celery.executor import CELERY_CONFIG, CeleryExecutor, _submit_task

WORKER_WATCH_CONFIG = {
    "worker_watch": dg.Field(
        {
            "ping_interval_seconds": dg.Field(
                float, default_value=15.0, description="How often a worker running a step of the run is pinged, at most."
            ),
            "ping_timeout_seconds": dg.Field(float, default_value=5.0, description="How long one ping waits for the answer."),
            "lost_after_missed_pings": dg.Field(
                int, default_value=3, description="A worker that misses this many pings in a row is lost."
            ),
        },
        is_required=False,
        description="Noticing a worker lost while it runs a step (the step is then failed or retried).",
    )
}


@dataclass
class WorkerWatch:
    """Pings the workers that run this run's steps; remembers who stopped answering."""

    app: Any
    ping_interval_seconds: float
    ping_timeout_seconds: float
    lost_after_missed_pings: int
    _pinged: dict[str, float] = field(default_factory=dict)
    _missed: dict[str, int] = field(default_factory=dict)

    def is_lost(self, hostname: str) -> bool:
        now = time.monotonic()
        if now - self._pinged.get(hostname, float("-inf")) >= self.ping_interval_seconds:
            replies = self.app.control.ping(destination=[hostname], timeout=self.ping_timeout_seconds)
            self._pinged[hostname] = time.monotonic()
            answered = any(hostname in reply for reply in replies or [])
            self._missed[hostname] = 0 if answered else self._missed.get(hostname, 0) + 1
        return self._missed.get(hostname, 0) >= self.lost_after_missed_pings


class WatchedStepTask:
    """The ``AsyncResult`` of one step's task as dagster_celery's loop uses it (``ready``, ``get``,
    ``revoke``), except that a task lost with its worker is ready, and its result is the step's
    failure or retry instead of an error that fails the run."""

    def __init__(self, result, executor: dg.Executor, plan_context, step, known_state, watch: WorkerWatch) -> None:
        self.result = result
        self.executor = executor
        self.plan_context = plan_context
        self.step = step
        self.known_state = known_state
        self.watch = watch
        self.lost_worker: str | None = None

    def worker(self) -> str | None:
        """The worker that started the task (recorded by task_track_started), if it has."""
        if self.result.state != states.STARTED:
            return None
        info = self.result.info
        return info.get("hostname") if isinstance(info, dict) else None

    def ready(self) -> bool:
        if self.lost_worker is not None or self.result.ready():
            return True
        hostname = self.worker()
        if hostname is not None and self.watch.is_lost(hostname):
            self.lost_worker = hostname
            self.result.revoke(terminate=True, signal="SIGKILL")  # if it was only slow to answer
            return True
        return False

    def get(self) -> list:
        if self.lost_worker is None:
            try:
                return self.result.get()
            except TaskRevokedError:
                raise  # dagster_celery's loop reports a revoked task itself
            except Exception:
                error = serializable_error_info_from_exc_info(sys.exc_info())
                explanation = f'The celery task of step "{self.step.key}" failed outside the step: {error.message.strip()}'
        else:
            explanation = (
                f'Celery worker {self.lost_worker} stopped answering while it ran step "{self.step.key}" '
                f"({self.watch.lost_after_missed_pings} pings missed): its process or node was lost."
            )
            error = SerializableErrorInfo(message=explanation, stack=[], cls_name="WorkerLostError")
        step_context = self.plan_context.for_step(self.step)
        notice = DagsterEvent.engine_event(step_context, explanation, EngineEventData.engine_error(error))
        outcome = self.executor.log_failure_or_retry_event_after_error(step_context, error, self.known_state)
        return [serialize_value(notice), serialize_value(outcome)]

    def revoke(self, *args, **kwargs):
        return self.result.revoke(*args, **kwargs)


class WatchingCeleryExecutor(CeleryExecutor):
    def __init__(self, retries, worker_watch: dict | None = None, **celery_args) -> None:
        super().__init__(retries=retries, **celery_args)
        self.worker_watch = dict(worker_watch or {})

    def execute(self, plan_context, execution_plan):
        watches: dict[int, WorkerWatch] = {}

        def submit(app, job_context, step, queue, priority, known_state):
            watch = watches.setdefault(id(app), WorkerWatch(app, **self.worker_watch))
            with warnings.catch_warnings():
                # dagster_celery declares its task again for every step; Celery 5.7 warns each time
                # that the name is taken (by the same task), and keeps the first: harmless.
                warnings.filterwarnings("ignore", message=r"Task name 'execute_plan' is already registered")
                result = _submit_task(app, job_context, step, queue, priority, known_state)
            return WatchedStepTask(result, self, job_context, step, known_state, watch)

        return core_celery_execution_loop(plan_context, execution_plan, step_execution_fn=submit)


@dg.executor(
    name="celery",
    config_schema={**CELERY_CONFIG, **WORKER_WATCH_CONFIG},
    requirements=dg.multiple_process_executor_requirements(),
)
def celery_executor(init_context: dg.InitExecutorContext) -> WatchingCeleryExecutor:
    """``dagster_celery.celery_executor`` (same config: broker, backend, include, config_source,
    retries) whose steps are failed or retried, by their retry policy, when their worker is lost."""
    config = init_context.executor_config
    watch_defaults = {name: field.default_value for name, field in WORKER_WATCH_CONFIG["worker_watch"].config_type.fields.items()}
    return WatchingCeleryExecutor(
        retries=RetryMode.from_config(config["retries"]),
        worker_watch={**watch_defaults, **(config.get("worker_watch") or {})},
        broker=config.get("broker"),
        backend=config.get("backend"),
        config_source=config.get("config_source"),
        include=config.get("include"),
    )
