"""Celery workers for test_celery.py, each a ``dagster-celery worker start`` process tree of its own
(its app: ``hm_assets_tests.celery_worker_app``), and the job they run.

``weekly_job_on_celery`` is the job the test runs: the weekly job of ``hm_assets.distributed`` (the
project's ``build_definitions()`` with ``hm_assets.platform.celery_executor.celery_executor``); the
workers rebuild it from this module (``dg.reconstructable``).
"""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from hm_assets.platform.settings import PROJECT_ROOT
from hm_assets_tests.services import stop_process_group

WORKER_CONFIG = PROJECT_ROOT / "deploy" / "celery-worker.yaml"

def weekly_job_on_celery() -> dg.JobDefinition:
    """What ``dg.reconstructable`` points the workers at (built once per process)."""
    return _weekly_job_on_celery()


@functools.cache
def _weekly_job_on_celery() -> dg.JobDefinition:
    from hm_assets.distributed import build_distributed_definitions

    return build_distributed_definitions("celery").resolve_job_def("weekly_recommendations")


# --- in the test --------------------------------------------------------------------------------


def node_name(name: str) -> str:
    """The Celery node name of a worker started with ``-n name`` (``name@%h``)."""
    return f"{name}@{socket.gethostname()}"


@dataclass
class CeleryWorker:
    name: str
    root: Path  # its own HM_HOME (home/), DAGSTER_HOME (dagster/), log and stall files
    process: subprocess.Popen

    @property
    def node(self) -> str:
        return node_name(self.name)

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def log(self) -> Path:
        return self.root / "worker.log"

    @property
    def stall_flag(self) -> Path:
        return self.root / "stall-at-next-shard"

    @property
    def stall_marker(self) -> Path:
        return self.root / "stalled"

    def stop(self) -> None:
        stop_process_group(self.process)

    def log_tail(self, characters: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-characters:] if self.log.exists() else ""


def start_worker(name: str, root: Path, environment: dict[str, str], ping, timeout: float = 180) -> CeleryWorker:
    """``dagster-celery worker start`` with one pool process, in a process group of its own, with
    ``environment`` on top of this process's and its own empty HM_HOME and DAGSTER_HOME under
    ``root``; returns once the worker answers ``ping(node)``."""
    root.mkdir(parents=True)
    (root / "home").mkdir()
    (root / "dagster").mkdir()
    worker = CeleryWorker(name, root, None)  # type: ignore[arg-type]
    env = {
        **os.environ,
        **environment,
        "HM_HOME": str(worker.home),
        "DAGSTER_HOME": str(root / "dagster"),
        "HM_TEST_STALL_FLAG": str(worker.stall_flag),
        "HM_TEST_STALL_MARKER": str(worker.stall_marker),
        # `dagster-celery worker start` runs `celery` from PATH: this interpreter's.
        "PATH": os.pathsep.join((str(Path(sys.executable).parent), os.environ.get("PATH", ""))),
        # The project and its tests importable from the checkout the tests run from.
        "PYTHONPATH": os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p),
    }
    command = [
        str(Path(sys.executable).parent / "dagster-celery"), "worker", "start",
        "-A", "hm_assets_tests.celery_worker_app", "-y", str(WORKER_CONFIG), "-n", name, "-l", "INFO",
        "--", "--concurrency", "1", "--without-gossip", "--without-mingle",
    ]
    with worker.log.open("wb") as log:
        worker.process = subprocess.Popen(
            command, cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.process.poll() is not None:
            raise RuntimeError(f"worker {name} exited ({worker.process.returncode}):\n{worker.log_tail()}")
        if ping(worker.node):
            return worker
        time.sleep(0.5)
    worker.stop()
    raise RuntimeError(f"worker {name} did not answer within {timeout:.0f} s:\n{worker.log_tail()}")
