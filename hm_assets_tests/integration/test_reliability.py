"""Reliability: bad input, interrupted runs, idempotence and determinism, memory budgets.

Every test runs real Dagster materializations of the project's assets on the session's tiny
synthetic data set, into homes of its own (never the session's HM_HOME). Most compare
against the session's baseline home (``hm_assets_tests/baseline.py``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq
import pytest

from hm_assets.definitions import build_definitions
from hm_assets.defs.resources import HMDataset, HMStore
from hm_assets.platform import guards
from hm_assets.platform.weeks import WEEK
from hm_assets.pipeline.ingest.data_range import scan_data_range
from hm_assets.pipeline.ingest.ingest import Thumbnails
from hm_assets_tests.baseline import (
    FAST,
    RANGE_END,
    RANGE_START,
    World,
    baseline,
    child_failure,
    copy_catalogue,
    output_hashes,
    recommendation_path_keys,
    start_child,
    week_hashes,
    work_root,
)

# --- bad input at the materialization level ------------------------------------------------------------

INGEST_ASSETS = ("articles", "customers", "article_images", "transactions")
CSV_FILES = ("articles.csv", "customers.csv", "transactions_train.csv")


@dataclass
class IngestWorld:
    good: Path  # pristine copy of the input
    data: Path  # the folder every run reads (same path, so image paths in the outputs stay equal)
    home: Path
    weeks: list[str]
    hashes: dict[str, str]
    images_metadata: dict

    def restore(self) -> None:
        for name in CSV_FILES:  # copy2 keeps the mtime: the staging cache sees the same file version
            shutil.copy2(self.good / name, self.data / name)

    def materialize(self) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            [build_definitions().get_assets_def(a) for a in INGEST_ASSETS],
            resources={"dataset": HMDataset(data_dir=str(self.data)), "store": HMStore(home=str(self.home))},
            tags={RANGE_START: self.weeks[0], RANGE_END: self.weeks[-1]},
            raise_on_error=False,
        )


def step_status(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    kinds = {"STEP_SUCCESS": "ok", "STEP_FAILURE": "failed", "STEP_SKIPPED": "skipped"}
    return {e.step_key: kinds[e.event_type_value] for e in result.all_events if e.event_type_value in kinds}


def materialization_metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str | None, dict]:
    found = {}
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        if materialization.asset_key == dg.AssetKey(asset):
            found[materialization.partition] = {k: v.value for k, v in materialization.metadata.items()}
    return found


@pytest.fixture(scope="module")
def ingest_world(tiny_data: Path) -> IngestWorld:
    root = work_root()
    good, data = root / "good", root / "data"
    shutil.copytree(tiny_data, good)
    shutil.copytree(good, data)
    newest = scan_data_range(tiny_data).newest_week_with_truth
    weeks = [str(newest - 2 * WEEK), str(newest - WEEK), str(newest)]
    world = IngestWorld(good, data, root / "home", weeks, {}, {})
    result = world.materialize()
    assert result.success
    world.hashes = output_hashes(world.home)
    world.images_metadata = materialization_metadata(result, "article_images")[None]
    assert {f"transactions/{w}.parquet" for w in weeks} | {"articles.parquet", "customers.parquet"} <= set(world.hashes)
    return world


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _set_field(line: str, index: int, value: str) -> str:
    fields = line.split(",")
    fields[index] = value
    return ",".join(fields)


def _drop_column(path: Path, name: str) -> None:
    lines = _lines(path)
    index = lines[0].split(",").index(name)
    _write_lines(path, [",".join(f for i, f in enumerate(l.split(",")) if i != index) for l in lines])


def _edit_line(path: Path, line: int, column: int, value: str) -> None:
    lines = _lines(path)
    lines[line - 1] = _set_field(lines[line - 1], column, value)
    _write_lines(path, lines)


def _middle(path: Path) -> int:
    return len(_lines(path)) // 2


@dataclass(frozen=True)
class Rejection:
    break_input: object  # (data_dir) -> None
    file: str
    column: str | None
    line: object  # int, or (data_dir before breaking) -> int
    words: str
    failing_step: str


TX = "transactions_train.csv"
REJECTED = {
    "missing column": Rejection(lambda d: _drop_column(d / TX, "price"), TX, "price", 1, "missing column", "transactions"),
    "t_dat not a date": Rejection(
        lambda d: _edit_line(d / TX, _middle(d / TX), 0, "yesterday"), TX, "t_dat", lambda d: _middle(d / TX), "t_dat", "transactions"
    ),
    "negative price": Rejection(
        lambda d: _edit_line(d / TX, _middle(d / TX), 3, "-0.0169"), TX, "price", lambda d: _middle(d / TX), "non-negative", "transactions"
    ),
    "empty transactions file": Rejection(lambda d: (d / TX).write_bytes(b""), TX, None, 1, "empty", "transactions"),
    "truncated last line": Rejection(
        lambda d: _write_lines(d / TX, _lines(d / TX)[:-1] + [_lines(d / TX)[-1][:30]]),
        TX, None, lambda d: len(_lines(d / TX)), "columns", "transactions",
    ),
    "not a CSV": Rejection(
        lambda d: (d / TX).write_bytes(next((d / "images").rglob("*.jpg")).read_bytes()), TX, None, 1, "not a CSV", "transactions"
    ),
    "duplicated customer_id": Rejection(
        lambda d: _write_lines(d / "customers.csv", _lines(d / "customers.csv") + [_lines(d / "customers.csv")[3]]),
        "customers.csv", "customer_id", lambda d: len(_lines(d / "customers.csv")) + 1, "duplicated", "customers",
    ),
    "articles without colour_group_name": Rejection(
        lambda d: _drop_column(d / "articles.csv", "colour_group_name"), "articles.csv", "colour_group_name", 1, "missing column", "articles"
    ),
}


def _assert_nothing_changed(world: IngestWorld) -> None:
    assert output_hashes(world.home) == world.hashes, "a previous good output changed"
    assert guards.temporaries(world.home) == [], "temporary files were left behind"


@pytest.mark.parametrize("case", list(REJECTED))
def test_bad_input_is_rejected_naming_file_column_line_and_changes_nothing(ingest_world: IngestWorld, case: str):
    world, expected = ingest_world, REJECTED[case]
    world.restore()
    line = expected.line(world.data) if callable(expected.line) else expected.line
    expected.break_input(world.data)
    try:
        result = world.materialize()
    finally:
        world.restore()
    assert not result.success
    status = step_status(result)
    assert status[expected.failing_step] == "failed"
    assert "failed" not in {s for step, s in status.items() if step != expected.failing_step}
    failures = [e for e in result.get_step_failure_events() if e.step_key == expected.failing_step]
    error = failures[0].step_failure_data.error
    assert error.cause is not None and error.cause.cls_name == "InputDataError", error.to_string()
    message = error.cause.message
    assert f"{world.data / expected.file}, line {line}" in message, message
    if expected.column:
        assert f"column '{expected.column}'" in message, message
    assert expected.words in message, message
    _assert_nothing_changed(world)


def test_unknown_ids_are_dropped_counted_and_change_nothing(ingest_world: IngestWorld):
    world = ingest_world
    world.restore()
    path = world.data / TX
    lines = _lines(path)
    week = date.fromisoformat(world.weeks[1])
    day = str(week + (WEEK / 7) * 2)
    known = next(l for l in lines[1:] if l.startswith(day))
    unknown_customer = "f" * 64
    assert unknown_customer[-15:] not in path.with_name("customers.csv").read_text()
    planted = [_set_field(known, 1, unknown_customer)] * 3 + [_set_field(known, 2, "0999999999")] * 2
    at = lines.index(known)
    _write_lines(path, lines[:at] + planted + lines[at:])
    try:
        result = world.materialize()
    finally:
        world.restore()
    assert result.success
    metadata = materialization_metadata(result, "transactions")
    assert metadata[str(week)]["dropped_unknown_customer_rows"] == 3
    assert metadata[str(week)]["dropped_unknown_article_rows"] == 2
    for other in set(world.weeks) - {str(week)}:
        assert metadata[other]["dropped_unknown_customer_rows"] == metadata[other]["dropped_unknown_article_rows"] == 0
    _assert_nothing_changed(world)  # the dropped rows leave the weekly files byte-identical


def test_corrupt_image_is_counted_unreadable_and_nothing_else_changes(ingest_world: IngestWorld):
    world = ingest_world
    world.restore()
    images = pd.read_parquet(world.home / "assets" / "article_images.parquet")
    victim = images[images["readable"]].iloc[7]
    image = Path(victim["path"])
    image.write_bytes(image.read_bytes()[:200] + b"\x00not the rest of a JPEG" * 20)
    try:
        result = world.materialize()
    finally:
        shutil.copy2(world.good / image.relative_to(world.data), image)
    assert result.success
    metadata = materialization_metadata(result, "article_images")[None]
    assert metadata["unreadable_image"] == world.images_metadata["unreadable_image"] + 1
    assert metadata["with_image"] == world.images_metadata["with_image"] - 1
    now = output_hashes(world.home)
    # the table says the image does not decode, and its thumbnail is gone
    assert {k for k in now if now[k] != world.hashes.get(k)} == {"article_images.parquet", "article_thumbnails.parquet"}
    thumbnails = Thumbnails.read(world.home / "assets" / "article_thumbnails.parquet")
    assert str(image) not in thumbnails.paths and len(thumbnails.paths) == metadata["with_image"]
    after = pd.read_parquet(world.home / "assets" / "article_images.parquet")
    changed = after["article_id"] == victim["article_id"]
    assert not after.loc[changed, "readable"].item() and after.loc[changed, "width"].item() == 0
    pd.testing.assert_frame_equal(after[~changed], images[~changed])
    assert guards.temporaries(world.home) == []
    # with the image restored, the outputs are those of the good data again, byte for byte
    assert world.materialize().success
    _assert_nothing_changed(world)


def test_utf8_bom_and_crlf_give_byte_identical_outputs(ingest_world: IngestWorld):
    world = ingest_world
    world.restore()
    for name in CSV_FILES:
        path = world.data / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))
    try:
        result = world.materialize()
    finally:
        world.restore()
    assert result.success
    _assert_nothing_changed(world)


# --- interrupted runs ----------------------------------------------------------------------------------


def test_sigkill_mid_write_keeps_the_last_good_output_and_a_rerun_matches():
    base = baseline()
    week = str(base.week)
    home = base.copy_home()
    before = week_hashes(home, week)
    target = home / "assets" / "candidates" / f"{week}.parquet"
    rows = pq.ParquetFile(target).metadata.num_rows
    downstream = ["candidates", "ranker", "recommendations", "evaluation"]
    marker, log = home.parent / "stalled", home.parent / "child.log"
    args = {"week": week, "assets": downstream, "run_config": FAST, "stall_rename_to": str(target), "stall_marker": str(marker)}
    child = start_child(args, home, log)
    try:
        deadline = time.monotonic() + 180
        while not marker.exists():
            assert child.poll() is None, f"the child ended before the kill:\n{child_failure(log)}"
            assert time.monotonic() < deadline, "the child never reached the rename"
            time.sleep(0.05)
        temporaries = sorted(target.parent.glob(f".{target.name}.tmp-{child.pid}-*"))
        assert len(temporaries) == 1 and Path(marker.read_text()) == temporaries[0]
        os.kill(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    # The last good output is intact and readable, and nothing downstream was touched.
    assert week_hashes(home, week) == before
    assert pq.read_table(target).num_rows == rows
    stale = temporaries[0]
    assert stale.exists() and guards.stale_temporaries(home) == [stale]

    # The re-run ignores the stale temporary, completes and gives the uninterrupted run's outputs.
    world = World(base.world.data_dir, home)
    world.runner.materialize_week(base.week, [dg.AssetKey(name) for name in downstream])
    assert week_hashes(home, week) == before == week_hashes(base.home, week)
    # ... and what the killed run left behind can be cleaned away (only dead writers' files).
    live = target.parent / f".{target.name}.tmp-{os.getpid()}-0123abcd"
    live.write_bytes(b"being written by a live process")
    assert guards.remove_stale_temporaries(home) == [stale]
    assert guards.temporaries(home) == [live]


# --- idempotence and determinism --------------------------------------------------------------------------


def test_rematerializing_a_week_in_a_fresh_process_gives_identical_outputs():
    """The whole week again (features, ALS, hnswlib, both LightGBM models, sampling), in a new
    process with its own hash seed: every output byte-identical, hence the same MAP@12."""
    base = baseline()
    week = str(base.week)
    home = base.copy_home()
    keys = [k.to_user_string() for k in recommendation_path_keys(base.world.defs)]
    before = week_hashes(home, week)
    assert {f"{name}/{week}.parquet" for name in ("recommendations", "candidates", "popularity_model")} <= set(before)
    for path in home.glob(f"assets/*/{week}.*"):
        if path.parent.name != "transactions":  # the week's truth stays: it is not an output of these steps
            shutil.rmtree(path) if path.is_dir() else path.unlink()  # nothing left to reuse: every output is computed again
    log = home.parent / "child.log"
    child = start_child({"week": week, "assets": keys, "run_config": FAST}, home, log)
    assert child.wait(timeout=300) == 0, child_failure(log)
    after = week_hashes(home, week)
    assert after == before
    evaluation = json.loads((home / "assets" / "evaluation" / f"{week}.json").read_text())
    assert evaluation["has_truth"] and evaluation["map12_ranker"] > 0
    assert evaluation == json.loads((base.home / "assets" / "evaluation" / f"{week}.json").read_text())


def test_retrievers_do_not_depend_on_the_order_of_the_history_rows():
    """DuckDB returns rows of a GROUP BY/DISTINCT in an order that varies with its threads once a
    week spans several row groups; no retriever may depend on it (the seeded popularity model did)."""
    from hm_assets.pipeline.features.tables import FEATURE_TABLES
    from hm_assets.pipeline.retrieval.base import RetrievalContext, finalize_candidates, retriever_inputs
    from hm_assets.pipeline.retrieval.registry import RETRIEVERS
    from hm_assets.platform.history import open_week, register_parquet, stored_history_weeks

    base = baseline()
    store = HMStore(home=str(base.home))
    week = str(base.week)

    def candidates(order: str) -> dict[str, pd.DataFrame]:
        with open_week(store, week, stored_history_weeks(store)) as view:
            for table in FEATURE_TABLES:
                register_parquet(view.con, table, store.require(table, week))
            view.con.execute(f"CREATE TEMP TABLE reordered AS SELECT * FROM transactions ORDER BY {order}")
            view.con.execute("CREATE OR REPLACE VIEW transactions AS SELECT * FROM reordered")
            keys = view.con.sql("SELECT customer_key FROM customers").df()["customer_key"].to_numpy()
            found = {}
            for retriever in RETRIEVERS:
                context = RetrievalContext(
                    con=view.con,
                    cutoff=view.cutoff,
                    week_key=week,
                    customer_keys=keys,
                    inputs=retriever_inputs(store, [retriever], week),
                )
                config = retriever.config_class(**FAST["ops"].get(retriever.name, {}).get("config", {}))
                found[retriever.name] = finalize_candidates(retriever.generate(context, config), config.max_candidates)
            return found

    natural = candidates("t_dat, customer_key, article_id")
    shuffled = candidates("hash(customer_key, article_id, t_dat, price)")
    for name, frame in natural.items():
        pd.testing.assert_frame_equal(frame, shuffled[name], obj=name)
        stored = pd.read_parquet(base.home / "assets" / name / f"{week}.parquet")
        pd.testing.assert_frame_equal(frame, stored, obj=f"{name} (as materialized)")


def test_content_indexes_are_rebuilt_identically():
    """The catalogue's hnswlib indexes, built twice from the same embeddings, give the same
    neighbours (a graph built on several threads depends on their timing)."""
    from hm_assets.defs.assets.content import content_assets
    from hm_assets.pipeline.features.embeddings.index import load_index

    base = baseline()
    indexes = [a for a in content_assets if a.key.to_user_string().endswith("_index")]
    assert indexes
    homes = []
    for _ in range(2):
        home = work_root() / "home"
        copy_catalogue(base.home, home)
        dg.materialize(indexes, resources={"dataset": HMDataset(data_dir=str(base.world.data_dir)), "store": HMStore(home=str(home))})
        homes.append(home)
    for asset in indexes:
        name = asset.key.to_user_string()
        first, second = (load_index(home / "assets" / f"{name}.parquet") for home in homes)
        assert len(first) > 0
        pd.testing.assert_frame_equal(
            first.neighbours(first.article_ids, 30, threads=1), second.neighbours(second.article_ids, 30, threads=1), obj=name
        )


# --- memory budgets ------------------------------------------------------------------------------------


def _failure_causes(result: dg.ExecuteInProcessResult) -> dict[str, tuple[str, str]]:
    causes = {}
    for event in result.get_step_failure_events():
        error = event.step_failure_data.error
        cause = error.cause or error
        causes[event.step_key] = (cause.cls_name, cause.message)
    return causes


def test_too_small_duckdb_budget_fails_with_a_clear_error_and_changes_nothing():
    from hm_assets.pipeline.features.tables import FEATURE_TABLES

    feature_assets = [build_definitions().get_assets_def(a) for a in FEATURE_TABLES]
    base = baseline()
    home = base.copy_home()
    before = output_hashes(home)
    store = HMStore(home=str(home), duckdb_memory_limit="1MB")
    result = dg.materialize(
        feature_assets,
        partition_key=str(base.week),
        resources={"dataset": HMDataset(data_dir=str(base.world.data_dir)), "store": store},
        raise_on_error=False,
    )
    assert not result.success
    causes = _failure_causes(result)
    assert set(causes) == {a.key.to_user_string() for a in feature_assets}
    for name, message in causes.values():
        assert name == "ResourceBudgetError", message
        assert "HMStore.duckdb_memory_limit = '1MB' is too small" in message and "Raise it" in message, message
    assert output_hashes(home) == before and guards.temporaries(home) == []


def test_too_small_duckdb_budget_during_ingest_is_not_reported_as_bad_input(tiny_data: Path):
    home = work_root() / "home"
    result = dg.materialize(
        [build_definitions().get_assets_def("articles")],
        resources={"dataset": HMDataset(data_dir=str(tiny_data)), "store": HMStore(home=str(home), duckdb_memory_limit="1MB")},
        raise_on_error=False,
    )
    name, message = _failure_causes(result)["articles"]
    assert name == "ResourceBudgetError", message
    assert "duckdb_memory_limit" in message and "is too small" in message
    assert not (home / "assets" / "articles.parquet").exists() and guards.temporaries(home) == []


PROCESS_BUDGET_SCRIPT = textwrap.dedent(
    """
    import os, numpy as np
    from hm_assets.platform.guards import PROCESS_BUDGET_ENV, ResourceBudgetError, install_process_memory_budget, process_memory_budget

    def address_space():
        return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmSize:"))

    budget = f"{(address_space() + 128 * 2**20) // 2**20}MiB"
    np.ones(2**26)  # 512 MiB: fine without a budget
    try:
        with process_memory_budget(budget):
            np.ones(2**26)
    except ResourceBudgetError as error:
        print("BUDGET", budget)
        print("ERROR", error)
    np.ones(2**26)  # the previous limit is back
    os.environ[PROCESS_BUDGET_ENV] = budget
    assert install_process_memory_budget() is not None
    try:
        np.ones(2**26)
    except MemoryError:
        print("INSTALLED")
    """
)


def test_process_memory_budget_turns_an_oversized_allocation_into_a_clear_error():
    done = subprocess.run([sys.executable, "-c", PROCESS_BUDGET_SCRIPT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    output = dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)
    budget, message = output["BUDGET"], output["ERROR"]
    assert f"process memory budget HM_MEMORY_BUDGET = '{budget}'" in message, message
    assert "RLIMIT_AS" in message and "Raise HM_MEMORY_BUDGET" in message
    assert "INSTALLED" in done.stdout


def test_budget_sizes_and_stale_temporaries(tmp_path: Path):
    assert guards.parse_bytes("12GB") == 12 * 10**9 and guards.parse_bytes("512MiB") == 2**29
    assert guards.parse_bytes("2G") == 2 * 2**30 and guards.parse_bytes(4096) == 4096
    with pytest.raises(ValueError, match="not a memory size"):
        guards.parse_bytes("lots")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "assets" / "x").mkdir(parents=True)
    stale_file = tmp_path / "assets" / "x" / f".2026-01-07.parquet.tmp-{dead.pid}-0123abcd"
    stale_dir = tmp_path / "assets" / f".index.tmp-{dead.pid}-89abcdef"
    spill = tmp_path / "tmp" / f"duckdb-{dead.pid}-abc123"
    live = tmp_path / "assets" / f".other.parquet.tmp-{os.getpid()}-0123abcd"
    for path in (stale_dir / "part", spill / "block"):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x")
    stale_file.write_bytes(b"x")
    live.write_bytes(b"x")
    (tmp_path / "assets" / "x" / "2026-01-07.parquet").write_bytes(b"x")  # an output, never touched
    assert set(guards.temporaries(tmp_path)) == {stale_file, stale_dir, spill, live}
    assert set(guards.remove_stale_temporaries(tmp_path)) == {stale_file, stale_dir, spill}
    assert guards.temporaries(tmp_path) == [live] and (tmp_path / "assets" / "x" / "2026-01-07.parquet").exists()
