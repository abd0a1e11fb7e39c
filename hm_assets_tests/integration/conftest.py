"""Every test in this folder is ``slow``: ``pytest -m "not slow"`` is the fast loop.

The servers some modules need, one per module that asks (hm_assets_tests/services.py): ``postgres``
(its DAGSTER_PG_* variables set), ``redis_server``, ``s3_endpoint`` (moto; the AWS variables set).
"""

from pathlib import Path

import pytest

from hm_assets_tests.services import running_postgres, running_redis, running_s3

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A conftest's hook sees the whole session's items, not only this folder's: mark ours.
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="module")
def postgres():
    with running_postgres() as server:
        yield server


@pytest.fixture(scope="module")
def redis_server():
    with running_redis() as server:
        yield server


@pytest.fixture(scope="module")
def s3_endpoint():
    with running_s3() as endpoint:
        yield endpoint
