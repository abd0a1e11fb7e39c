"""Test session set-up.

The partition set is shaped by the data in HM_DATA_DIR when the code location is imported, so the
session generates the tiny synthetic data set and points HM_DATA_DIR and HM_HOME at temporary
folders before any test imports the project's assets.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

SESSION_ROOT = Path(tempfile.mkdtemp(prefix="hm_recs_tests_"))
TINY_DATA = SESSION_ROOT / "tiny"
os.environ["HM_DATA_DIR"] = str(TINY_DATA)
os.environ["HM_HOME"] = str(SESSION_ROOT / "home")
# Partition sets end with the session data (fixed dates), whatever today is; the calendar-following
# sets are tested with a given current time (test_weeks.py).
os.environ["HM_PARTITION_END"] = "data"
os.environ.setdefault("DAGSTER_HOME", str(SESSION_ROOT / "dagster"))
Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)

from hm_assets.platform.settings import PROJECT_ROOT  # noqa: E402
from hm_assets.synthetic import generate  # noqa: E402

from hm_assets_tests import TEST_END_DATE  # noqa: E402
from hm_assets_tests.tiny_run import TinyRun, materialized_tiny_run  # noqa: E402

generate(TINY_DATA, preset="tiny", seed=0, end_date=TEST_END_DATE)

REAL_SAMPLE = PROJECT_ROOT.parent / "shared" / "hm_reference" / "real_sample"


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(SESSION_ROOT, ignore_errors=True)


@pytest.fixture(scope="session")
def real_sample() -> Path:
    if not REAL_SAMPLE.exists():
        pytest.fail(f"the real H&M sample is expected at {REAL_SAMPLE} (../shared beside the checkout)")
    return REAL_SAMPLE


@pytest.fixture(scope="session")
def tiny_data() -> Path:
    """The tiny synthetic preset the session's partitions are built from (read-only for tests)."""
    return TINY_DATA


@pytest.fixture
def tiny_copy(tiny_data, tmp_path) -> Path:
    """A private, writable copy of the tiny data set (for tests that break it)."""
    target = tmp_path / "data"
    shutil.copytree(tiny_data, target)
    return target


@pytest.fixture(scope="session")
def recs_run(tmp_path_factory) -> TinyRun:
    """The tiny preset materialized once per session (read-only for tests; see tiny_run.py)."""
    return materialized_tiny_run(tmp_path_factory)
