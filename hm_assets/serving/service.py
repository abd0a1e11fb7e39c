"""The recommendation service behind ``hm-recs serve``: one served week at a time, its stored lists
in memory, the on-demand recommender for everything else, purchases recorded in the event log.

A week's state (``WeekState``) is built off the request path and replaces the served one in a single
reference swap; requests that hold the old state (a lease) finish on it, and it is closed once the
last of them is done. Which list a customer gets:

* a known customer without online purchases since the week's cut-off and without attribute
  overrides: the week's stored list (``source: stored``), looked up by binary search;
* a known customer with online purchases, or with attribute overrides: the on-demand recommender
  with those purchases (``source: online``);
* an unknown customer: the cold-start list for the given attributes (``source: cold_start``), or
  ``online`` once they have bought something.

A computed list is kept (``ComputedLists``, per week) under everything it depends on: the customer,
their online purchases and the list's length. A read after a purchase is then answered without
computing again; the next purchase changes the key, a reload starts an empty cache. Lists for
attribute overrides or imagined (what-if) purchases are not kept.

The event log is the truth of online purchases. The service keeps a position in it and, before it
answers anything that depends on a customer's purchases, applies what was appended after it (by the
other workers of ``hm-recs serve --workers N``, or any other writer): after one worker acknowledges a
purchase, every worker's next answer for that customer includes it. A purchase holds the customer's
lock (a file lock: across processes) from before it reads the log to after its list is computed,
and checks the event_id and appends under the log's own lock, so one customer's purchases are
applied in order and an event_id is recorded once, whichever worker gets them. Kept computed lists
are per process: another worker computes the list again (the same list).
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from hm_assets.pipeline.ingest.data_contract import K, format_article_id
from hm_assets.platform.store import HMStore
from hm_assets.serving.on_demand import (
    ARTICLE_COLUMNS,
    OnDemandRecommender,
    newest_recommendation_week,
    parse_customer_key,
)
from hm_assets.serving.events import (
    CustomerLocks,
    EventLog,
    LockedLog,
    LogPosition,
    LogTail,
    PurchaseEvent,
    customer_locks_path,
    event_log_path,
    new_event_id,
)
from hm_assets.serving.metrics import ServiceMetrics
from hm_assets.serving.workers import ReloadRequests, SharedLists, WorkerGroup

log = logging.getLogger("hm_assets.serving")

CUSTOMER_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
ARTICLE_ID = re.compile(r"\d{1,10}")
INT64 = (-(2**63), 2**63 - 1)
ATTRIBUTES = ("age", "postal_code", "club_member_status", "fashion_news_frequency", "fn", "active")
ONLINE_CHANNEL = 2  # sales_channel_id of an online purchase in the H&M data
HISTORY_SIZE = 12
EXAMPLE_CUSTOMERS = 6
CUSTOMER_LOCKS = 512
# With several workers, how often each one's poller looks for a reload request of another worker
# (and catches up with the event log, so that a request after a quiet spell has little to read).
FOLLOW_SECONDS = 0.5
# Computed lists kept per week (about 4 KiB each): every customer who bought since the cut-off, up
# to this many, is answered from memory until their next purchase.
COMPUTED_LISTS = 20_000


class ServiceError(Exception):
    """A request the service cannot answer, with the http status and a message that names the problem."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def check_customer_id(customer_id: str) -> str:
    if not CUSTOMER_ID.fullmatch(customer_id):
        shown = customer_id if len(customer_id) <= 40 else customer_id[:40] + "…"
        problem = "is empty" if not customer_id else f"{shown!r} is malformed"
        raise ServiceError(
            422, f"customer id {problem}: expected 1 to 128 characters from A-Z, a-z, 0-9, '_' and '-' "
                 f"(a 64-hex customer_id, a customer_key, or a new customer's id of your choice)"
        )
    return customer_id


def parse_article(value: str | int) -> int:
    text = str(value).strip()
    if not ARTICLE_ID.fullmatch(text):
        raise ServiceError(422, f"malformed article id {text[:40]!r}: expected up to 10 digits, e.g. 0108775015")
    return int(text)


def direct_key(customer_id: str) -> int | None:
    """The customer_key of a 64-hex id or of a customer_key given as digits (``parse_customer_key``);
    None for any other id (a new customer's own id)."""
    key = parse_customer_key(customer_id)
    if key is not None and not INT64[0] <= key <= INT64[1]:
        raise ServiceError(422, f"customer id {customer_id[:40]!r}: a customer_key must fit in 64 bits")
    return key


def _number(value: object) -> float | None:
    """A JSON number: numpy scalars as Python floats, NaN (fallback fill, no value) as None."""
    if value is None or value is pd.NA:
        return None
    number = float(value)
    return None if math.isnan(number) else number


# ------------------------------------------------------------------------------------------------
# A week's tables, in memory.
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredLists:
    """A week's stored recommendations by customer: rows sorted by (customer_key, rank); customer
    ``keys[i]`` owns rows ``starts[i]:starts[i + 1]``. ``proposed`` is a bitmask over ``retrievers``
    (bit i: ``retrievers[i]`` proposed the pair), taken from the week's candidates once at load."""

    keys: np.ndarray
    starts: np.ndarray
    ranks: np.ndarray
    articles: np.ndarray
    scores: np.ndarray
    proposed: np.ndarray
    retrievers: tuple[str, ...]
    _names: dict[int, tuple[str, ...]] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def load(cls, store: HMStore, week: str) -> StoredLists:
        recs = store.require("recommendations", week)
        candidates = store.optional("candidates", week)
        names = [c.removeprefix("score_") for c in pq.read_schema(candidates).names if c.startswith("score_")] if candidates else []
        if len(names) > 32:
            raise ValueError(f"{len(names)} retrievers in {candidates}: the stored lists keep at most 32 per pair")
        mask = " + ".join(f'(CASE WHEN c."score_{n}" IS NULL THEN 0 ELSE {1 << i} END)' for i, n in enumerate(names))
        join = f"LEFT JOIN read_parquet('{candidates}') c USING (customer_key, article_id)" if names else ""
        con = store.connect()
        try:
            columns = con.execute(
                f"""
                SELECT r.customer_key, CAST(r.rank AS SMALLINT) AS rank, r.article_id,
                       coalesce(CAST(r.score AS FLOAT), 'NaN'::FLOAT) AS score,
                       CAST({mask or 0} AS UINTEGER) AS proposed
                FROM read_parquet('{recs}') r {join}
                ORDER BY r.customer_key, r.rank
                """
            ).fetchnumpy()
        finally:
            con.close()
        all_keys = np.asarray(columns["customer_key"], dtype=np.int64)
        keys, first = np.unique(all_keys, return_index=True)
        return cls(
            keys=keys,
            starts=np.append(first, len(all_keys)).astype(np.int64),
            ranks=np.asarray(columns["rank"], dtype=np.int16),
            articles=np.asarray(columns["article_id"], dtype=np.int32),
            scores=np.asarray(columns["score"], dtype=np.float32),
            proposed=np.asarray(columns["proposed"], dtype=np.uint32),
            retrievers=tuple(names),
        )

    def rows(self, key: int) -> range | None:
        i = int(np.searchsorted(self.keys, key))
        if i == len(self.keys) or self.keys[i] != key:
            return None
        return range(int(self.starts[i]), int(self.starts[i + 1]))

    def names(self, mask: int) -> tuple[str, ...]:
        if mask not in self._names:
            self._names[mask] = tuple(n for i, n in enumerate(self.retrievers) if mask >> i & 1)
        return self._names[mask]


@dataclass(frozen=True)
class CustomerIndex:
    """The customers table's ids and ages by customer_key, for lookups without a table scan."""

    keys: np.ndarray
    ids: np.ndarray
    ages: np.ndarray

    @classmethod
    def of(cls, customers: pd.DataFrame) -> CustomerIndex:
        order = np.argsort(customers["customer_key"].to_numpy(dtype=np.int64), kind="stable")
        ages = pd.to_numeric(customers["age"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        return cls(
            customers["customer_key"].to_numpy(dtype=np.int64)[order],
            customers["customer_id"].to_numpy(dtype=object)[order],
            ages[order],
        )

    def position(self, key: int) -> int | None:
        i = int(np.searchsorted(self.keys, key))
        return i if i < len(self.keys) and self.keys[i] == key else None

    def customer_id(self, key: int) -> str | None:
        i = self.position(key)
        return None if i is None else str(self.ids[i])


@dataclass(frozen=True)
class Catalogue:
    """Article names and image files, by article_id."""

    names: dict[int, tuple[str, str, str, str]]  # (10-digit id, prod_name, product_type_name, colour_group_name)
    images: dict[int, Path]

    @classmethod
    def of(cls, articles: pd.DataFrame, store: HMStore) -> Catalogue:
        frame = articles[ARTICLE_COLUMNS]
        names = {
            int(a): (format_article_id(int(a)), str(p), str(t), str(c))
            for a, p, t, c in frame.itertuples(index=False, name=None)
        }
        images: dict[int, Path] = {}
        catalogue = store.optional("article_images")
        if catalogue is not None:
            table = pd.read_parquet(catalogue, columns=["article_id", "path", "exists", "readable"])
            usable = table[table["exists"] & table["readable"]]
            images = {int(a): Path(p) for a, p in zip(usable["article_id"], usable["path"])}
        return cls(names, images)

    def __contains__(self, article_id: int) -> bool:
        return article_id in self.names

    def item(self, article_id: int, **fields: object) -> dict:
        """An article as the API shows it: ``fields`` (rank …) first, then its names and picture."""
        text, prod, kind, colour = self.names.get(article_id) or (format_article_id(article_id), "", "", "")
        return {
            **{k: v for k, v in fields.items() if k == "rank"},
            "article_id": text,
            "prod_name": prod,
            "product_type_name": kind,
            "colour_group_name": colour,
            **{k: v for k, v in fields.items() if k != "rank"},
            "image_url": f"/images/{text}" if article_id in self.images else None,
        }


def example_customers(store: HMStore, week: str, customers: CustomerIndex, stored: StoredLists) -> list[dict]:
    """A few known customers who bought several articles in the four weeks before the cut-off
    (a deterministic pick, the same at every load of the week), for the page to offer."""
    files = [store.require("transactions", w) for w in store.partitions("transactions") if w < week][-4:]
    if not files:
        return []
    listing = "[" + ", ".join(f"'{f}'" for f in files) + "]"
    con = store.connect()
    try:
        rows = con.execute(
            f"SELECT customer_key, count(*) AS n FROM read_parquet({listing}) GROUP BY 1 HAVING count(*) >= 3 "
            f"ORDER BY hash(customer_key), customer_key LIMIT {EXAMPLE_CUSTOMERS * 4}"
        ).fetchall()
    finally:
        con.close()
    chosen = []
    for key, count in rows:
        i = customers.position(int(key))
        if i is None or stored.rows(int(key)) is None:
            continue
        age = customers.ages[i]
        chosen.append({"customer_id": str(customers.ids[i]), "customer_key": int(key), "purchases_4_weeks": int(count),
                       "age": None if np.isnan(age) else int(age)})
        if len(chosen) == EXAMPLE_CUSTOMERS:
            break
    return chosen


def computed_key(customer_key: int, bought: Iterable[int], k: int) -> tuple:
    """Everything a kept computed list depends on in a week."""
    return (int(customer_key), tuple(bought), int(k))


class ComputedLists:
    """A bounded, least-recently-used map from (customer_key, online purchases, k) to the list's
    items. Thread-safe; an entry can never be stale, because everything the list depends on in a
    week is in its key."""

    def __init__(self, capacity: int = COMPUTED_LISTS) -> None:
        self.capacity = int(capacity)
        self._items: OrderedDict[tuple, list[dict]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> list[dict] | None:
        with self._lock:
            items = self._items.get(key)
            if items is not None:
                self._items.move_to_end(key)
            return items

    def put(self, key: tuple, items: list[dict]) -> None:
        if self.capacity <= 0:
            return
        with self._lock:
            self._items[key] = items
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)


class WeekState:
    """Everything the service answers from for one week; ``online`` is the one part that changes."""

    def __init__(self, recommender: OnDemandRecommender, stored: StoredLists, customers: CustomerIndex,
                 catalogue: Catalogue, examples: list[dict], computed_lists: int = COMPUTED_LISTS) -> None:
        self.recommender = recommender
        self.week: str = recommender.week
        self.cutoff: date = recommender.cutoff
        self.stored = stored
        self.customers = customers
        self.catalogue = catalogue
        self.examples = examples
        # customer_key -> articles bought online since the cut-off, in log order. Entries are replaced,
        # never mutated, so that a reader without the customer's lock sees a consistent tuple.
        self.online: dict[int, tuple[int, ...]] = {}
        self.computed = ComputedLists(computed_lists)
        self.loaded_at = time.time()
        self._users = 0
        self._retired = False
        self._lock = threading.Lock()

    def enter(self) -> None:
        with self._lock:
            self._users += 1

    def leave(self) -> None:
        with self._lock:
            self._users -= 1
            done = self._retired and self._users == 0
        if done:
            self._close()

    def retire(self) -> None:
        """No new requests will use this state; it closes when the last one leaves."""
        with self._lock:
            self._retired = True
            done = self._users == 0
        if done:
            self._close()

    def _close(self) -> None:
        self.recommender.close()
        log.info("week %s: retired", self.week)


@dataclass(frozen=True)
class Who:
    key: int
    customer_id: str
    known: bool


# ------------------------------------------------------------------------------------------------
# The service.
# ------------------------------------------------------------------------------------------------


class RecommendationService:
    """The served week, online purchases, reloads; every answer is a JSON-ready dict.

    ``week``: the week to serve (default: the newest with recommendations). A chosen week stays
    served; otherwise the service follows the store: every ``reload_seconds`` (0: never) a poller
    thread looks for a newer week with recommendations and swaps it in. ``computed_lists``: how many
    computed lists a week keeps (0: none). ``group``: the workers of a multi-worker server this
    service is one of (None: the only one); its poller then also follows the reload requests the
    other workers received, every ``FOLLOW_SECONDS``.
    """

    def __init__(self, store: HMStore, week: str | None = None, reload_seconds: float = 0.0,
                 metrics: ServiceMetrics | None = None, computed_lists: int = COMPUTED_LISTS,
                 group: WorkerGroup | None = None) -> None:
        self.store = store
        self.computed_lists = int(computed_lists)
        self.pinned_week = week
        self.reload_seconds = float(reload_seconds)
        self.metrics = metrics or ServiceMetrics()
        self.group = group
        self.events = EventLog(event_log_path(store))
        self.reload_requests = ReloadRequests(group.reload_file) if group is not None else None
        self.shared_lists = SharedLists(group.lists_file) if group is not None and self.computed_lists > 0 else None
        self._state: WeekState | None = None
        self._state_lock = threading.Lock()  # the reference swap vs taking a lease
        # Applying the log's events (catching up, recording, replaying at a reload) vs each other and
        # the swap: the served state's ``online``, ``_event_ids`` and ``_position`` change together.
        self._log_lock = threading.Lock()
        self._reload_lock = threading.RLock()  # one reload at a time; choose() holds it across reload + pin
        self._customer_locks = CustomerLocks(customer_locks_path(store), CUSTOMER_LOCKS)
        self._event_ids: set[str] = set()
        self._position = LogPosition()  # how far the served state has applied the log
        self._reload_seen: str | None = None  # the id of the newest reload request applied
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._poll_seconds = self.reload_seconds if group is None else min(self.reload_seconds or FOLLOW_SECONDS, FOLLOW_SECONDS)

    # ---- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Load the week (if the store has one) and start the poller. A worker that starts after a
        reload request of its server (uvicorn restarted it) serves the requested week."""
        if self.reload_requests is not None:
            request = self.reload_requests.current()
            if request is not None:
                self._reload_seen, self.pinned_week = request.id, request.week
        try:
            self.reload(self.pinned_week)
        except ServiceError as exc:
            if self.pinned_week is not None:
                raise
            log.warning("%s; serving files only until a week is materialized", exc.message)
        if self._poll_seconds > 0:
            self._stop.clear()
            self._poller = threading.Thread(target=self._poll, name="hm-serve-reload", daemon=True)
            self._poller.start()

    def stop(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=60)
            self._poller = None
        with self._state_lock:
            state, self._state = self._state, None
        if state is not None:
            state.retire()

    def _poll(self) -> None:
        scan_every = max(1, round(self.reload_seconds / self._poll_seconds)) if self.reload_seconds > 0 else 0
        ticks = 0
        while not self._stop.wait(self._poll_seconds):
            ticks += 1
            if self.reload_requests is not None:
                try:
                    self._follow_reload_request()
                    self._catch_up()
                except Exception:
                    log.exception("following the other workers failed; still serving %s", self.week)
            if not scan_every or ticks % scan_every:
                continue
            try:
                self.reload(newer_only=True)
            except ServiceError as exc:  # nothing materialized yet
                log.debug("%s", exc.message)
            except Exception:  # a week that fails to load is retried at the next poll
                log.exception("reload failed; still serving %s", self.week)

    def _follow_reload_request(self) -> None:
        """Apply the newest reload request another worker of the server received, once."""
        with self._reload_lock:
            request = self.reload_requests.current() if self.reload_requests is not None else None
            if request is None or request.id == self._reload_seen:
                return
            self._reload_seen = request.id
            try:
                self.reload(request.week)
            except Exception:  # not retried: the next request, or the poller's scan, moves on
                log.exception("reload request %s (week %s) failed; still serving %s", request.id,
                              request.week or "newest", self.week)
                return
            self.pinned_week = request.week

    @property
    def week(self) -> str | None:
        state = self._state
        return state.week if state is not None else None

    @contextmanager
    def lease(self) -> Iterator[WeekState]:
        """The served state, kept open until the caller is done with it."""
        with self._state_lock:
            state = self._state
            if state is None:
                raise ServiceError(503, f"no week is served yet: nothing under {self.store.asset_dir('recommendations')} "
                                        f"(materialize a week; the service picks it up)")
            state.enter()
        try:
            yield state
        finally:
            state.leave()

    # ---- reloads ---------------------------------------------------------------------------

    def choose(self, week: str | None = None) -> dict:
        """``POST /admin/reload``: serve ``week`` and stay on it, or (None) the newest week and follow
        the newer ones from then on."""
        with self._reload_lock:
            if self.reload_requests is not None:
                self._available(week)  # an unknown week is refused here, not passed on
                self._reload_seen = self.reload_requests.publish(week).id
            answer = self.reload(week)
            self.pinned_week = week
        return answer

    def _available(self, week: str | None) -> list[str]:
        """The weeks with recommendations; a 404 when ``week`` is given and not one of them."""
        available = self.store.partitions("recommendations")
        if week is not None and week not in available:
            raise ServiceError(404, f"week {week} has no recommendations in {self.store.asset_dir('recommendations')}"
                                    f" (materialized: {', '.join(available) or 'none'})")
        return available

    def reload(self, week: str | None = None, newer_only: bool = False) -> dict:
        """Serve ``week`` (default: the newest with recommendations) if it is not served already.
        Building the new state happens while the old one keeps answering. ``newer_only`` (the
        poller): only a week newer than the served one, and none while a week is chosen."""
        with self._reload_lock:
            previous = self.week
            if newer_only and self.pinned_week is not None:
                return {"week": previous, "previous": previous, "reloaded": False}
            available = self._available(week)
            if week is None:
                if not available:
                    raise ServiceError(503, f"no recommendations under {self.store.asset_dir('recommendations')} yet")
                week = newest_recommendation_week(self.store)
            if week == previous or (newer_only and previous is not None and week < previous):
                return {"week": previous, "previous": previous, "reloaded": False}
            started = time.perf_counter()
            try:
                fresh = self._build(week)
            except Exception:
                self.metrics.reloads.labels("failed").inc()
                raise
            with self._log_lock:
                self._replay(fresh)
                with self._state_lock:
                    old, self._state = self._state, fresh
            if old is not None:
                old.retire()
            seconds = time.perf_counter() - started
            self.metrics.reloads.labels("loaded").inc()
            self.metrics.served(week, len(fresh.online))
            log.info("serving week %s (was %s), loaded in %.1f s", week, previous, seconds)
            return {"week": week, "previous": previous, "reloaded": True, "seconds": round(seconds, 3)}

    def _build(self, week: str) -> WeekState:
        recommender = OnDemandRecommender(self.store, week)
        try:
            stored = StoredLists.load(self.store, week)
            customers = CustomerIndex.of(recommender.customers)
            catalogue = Catalogue.of(recommender.articles, self.store)
            examples = example_customers(self.store, week, customers, stored)
            recommender.warm()  # lazily opened indexes and first-call costs, off the request path
        except BaseException:
            recommender.close()
            raise
        return WeekState(recommender, stored, customers, catalogue, examples, self.computed_lists)

    def _replay(self, state: WeekState) -> None:
        """The online purchases since ``state``'s cut-off, from the whole event log; the position is
        then the end of what was read (caller holds the log lock)."""
        tail = self.events.read_since(LogPosition())
        assert tail is not None
        state.online = {}
        self._event_ids = set()
        self._follow(state, tail)

    def _catch_up(self, wait: bool = True) -> bool:
        """Apply the events appended to the log since the position (by another worker, or any other
        writer) to the served state. A stat when there are none. ``wait=False`` (on the event loop):
        False, with nothing done, when that would mean waiting for a lock (the log is being written,
        or this process applies events right now)."""
        if not self.events.changed_since(self._position):
            return True
        if not self._log_lock.acquire(blocking=wait):
            return False
        try:
            state = self._state
            if state is None:
                return True
            tail = self.events.read_since(self._position, wait=wait)
            if tail is None:
                return False
            self._follow(state, tail)
        finally:
            self._log_lock.release()
        return True

    def _follow(self, state: WeekState, tail: LogTail) -> None:
        """Apply ``tail`` (read from the position) to ``state`` (caller holds the log lock)."""
        if tail.restarted:
            log.warning("%s was replaced or cut short: its online purchases are read again from the start", self.events.path)
            state.online = {}
            self._event_ids = set()
        self._apply(state, tail.events)
        self._position = tail.position
        self.metrics.online_customers.set(len(state.online))

    def _apply(self, state: WeekState, events: Iterable[PurchaseEvent]) -> None:
        """Count ``events`` (in log order; the first of each event_id) as their customers' online
        purchases, those since the cut-off (caller holds the log lock)."""
        added: dict[int, list[int]] = {}
        for event in events:
            if event.event_id in self._event_ids:
                continue
            self._event_ids.add(event.event_id)
            article = int(event.article_id)
            if event.t_dat < state.cutoff:
                continue
            if article not in state.catalogue:
                log.warning("event %s: article %s is not in the articles table; ignored", event.event_id, article)
                continue
            added.setdefault(int(event.customer_key), []).append(article)
        for key, articles in added.items():
            state.online[key] = (*state.online.get(key, ()), *articles)

    # ---- customers -------------------------------------------------------------------------

    def _customer_lock(self, customer_id: str) -> AbstractContextManager[None]:
        """The customer's lock, across the threads and processes of every server on the store."""
        key = direct_key(customer_id)
        return self._customer_locks.hold(customer_id if key is None else str(key))

    @staticmethod
    def _split(overrides: dict) -> tuple[float | None, dict]:
        attributes = dict(overrides)
        age = attributes.pop("age", None)
        return age, attributes

    def _who(self, state: WeekState, customer_id: str, overrides: dict) -> Who:
        age, attributes = self._split(overrides)
        try:
            found = state.recommender.customer(customer_id, age=age, attributes=attributes)
        except ValueError as exc:
            raise ServiceError(422, str(exc)) from None
        return Who(int(found.key), str(found.customer_id), bool(found.known))

    def _stored_answer(self, state: WeekState, customer_id: str, k: int) -> dict | None:
        """The stored list, when it is the answer (known customer, no online purchase, k rows stored)."""
        key = direct_key(customer_id)
        if key is None or state.online.get(key):
            return None
        canonical = state.customers.customer_id(key)
        rows = state.stored.rows(key)
        if canonical is None or rows is None or len(rows) < k:
            return None
        stored = state.stored
        items = [
            state.catalogue.item(
                int(stored.articles[i]), rank=int(stored.ranks[i]), score=_number(stored.scores[i]),
                retrievers=list(stored.names(int(stored.proposed[i]))),
            )
            for i in rows[:k]
        ]
        return self._answer(state, Who(key, canonical, True), "stored", items)

    def _kept_answer(self, state: WeekState, customer_id: str, k: int) -> dict | None:
        """A known customer's list computed with their online purchases so far, if it is kept."""
        key = direct_key(customer_id)
        bought = state.online.get(key) if key is not None else None
        canonical = state.customers.customer_id(key) if bought else None
        items = self._kept(state, computed_key(key, bought, k), wait=False) if canonical is not None else None
        if items is None:
            return None
        self.metrics.computed_lists.labels(result="hit").inc()
        return self._answer(state, Who(key, canonical, True), "online", items)

    def _kept(self, state: WeekState, key: tuple, wait: bool = True) -> list[dict] | None:
        """The kept list of ``key``: this worker's, or one another worker computed since."""
        items = state.computed.get(key)
        if items is None and self.shared_lists is not None:
            for week, shared_key, shared_items in self.shared_lists.taken(wait=wait):
                if week == state.week:
                    state.computed.put(shared_key, shared_items)
            items = state.computed.get(key)
        return items

    def _answer(self, state: WeekState, who: Who, source: str, items: list[dict]) -> dict:
        self.metrics.recommendations.labels(source).inc()
        return {
            "week": state.week,
            "customer_id": who.customer_id,
            "customer_key": who.key,
            "known": who.known,
            "source": source,
            "bought_online": [format_article_id(a) for a in state.online.get(who.key, ())],
            "items": items,
        }

    def _computed(self, state: WeekState, customer_id: str, k: int, overrides: dict, what_if: tuple[int, ...] = ()) -> dict:
        who = self._who(state, customer_id, overrides)
        bought = (*state.online.get(who.key, ()), *what_if)
        key = None if overrides or what_if else computed_key(who.key, bought, k)
        items = self._kept(state, key) if key is not None else None
        if key is not None:
            self.metrics.computed_lists.labels(result="hit" if items is not None else "miss").inc()
        if items is None:
            age, attributes = self._split(overrides)
            try:
                frame = state.recommender.recommend(customer_id, bought=bought, age=age, attributes=attributes, k=k)
            except ValueError as exc:
                raise ServiceError(422, str(exc)) from None
            items = [
                state.catalogue.item(
                    int(row.article_id), rank=int(row.rank), score=_number(row.score),
                    retrievers=[n for n in str(row.retrievers).split(", ") if n],
                )
                for row in frame.itertuples(index=False)
            ]
            if key is not None:
                state.computed.put(key, items)
                if self.shared_lists is not None:
                    self.shared_lists.publish(state.week, key, items)
        source = "what_if" if what_if else "online" if who.known or bought else "cold_start"
        return self._answer(state, who, source, items)

    # ---- the API ---------------------------------------------------------------------------

    def ready_recommendations(self, customer_id: str, k: int, overrides: dict) -> dict | None:
        """The answer when nothing needs computing — the stored list, or the list computed before with
        the customer's online purchases so far — else None (then ``recommendations`` computes it): no
        blocking work, callable on the event loop."""
        check_customer_id(customer_id)
        if overrides or not self._catch_up(wait=False):
            return None
        with self.lease() as state:
            return self._stored_answer(state, customer_id, k) or self._kept_answer(state, customer_id, k)

    def recommendations(
        self, customer_id: str, k: int = K, overrides: dict | None = None, what_if: Iterable[str | int] = ()
    ) -> dict:
        """The customer's list; ``what_if``: articles imagined bought after the online ones (the
        answer's source is then ``what_if``; nothing is recorded)."""
        check_customer_id(customer_id)
        overrides = overrides or {}
        imagined = tuple(parse_article(a) for a in what_if)
        self._catch_up()
        with self.lease() as state:
            unknown = [a for a in imagined if a not in state.catalogue]
            if unknown:
                raise ServiceError(422, f"unknown article(s): {', '.join(format_article_id(a) for a in unknown)}")
            if not overrides and not imagined:
                stored = self._stored_answer(state, customer_id, k)
                if stored is not None:
                    return stored
            return self._computed(state, customer_id, k, overrides, imagined)

    def purchase(self, customer_id: str, articles: Iterable[str | int], event_id: str | None = None,
                 price: float | None = None, sales_channel_id: int | None = None, k: int = K,
                 overrides: dict | None = None) -> dict:
        """Record the purchases (appended to the event log before anything else) and answer the
        customer's list recomputed with every online purchase since the cut-off. A repeated
        ``event_id`` is not recorded again; the answer is the current list. Several articles under
        one ``event_id`` are events ``<event_id>/0``, ``<event_id>/1`` …

        The customer's lock spans catching up with the log, the append and the recomputation: one
        customer's purchases are applied, and answered, in log order, whichever worker gets them;
        other customers' run in parallel. The event_id is checked, and the events appended, under
        the log's lock after catching up with it: a duplicate is refused whoever recorded the first."""
        check_customer_id(customer_id)
        overrides = overrides or {}
        bought = [parse_article(a) for a in articles]
        if not bought:
            raise ServiceError(422, "no articles to record: give a non-empty 'articles' list (or one 'article')")
        with self._customer_lock(customer_id):
            while True:
                with self.lease() as state:
                    unknown = [a for a in bought if a not in state.catalogue]
                    if unknown:
                        raise ServiceError(422, f"unknown article(s): {', '.join(format_article_id(a) for a in unknown)}")
                    who = self._who(state, customer_id, overrides)
                    ids = [event_id] if event_id and len(bought) == 1 else [
                        f"{event_id}/{i}" if event_id else new_event_id() for i in range(len(bought))
                    ]
                    with self._log_lock:
                        if state is not self._state:
                            continue  # a reload swapped weeks meanwhile: record against the new one
                        with self.events.locked() as locked:
                            self._follow(state, locked.read_since(self._position))
                            if ids[0] in self._event_ids:
                                self.metrics.duplicates.inc()
                            else:
                                self._record(state, locked, who, bought, ids, price, sales_channel_id)
                    answer = self._computed(state, customer_id, k, overrides)
                    answer["source"] = "online"
                    return answer

    def _record(self, state: WeekState, events_log: LockedLog, who: Who, bought: list[int], ids: list[str],
                price: float | None, sales_channel_id: int | None) -> None:
        """Append the events durably, then count them as the customer's (caller holds the log lock
        and the locked log, caught up with)."""
        recorded_at = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        events = [
            PurchaseEvent(
                event_id=event_id, customer_id=who.customer_id, customer_key=who.key, article_id=article,
                t_dat=state.cutoff, price=price, sales_channel_id=sales_channel_id or ONLINE_CHANNEL,
                week=state.week, recorded_at=recorded_at,
            )
            for event_id, article in zip(ids, bought)
        ]
        position = events_log.append(events)
        self._apply(state, events)
        self._position = position
        self.metrics.purchases.inc(len(events))
        self.metrics.online_customers.set(len(state.online))

    def why(self, customer_id: str, article: str, overrides: dict | None = None) -> dict:
        """Why ``article`` is (or is not) in the customer's list: the recommender's explanation."""
        check_customer_id(customer_id)
        overrides = overrides or {}
        article_id = parse_article(article)
        self._catch_up()
        with self.lease() as state:
            if article_id not in state.catalogue:
                raise ServiceError(404, f"unknown article {format_article_id(article_id)}: not in the articles table")
            who = self._who(state, customer_id, overrides)
            age, attributes = self._split(overrides)
            try:
                reason = state.recommender.explain(customer_id, article_id, bought=state.online.get(who.key, ()), age=age, attributes=attributes)
            except ValueError as exc:
                raise ServiceError(404 if "unknown article" in str(exc) else 422, str(exc)) from None
            return {
                "week": state.week,
                "customer_id": who.customer_id,
                "customer_key": who.key,
                "known": who.known,
                "article": state.catalogue.item(article_id),
                "rank": None if reason.get("rank") is None else int(reason["rank"]),
                "score": _number(reason.get("score")),
                "candidate": bool(reason.get("candidate")),
                "retrievers": [
                    {"retriever": str(r["retriever"]), "rank": None if r.get("rank") is None else int(r["rank"]),
                     "score": _number(r.get("score"))}
                    for r in reason.get("retrievers", [])
                ],
                "contributions": [
                    {"feature": str(c["feature"]), "value": _number(c.get("value")), "contribution": _number(c["contribution"])}
                    for c in reason.get("contributions", [])
                ],
                "bias": _number(reason.get("bias")),
            }

    def history(self, customer_id: str, limit: int = HISTORY_SIZE) -> dict:
        """The customer's purchases, newest first: the online ones since the cut-off, then the newest
        ``limit`` before it."""
        check_customer_id(customer_id)
        self._catch_up()
        with self.lease() as state:
            key = direct_key(customer_id)
            canonical = state.customers.customer_id(key) if key is not None else None
            who = Who(key, canonical, True) if canonical is not None else self._who(state, customer_id, {})
            online = [
                state.catalogue.item(a, t_dat=state.cutoff.isoformat(), online=True)
                for a in reversed(state.online.get(who.key, ()))
            ]
            before = state.recommender.newest_purchases(who.key, limit) if who.known else pd.DataFrame()
            earlier = [
                state.catalogue.item(int(row.article_id), t_dat=pd.Timestamp(row.t_dat).date().isoformat(),
                                     online=False, price=_number(row.price))
                for row in before.itertuples(index=False)
            ]
            return {"week": state.week, "cutoff": state.cutoff.isoformat(), "customer_id": who.customer_id,
                    "customer_key": who.key, "known": who.known, "purchases": online + earlier}

    def examples(self) -> dict:
        with self.lease() as state:
            return {"week": state.week, "customers": state.examples}

    def image(self, article: str) -> Path:
        article_id = parse_article(article.removesuffix(".jpg"))
        with self.lease() as state:
            if article_id not in state.catalogue:
                raise ServiceError(404, f"unknown article {format_article_id(article_id)}")
            path = state.catalogue.images.get(article_id)
        if path is None:
            raise ServiceError(404, f"article {format_article_id(article_id)} has no image")
        path = self.store.fetch(path)
        if not path.is_file():
            raise ServiceError(404, f"the image of article {format_article_id(article_id)} is gone ({path})")
        return path

    def health(self) -> dict:
        state = self._state
        return {"status": "ok", "store": str(self.store.root), "week": state.week if state else None,
                "cutoff": state.cutoff.isoformat() if state else None,
                "loaded_at": datetime.fromtimestamp(state.loaded_at, timezone.utc).isoformat(timespec="seconds") if state else None,
                "worker": os.getpid(), "workers": self.group.count if self.group is not None else 1}
