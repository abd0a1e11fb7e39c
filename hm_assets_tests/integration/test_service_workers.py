"""``hm-recs serve --workers N``: several services on one store share its online purchases through the
event log (read-your-writes across them, one customer's purchases in order, an event_id recorded
once), follow each other's reload requests, and a real two-worker server answers every read after a
purchase with it, whichever worker answers, with metrics that count both workers.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pandas as pd
import pytest

from hm_assets.platform.settings import PROJECT_ROOT
from hm_assets.platform.store import HMStore
from hm_assets.serving.events import EventLog, event_log_path
from hm_assets.serving.metrics import ServiceMetrics
from hm_assets.serving.service import RecommendationService
from hm_assets.serving.workers import WorkerGroup
from hm_assets_tests.integration.test_service import copy_home
from hm_assets_tests.servers import free_port


@pytest.fixture
def own_store(recs_run, tmp_path) -> HMStore:
    return HMStore(home=str(copy_home(recs_run.home, tmp_path / "home")))


@contextmanager
def started(*services: RecommendationService) -> Iterator[tuple[RecommendationService, ...]]:
    with ExitStack() as stack:
        for service in services:
            service.start()
            stack.callback(service.stop)
        yield services


def popular_articles(store: HMStore, count: int) -> list[str]:
    stored = pd.read_parquet(store.require("recommendations", store.partitions("recommendations")[-1]))
    return [f"{a:010d}" for a in stored["article_id"].value_counts().index[:count]]


def logged_ids(store: HMStore) -> list[str]:
    """Every complete line's event_id, duplicates included."""
    path = event_log_path(store)
    return [json.loads(line)["event_id"] for line in path.read_bytes().split(b"\n")[:-1] if line]


def test_two_services_on_one_store_see_each_others_purchases(own_store):
    with started(RecommendationService(own_store), RecommendationService(own_store)) as (a, b):
        customers = [c["customer_id"] for c in a.examples()["customers"]]
        first, second, third = popular_articles(own_store, 3)
        buyer = customers[0]
        assert b.ready_recommendations(buyer, 12, {})["source"] == "stored"

        bought = a.purchase(buyer, [first], event_id="order-1")
        assert bought["bought_online"] == [first]
        # b was not told: it finds the purchase in the log before it answers
        ready = b.ready_recommendations(buyer, 12, {})
        assert ready is None  # not kept by b: computed, with the purchase
        answer = b.recommendations(buyer)
        assert answer["source"] == "online" and answer["bought_online"] == [first]
        assert answer["items"] == bought["items"]  # the same list, computed again by b
        assert b.ready_recommendations(buyer, 12, {})["items"] == bought["items"]  # kept by b now

        again = b.purchase(buyer, [second])
        assert again["bought_online"] == [first, second]
        assert [p["article_id"] for p in a.history(buyer)["purchases"][:2]] == [second, first]
        assert a.why(buyer, third)["customer_id"] == buyer
        assert a.recommendations(buyer)["bought_online"] == [first, second]

        # an event_id is recorded once, whichever service gets it again, for whichever customer
        assert b.purchase(buyer, [third], event_id="order-1")["bought_online"] == [first, second]
        assert a.purchase(customers[1], [third], event_id="order-1")["bought_online"] == []
        assert logged_ids(own_store).count("order-1") == 1 and len(logged_ids(own_store)) == 2
        for service in (a, b):
            assert service.metrics.registry.get_sample_value("hm_purchase_events_duplicate_total") == 1

        # a torn tail (a writer killed mid-line) is skipped by both, then cut off by the next append
        with event_log_path(own_store).open("ab") as handle:
            handle.write(b'{"event_id": "torn')
        assert a.recommendations(buyer)["bought_online"] == [first, second]
        assert a.purchase(customers[1], [first])["bought_online"] == [first]
        assert b.recommendations(customers[1])["bought_online"] == [first]
        assert EventLog(event_log_path(own_store)).read()[-1].customer_id == customers[1]

        # a third service started now replays the whole log
        with started(RecommendationService(own_store)) as (c,):
            assert c.recommendations(buyer)["bought_online"] == [first, second]
            assert c.recommendations(customers[1])["bought_online"] == [first]


def test_one_customers_purchases_through_two_services_are_applied_in_order(own_store):
    """Eight purchases of one customer at once, half through each service: all logged once, each
    answer saw exactly the purchases logged before its own (the customer's lock is a file lock, so
    it holds across the two services as across two processes)."""
    articles = popular_articles(own_store, 8)
    answers: dict[str, dict] = {}
    gate = threading.Barrier(8)
    with started(RecommendationService(own_store), RecommendationService(own_store)) as services:
        customer = services[0].examples()["customers"][2]["customer_id"]

        def buy(n: int, article: str) -> None:
            gate.wait()
            answers[article] = services[n % 2].purchase(customer, [article])

        threads = [threading.Thread(target=buy, args=(n, a)) for n, a in enumerate(articles)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        order = [f"{e.article_id:010d}" for e in EventLog(event_log_path(own_store)).read()]
        assert sorted(order) == sorted(articles) and len(answers) == 8
        for article, answer in answers.items():
            assert answer["bought_online"] == order[: order.index(article) + 1]
        final = [s.recommendations(customer) for s in services]
        assert final[0]["bought_online"] == final[1]["bought_online"] == order
        assert final[0]["items"] == final[1]["items"] == answers[order[-1]]["items"]


def test_a_reload_request_reaches_every_worker_of_the_group(own_store, tmp_path):
    """``POST /admin/reload`` reaches one worker; the others' pollers follow the request it wrote
    (here: pinning the served week, so that the pollers' own scans leave it)."""
    group = WorkerGroup(2, tmp_path / "server")
    group.folder.mkdir()
    services = [RecommendationService(own_store, metrics=ServiceMetrics(), group=group) for _ in range(2)]
    with started(*services) as (a, b):
        week = a.week
        assert a.health()["workers"] == 2 and a.health()["worker"] == os.getpid()
        assert a.choose(week)["reloaded"] is False and a.pinned_week == week
        deadline = time.monotonic() + 30
        while b.pinned_week != week and time.monotonic() < deadline:
            time.sleep(0.05)
        assert b.pinned_week == week and b.week == week
        a.choose(None)
        deadline = time.monotonic() + 30
        while b.pinned_week is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert b.pinned_week is None
        # a worker started later (uvicorn replaces one that died) takes the newest request
        a.choose(week)
        with started(RecommendationService(own_store, metrics=ServiceMetrics(), group=group)) as (c,):
            assert c.pinned_week == week


def test_a_list_one_worker_computed_answers_the_others_without_computing(own_store, tmp_path):
    """The list after a purchase, computed by the worker that took it, is answered by another worker of
    the group as a kept list (on the event loop, nothing computed), the same items; lists of another
    week, or of a key nobody computed, are not taken."""
    group = WorkerGroup(2, tmp_path / "server")
    group.folder.mkdir()
    services = [RecommendationService(own_store, metrics=ServiceMetrics(), group=group) for _ in range(2)]
    with started(*services) as (a, b):
        buyer, other = [c["customer_id"] for c in a.examples()["customers"]][:2]
        first, second = popular_articles(own_store, 2)
        bought = a.purchase(buyer, [first])
        ready = b.ready_recommendations(buyer, 12, {})
        assert ready is not None and ready["source"] == "online" and ready["bought_online"] == [first]
        assert ready["items"] == bought["items"]
        assert b.metrics.registry.get_sample_value("hm_computed_list_lookups_total", {"result": "hit"}) == 1
        assert b.metrics.registry.get_sample_value("hm_computed_list_lookups_total", {"result": "miss"}) is None
        # a shorter list of the same customer was never computed: b computes it (and a takes it then)
        assert b.ready_recommendations(buyer, 5, {}) is None
        five = b.recommendations(buyer, k=5)
        assert a.ready_recommendations(buyer, 5, {})["items"] == five["items"]
        # a list of another week in the file is not taken
        key = (a._who(a._state, other, {}).key, (int(second),), 12)
        a.shared_lists.publish("1999-01-06", key, bought["items"])
        b.purchase(other, [second])  # b's own list of that key: computed, not the other week's
        assert b.recommendations(other)["items"] != bought["items"]


def test_shared_lists_start_again_past_their_limit(tmp_path):
    """Past its size limit the file starts again: a reader behind takes what is there from the start,
    and a torn or cut line is skipped."""
    from hm_assets.serving.workers import SharedLists

    path = tmp_path / "lists.jsonl"
    writer, reader = SharedLists(path, limit=600), SharedLists(path, limit=600)
    items = [{"article_id": "0000000001", "rank": 1}]
    writer.publish("2020-09-16", (1, (5,), 12), items)
    writer.publish("2020-09-16", (2, (), 12), items)
    assert [key for _, key, _ in reader.taken()] == [(1, (5,), 12), (2, (), 12)]
    assert reader.taken() == []
    with path.open("ab") as handle:
        handle.write(b'{"week": "2020-09-16", "key": [3')  # a line being written
    assert reader.taken() == []
    for n in range(3, 9):  # passes the limit: the file starts again
        writer.publish("2020-09-16", (n, (), 12), items)
    assert path.stat().st_size <= 600
    taken = [key[0] for _, key, _ in reader.taken()]
    assert taken and taken[-1] == 8 and all(n >= 3 for n in taken)


# ------------------------------------------------------------------------------------------------
# A real server with two workers.
# ------------------------------------------------------------------------------------------------


class Connection:
    """A kept-alive connection: it stays with the worker that accepted it."""

    def __init__(self, port: int) -> None:
        self.http = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.worker = self.get("/healthz")["worker"]

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        self.http.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        answer = self.http.getresponse()
        return answer.status, answer.read()

    def get(self, path: str) -> dict:
        status, body = self.call("GET", path)
        assert status == 200, body[:300]
        return json.loads(body)

    def post(self, path: str, body: dict) -> dict:
        status, answer = self.call("POST", path, body)
        assert status == 200, answer[:300]
        return json.loads(answer)


def connections_to_every_worker(process: subprocess.Popen, port: int, workers: int,
                                 timeout: float = 120) -> dict[int, list[Connection]]:
    """Connections opened at once (the workers accept them, whichever is first) until every worker
    holds some; by worker pid."""
    found: dict[int, list[Connection]] = {}
    deadline = time.monotonic() + timeout
    while len(found) < workers and time.monotonic() < deadline:
        assert process.poll() is None, f"the server exited ({process.returncode})"
        batch: list[Connection] = []
        gate = threading.Barrier(8)

        def connect() -> None:
            gate.wait()
            try:
                batch.append(Connection(port))
            except ConnectionRefusedError:  # the server has not bound its port yet
                pass

        threads = [threading.Thread(target=connect) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        for connection in batch:
            found.setdefault(connection.worker, []).append(connection)
        if not batch:
            time.sleep(0.2)
    assert len(found) == workers, f"connections reached {len(found)} of {workers} workers"
    return found


def test_a_server_with_two_workers(recs_run, tmp_path):
    """``hm-recs serve --workers 2``: a purchase answered by one worker is in every following read of
    the customer by the other; a repeated event_id is recorded once; /metrics of either worker counts
    both workers' requests; SIGTERM stops both and removes the server's folder."""
    from prometheus_client.parser import text_string_to_metric_families

    home = copy_home(recs_run.home, tmp_path / "home")
    scratch = tmp_path / "scratch"  # the server's temporary folder goes here: checked after the stop
    scratch.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("HM_HOME", "DAGSTER_HOME", "PROMETHEUS_MULTIPROC_DIR")}
    env["TMPDIR"] = str(scratch)
    process = subprocess.Popen(
        [sys.executable, "-m", "hm_assets.cli", "serve", "--home", str(home), "--port", str(port),
         "--reload-seconds", "0", "--workers", "2"],
        cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        workers = connections_to_every_worker(process, port, 2, timeout=240)
        (one, *_), (other, *_) = workers.values()
        health = one.get("/healthz")
        assert health["workers"] == 2 and health["week"] == recs_run.week
        customers = [c["customer_id"] for c in one.get("/examples")["customers"]]
        stored = pd.read_parquet(home / "assets" / "recommendations" / f"{recs_run.week}.parquet")
        known = pd.read_parquet(home / "assets" / "customers.parquet", columns=["customer_key", "customer_id"])
        known = known[known["customer_key"].isin(stored["customer_key"]) & ~known["customer_id"].isin(customers)]
        customers += known["customer_id"].head(20 - len(customers)).tolist()
        articles = [f"{a:010d}" for a in stored["article_id"].value_counts().index[:5]]
        purchases = 0
        for n, customer in enumerate(customers):
            buyer, reader = (one, other) if n % 2 == 0 else (other, one)
            bought = [articles[n % 5], articles[(n + 1) % 5]] if n % 3 == 0 else [articles[n % 5]]
            answer = buyer.post(f"/customers/{customer}/purchases", {"articles": bought, "event_id": f"w-{n}"})
            assert answer["bought_online"] == bought
            purchases += 1
            for connection in (reader, buyer, reader):
                read = connection.get(f"/customers/{customer}/recommendations")
                assert read["source"] == "online" and read["bought_online"] == bought, (connection.worker, read)
                assert read["items"] == answer["items"]
            history = reader.get(f"/customers/{customer}/history")["purchases"]
            assert [p["article_id"] for p in history if p["online"]] == bought[::-1]
        # the same event_id again (customer 1 bought through ``other``), on the other worker: answered, not recorded
        again = one.post(f"/customers/{customers[1]}/purchases", {"articles": [articles[4]], "event_id": "w-1"})
        assert again["bought_online"] == [articles[1]]
        purchases += 1
        logged = logged_ids(HMStore(home=str(home)))
        assert len(logged) == len(set(logged)) == sum(2 if n % 3 == 0 else 1 for n in range(len(customers)))

        def samples(connection: Connection) -> dict:
            text = connection.call("GET", "/metrics")[1].decode()
            return {(s.name, tuple(sorted(s.labels.items()))): s.value
                    for family in text_string_to_metric_families(text) for s in family.samples}

        route = "/customers/{customer_id}/recommendations"
        for connection in (one, other):
            counted = samples(connection)
            assert counted[("hm_http_requests_total", (("endpoint", "/customers/{customer_id}/purchases"),
                                                        ("method", "POST"), ("status", "200")))] == purchases
            assert counted[("hm_http_requests_total", (("endpoint", route), ("method", "GET"), ("status", "200")))] == 3 * len(customers)
            assert counted[("hm_purchase_events_accepted_total", ())] == len(logged)
            assert counted[("hm_purchase_events_duplicate_total", ())] == 1
            assert counted[("hm_served_week_info", (("week", recs_run.week),))] == 1
            assert counted[("hm_reloads_total", (("outcome", "loaded"),))] == 2  # one per worker
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # its own group: the supervisor and its workers
        output = process.communicate(timeout=120)[0]
    assert process.returncode in (0, -signal.SIGTERM), output[-3000:]
    assert list(scratch.iterdir()) == [], "the server's folder was left behind"
