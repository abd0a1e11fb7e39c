"""Asset files shared through an object store (file:// and S3 on a local moto server): a week's
steps run on different "nodes" (separate HM_HOME caches) and give the single-node outputs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from hm_assets.defs.resources import HMDataset, HMStore
from hm_assets.platform.store import atomic_path
from hm_assets_tests.baseline import baseline, seed_object_store, work_root

WEEK_OUTPUTS = {
    "candidates": ".parquet",
    "recommendations": ".parquet",
    "submission": ".csv",
    "evaluation": ".json",
}


@pytest.fixture(params=["file", "s3"])
def object_store_uri(request, tmp_path) -> str:
    if request.param == "file":
        return f"file://{tmp_path / 'shared-bucket'}"
    request.getfixturevalue("s3_endpoint")
    return f"s3://hm-recs/{tmp_path.name}"


def test_outputs_are_published_and_fetched_when_stale(object_store_uri, tmp_path):
    # Each node is its own HMStore over its own cache root; outputs go to the writer's object store.
    node_a = HMStore(home=str(tmp_path / "a"), object_store=object_store_uri)
    node_b = HMStore(home=str(tmp_path / "b"), object_store=object_store_uri)
    store_a, store_b = node_a.objects, node_b.objects
    assert store_a is node_a.objects  # one object store per HMStore
    target = node_a.asset_path("things", "2020-09-16")
    with node_a.atomic_path(target) as temporary:
        pd.DataFrame({"x": [1, 2, 3]}).to_parquet(temporary)
    assert store_a.exists(target)

    copy = node_b.asset_path("things", "2020-09-16")
    assert store_b.fetch(copy) and pd.read_parquet(copy)["x"].tolist() == [1, 2, 3]
    fetched_at = copy.stat().st_mtime_ns
    assert store_b.fetch(copy) and copy.stat().st_mtime_ns == fetched_at  # current: not downloaded again

    node_a.write_parquet(pd.DataFrame({"x": [4]}), target)  # node A rewrites it
    assert store_b.fetch(copy) and pd.read_parquet(copy)["x"].tolist() == [4]

    assert store_b.names(node_b.asset_dir("things")) == ["2020-09-16.parquet"]
    assert not store_b.fetch(node_b.asset_path("things", "2020-09-23"))
    assert not store_a.shares(node_a.root / "staging" / "transactions-x.parquet")  # node-local caches stay local
    store_b.remove(copy)
    assert not store_a.exists(target)


def test_only_the_given_object_store_gets_an_output(object_store_uri, tmp_path, monkeypatch):
    """Whether an output is uploaded depends on the write, not on what ran before in the process."""
    monkeypatch.delenv("HM_OBJECT_STORE", raising=False)
    shared = HMStore(home=str(tmp_path / "node"), object_store=object_store_uri)
    assert shared.objects is not None  # an object store over this root exists in the process
    local_only = HMStore(home=str(tmp_path / "node"))
    assert local_only.objects is None
    scratch = shared.asset_path("things", "scratch")
    with atomic_path(scratch) as temporary:  # no object store given: stays local
        temporary.write_text("local")
    local_only.write_parquet(pd.DataFrame({"x": [1]}), shared.asset_path("things", "local"))
    assert scratch.exists() and not shared.objects.exists(scratch)
    assert not shared.objects.exists(shared.asset_path("things", "local"))
    shared.write_parquet(pd.DataFrame({"x": [1]}), shared.asset_path("things", "shared"))
    assert shared.objects.exists(shared.asset_path("things", "shared"))


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def write_parts(store: HMStore, target: Path, parts: list[list[int]]) -> None:
    """``target`` as a week kept as its shards' parts (a folder of part files), written through ``store``."""
    with store.atomic_path(target) as temporary:
        temporary.mkdir()
        for index, values in enumerate(parts):
            pd.DataFrame({"x": values}).to_parquet(temporary / part_name(index))


def test_a_week_kept_as_parts_is_fetched_whole_and_without_stale_parts(object_store_uri, tmp_path):
    """A folder output is read whole, so a node's copy must hold exactly the object's files: a newer
    version with fewer parts leaves none of the old ones behind, and a file can become a folder and back."""
    node_a = HMStore(home=str(tmp_path / "a"), object_store=object_store_uri)
    node_b = HMStore(home=str(tmp_path / "b"), object_store=object_store_uri)
    target, copy = node_a.asset_path("pairs", "2020-09-16"), node_b.asset_path("pairs", "2020-09-16")

    node_a.write_parquet(pd.DataFrame({"x": [0]}), target)  # one file, as before
    assert pd.read_parquet(node_b.require("pairs", "2020-09-16"))["x"].tolist() == [0]

    write_parts(node_a, target, [[1, 2], [3], [4, 5]])
    assert target.is_dir() and node_b.partitions("pairs") == ["2020-09-16"]
    assert pd.read_parquet(node_b.require("pairs", "2020-09-16"))["x"].tolist() == [1, 2, 3, 4, 5]

    write_parts(node_a, target, [[6], [7]])  # fewer shards
    assert pd.read_parquet(node_b.require("pairs", "2020-09-16"))["x"].tolist() == [6, 7]
    assert sorted(p.name for p in copy.iterdir()) == [part_name(0), part_name(1)]

    node_a.write_parquet(pd.DataFrame({"x": [8]}), target)  # a file again
    assert target.is_file() and pd.read_parquet(node_b.require("pairs", "2020-09-16"))["x"].tolist() == [8]
    assert copy.is_file()


def materialize_on_node(assets: list[str], week: str, uri: str, data_dir: str, customers_per_shard: int) -> Path:
    from hm_assets.definitions import build_definitions

    defs = build_definitions()

    home = work_root().resolve()
    store = HMStore(home=str(home), object_store=uri, customers_per_shard=customers_per_shard)
    selection = [dg.AssetKey(a) for a in assets]
    result = dg.materialize(
        [a for a in defs.assets if isinstance(a, dg.AssetsDefinition)],
        partition_key=week,
        resources={"store": store, "dataset": HMDataset(data_dir=data_dir)},
        selection=selection,
    )
    assert result.success
    return home


def test_a_week_split_over_nodes_through_the_object_store_matches_one_node(object_store_uri):
    base = baseline()
    week = base.week.isoformat()
    seed_object_store(base.home, object_store_uri, week, tuple(WEEK_OUTPUTS))
    data_dir = os.environ["HM_DATA_DIR"]

    # Node A: the filtered union, in 4+ customer shards.
    materialize_on_node(["candidates"], week, object_store_uri, data_dir, 400)
    # Node B, an empty cache: pair features, scoring and evaluation from what node A published.
    materialize_on_node(["recommendations", "evaluation"], week, object_store_uri, data_dir, 100_000)

    reader = HMStore(home=str(work_root().resolve()), object_store=object_store_uri)
    for asset, suffix in WEEK_OUTPUTS.items():
        fetched = reader.require(asset, week, suffix)
        expected = base.home / "assets" / asset / f"{week}{suffix}"
        if suffix == ".parquet":
            pd.testing.assert_frame_equal(pd.read_parquet(fetched), pd.read_parquet(expected))
        elif suffix == ".json":
            ours, theirs = json.loads(fetched.read_text()), json.loads(expected.read_text())
            assert ours["map12_ranker"] == theirs["map12_ranker"] and ours["recall_union"] == theirs["recall_union"]
        else:
            assert fetched.read_bytes() == expected.read_bytes()
    # No shard parts are left behind, locally or in the store.
    assert reader.objects.names(reader.root / "parts") == []
