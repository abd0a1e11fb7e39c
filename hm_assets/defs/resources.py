"""Dagster resources: where the Kaggle-format input lives, and where outputs go."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from hm_assets.platform.settings import hm_data_dir
from hm_assets.platform.store import HMStore


class HMDataset(dg.ConfigurableResource):
    """A read-only folder in the Kaggle H&M format (``HM_DATA_DIR``)."""

    data_dir: str = ""

    @property
    def root(self) -> Path:
        return Path(self.data_dir).expanduser().resolve() if self.data_dir else hm_data_dir()


__all__ = ["HMDataset", "HMStore"]
