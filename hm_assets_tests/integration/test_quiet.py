"""A code load is quiet: no warnings, and nothing printed by a library at interpreter exit."""

from __future__ import annotations

import os
import subprocess
import sys

from hm_assets.platform.settings import PROJECT_ROOT

LOAD = """
import torch  # the embedding steps load it: DuckDB's teardown must not depend on it
import dagster as dg
from hm_assets.definitions import build_definitions
defs = build_definitions()
dg.Definitions.validate_loadable(defs)
defs.resolve_all_job_defs()
print("loaded")
"""


def test_loading_the_code_location_prints_nothing_but_its_own_output(tiny_data, tmp_path):
    env = {**os.environ, "HM_DATA_DIR": str(tiny_data), "HM_HOME": str(tmp_path / "home")}
    env.pop("PYTHONWARNINGS", None)
    done = subprocess.run(
        [sys.executable, "-c", LOAD], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "loaded"
    # no Beta/Preview/User warnings (multiple backfill policies, ...), no "nanobind: leaked ..."
    assert done.stderr == "", done.stderr[-3000:]


def test_tools_that_import_the_assets_directly_are_quiet_too(tiny_data, tmp_path):
    """The ablation command and the on-demand recommender import asset modules without the code
    location: the beta notices are silenced where those APIs are built, not around one import."""
    env = {**os.environ, "HM_DATA_DIR": str(tiny_data), "HM_HOME": str(tmp_path / "home")}
    env.pop("PYTHONWARNINGS", None)
    for command in (
        ["-c", "import hm_assets.defs.assets.ranking, hm_assets.defs.assets.checks, hm_assets.serving.on_demand; print('loaded')"],
        ["-m", "hm_assets.pipeline.evaluation.ablation", "--help"],
    ):
        done = subprocess.run([sys.executable, *command], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stderr == "", (command, done.stderr[-3000:])
