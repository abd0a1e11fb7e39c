"""The tiny materialized run shared by the test modules that need real artefacts (on-demand
recommendations, the gallery, the recommendation service): the tiny preset generated with its latent
truth, a training week and the newest week with truth materialized by the project's runner in a
subprocess (its own HM_HOME, DAGSTER_HOME and HM_DATA_DIR), with the default ranker on one labelled
week, in about two minutes; the ``gallery`` asset is materialized for that week in the same subprocess.

``conftest.py`` hands it to tests as the session fixture ``recs_run``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from hm_assets.platform.settings import PROJECT_ROOT
from hm_assets_tests import TEST_END_DATE

# The ranker of every week materialized for the tests: the product's own settings (its trees, leaves,
# learning rate and prescreen), so that the on-demand promise is tested on the model that ships; one
# labelled week, all the tiny data holds before the evaluated week. A smaller stand-in (80 rounds of 15
# leaves) followed a third purchase or not by the learning rate it happened to get (RESULTS.md).
TEST_RANKER = {"training_weeks": 1}

RUN_SCRIPT = r"""
import json, os, sys
from pathlib import Path
data, truth, home, out = map(Path, sys.argv[1:5])
from hm_assets.synthetic import generate
generate(data, preset="tiny", seed=0, end_date=sys.argv[5], truth_dir=truth)
os.environ.update(HM_DATA_DIR=str(data), HM_HOME=str(home), DAGSTER_HOME=str(home / "dagster"))
import dagster as dg
from hm_assets.definitions import build_definitions
from hm_assets.defs.resources import HMStore
from hm_assets.defs.runner import dagster_instance, run_weeks
from hm_assets.pipeline.ingest.data_range import scan_data_range
defs = build_definitions()

data_range = scan_data_range(data)
week = data_range.newest_week_with_truth
ranker = json.loads(sys.argv[6])
instance = dagster_instance()
run_weeks(defs, instance, data_range, week, training_weeks=1, backtest_weeks=1,
          run_config={"ops": {"ranker": {"config": ranker}}}, log=lambda m: print(m, flush=True))
result = dg.materialize([defs.get_assets_def("gallery")], partition_key=week.isoformat(), instance=instance,
                        resources={"store": HMStore()}, raise_on_error=True)
event = result.asset_materializations_for_node("gallery")[0]
metadata = {k: getattr(v, "value", str(v)) for k, v in event.metadata.items()}
out.write_text(json.dumps({"week": week.isoformat(), "gallery": metadata}, default=str))
"""

# One more week, the one after the run's (the live week: no purchases yet), on a copy of its home.
NEXT_WEEK_SCRIPT = r"""
import json, os, sys
from pathlib import Path
data, home = map(Path, sys.argv[1:3])
os.environ.update(HM_DATA_DIR=str(data), HM_HOME=str(home), DAGSTER_HOME=str(home / "dagster"))
from hm_assets.definitions import build_definitions
from hm_assets.defs.runner import PipelineRunner, dagster_instance, weekly_keys
from hm_assets.platform.weeks import parse_week
defs = build_definitions()
runner = PipelineRunner(defs, dagster_instance(), {"ops": {"ranker": {"config": json.loads(sys.argv[4])}}})
runner.materialize_week(parse_week(sys.argv[3]), weekly_keys(defs))
"""


@dataclass(frozen=True)
class TinyRun:
    data: Path
    truth: Path  # the generator's latent structure (articles_truth.csv: style cluster of each article)
    home: Path
    week: str  # the newest week with truth: trained ranker, recommendations, gallery
    gallery_metadata: dict
    seconds: float


_RUNS: dict[str, TinyRun] = {}


def _subprocess_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "HM_HOME", "HM_DATA_DIR")}


def materialized_tiny_run(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    """Generate the tiny preset (with its latent truth) and materialize it, once per test session."""
    if "tiny" not in _RUNS:
        root = tmp_path_factory.mktemp("recs_run")
        data, truth, home, out = root / "data", root / "truth", root / "home", root / "result.json"
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", RUN_SCRIPT, str(data), str(truth), str(home), str(out), TEST_END_DATE,
             json.dumps(TEST_RANKER)],
            cwd=PROJECT_ROOT, env=_subprocess_env(), capture_output=True, text=True, timeout=900,
        )
        if done.returncode != 0:
            pytest.fail(f"the tiny run failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}")
        result = json.loads(out.read_text())
        _RUNS["tiny"] = TinyRun(data, truth, home, result["week"], result["gallery"], round(time.perf_counter() - started, 1))
        print(f"\ntiny run materialized in {_RUNS['tiny'].seconds} s under {home}")
    return _RUNS["tiny"]


def with_next_week(run: TinyRun, tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    """A copy of ``run`` with the following week materialized too (recommendations of two weeks),
    once per test session; its ``week`` is the new one."""
    if "tiny+1" not in _RUNS:
        from datetime import timedelta

        from hm_assets.platform.weeks import parse_week

        home = tmp_path_factory.mktemp("recs_run_next") / "home"
        shutil.copytree(run.home, home, ignore=shutil.ignore_patterns("tmp"))
        week = (parse_week(run.week) + timedelta(days=7)).isoformat()
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", NEXT_WEEK_SCRIPT, str(run.data), str(home), week, json.dumps(TEST_RANKER)],
            cwd=PROJECT_ROOT, env=_subprocess_env(), capture_output=True, text=True, timeout=900,
        )
        if done.returncode != 0:
            pytest.fail(f"week {week} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}")
        _RUNS["tiny+1"] = TinyRun(run.data, run.truth, home, week, {}, round(time.perf_counter() - started, 1))
        print(f"\nweek {week} materialized in {_RUNS['tiny+1'].seconds} s under {home}")
    return _RUNS["tiny+1"]


def customers_with_history(store, week: str, count: int) -> list[int]:
    """``count`` customers (spread over the key range) who bought something before ``week``."""
    import numpy as np
    import pandas as pd

    history = pd.concat(
        pd.read_parquet(p, columns=["customer_key"]) for p in sorted(store.asset_dir("transactions").glob("*.parquet")) if p.stem < week
    )
    keys = np.sort(history["customer_key"].unique())
    return [int(k) for k in keys[:: max(len(keys) // count, 1)][:count]]
