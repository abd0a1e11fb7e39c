"""The Dagster UI's server: started on a free port with the project's workspace.yaml and dagster.yaml,
asked over GraphQL for the asset graph and the weekly partitions, then stopped cleanly (its whole
process group, code server included)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path

import psutil
import pytest

from hm_assets.platform.settings import LOCAL_INSTANCE_CONFIG, PROJECT_ROOT

START_TIMEOUT_S = 240
STOP_TIMEOUT_S = 30

WORKSPACE_QUERY = """
{ workspaceOrError { __typename
    ... on Workspace { locationEntries { name
        locationOrLoadError { __typename ... on PythonError { message stack } } } }
    ... on PythonError { message } } }
"""
ASSETS_QUERY = "{ assetNodes { assetKey { path } groupName isPartitioned } }"
PARTITIONS_QUERY = """
query ($path: [String!]!) { assetNodeOrError(assetKey: {path: $path}) { __typename
    ... on AssetNode { partitionKeys } } }
"""


RUNS_QUERY = """
{ runsOrError { ... on Runs { results { runId jobName tags { key value }
  repositoryOrigin { repositoryLocationName repositoryName } } } } }
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str, timeout: float = 5) -> int:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status


def _graphql(base: str, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(f"{base}/graphql", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        payload = json.loads(response.read())
    assert not payload.get("errors"), payload["errors"]
    return payload["data"]


def _living_members(pgid: int) -> list[psutil.Process]:
    """Processes of the group that still run (zombies waiting for a reaper do not count)."""
    alive = []
    for process in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(process.pid) == pgid and process.info["status"] != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return alive


def _stop_group(server: subprocess.Popen) -> str:
    """SIGTERM to the whole group, SIGKILL after a timeout; returns how it ended."""
    pgid = server.pid  # start_new_session: the server leads its own group
    how = "SIGTERM"
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return "already gone"
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline and (server.poll() is None or _living_members(pgid)):
        time.sleep(0.2)
    if server.poll() is None or _living_members(pgid):
        how = "SIGKILL"
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        server.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _living_members(pgid):
            time.sleep(0.2)
    return how


def test_webserver_serves_the_asset_graph_and_weekly_partitions(tiny_data, tmp_path):
    from hm_assets.platform.weeks import WEDNESDAY, parse_week
    from hm_assets.pipeline.ingest.data_range import scan_data_range

    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copyfile(LOCAL_INSTANCE_CONFIG, dagster_home / "dagster.yaml")
    # a run as `hm-recs run` launches it, before the UI starts: the UI must list it as its own
    import dagster as dg

    from hm_assets.definitions import build_definitions
    from hm_assets.defs.runner import PipelineRunner

    defs = build_definitions()

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        cli_run = PipelineRunner(defs, instance).backtest_report()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "HM_HOME": str(tmp_path / "hm_home"),
        "HM_DATA_DIR": str(tiny_data),
        "PYTHONUNBUFFERED": "1",
    }
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    webserver = Path(sys.executable).with_name("dagster-webserver")
    command = [str(webserver), "-w", str(PROJECT_ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)]
    log_path = tmp_path / "webserver.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    pgid = server.pid
    stopped = None
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if server.poll() is not None:
                pytest.fail(f"dagster-webserver exited with {server.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                if _get(f"{base}/server_info") == 200:
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"dagster-webserver did not answer in {START_TIMEOUT_S} s:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.5)

        workspace = _graphql(base, WORKSPACE_QUERY)["workspaceOrError"]
        assert workspace["__typename"] == "Workspace", workspace
        entries = {e["name"]: e["locationOrLoadError"] for e in workspace["locationEntries"]}
        assert entries.get("hm_recs", {}).get("__typename") == "RepositoryLocation", entries

        runs = {r["runId"]: r for r in _graphql(base, RUNS_QUERY)["runsOrError"]["results"]}
        origin = runs[cli_run]["repositoryOrigin"]  # None would keep it off the Overview timeline
        assert origin == {"repositoryLocationName": "hm_recs", "repositoryName": "__repository__"}, origin
        assert {"key": "hm/launched_by", "value": "cli"} in runs[cli_run]["tags"]

        nodes = _graphql(base, ASSETS_QUERY)["assetNodes"]
        groups = {"/".join(n["assetKey"]["path"]): n["groupName"] for n in nodes}
        partitioned = {"/".join(n["assetKey"]["path"]) for n in nodes if n["isPartitioned"]}
        expected = {
            "articles": "ingest", "customers": "ingest", "article_images": "ingest", "transactions": "ingest",
            "customer_features": "features", "article_transaction_stats": "features",
            "popularity_model": "retrieval", "also_bought": "retrieval", "repurchase": "retrieval",
            "candidates": "ranking", "ranker": "ranking", "recommendations": "ranking",
            "evaluation": "evaluation", "backtest_summary": "evaluation",
        }
        for key, group in expected.items():
            assert groups.get(key) == group, f"{key}: group {groups.get(key)!r}, expected {group!r}"
        if "gallery" in groups:  # once registered in definitions.py
            assert groups["gallery"] == "evaluation" and "gallery" in partitioned
        assert {"transactions", "recommendations", "candidates", "evaluation"} <= partitioned
        assert "articles" not in partitioned

        keys = _graphql(base, PARTITIONS_QUERY, {"path": ["transactions"]})["assetNodeOrError"]["partitionKeys"]
        days = [parse_week(k) for k in keys]  # raises unless every key is a Wednesday
        assert all(d.weekday() == WEDNESDAY for d in days)
        assert days == sorted(days) and all(b - a == timedelta(days=7) for a, b in zip(days, days[1:]))
        data_range = scan_data_range(tiny_data)
        assert days[0] == data_range.first_week
        assert days[-1] == data_range.live_week, "the live week (after the data ends) must be a partition"
        print(f"\n{len(nodes)} assets, {len(keys)} weekly partitions {keys[0]} .. {keys[-1]} served on port {port}")
    finally:
        stopped = _stop_group(server)
    assert server.returncode is not None
    assert not _living_members(pgid), f"processes of the webserver's group survived: {_living_members(pgid)}"
    leftovers = _group_leftovers(pgid)
    assert not leftovers, f"the webserver's process group is not gone: {leftovers}"
    print(f"webserver stopped with {stopped}; process group {pgid} gone")


def _group_leftovers(pgid: int, timeout: float = 10) -> list[str]:
    """Members of the group that still exist after ``timeout``. Zombies whose parent is not this test
    (orphans of the group waiting for PID 1 to reap them) hold nothing and are tolerated."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        members = []
        for process in psutil.process_iter(["pid", "ppid", "status", "name"]):
            try:
                if os.getpgid(process.pid) == pgid:
                    members.append(process.info)
            except (ProcessLookupError, psutil.NoSuchProcess):
                continue
        if all(m["status"] == psutil.STATUS_ZOMBIE and m["ppid"] != os.getpid() for m in members):
            return []
        if time.monotonic() > deadline:
            return [f"{m['pid']} {m['name']} ({m['status']})" for m in members]
        time.sleep(0.2)
