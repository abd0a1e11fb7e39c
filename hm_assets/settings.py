"""Where the project reads its input and writes its outputs.

Input (the Kaggle-format folder) is named by ``HM_DATA_DIR`` and is never written to.
Outputs live under ``HM_HOME``. Both default to folders inside the checkout so that
``make demo`` works with no configuration.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SQL_DIR = PROJECT_ROOT / "sql"

# Labelled earlier weeks the ranker learns from, by default (RankerConfig, hm-recs run, the runner).
DEFAULT_TRAINING_WEEKS = 4

DEFAULT_HOME = PROJECT_ROOT / ".hm_home"
DEFAULT_DATA_DIR = PROJECT_ROOT / "data" / "synthetic-small"


def hm_home() -> Path:
    return Path(os.environ.get("HM_HOME") or DEFAULT_HOME).expanduser().resolve()


def hm_data_dir() -> Path:
    return Path(os.environ.get("HM_DATA_DIR") or DEFAULT_DATA_DIR).expanduser().resolve()


def hm_object_store() -> str:
    """The object-store URI outputs are shared through (``HM_OBJECT_STORE``), or ""."""
    return os.environ.get("HM_OBJECT_STORE", "").strip()
