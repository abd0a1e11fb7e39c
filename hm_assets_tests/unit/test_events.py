"""The online purchase event log: durable appends, torn tails, concurrency, and its weekly ingestion."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import zlib
from collections import Counter
from datetime import date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq
import pytest

from hm_assets.definitions import build_definitions
from hm_assets.defs.resources import HMDataset, HMStore
from hm_assets.defs.runner import RANGE_END_TAG, RANGE_START_TAG
from hm_assets.pipeline.ingest.ingest import staged_transactions, write_week
from hm_assets.serving.on_demand import customer_key_from_id
from hm_assets.serving.events import (
    CustomerLocks,
    EventLog,
    EventLogError,
    LogPosition,
    PurchaseEvent,
    event_log_path,
    new_event_id,
    read_events_frame,
)
from hm_assets.platform.settings import PROJECT_ROOT
from hm_assets.platform.store import write_parquet
from hm_assets.platform.weeks import WEEK
from hm_assets.pipeline.ingest.data_range import scan_data_range

HEX_CUSTOMER = "0" * 49 + "123456789abcdef"


def event(
    customer_id: str = HEX_CUSTOMER,
    article_id: int = 108775015,
    day: date = date(2026, 11, 20),
    price: float | None = 0.0339,
    channel: int = 2,
    event_id: str | None = None,
    customer_key: int | None = None,
) -> PurchaseEvent:
    return PurchaseEvent(
        event_id=event_id or new_event_id(),
        customer_id=customer_id,
        customer_key=customer_key_from_id(customer_id) if customer_key is None else customer_key,
        article_id=article_id,
        t_dat=day,
        price=price,
        sales_channel_id=channel,
        week="2026-11-18",
        recorded_at="2026-11-20T09:30:00.000000+00:00",
    )


def raw_ids(path: Path) -> list[str]:
    """The event_id of every complete line, duplicates included (read() would hide them)."""
    return [json.loads(line)["event_id"] for line in path.read_bytes().split(b"\n")[:-1] if line]


def test_round_trip_torn_last_line_and_garbage_in_the_middle(tmp_path: Path):
    log = EventLog(tmp_path / "home" / "events" / "purchases.jsonl")
    assert log.read() == [] and log.event_ids() == set()
    written = [event(price=None), event(channel=1, customer_id="new customer", customer_key=-42), event(day=date(2026, 11, 24))]
    log.append(written[:1])
    log.append(written[1:])
    assert log.read() == written and log.torn_lines == 0

    # a duplicate event_id: the first one stays
    log.append([event(event_id=written[0].event_id, article_id=1)])
    assert log.read() == written

    # a write killed half-way leaves half a line at the end: ignored and counted
    with log.path.open("ab") as handle:
        handle.write(event().to_json().encode()[:40])
    assert log.read() == written and log.torn_lines == 1
    # the next append cuts the torn bytes off rather than glueing its own line to them
    later = event(article_id=2)
    log.append([later])
    assert log.read() == [*written, later] and log.torn_lines == 0

    frame = read_events_frame(log.path)
    assert list(frame["event_id"]) == [e.event_id for e in [*written, later]]
    assert frame.dtypes.astype(str).to_dict() == {
        "event_id": "object", "t_dat": "object", "customer_key": "int64", "article_id": "int32",
        "price": "float32", "sales_channel_id": "int8",
    }
    assert frame["t_dat"].iloc[2] == date(2026, 11, 24) and pd.isna(frame["price"].iloc[0])
    empty = read_events_frame(tmp_path / "missing.jsonl")
    assert empty.empty and empty.dtypes.equals(frame.dtypes)

    # an event that would not read back as written (a datetime for the day) is refused, not logged
    with pytest.raises(ValueError, match="read back"):
        log.append([event(day=datetime(2026, 11, 20, 12))])
    assert log.read() == [*written, later]

    lines = log.path.read_text().splitlines(keepends=True)
    log.path.write_text(lines[0] + "{not json\n" + "".join(lines[1:]))
    with pytest.raises(EventLogError, match=rf"{log.path.name}: line 2\b"):
        log.read()


def test_a_reader_catches_up_with_complete_lines_only(tmp_path: Path):
    """``read_since`` hands a reader what was appended after its position: whole lines only; a torn
    tail is left (and its bytes are not counted), and once the next append has cut it off, the
    reader gets exactly the new lines from the same offset."""
    log = EventLog(tmp_path / "events" / "purchases.jsonl")
    start = log.read_since(LogPosition())
    assert start.events == [] and start.position == LogPosition() and not start.restarted
    assert not log.changed_since(start.position)
    first = [event(), event(article_id=2)]
    log.append(first)
    assert log.changed_since(start.position)
    tail = log.read_since(start.position)
    assert tail.events == first and not tail.torn and not tail.restarted
    assert tail.position.offset == log.path.stat().st_size and not log.changed_since(tail.position)
    assert log.read_since(tail.position).events == []

    with log.path.open("ab") as handle:  # a writer killed half-way through its line
        handle.write(event().to_json().encode()[:50])
    torn = log.read_since(tail.position)
    assert torn.events == [] and torn.torn and torn.position == tail.position
    assert log.changed_since(tail.position)  # looked at again next time: the bytes may grow into a line
    later = event(article_id=3)
    log.append([later])  # cuts the torn bytes off, then appends
    after = log.read_since(tail.position)
    assert after.events == [later] and not after.torn and not after.restarted
    assert after.position.offset == log.path.stat().st_size

    # a last complete line that is not an event is torn too: not consumed, cut off by the next append
    with log.path.open("ab") as handle:
        handle.write(b'{"not": "an event"}\n')
    garbage = log.read_since(after.position)
    assert garbage.events == [] and garbage.torn and garbage.position == after.position
    last = event(article_id=4)
    log.append([last])
    assert log.read_since(after.position).events == [last]
    assert log.read() == [*first, later, last] and log.torn_lines == 0

    # a duplicate event_id is in the raw tail (the reader keeps the first), read() keeps the first
    position = log.read_since(LogPosition()).position
    again = event(event_id=first[0].event_id, article_id=5)
    log.append([again])
    assert log.read_since(position).events == [again]
    assert log.read() == [*first, later, last]

    # the file replaced (or cut short) under the reader: everything again, from the start
    replacement = log.path.with_name("replacement.jsonl")
    EventLog(replacement).append([later])
    os.replace(replacement, log.path)
    restarted = log.read_since(position)
    assert restarted.restarted and restarted.events == [later]
    os.truncate(log.path, 0)
    assert log.read_since(restarted.position).restarted
    log.path.unlink()
    gone = log.read_since(restarted.position)
    assert gone.restarted and gone.events == [] and gone.position == LogPosition()


def test_a_reader_that_must_not_wait_is_told_so_while_the_log_is_written(tmp_path: Path):
    log = EventLog(tmp_path / "purchases.jsonl")
    log.append([event()])
    with log.locked() as locked:
        assert log.read_since(LogPosition(), wait=False) is None  # another open file: excluded in-process too
        tail = locked.read_since(LogPosition())
        assert len(tail.events) == 1
        position = locked.append([event(article_id=2)])
        assert position.offset == log.path.stat().st_size and position.file == tail.position.file
    assert len(log.read_since(LogPosition(), wait=False).events) == 2


def test_customer_locks_are_files_that_exclude_other_opens(tmp_path: Path):
    """A customer's lock is an flock on a bucket file chosen by a hash that every process computes
    alike (crc32, not hash()), opened per acquisition: it excludes another process, and another
    thread of this one."""
    locks = CustomerLocks(tmp_path / "events" / "locks", 512)
    assert locks.bucket("customer-1") == zlib.crc32(b"customer-1") % 512
    path = locks.folder / f"customer-{locks.bucket('customer-1'):04d}.lock"
    with locks.hold("customer-1"):
        fd = os.open(path, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        with CustomerLocks(locks.folder, 512).hold("customer-2"):  # another bucket: not held
            pass
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released at the end of the block
    finally:
        os.close(fd)


WRITER = textwrap.dedent(
    """
    import sys
    from datetime import date
    from pathlib import Path
    from hm_assets.serving.events import EventLog, PurchaseEvent, new_event_id

    log = EventLog(Path(sys.argv[1]))
    n = 0
    while True:
        # batches of 1..4 long lines, so that a kill can land inside a write
        batch = [
            PurchaseEvent(new_event_id(), "c" * 2000, -1, 108775015, date(2026, 11, 20), 0.05, 2,
                          "2026-11-18", "2026-11-20T00:00:00+00:00")
            for _ in range(1 + n % 4)
        ]
        log.append(batch)
        for e in batch:
            print(e.event_id, flush=True)
        n += 1
    """
)


def test_acknowledged_events_survive_sigkill(tmp_path: Path):
    path = tmp_path / "events" / "purchases.jsonl"
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    acknowledged: list[str] = []
    try:
        while len(acknowledged) < 300:
            line = writer.stdout.readline()
            if not line:
                pytest.fail(f"the writer died: {writer.stderr.read()[-2000:]}")
            acknowledged.append(line.strip())
        os.kill(writer.pid, signal.SIGKILL)
        assert writer.wait(timeout=30) == -signal.SIGKILL
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
        writer.stdout.close()
        writer.stderr.close()

    logged = raw_ids(path)
    assert set(acknowledged) <= set(logged)
    assert len(logged) == len(set(logged))
    log = EventLog(path)
    assert [e.event_id for e in log.read()] == logged
    # whatever the kill left at the end, appending goes on with a readable log
    extra = event()
    log.append([extra])
    assert log.read()[-1] == extra and log.torn_lines == 0


def test_concurrent_appends_from_threads_never_interleave(tmp_path: Path):
    path = tmp_path / "purchases.jsonl"
    shared = EventLog(path)  # threads 0-3 share an instance (its lock), 4-7 have their own (flock)
    batches = {t: [[event(article_id=1000 * t + 5 * b + i) for i in range(5)] for b in range(10)] for t in range(8)}
    errors: list[BaseException] = []

    def writer(thread: int) -> None:
        log = shared if thread < 4 else EventLog(path)
        try:
            for batch in batches[thread]:
                log.append(batch)
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors

    lines = path.read_text().splitlines()
    assert len(lines) == 400
    events = [PurchaseEvent.from_json(line) for line in lines]  # every line whole
    assert {e.event_id for e in events} == {e.event_id for bs in batches.values() for b in bs for e in b}
    order = [e.event_id for e in events]
    for batch in (b for bs in batches.values() for b in bs):  # each append is one contiguous write
        start = order.index(batch[0].event_id)
        assert order[start : start + 5] == [e.event_id for e in batch]


def _ingest(data: Path, home: Path, weeks: list[str]) -> dict[str, dict]:
    result = dg.materialize(
        [build_definitions().get_assets_def(a) for a in ("articles", "customers", "transactions")],
        resources={"dataset": HMDataset(data_dir=str(data)), "store": HMStore(home=str(home))},
        tags={RANGE_START_TAG: weeks[0], RANGE_END_TAG: weeks[-1]},
    )
    assert result.success
    found = {}
    for materialization in result.asset_materializations_for_node("transactions"):
        found[materialization.partition] = {k: v.value for k, v in materialization.metadata.items()}
    return found


def _todays_week(store: HMStore, data: Path, week: date, target: Path) -> None:
    """The weekly file as write_week wrote it before the event log existed (the reference bytes)."""
    con = store.connect()
    con.execute(
        """
        CREATE TEMP TABLE week_rows AS
        SELECT t.*, c.customer_key IS NOT NULL AS known_customer, a.article_id IS NOT NULL AS known_article
        FROM read_parquet(?) t
        LEFT JOIN (SELECT customer_key FROM read_parquet(?)) c USING (customer_key)
        LEFT JOIN (SELECT article_id FROM read_parquet(?)) a USING (article_id)
        WHERE t.t_dat >= ? AND t.t_dat < ?
        """,
        [
            str(staged_transactions(store, data)),
            str(store.require("customers")),
            str(store.require("articles")),
            week,
            week + WEEK,
        ],
    )
    kept = con.sql(
        """
        SELECT t_dat, customer_key, article_id, price, sales_channel_id FROM week_rows
        WHERE known_customer AND known_article ORDER BY t_dat, customer_key, article_id
        """
    )
    write_parquet(kept, target)
    con.close()


def rows(frame: pd.DataFrame) -> Counter:
    return Counter(frame.itertuples(index=False, name=None))


def test_online_purchases_join_their_week_once(tiny_copy: Path, tmp_path: Path):
    week = scan_data_range(tiny_copy).newest_week_with_truth
    weeks = [str(week - WEEK), str(week)]
    home = tmp_path / "home"
    store = HMStore(home=str(home))
    before = _ingest(tiny_copy, home, weeks)
    baseline = {w: store.asset_path("transactions", w).read_bytes() for w in weeks}
    for w in weeks:  # no event log: byte for byte what the CSV alone always gave
        reference = tmp_path / f"reference-{w}.parquet"
        _todays_week(store, tiny_copy, date.fromisoformat(w), reference)
        assert baseline[w] == reference.read_bytes()
        assert before[w]["online_events_ingested"] == before[w]["online_events_dropped_unknown"] == 0

    csv_week = pd.read_parquet(store.asset_path("transactions", str(week)))
    catalogue = pd.read_parquet(store.require("customers"))
    same = ["t_dat", "customer_key", "article_id"]
    bought_once = csv_week[~csv_week.duplicated(same, keep=False)]
    existing = bought_once.iloc[len(bought_once) // 2]
    # a known customer buys an article sold that week, on a day they bought nothing in the file
    buyer = catalogue[~catalogue["customer_key"].isin(csv_week["customer_key"])].iloc[0]
    bought = int(csv_week["article_id"].value_counts().index[0])
    day = week + timedelta(days=3)
    new = event(buyer["customer_id"], bought, day, price=None, channel=1)
    events = [
        new,
        event(buyer["customer_id"], bought + 1, day, event_id=new.event_id),  # a retried request
        event(catalogue.loc[catalogue["customer_key"] == existing["customer_key"], "customer_id"].iloc[0],
              int(existing["article_id"]), existing["t_dat"], price=float(existing["price"])),  # the file has it
        event(buyer["customer_id"], 999999999, day),  # unknown article
        event("a customer the shop has never seen", bought, day, customer_key=-7),  # unknown customer
    ]
    EventLog(event_log_path(store)).append(events)

    after = _ingest(tiny_copy, home, weeks)
    written = pq.ParquetFile(store.asset_path("transactions", str(week)))
    assert written.schema_arrow == pq.ParquetFile(store.asset_path("transactions", weeks[0])).schema_arrow
    frame = written.read().to_pandas()
    median = float(csv_week.loc[csv_week["article_id"] == bought, "price"].median())
    added = rows(frame) - rows(csv_week)
    assert len(added) == 1 and sum(added.values()) == 1 and not rows(csv_week) - rows(frame)
    ((t_dat, key, article, price, channel),) = added
    assert (t_dat, key, article, channel) == (day, customer_key_from_id(buyer["customer_id"]), bought, 1)
    assert price == pytest.approx(median)  # the missing price: the article's median that week
    assert frame.equals(frame.sort_values(["t_dat", "customer_key", "article_id"], kind="stable"))
    metadata = after[str(week)]
    assert metadata["online_events_ingested"] == 1
    assert metadata["online_events_already_in_csv"] == 1
    assert metadata["online_events_dropped_unknown"] == 2
    assert metadata["dagster/row_count"] == len(csv_week) + 1
    # the week without events is untouched
    assert store.asset_path("transactions", weeks[0]).read_bytes() == baseline[weeks[0]]
    assert after[weeks[0]]["online_events_ingested"] == 0

    # count-aware: one file row absorbs one event of its (day, customer, article); a second is new
    logged = read_events_frame(event_log_path(store))
    twice = pd.concat([logged[logged["event_id"] == events[2].event_id]] * 2, ignore_index=True)
    twice["event_id"] = ["first", "second"]
    staging = staged_transactions(store, tiny_copy)
    con = store.connect()
    result = write_week(
        con, staging, store.require("articles"), store.require("customers"), week, tmp_path / "twice.parquet", twice
    )
    assert (result.online_events_already_in_csv, result.online_events_ingested) == (1, 1)
    assert result.rows == len(csv_week) + 1

    # the live week has no file rows yet: a missing price is the article's median over the whole file
    live = week + WEEK
    first = logged.iloc[[0]].assign(t_dat=[live + timedelta(days=1)])
    result = write_week(
        con, staging, store.require("articles"), store.require("customers"), live, tmp_path / "live.parquet", first
    )
    con.close()
    assert (result.rows, result.online_events_ingested) == (1, 1)
    history = pd.read_parquet(staging)
    expected = float(history.loc[history["article_id"] == bought, "price"].median())
    assert float(pd.read_parquet(tmp_path / "live.parquet")["price"].iloc[0]) == pytest.approx(expected)
