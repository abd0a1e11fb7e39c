"""Load benchmark of ``hm-recs serve``: latency of stored lists and of after-purchase updates, and the
throughput of a mixed closed loop, against a real server process over a materialized store.

    python benchmarks/bench_serving.py --home HM_HOME [--week W] [--duration 30] [--clients 8]
        [--purchase-share 0.10] [--sequential 300] [--customers 2000] [--threads N] [--workers N] [--out FILE.json]

The store is never written to: the benchmark serves a hard-linked copy of it (in a temporary folder
beside ``--home``, so on the same filesystem; files are copied where linking fails, and the event
log, the one file the service appends to in place, is always copied), so the purchases land in the
copy's event log; the copy is removed at the end. The server is ``python -m hm_assets.cli serve
--home COPY --port FREE --reload-seconds 0 [--workers N]`` in its own session, stopped by its pid
(SIGTERM to its process group, SIGKILL after a timeout).

Phases (each: count, errors = non-2xx or no answer, p50/p90/p99/max latency in ms, client side):

1. stored reads, sequential, one kept-alive connection: customers who never bought in this run;
2. after-purchase updates, sequential: one purchase (POST) per distinct customer, then that
   customer's list (GET, now ``source: online``);
3. mixed closed loop: ``--clients`` threads, each with its own kept-alive connection, for
   ``--duration`` s; each request a purchase with probability ``--purchase-share``, else a read of a
   random customer of the sample (those who bought earlier in the run get an on-demand list: reads
   are reported by the ``source`` of the answer).

The client runs on the same machine as the server (on 2 cores it takes CPU from it: its share is
recorded). The server's resident memory (the process and its children: with ``--workers``, the
supervisor and every worker) is sampled every 0.5 s.
The targets are for full scale (1.37M customers); the output says which scale was measured.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import psutil
import pyarrow.compute as pc
import pyarrow.parquet as pq

from host import cpu_model, tree_rss

REPO = Path(__file__).resolve().parent.parent
FULL_SCALE_CUSTOMERS = 1_371_980
TARGETS = {  # name -> (figure, comparison, threshold, unit)
    "stored_read_p99_ms": ("stored list p99", "<=", 10.0, "ms"),
    "after_purchase_p99_ms": ("after-purchase p99", "<=", 100.0, "ms"),
    "mixed_throughput_rps": ("mixed throughput (90% reads, 10% purchases)", ">=", 300.0, "requests/s"),
}
SOURCE = re.compile(rb'"source"\s*:\s*"([a-z_]+)"')
ERROR_SAMPLES = 10
MEMORY_PERIOD_S = 0.5


# ------------------------------------------------------------------------------------------------
# The store copy and the server.
# ------------------------------------------------------------------------------------------------


def copy_store(home: Path) -> tuple[Path, Path, dict]:
    """A hard-linked copy of ``home`` in a temporary folder beside it: (folder to remove, copy, stats).
    ``tmp/`` (DuckDB spill space of running processes) is left out; files under ``events/`` are
    copied, never linked (the service appends to the event log in place)."""
    holder = Path(tempfile.mkdtemp(prefix=f".bench-serving-{home.name}-", dir=home.parent))
    copy = holder / home.name
    stats = {"linked": 0, "copied": 0, "bytes": 0}
    events = home / "events"

    def link_or_copy(source: str, target: str) -> str:
        stats["bytes"] += os.path.getsize(source)
        if Path(source).is_relative_to(events):
            stats["copied"] += 1
            return shutil.copy2(source, target)
        try:
            os.link(source, target)
            stats["linked"] += 1
            return target
        except OSError:
            stats["copied"] += 1
            return shutil.copy2(source, target)

    started = time.perf_counter()
    shutil.copytree(home, copy, copy_function=link_or_copy, ignore=shutil.ignore_patterns("tmp"), symlinks=True)
    stats["seconds"] = round(time.perf_counter() - started, 2)
    return holder, copy, stats


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MemorySampler(threading.Thread):
    """The server tree's RSS every 0.5 s, as (seconds since the server started, bytes)."""

    def __init__(self, process: psutil.Process, t0: float) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.process, self.t0 = process, t0
        self.samples: list[tuple[float, int]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            rss = tree_rss(self.process)
            if rss:
                self.samples.append((time.perf_counter() - self.t0, rss))
            self.stopped.wait(MEMORY_PERIOD_S)

    def now(self) -> int:
        return tree_rss(self.process)


def get_json(port: int, path: str, timeout: float = 5.0) -> tuple[int, dict | None]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        try:
            return response.status, json.loads(body)
        except ValueError:
            return response.status, None
    finally:
        conn.close()


def wait_healthy(process: subprocess.Popen, port: int, timeout: float, log: Path) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode} before answering /healthz:\n{tail(log)}")
        try:
            status, body = get_json(port, "/healthz", timeout=2.0)
            if status == 200 and body and body.get("week"):
                return body
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"no healthy /healthz after {timeout:.0f} s:\n{tail(log)}")


def wait_workers(process: subprocess.Popen, port: int, workers: int, timeout: float, log: Path) -> list[int]:
    """The pids of the workers that answered /healthz (each on a new connection), once ``workers``
    different ones have: with ``--workers N`` the phases start when every worker has its week loaded."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < workers and time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode}:\n{tail(log)}")
        try:
            status, body = get_json(port, "/healthz", timeout=2.0)
            if status == 200 and body and body.get("week") and body.get("worker"):
                seen.add(int(body["worker"]))
                continue
        except OSError:
            pass
        time.sleep(0.05)
    if len(seen) < workers:
        raise RuntimeError(f"only {len(seen)} of {workers} workers answered /healthz after {timeout:.0f} s:\n{tail(log)}")
    return sorted(seen)


def process_rss(process: psutil.Process) -> dict[str, int]:
    """Resident bytes of the server and each of its children, by pid."""
    try:
        processes = [process, *process.children(recursive=True)]
    except psutil.Error:
        return {}
    found = {}
    for proc in processes:
        try:
            found[str(proc.pid)] = proc.memory_info().rss
        except psutil.Error:
            pass
    return found


def stop_server(process: subprocess.Popen, timeout: float = 30.0) -> str:
    """SIGTERM to the server's process group (by its pid), SIGKILL after ``timeout``."""
    if process.poll() is not None:
        return f"had exited ({process.returncode})"
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return "gone"
    try:
        process.wait(timeout=timeout)
        return f"SIGTERM, exit code {process.returncode}"
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        return f"SIGKILL after {timeout:.0f} s"


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ------------------------------------------------------------------------------------------------
# The workload.
# ------------------------------------------------------------------------------------------------


def store_facts(store: Path, week: str) -> dict:
    """Rows of the store's tables (files' metadata only)."""
    def rows(path: Path) -> int:
        return pq.ParquetFile(path).metadata.num_rows

    weeks = sorted(p.stem for p in (store / "assets" / "transactions").glob("*.parquet") if not p.name.startswith("."))
    history = [w for w in weeks if w < week]
    recs = store / "assets" / "recommendations" / f"{week}.parquet"
    return {
        "customers": rows(store / "assets" / "customers.parquet"),
        "articles": rows(store / "assets" / "articles.parquet"),
        "transactions_history_rows": sum(rows(store / "assets" / "transactions" / f"{w}.parquet") for w in history),
        "transactions_history_weeks": f"{history[0]} .. {history[-1]} ({len(history)} partitions)" if history else "none",
        "transactions_rows_all_partitions": sum(rows(store / "assets" / "transactions" / f"{w}.parquet") for w in weeks),
        "recommendation_rows": rows(recs),
        "store_bytes": sum(p.stat().st_size for p in (store / "assets").rglob("*") if p.is_file()),
        "retriever_states_for_week": sorted(p.parent.name for p in (store / "assets").glob(f"*/{week}.state.pkl")),
    }


def workload(store: Path, week: str, sample: int, seed: int) -> tuple[list[str], list[str]]:
    """Known customers' ids that have a full stored list (at least 12 rows) of ``week``, sampled;
    and the articles to buy: the week's catalogue's articles most often in the stored lists."""
    recs = pq.read_table(store / "assets" / "recommendations" / f"{week}.parquet", columns=["customer_key", "article_id"])
    per_customer = recs.group_by("customer_key").aggregate([("article_id", "count")])
    full = per_customer.filter(pc.greater_equal(per_customer["article_id_count"], 12))["customer_key"]
    customers = pq.read_table(store / "assets" / "customers.parquet", columns=["customer_key", "customer_id"])
    known = customers.filter(pc.is_in(customers["customer_key"], value_set=full))
    ids = sorted(str(c) for c in known["customer_id"].to_pylist())
    ids = [c for c in ids if re.fullmatch(r"[0-9a-fA-F]{64}", c)]  # the ids the stored path resolves directly
    rng = random.Random(seed)
    chosen = rng.sample(ids, min(sample, len(ids)))
    catalogue = set(pq.read_table(store / "assets" / "articles.parquet", columns=["article_id"])["article_id"].to_pylist())
    counts = recs.group_by("article_id").aggregate([("customer_key", "count")]).sort_by([("customer_key_count", "descending")])
    popular = [int(a) for a in counts["article_id"].to_pylist() if int(a) in catalogue][:200]
    return chosen, [f"{a:010d}" for a in popular]


class Client:
    """One kept-alive connection; ``call`` returns (status, latency s, source or None, error text or None).
    A dropped connection is reopened for the next request; the failed one counts as an error."""

    def __init__(self, port: int, timeout: float = 60.0) -> None:
        self.port, self.timeout = port, timeout
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, float, str | None, str | None]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        started = time.perf_counter()
        try:
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException) as exc:
            elapsed = time.perf_counter() - started
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            return 0, elapsed, None, f"{type(exc).__name__}: {exc}"
        elapsed = time.perf_counter() - started
        if not 200 <= response.status < 300:
            return response.status, elapsed, None, payload[:300].decode(errors="replace")
        found = SOURCE.search(payload[:400]) or SOURCE.search(payload)
        return response.status, elapsed, found.group(1).decode() if found else None, None

    def read(self, customer: str) -> tuple[int, float, str | None, str | None]:
        return self.call("GET", f"/customers/{customer}/recommendations?k=12")

    def buy(self, customer: str, article: str) -> tuple[int, float, str | None, str | None]:
        return self.call("POST", f"/customers/{customer}/purchases", json.dumps({"articles": [article]}).encode())

    def close(self) -> None:
        self.conn.close()


class Tally:
    """Latencies, errors and answer sources of one kind of request."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors = 0
        self.error_samples: list[str] = []
        self.sources: dict[str, int] = {}

    def add(self, status: int, latency: float, source: str | None, error: str | None) -> None:
        self.latencies.append(latency)
        if error is not None:
            self.errors += 1
            if len(self.error_samples) < ERROR_SAMPLES:
                self.error_samples.append(f"{status}: {error}")
        elif source is not None:
            self.sources[source] = self.sources.get(source, 0) + 1

    def merge(self, other: Tally) -> None:
        self.latencies += other.latencies
        self.errors += other.errors
        self.error_samples = (self.error_samples + other.error_samples)[:ERROR_SAMPLES]
        for source, n in other.sources.items():
            self.sources[source] = self.sources.get(source, 0) + n

    def summary(self, seconds: float | None = None) -> dict:
        ms = np.asarray(self.latencies) * 1000.0
        figures = {"count": len(ms), "errors": self.errors}
        if len(ms):
            p50, p90, p99 = np.percentile(ms, [50, 90, 99])
            figures |= {"p50_ms": round(float(p50), 2), "p90_ms": round(float(p90), 2), "p99_ms": round(float(p99), 2),
                        "max_ms": round(float(ms.max()), 2), "mean_ms": round(float(ms.mean()), 2)}
        if seconds:
            figures["throughput_rps"] = round(len(ms) / seconds, 1)
        figures["sources"] = dict(sorted(self.sources.items()))
        if self.error_samples:
            figures["error_samples"] = self.error_samples
        return figures


def phase_stored(port: int, customers: list[str]) -> dict:
    client, tally = Client(port), Tally()
    started = time.perf_counter()
    for customer in customers:
        tally.add(*client.read(customer))
    seconds = time.perf_counter() - started
    client.close()
    return {"stored_read": tally.summary() | {"seconds": round(seconds, 2)}}


def phase_after_purchase(port: int, customers: list[str], articles: list[str], rng: random.Random) -> dict:
    client, posts, reads = Client(port), Tally(), Tally()
    started = time.perf_counter()
    for customer in customers:
        posts.add(*client.buy(customer, rng.choice(articles)))
        reads.add(*client.read(customer))
    seconds = time.perf_counter() - started
    client.close()
    return {"after_purchase": posts.summary() | {"seconds": round(seconds, 2)},
            "read_after_purchase": reads.summary()}


def phase_mixed(port: int, customers: list[str], articles: list[str], clients: int, duration: float,
                share: float, seed: int) -> dict:
    """``clients`` closed-loop threads for ``duration`` s; reads are split by the answer's source."""
    barrier = threading.Barrier(clients + 1)
    results: list[tuple[Tally, dict[str, Tally]]] = [(Tally(), {}) for _ in range(clients)]
    deadline = [0.0]

    def worker(i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        client = Client(port)
        purchases, reads = results[i]
        barrier.wait()
        while time.perf_counter() < deadline[0]:
            customer = rng.choice(customers)
            if rng.random() < share:
                purchases.add(*client.buy(customer, rng.choice(articles)))
            else:
                status, latency, source, error = client.read(customer)
                reads.setdefault(source or "error", Tally()).add(status, latency, source, error)
        client.close()

    threads = [threading.Thread(target=worker, args=(i,), name=f"client-{i}", daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    me = psutil.Process()
    cpu_before = me.cpu_times()
    deadline[0] = time.perf_counter() + duration
    started = time.perf_counter()
    barrier.wait()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    cpu_after = me.cpu_times()
    purchases, reads_all, reads_by_source = Tally(), Tally(), {}
    for p, r in results:
        purchases.merge(p)
        for source, tally in r.items():
            reads_by_source.setdefault(source, Tally()).merge(tally)
            reads_all.merge(tally)
    everything = Tally()
    everything.merge(purchases)
    everything.merge(reads_all)
    client_cpu = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
    return {
        "mixed_all": everything.summary(seconds) | {"seconds": round(seconds, 2)},
        "mixed_purchase": purchases.summary(seconds),
        "mixed_read": reads_all.summary(seconds),
        **{f"mixed_read_{source}": tally.summary(seconds) for source, tally in sorted(reads_by_source.items())},
        "mixed_client_cpu_seconds": round(client_cpu, 1),
    }


def cpu_seconds(process: psutil.Process) -> float:
    total = 0.0
    try:
        procs = [process, *process.children(recursive=True)]
    except psutil.Error:
        return 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


# ------------------------------------------------------------------------------------------------
# Reporting.
# ------------------------------------------------------------------------------------------------


def verdicts(phases: dict) -> dict:
    figures = {
        "stored_read_p99_ms": phases.get("stored_read", {}).get("p99_ms"),
        "after_purchase_p99_ms": phases.get("after_purchase", {}).get("p99_ms"),
        "mixed_throughput_rps": phases.get("mixed_all", {}).get("throughput_rps"),
    }
    out = {}
    for name, value in figures.items():
        label, op, threshold, unit = TARGETS[name]
        met = None if value is None else (value <= threshold if op == "<=" else value >= threshold)
        out[name] = {"figure": label, "value": value, "target": f"{op} {threshold:g} {unit}", "met": met}
    return out


def gib(n: int | None) -> float | None:
    return None if n is None else round(n / 2**30, 3)


def git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def pytest_running() -> list[int]:
    try:
        out = subprocess.run(["pgrep", "-f", "pytest"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [int(p) for p in out.split() if int(p) != os.getpid()]


def markdown_rows(result: dict) -> list[str]:
    scale = f"{result['store']['customers']:,} customers ({result['store']['home_name']})"
    phases = result["phases"]
    target = {"stored_read": "stored_read_p99_ms", "after_purchase": "after_purchase_p99_ms", "mixed_all": "mixed_throughput_rps"}
    labels = {
        "stored_read": "stored reads, sequential",
        "after_purchase": "purchase (POST) → online list, sequential",
        "read_after_purchase": "read after purchase (online), sequential",
        "mixed_all": f"mixed, {result['args']['clients']} clients, {result['args']['purchase_share']:.0%} purchases: all",
        "mixed_purchase": "mixed: purchases",
    }
    labels |= {k: f"mixed: reads, source {k.removeprefix('mixed_read_')}" for k in phases if k.startswith("mixed_read_")}
    lines = ["| scale | phase | requests | errors | p50 ms | p90 ms | p99 ms | max ms | requests/s | target |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for key, label in labels.items():
        p = phases.get(key)
        if not p or not p.get("count"):
            continue
        verdict = result["targets"].get(target.get(key, ""), None)
        shown = f"{verdict['target']}: {'met' if verdict['met'] else 'missed'}" if verdict else ""
        rps = p.get("throughput_rps", "")
        lines.append(f"| {scale} | {label} | {p['count']} | {p['errors']} | {p['p50_ms']:.1f} | {p['p90_ms']:.1f} | "
                     f"{p['p99_ms']:.1f} | {p['max_ms']:.1f} | {rps} | {shown} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", required=True, help="a materialized store (HM_HOME); never written to")
    parser.add_argument("--week", help="the week to serve (default: the server's choice, the newest with recommendations)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of the mixed phase")
    parser.add_argument("--clients", type=int, default=8, help="concurrent client threads of the mixed phase")
    parser.add_argument("--purchase-share", type=float, default=0.10, help="share of purchases in the mixed phase")
    parser.add_argument("--sequential", type=int, default=300, help="requests per sequential phase")
    parser.add_argument("--customers", type=int, default=2000,
                        help="customers sampled for the mixed phase (at least 2 x --sequential are sampled)")
    parser.add_argument("--threads", type=int, default=None, help="passed to hm-recs serve --threads")
    parser.add_argument("--workers", type=int, default=1, help="passed to hm-recs serve --workers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--load-timeout", type=float, default=1800.0, help="seconds to wait for /healthz")
    parser.add_argument("--out", help="JSON result (default: benchmarks/results/serving-<date>-<home name>.json)")
    args = parser.parse_args(argv)

    home = Path(args.home).expanduser().resolve()
    if not (home / "assets" / "recommendations").is_dir():
        print(f"error: {home} has no assets/recommendations/: not a materialized store", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else REPO / "benchmarks" / "results" / f"serving-{date.today().isoformat()}-{home.name}.json"
    load_before = os.getloadavg()
    busy = pytest_running()
    result: dict = {
        "benchmark": "bench_serving",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *[a if a.strip() and " " not in a else repr(a) for a in sys.argv]]),
        "args": vars(args),
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "git_dirty_tracked_files": len([l for l in git("status", "--porcelain", "--untracked-files=no").splitlines() if l.strip()]),
        "machine": {
            "cpu": cpu_model(), "cores": os.cpu_count(), "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "system": f"{platform.system()} {platform.release()}",
        },
        "versions": {"python": platform.python_version()},
        "loadavg_before": [round(x, 2) for x in load_before],
        "pytest_processes_at_start": len(busy),
    }
    try:
        import duckdb
        result["versions"]["duckdb"] = duckdb.__version__
    except ImportError:
        pass

    holder, copy, copy_stats = copy_store(home)
    result["store_copy"] = {"path": str(copy), **copy_stats}
    print(f"store {home} → hard-linked copy {copy} ({copy_stats['linked']} linked, {copy_stats['copied']} copied, "
          f"{copy_stats['seconds']} s)", flush=True)
    log_path = holder / "server.log"
    process = None
    sampler = None
    try:
        port = free_port()
        command = [sys.executable, "-m", "hm_assets.cli", "serve", "--home", str(copy), "--port", str(port),
                   "--reload-seconds", "0"]
        if args.week:
            command += ["--week", args.week]
        if args.threads:
            command += ["--threads", str(args.threads)]
        if args.workers != 1:
            command += ["--workers", str(args.workers)]
        env = {k: v for k, v in os.environ.items() if k not in ("HM_OBJECT_STORE",)}
        env["HM_HOME"] = str(copy)
        result["server_command"] = " ".join(command)
        with open(log_path, "wb") as log_file:
            t0 = time.perf_counter()
            process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        server = psutil.Process(process.pid)
        sampler = MemorySampler(server, t0)
        sampler.start()
        print(f"server pid {process.pid} on port {port}: loading …", flush=True)
        health = wait_healthy(process, port, args.load_timeout, log_path)
        if args.workers > 1:
            result["workers_answering"] = wait_workers(process, port, args.workers, args.load_timeout, log_path)
        load_seconds = time.perf_counter() - t0
        rss_load = sampler.now()
        result["rss_at_load_by_process_gib"] = {pid: gib(rss) for pid, rss in process_rss(server).items()}
        week = health["week"]
        cpu_load = cpu_seconds(server)
        result |= {"week": week, "server_load_seconds": round(load_seconds, 2), "server_cpu_seconds_at_load": round(cpu_load, 1)}
        facts = store_facts(copy, week)
        facts["home"], facts["home_name"] = str(home), home.name
        result["store"] = facts
        result["scale"] = (f"{facts['customers']:,} customers ({facts['customers'] / FULL_SCALE_CUSTOMERS:.2%} of the "
                           f"full H&M scale of {FULL_SCALE_CUSTOMERS:,}), {facts['articles']:,} articles, "
                           f"{facts['transactions_history_rows']:,} transactions before {week}")
        states = facts["retriever_states_for_week"]
        print(f"week {week} served after {load_seconds:.1f} s (RSS {rss_load / 2**20:.0f} MiB; retriever states stored for "
              f"the week: {', '.join(states) or 'none, fitted at load'}); scale: {result['scale']}", flush=True)

        sample_size = max(args.customers, 2 * args.sequential + 1)
        customers, articles = workload(copy, week, sample_size, args.seed)
        if len(customers) < 2 * args.sequential:
            raise RuntimeError(f"only {len(customers)} customers with stored lists; need 2 x --sequential = {2 * args.sequential}")
        result["workload"] = {"customers_sampled": len(customers), "articles_to_buy": len(articles), "seed": args.seed}
        rng = random.Random(args.seed)
        phases: dict = {}
        loads: dict = {}

        print(f"phase 1: {args.sequential} stored reads, sequential …", flush=True)
        phases |= phase_stored(port, customers[: args.sequential])
        loads["after_phase1"] = [round(x, 2) for x in os.getloadavg()]
        print(f"phase 2: {args.sequential} purchases + reads, sequential …", flush=True)
        phases |= phase_after_purchase(port, customers[args.sequential: 2 * args.sequential], articles, rng)
        loads["after_phase2"] = [round(x, 2) for x in os.getloadavg()]
        print(f"phase 3: mixed, {args.clients} clients, {args.duration:g} s, {args.purchase_share:.0%} purchases …", flush=True)
        cpu_server_before = cpu_seconds(server)
        phases |= phase_mixed(port, customers, articles, args.clients, args.duration, args.purchase_share, args.seed)
        phases["mixed_server_cpu_seconds"] = round(cpu_seconds(server) - cpu_server_before, 1)
        loads["after_phase3"] = [round(x, 2) for x in os.getloadavg()]
        result["phases"] = phases
        result["loadavg_during"] = loads

        status, health_end = get_json(port, "/healthz")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/metrics")
            metrics = conn.getresponse().read().decode()
            conn.close()
            result["server_metrics"] = [l for l in metrics.splitlines()
                                        if l.startswith(("hm_recommendation_lists_total", "hm_purchase_events_accepted_total",
                                                         "hm_online_customers", "hm_http_requests_total"))]
        except (OSError, http.client.HTTPException) as exc:
            result["server_metrics"] = [f"unavailable: {exc}"]
        events = copy / "events" / "purchases.jsonl"
        result["events_logged_in_copy"] = sum(1 for _ in events.open()) if events.exists() else 0
        rss_end = sampler.now()
        peak = max((rss for _, rss in sampler.samples), default=0)
        result["memory"] = {"rss_at_load_gib": gib(rss_load), "rss_peak_gib": gib(max(peak, rss_end)),
                            "rss_end_gib": gib(rss_end), "samples": len(sampler.samples),
                            "period_s": MEMORY_PERIOD_S}
        result["server_alive_at_end"] = process.poll() is None and status == 200
    finally:
        if sampler is not None:
            sampler.stopped.set()
        if process is not None:
            result["server_stop"] = stop_server(process)
        if result.get("server_stop", "").startswith("had exited") or "phases" not in result:
            result["server_log_tail"] = tail(log_path)
        shutil.rmtree(holder, ignore_errors=True)
    result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    result["targets"] = verdicts(result["phases"])
    result["targets_note"] = "targets are for full scale (1.37M customers); measured at " + result["scale"]

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str) + "\n")

    p = result["phases"]
    print()
    print(f"hm-recs serve, week {result['week']}, commit {result['git_commit']}; scale: {result['scale']}")
    m = result["machine"]
    print(f"machine: {m['cores']} cores ({m['cpu']}), {m['ram_gib']} GiB RAM; load average before "
          f"{result['loadavg_before']}, after {result['loadavg_after']}; pytest processes at start: {result['pytest_processes_at_start']}")
    print(f"server load (start → /healthz): {result['server_load_seconds']} s; RSS at load {result['memory']['rss_at_load_gib']} GiB, "
          f"peak {result['memory']['rss_peak_gib']} GiB, end {result['memory']['rss_end_gib']} GiB")
    for key, figures in p.items():
        if isinstance(figures, dict) and figures.get("count"):
            extra = f", {figures['throughput_rps']} req/s" if "throughput_rps" in figures else ""
            print(f"  {key:28s} n={figures['count']:6d} err={figures['errors']:3d}  p50 {figures['p50_ms']:7.1f}  "
                  f"p90 {figures['p90_ms']:7.1f}  p99 {figures['p99_ms']:7.1f}  max {figures['max_ms']:7.1f} ms{extra}  "
                  f"{figures['sources']}")
    print(f"  mixed phase CPU: client {p.get('mixed_client_cpu_seconds')} s, server {p.get('mixed_server_cpu_seconds')} s "
          f"over {p['mixed_all']['seconds']} s on {m['cores']} cores")
    print(f"targets (full scale, 1.37M customers; measured: {result['store']['customers']:,} customers):")
    for verdict in result["targets"].values():
        print(f"  {verdict['figure']}: {verdict['value']} (target {verdict['target']}): {'met' if verdict['met'] else 'missed'}")
    print("\nRESULTS.md rows:\n" + "\n".join(markdown_rows(result)))
    print(f"\nwrote {out}")
    return 0 if all(v["count"] == 0 or v["errors"] == 0 for v in p.values() if isinstance(v, dict) and "errors" in v) else 1


if __name__ == "__main__":
    raise SystemExit(main())
