"""The baseline run the reliability, leakage, concurrency, PostgreSQL, object-store and Celery tests
compare against: the session's tiny data ingested and three weeks built in process, once per session
(``baseline()``), and the helpers those tests share (a child process that materializes part of a
week as ``hm-recs run`` does, output hashes, the project's Definitions bound to a home).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import dagster as dg

from hm_assets.defs.resources import HMDataset, HMStore
from hm_assets.defs.runner import PipelineRunner, training_side_keys
from hm_assets.platform import guards
from hm_assets.platform.object_store import ObjectStore
from hm_assets.platform.weeks import WEEK, DataRange
from hm_assets.pipeline.ingest.data_range import scan_data_range


# Quick models: the guarantees do not depend on model quality.
FAST = {
    "ops": {
        "ranker": {"config": {"training_weeks": 1, "boost_rounds": 20}},
        "popularity_model": {"config": {"boost_rounds": 10}},
        "image_embeddings": {
            "config": {"img_size": 32, "patch_size": 8, "max_epochs": 1, "batch_size": 16, "decode_workers": 1, "torch_threads": 1}
        },
    }
}
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def work_root() -> Path:
    """A folder inside the session's temporary root (removed at the end of the session)."""
    root = Path(os.environ["HM_HOME"]).resolve().parent / "reliability"
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=root))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def output_hashes(home: Path) -> dict[str, str]:
    """Every output file under HOME/assets by relative path (temporaries excluded)."""
    folder = home / "assets"
    return {
        str(p.relative_to(folder)): sha256(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not guards.TEMPORARY_NAME.match(p.name)
    }


def week_hashes(home: Path, week: date | str, assets: list[str] | None = None) -> dict[str, str]:
    """Outputs of one partition: every HOME/assets/<asset>/<week>.* file, or file of such a folder (a week
    kept as its shards' parts), optionally of some assets."""
    week = str(week)
    return {
        name: digest
        for name, digest in output_hashes(home).items()
        if len(Path(name).parts) > 1 and Path(Path(name).parts[1]).stem == week and Path(Path(name).parts[1]).suffix
        and (assets is None or Path(name).parts[0] in assets)
    }


def project_defs(data_dir: Path, home: Path, **store_settings) -> dg.Definitions:
    """The project's Definitions (whatever assets, checks and jobs they hold) bound to DATA_DIR and HOME
    (and other ``HMStore`` settings, e.g. ``customers_per_shard``)."""
    from hm_assets.definitions import build_definitions

    defs = build_definitions()

    return dg.Definitions(
        assets=defs.assets,
        asset_checks=defs.asset_checks,
        jobs=defs.jobs,
        schedules=defs.schedules,
        sensors=defs.sensors,
        resources={**(defs.resources or {}), "dataset": HMDataset(data_dir=str(data_dir)), "store": HMStore(home=str(home), **store_settings)},
    )


def recommendation_path_keys(defs: dg.Definitions) -> list[dg.AssetKey]:
    """A week's graph from the features to the evaluation (the weekly ancestors of ``evaluation``)."""
    from hm_assets.defs.runner import weekly_ancestors

    return weekly_ancestors(defs, "evaluation")


@dataclass
class World:
    """A data folder and a home, materialized through the project's jobs (as ``hm-recs run`` does)."""

    data_dir: Path
    home: Path
    defs: dg.Definitions = field(init=False)
    runner: PipelineRunner = field(init=False)

    def __post_init__(self) -> None:
        self.defs = project_defs(self.data_dir, self.home)
        self.runner = PipelineRunner(self.defs, dg.DagsterInstance.ephemeral(), FAST)

    def ingest(self, data_range: DataRange, catalogue: bool = True) -> None:
        if catalogue:
            self.runner.snapshot_catalogue()
        self.runner.ingest_weeks(data_range.first_week, data_range.live_week)

    def candidate_side(self, week: date) -> None:
        self.runner.materialize_week(week, training_side_keys(self.defs))

    def full_week(self, week: date) -> None:
        self.runner.materialize_week(week, recommendation_path_keys(self.defs))


@dataclass
class Baseline:
    """The tiny data set, uninterrupted and in order: weeks W-2 and W-1 up to their candidates and taste,
    week W end to end (ranker trained on W-1), and NW (= W + 1, the newest week with truth) up to
    its candidates and taste."""

    world: World
    data_range: DataRange
    week: date  # W
    next_week: date  # NW

    @property
    def home(self) -> Path:
        return self.world.home

    @property
    def candidate_side_weeks(self) -> list[date]:
        return [self.week - 2 * WEEK, self.week - WEEK, self.week, self.next_week]

    def copy_home(self) -> Path:
        target = work_root() / "home"
        shutil.copytree(self.home, target)
        return target


def is_partition_folder(path: Path) -> bool:
    return path.is_dir() and any(re.fullmatch(r"\d{4}-\d{2}-\d{2}\..+", p.name) for p in path.iterdir())


def copy_catalogue(source_home: Path, target_home: Path) -> None:
    """Copy the unpartitioned outputs (articles, customers, images, embeddings, indexes): the catalogue
    snapshot as the baseline made it, before any transaction was ingested (embedding the catalogue
    again would cost half a minute per home)."""
    (target_home / "assets").mkdir(parents=True, exist_ok=True)
    for path in (source_home / "assets").iterdir():
        if is_partition_folder(path) or guards.TEMPORARY_NAME.match(path.name):
            continue
        if path.is_dir():
            shutil.copytree(path, target_home / "assets" / path.name)
        else:
            shutil.copy2(path, target_home / "assets" / path.name)


_BASELINE: list[Baseline] = []


def baseline() -> Baseline:
    if not _BASELINE:
        data_dir = Path(os.environ["HM_DATA_DIR"])
        data_range = scan_data_range(data_dir)
        next_week = data_range.newest_week_with_truth
        week = next_week - WEEK
        world = World(data_dir, work_root() / "baseline")
        world.ingest(data_range)
        world.candidate_side(week - 2 * WEEK)
        world.candidate_side(week - WEEK)
        world.full_week(week)
        world.candidate_side(next_week)
        _BASELINE.append(Baseline(world, data_range, week, next_week))
    return _BASELINE[0]


# A child process that materializes part of one week with the project's own definitions, exactly as
# `hm-recs run` does (HMStore/HMDataset from HM_HOME/HM_DATA_DIR, the instance from DAGSTER_HOME).
# With "stall_rename_to" it stops, for good, just before renaming that output into place: the
# temporary file is then complete on disk and the target untouched (a test-only patch of this child's
# `hm_assets.platform.store.os`; the project has no hook).
CHILD_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path

    args = json.loads(sys.argv[1])
    if args.get("stall_rename_to"):
        import hm_assets.platform.store as store_module

        real_os = store_module.os

        class StallingOs:
            def __getattr__(self, name):
                return getattr(real_os, name)

            def replace(self, source, target):
                if Path(target) == Path(args["stall_rename_to"]):
                    Path(args["stall_marker"]).write_text(str(source))
                    time.sleep(3600)
                return real_os.replace(source, target)

        store_module.os = StallingOs()

    import dagster as dg
    from hm_assets.definitions import build_definitions
    from hm_assets.defs.runner import PipelineRunner, dagster_instance, training_side_keys
    from hm_assets.platform.weeks import parse_week

    defs = build_definitions()

    instance = dagster_instance() if args.get("persistent_instance") else dg.DagsterInstance.ephemeral()
    runner = PipelineRunner(defs, instance, args.get("run_config"))
    week = parse_week(args["week"])
    if args.get("catalogue"):
        runner.snapshot_catalogue()
    if args.get("ingest_from"):
        runner.ingest_weeks(parse_week(args["ingest_from"]), week)
    if args["assets"] == "candidate_side":
        keys = training_side_keys(defs)
    else:
        keys = [dg.AssetKey(name) for name in args["assets"]]
    runner.materialize_week(week, keys)
    print("CHILD DONE", flush=True)
    """
)


def start_child(args: dict, home: Path, log: Path, dagster_home: Path | None = None) -> subprocess.Popen:
    script = log.parent / "child.py"
    if not script.exists():
        script.write_text(CHILD_SCRIPT)
    env = {
        **os.environ,
        "HM_HOME": str(home),
        "HM_DATA_DIR": os.environ["HM_DATA_DIR"],
        # LightGBM's OpenMP threads spin while waiting; with several processes on 2 cores that makes
        # a 2-second model take 30. Passive waiting changes no result, only the wasted CPU.
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    if dagster_home is not None:
        env["DAGSTER_HOME"] = str(dagster_home)
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, str(script), json.dumps(args)], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=log.parent
        )


def child_failure(log: Path) -> str:
    lines = [l for l in log.read_text(errors="replace").splitlines() if " - DEBUG - " not in l]
    return "\n".join(lines[-40:])


def seed_object_store(source_home: Path, uri: str, week: str, left_out: Collection[str]) -> None:
    """An object store as earlier runs left it: everything of ``source_home`` except week W's
    outputs of the assets ``left_out``."""
    seeder_root = work_root().resolve()
    seeder = ObjectStore(uri, seeder_root)
    for path in sorted((source_home / "assets").rglob("*")):
        relative = path.relative_to(source_home)
        if not path.is_file() or path.name.startswith("."):
            continue
        if len(relative.parts) > 2 and relative.parts[1] in left_out and relative.parts[2].split(".")[0] == week:
            continue
        local = seeder_root / relative
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(path.read_bytes())
        seeder.upload(local)
