"""The Celery app of test_celery.py's workers (``dagster-celery worker start -A hm_assets_tests.celery_worker_app``):
dagster_celery's own app (``dagster_celery.app.app``, its tasks unchanged), plus one test hook.

A worker whose ``HM_TEST_STALL_FLAG`` file exists when it begins a customer-shard step stops there
for good, after writing its pid to ``HM_TEST_STALL_MARKER``: the test then knows that the worker is
mid-shard, and kills it (SIGKILL). Without the flag file the hook does nothing. (The project has no
such hook; this module patches ``hm_assets.platform.fanout`` in the worker's processes only.)
"""

import os
import sys
import time
from pathlib import Path

from dagster_celery.app import app  # noqa: F401  (what `celery -A` looks for)

import hm_assets.platform.fanout as fanout

_read_plan_record = fanout.read_plan_record


def _stalling_read_plan_record(store, parts_dir):
    flag = os.environ.get("HM_TEST_STALL_FLAG")
    # The shard step only (the combine step reads the plan record too).
    if flag and Path(flag).exists() and sys._getframe(1).f_code.co_name == "shard_step":
        Path(os.environ["HM_TEST_STALL_MARKER"]).write_text(str(os.getpid()))
        while True:
            time.sleep(1)
    return _read_plan_record(store, parts_dir)


fanout.read_plan_record = _stalling_read_plan_record

__all__ = ["app"]
