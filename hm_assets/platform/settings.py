"""Where the project reads its input and writes its outputs.

Input (the Kaggle-format folder) is named by ``HM_DATA_DIR`` and is never written to.
Outputs live under ``HM_HOME``. Both default to folders inside the checkout so that
``make demo`` works with no configuration.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SQL_DIR = PROJECT_ROOT / "sql"
# The one-machine Dagster instance, copied to $DAGSTER_HOME/dagster.yaml. Not at the project root:
# `dagster dev` warns about a dagster.yaml in its working folder that DAGSTER_HOME does not use.
LOCAL_INSTANCE_CONFIG = PROJECT_ROOT / "deploy" / "local" / "dagster.yaml"

# Labelled earlier weeks the ranker learns from, by default (RankerConfig, hm-recs run, the runner).
DEFAULT_TRAINING_WEEKS = 4

# Weekly partitions shown and built, up to the live week: the default run's weeks (the live week, the
# evaluated week and the ranker's training weeks before it). Earlier weeks are history (their
# transactions), not work left undone; HM_FIRST_WEEK starts the set earlier (longer backtests).
BUILT_WEEKS = DEFAULT_TRAINING_WEEKS + 2

DEFAULT_HOME = PROJECT_ROOT / ".hm_home"
DEFAULT_DATA_DIR = PROJECT_ROOT / "data" / "synthetic-small"


def hm_home() -> Path:
    return Path(os.environ.get("HM_HOME") or DEFAULT_HOME).expanduser().resolve()


def hm_data_dir() -> Path:
    return Path(os.environ.get("HM_DATA_DIR") or DEFAULT_DATA_DIR).expanduser().resolve()


def hm_object_store() -> str:
    """The object-store URI outputs are shared through (``HM_OBJECT_STORE``), or ""."""
    return os.environ.get("HM_OBJECT_STORE", "").strip()


def hm_first_week() -> str:
    """``HM_FIRST_WEEK``: the first weekly partition (a Wednesday), or "" for ``BUILT_WEEKS`` back."""
    return os.environ.get("HM_FIRST_WEEK", "").strip()


def hm_partition_end() -> str:
    """``HM_PARTITION_END``: ``auto`` (default: follow the calendar when the data is current),
    ``data`` (end with the data's live week) or ``calendar``."""
    value = os.environ.get("HM_PARTITION_END", "auto").strip().lower() or "auto"
    if value not in ("auto", "data", "calendar"):
        raise ValueError(f"HM_PARTITION_END must be auto, data or calendar, not {value!r}")
    return value


def hm_serve_url() -> str:
    """Where ``hm-recs serve`` answers (``HM_SERVE_URL``): links in the UI's metadata point there."""
    return (os.environ.get("HM_SERVE_URL") or "http://127.0.0.1:8000").rstrip("/")
