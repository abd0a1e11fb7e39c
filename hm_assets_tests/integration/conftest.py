"""Every test in this folder is ``slow``: ``pytest -m "not slow"`` is the fast loop."""

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A conftest's hook sees the whole session's items, not only this folder's: mark ours.
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.slow)
