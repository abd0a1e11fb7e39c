"""The values steps hand each other reach a step on another node through the object store
(hm_assets/platform/handoff.py), and go when the sharded asset is done."""

from __future__ import annotations

import dagster as dg

from hm_assets.platform.handoff import HandoffIOManager, handoff_path, remove_handoffs
from hm_assets.platform.shards import CustomerShard
from hm_assets.platform.store import HMStore

RUN = "6f1e0c2a-0000-4000-8000-000000000000"


def test_a_value_written_on_one_node_is_read_on_another(tmp_path):
    shared = f"file://{tmp_path / 'bucket'}"
    node_a = HMStore(home=str(tmp_path / "a"), object_store=shared)
    node_b = HMStore(home=str(tmp_path / "b"), object_store=shared)
    value = {"shard": 1, "rows": 1234, "range": CustomerShard(1, 4, 10, 19)}

    written = dg.build_output_context(step_key="candidates.candidates_shard[shard_00001]", name="result", run_id=RUN)
    HandoffIOManager(node_a).handle_output(written, value)
    assert HandoffIOManager(node_b).load_input(dg.build_input_context(upstream_output=written)) == value

    # A dynamic output (the plan's work orders), one per mapping key.
    plan = dg.build_output_context(step_key="candidates.candidates_plan", name="result", run_id=RUN, mapping_key="shard_00002")
    HandoffIOManager(node_a).handle_output(plan, "work order 2")
    assert HandoffIOManager(node_b).load_input(dg.build_input_context(upstream_output=plan)) == "work order 2"

    # No glob characters in object keys (fsspec would read "[shard_00001]" as a pattern).
    path = handoff_path(node_a, RUN, "candidates.candidates_shard[shard_00001]", "result", None)
    assert "[" not in str(path) and path.relative_to(node_a.root).parts[:3] == ("handoff", RUN, "candidates")

    remove_handoffs(node_b, RUN, "candidates")
    assert node_a.objects.names(node_a.root / "handoff" / RUN) == []
    assert not (node_b.root / "handoff" / RUN).exists()
