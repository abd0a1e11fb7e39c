"""Ingest: validated, normalised snapshots of the Kaggle files as Parquet under HM_HOME."""

from __future__ import annotations

import fcntl
import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageOps

from hm_assets.pipeline.ingest.data_contract import (
    TRANSACTIONS_FILE,
    InputDataError,
    image_path,
    load_articles,
    load_customers,
    load_transactions,
)
from hm_assets.platform.object_store import ObjectStore
from hm_assets.platform.store import HMStore, write_parquet
from hm_assets.platform.weeks import WEEK

ARTICLE_OUTPUT_COLUMNS = """
    CAST(article_id AS INTEGER) AS article_id, CAST(product_code AS INTEGER) AS product_code, prod_name,
    product_type_no, product_type_name, product_group_name, graphical_appearance_no,
    graphical_appearance_name, colour_group_code, colour_group_name, perceived_colour_value_id,
    perceived_colour_value_name, perceived_colour_master_id, perceived_colour_master_name,
    department_no, department_name, index_code, index_name, index_group_no, index_group_name,
    section_no, section_name, garment_group_no, garment_group_name,
    coalesce(detail_desc, '') AS detail_desc
"""


def normalised_articles(con: duckdb.DuckDBPyConnection, data_dir: Path) -> duckdb.DuckDBPyRelation:
    load_articles(con, data_dir)
    return con.sql(f"SELECT {ARTICLE_OUTPUT_COLUMNS} FROM articles_raw ORDER BY article_id")


def normalised_customers(con: duckdb.DuckDBPyConnection, data_dir: Path) -> duckdb.DuckDBPyRelation:
    load_customers(con, data_dir)
    return con.sql(
        """
        SELECT customer_key, customer_id,
               CAST(coalesce(FN, 0) > 0 AS TINYINT) AS fn,
               CAST(coalesce(Active, 0) > 0 AS TINYINT) AS active,
               coalesce(nullif(upper(trim(club_member_status)), ''), 'UNKNOWN') AS club_member_status,
               coalesce(nullif(upper(trim(fashion_news_frequency)), ''), 'UNKNOWN') AS fashion_news_frequency,
               CAST(round(age) AS SMALLINT) AS age,
               coalesce(postal_code, '') AS postal_code
        FROM customers_raw ORDER BY line
        """
    )


def file_fingerprint(path: Path) -> str:
    stat = path.stat()
    text = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    return hashlib.sha1(text.encode()).hexdigest()[:16]


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive inter-process lock, so concurrent runs build shared staging once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def staged_transactions(store: HMStore, data_dir: Path) -> Path:
    """The whole transactions file validated and typed once per file version (cached).

    Weekly partitions are then cheap selections from it; a file that fails validation
    raises InputDataError and writes nothing.
    """
    source = Path(data_dir) / TRANSACTIONS_FILE
    staging_dir = store.root / "staging"
    if not source.exists():
        raise InputDataError(source, "file not found")
    target = staging_dir / f"transactions-{file_fingerprint(source)}.parquet"
    with file_lock(staging_dir / "transactions.lock"):
        if target.exists():
            return target
        con = store.connect()
        try:
            load_transactions(con, data_dir)
            relation = con.sql(
                """
                SELECT t_dat, ('0x' || right(customer_id, 15))::UBIGINT::BIGINT AS customer_key,
                       CAST(article_id AS INTEGER) AS article_id, CAST(price AS FLOAT) AS price,
                       CAST(sales_channel_id AS TINYINT) AS sales_channel_id
                FROM transactions_raw ORDER BY line
                """
            )
            write_parquet(relation, target)  # a node-local cache, never shared: no upload
        finally:
            con.close()
        for old in staging_dir.glob("transactions-*.parquet"):
            if old != target:
                old.unlink(missing_ok=True)
    return target


@dataclass(frozen=True)
class WeekIngest:
    rows: int
    customers: int
    unknown_customer_rows: int
    unknown_article_rows: int
    first_day: date | None
    last_day: date | None
    online_events_ingested: int = 0
    online_events_already_in_csv: int = 0
    online_events_dropped_unknown: int = 0


def write_week(
    con: duckdb.DuckDBPyConnection,
    staging: Path,
    articles: Path,
    customers: Path,
    week: date,
    target: Path,
    events: pd.DataFrame | None = None,
    objects: ObjectStore | None = None,
) -> WeekIngest:
    """Write the transactions of one week, dropping (and counting) unknown ids.

    ``events`` (``read_events_frame``: the online purchase log, first of each event_id) adds the
    week's online purchases that the CSV does not already hold. With none in the week the file is
    exactly what the CSV alone gives. ``objects``: the store's object store, where ``target`` is
    uploaded.
    """
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE week_rows AS
        SELECT t.*, c.customer_key IS NOT NULL AS known_customer, a.article_id IS NOT NULL AS known_article
        FROM read_parquet(?) t
        LEFT JOIN (SELECT customer_key FROM read_parquet(?)) c USING (customer_key)
        LEFT JOIN (SELECT article_id FROM read_parquet(?)) a USING (article_id)
        WHERE t.t_dat >= ? AND t.t_dat < ?
        """,
        [str(staging), str(customers), str(articles), week, week + WEEK],
    )
    unknown_customers, unknown_articles = con.execute(
        "SELECT count(*) FILTER (WHERE NOT known_customer), count(*) FILTER (WHERE NOT known_article) FROM week_rows"
    ).fetchall()[0]
    kept_sql = (
        "SELECT t_dat, customer_key, article_id, price, sales_channel_id FROM week_rows "
        "WHERE known_customer AND known_article"
    )
    order = "t_dat, customer_key, article_id"
    online = _OnlineCounts(0, 0, 0)
    week_events = _events_of_week(events, week)
    if week_events is not None:
        online = _stage_online_rows(con, week_events, staging, articles, customers)
        kept_sql += " UNION ALL SELECT t_dat, customer_key, article_id, price, sales_channel_id FROM online_rows"
        # An event may tie with a CSV row of its (day, customer, article): the whole row decides
        # their order, so the file stays reproducible. (Without events the order is unchanged.)
        order += ", price, sales_channel_id"
    rows = write_parquet(con.sql(f"{kept_sql} ORDER BY {order}"), target, objects)
    customers_n, first, last = con.execute(
        f"SELECT count(DISTINCT customer_key), min(t_dat), max(t_dat) FROM ({kept_sql})"
    ).fetchall()[0]
    return WeekIngest(
        rows,
        int(customers_n),
        int(unknown_customers),
        int(unknown_articles),
        first,
        last,
        online_events_ingested=online.ingested,
        online_events_already_in_csv=online.already_in_csv,
        online_events_dropped_unknown=online.dropped_unknown,
    )


@dataclass(frozen=True)
class _OnlineCounts:
    ingested: int
    already_in_csv: int
    dropped_unknown: int


def _events_of_week(events: pd.DataFrame | None, week: date) -> pa.Table | None:
    """The week's events as a typed Arrow table with their log order (``seq``); None if there are none."""
    if events is None or events.empty:
        return None
    events = events.drop_duplicates("event_id", keep="first")
    days = events["t_dat"]
    selected = events[(days >= week) & (days < week + WEEK)]
    if selected.empty:
        return None
    return pa.table(
        {
            "seq": pa.array(range(len(selected)), pa.int64()),
            "event_id": pa.array(selected["event_id"], pa.string()),
            "t_dat": pa.array(selected["t_dat"], pa.date32()),
            "customer_key": pa.array(selected["customer_key"], pa.int64()),
            "article_id": pa.array(selected["article_id"], pa.int32()),
            "price": pa.array(selected["price"], pa.float32(), from_pandas=True),
            "sales_channel_id": pa.array(selected["sales_channel_id"], pa.int8()),
        }
    )


def _stage_online_rows(
    con: duckdb.DuckDBPyConnection, week_events: pa.Table, staging: Path, articles: Path, customers: Path
) -> _OnlineCounts:
    """Fill the temp table ``online_rows`` with the week's events to add; ``week_rows`` holds the CSV's.

    Unknown customers or articles drop an event first (counted); then each CSV row of a (day,
    customer, article) absorbs one event of that triple, in log order, since the shop may export an
    online purchase into the CSV later; the rest are added.
    """
    con.register("week_events_in", week_events)
    try:
        con.execute(
            """
            CREATE OR REPLACE TEMP TABLE week_events AS
            WITH known AS (
                SELECT e.*,
                       e.customer_key IN (SELECT customer_key FROM read_parquet(?))
                       AND e.article_id IN (SELECT article_id FROM read_parquet(?)) AS known
                FROM week_events_in e
            ), ranked AS (
                SELECT *, row_number() OVER (PARTITION BY t_dat, customer_key, article_id ORDER BY seq) AS nth
                FROM known WHERE known
            ), in_csv AS (
                SELECT t_dat, customer_key, article_id, count(*) AS csv_rows FROM week_rows GROUP BY ALL
            )
            SELECT r.*, r.nth <= coalesce(c.csv_rows, 0) AS already_in_csv
            FROM ranked r LEFT JOIN in_csv c USING (t_dat, customer_key, article_id)
            """,
            [str(customers), str(articles)],
        )
    finally:
        con.unregister("week_events_in")
    # A missing price becomes the article's median price among the week's CSV rows, else among all
    # the CSV's rows (the live week has no CSV rows yet), else the median of every CSV price.
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE online_rows AS
        WITH added AS (SELECT * FROM week_events WHERE NOT already_in_csv),
        unpriced AS (SELECT DISTINCT article_id FROM added WHERE price IS NULL),
        week_median AS (
            SELECT article_id, median(price) AS p FROM week_rows WHERE article_id IN (SELECT article_id FROM unpriced)
            GROUP BY article_id
        ),
        all_median AS (
            SELECT article_id, median(price) AS p FROM read_parquet(?)
            WHERE article_id IN (SELECT article_id FROM unpriced) GROUP BY article_id
        )
        SELECT t_dat, customer_key, article_id,
               CAST(coalesce(price, w.p, a.p, (SELECT median(price) FROM read_parquet(?))) AS FLOAT) AS price,
               sales_channel_id
        FROM added LEFT JOIN week_median w USING (article_id) LEFT JOIN all_median a USING (article_id)
        """,
        [str(staging), str(staging)],
    )
    total = week_events.num_rows
    known, already = con.execute("SELECT count(*), count(*) FILTER (WHERE already_in_csv) FROM week_events").fetchall()[0]
    return _OnlineCounts(int(known - already), int(already), int(total - known))


# The probe keeps each readable image at this size; it is the trained image encoder's input size
# (embeddings.image.TRAINED_DEFAULT_IMG_SIZE), so the encoder's training and embedding take it from there.
THUMBNAIL_SIZE = 64
THUMBNAIL_CHUNK = 4096


def padded_pixels(image: Image.Image, size: int) -> np.ndarray:
    """(size, size, 3) uint8 of an opened image: RGB, aspect kept, padded white. JPEGs decode at the
    smallest scale at least ``size`` (draft mode), every byte still read. Raises if it does not decode."""
    image.draft("RGB", (size, size))
    image = image.convert("RGB")
    image = ImageOps.pad(image, (size, size), method=Image.Resampling.BILINEAR, color=(255, 255, 255))
    return np.asarray(image, dtype=np.uint8)


def load_image(path: str | Path, size: int) -> np.ndarray:
    """``padded_pixels`` of the image file at ``path``."""
    with Image.open(path) as image:
        return padded_pixels(image, size)


def probe_image(path: Path, size: int = THUMBNAIL_SIZE) -> tuple[bool, int, int, np.ndarray | None]:
    """Whether the whole file decodes, its own size, and its ``padded_pixels`` at ``size`` (None if
    it does not decode). A real 1166x1750 JPEG takes about 3.3 ms; a full-size decode took 6.2."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            return True, int(width), int(height), padded_pixels(image, size)
    except Exception:  # any decoding failure means "no usable image", never a crash
        return False, 0, 0, None


def image_key(size_bytes: int, mtime_ns: int) -> str:
    """What identifies one version of an image file."""
    return f"{size_bytes}:{mtime_ns}"


@dataclass(frozen=True)
class Thumbnails:
    """The catalogue's readable images decoded at ``size``: each one's path, the key of the file
    version decoded (``image_key``), and its pixels, (n, size, size, 3) uint8."""

    size: int
    paths: list[str]
    keys: list[str]
    pixels: np.ndarray

    def to_table(self) -> pa.Table:
        width = self.size * self.size * 3
        data = pa.py_buffer(np.ascontiguousarray(self.pixels, dtype=np.uint8))
        pixels = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(self.paths), [None, data])
        table = pa.table({"path": pa.array(self.paths, pa.string()), "image_key": pa.array(self.keys, pa.string()), "pixels": pixels})
        return table.replace_schema_metadata({b"hm.thumbnail_size": str(self.size).encode()})

    @classmethod
    def from_table(cls, table: pa.Table) -> "Thumbnails":
        size = int((table.schema.metadata or {}).get(b"hm.thumbnail_size", b"0"))
        column = table.column("pixels").combine_chunks()
        width = size * size * 3
        data = np.frombuffer(column.buffers()[1], dtype=np.uint8)[column.offset * width : (column.offset + len(column)) * width]
        return cls(size, table.column("path").to_pylist(), table.column("image_key").to_pylist(), data.reshape(len(column), size, size, 3))

    @classmethod
    def read(cls, path: Path) -> "Thumbnails":
        return cls.from_table(pq.read_table(path))

    def rows(self) -> dict[tuple[str, str], int]:
        return {(p, k): i for i, (p, k) in enumerate(zip(self.paths, self.keys))}


def catalogue_images(data_dir: Path, article_ids: list[int], previous: pd.DataFrame | None = None) -> pd.DataFrame:
    """article_id -> image path and whether it decodes (``catalogue_with_thumbnails``' table)."""
    return catalogue_with_thumbnails(data_dir, article_ids, previous)[0]


def catalogue_with_thumbnails(
    data_dir: Path,
    article_ids: list[int],
    previous: pd.DataFrame | None = None,
    workers: int = 2,
    previous_thumbnails: Thumbnails | None = None,
) -> tuple[pd.DataFrame, Thumbnails]:
    """article_id -> image path and whether it decodes, and the readable images' ``Thumbnails``.

    A file unchanged since ``previous`` keeps its verdict, and its thumbnail where
    ``previous_thumbnails`` holds it; the others are decoded in ``workers`` threads (Pillow releases
    the GIL while decoding)."""
    known: dict[str, tuple[int, int, bool, int, int]] = {}
    if previous is not None and len(previous):
        for row in previous.itertuples(index=False):
            known[row.path] = (row.size_bytes, row.mtime_ns, row.readable, row.width, row.height)
    kept = previous_thumbnails if previous_thumbnails is not None and previous_thumbnails.size == THUMBNAIL_SIZE else None
    kept_rows = kept.rows() if kept is not None else {}
    records: list[list] = []
    sources: list[int] = []  # per record: the row of its kept thumbnail, -1 to decode, -2 for none
    for article_id in article_ids:
        path = image_path(data_dir, article_id)
        try:
            stat = path.stat()
        except OSError:
            records.append([article_id, str(path), False, False, 0, 0, 0, 0])
            sources.append(-2)
            continue
        cached = known.get(str(path))
        row = kept_rows.get((str(path), image_key(stat.st_size, stat.st_mtime_ns)), -1)
        if cached and cached[0] == stat.st_size and cached[1] == stat.st_mtime_ns and (not cached[2] or row >= 0):
            readable, width, height = cached[2], cached[3], cached[4]
            sources.append(row if readable else -2)
        else:
            readable, width, height = False, 0, 0
            sources.append(-1)
        records.append([article_id, str(path), True, readable, width, height, stat.st_size, stat.st_mtime_ns])
    # every image that may have a thumbnail gets a slot; the slots of those that do not decode are
    # squeezed out at the end, in place (the full catalogue's thumbnails are 1.3 GB)
    slots = [i for i, source in enumerate(sources) if source != -2]
    stacked = np.empty((len(slots), THUMBNAIL_SIZE, THUMBNAIL_SIZE, 3), dtype=np.uint8)
    filled = np.zeros(len(slots), dtype=bool)
    to_probe: list[int] = []
    for slot, i in enumerate(slots):
        if sources[i] >= 0:
            stacked[slot], filled[slot] = kept.pixels[sources[i]], True
        else:
            to_probe.append(slot)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for start in range(0, len(to_probe), THUMBNAIL_CHUNK):
            chunk = to_probe[start : start + THUMBNAIL_CHUNK]
            paths = [Path(records[slots[slot]][1]) for slot in chunk]
            probed = pool.map(probe_image, paths) if workers > 1 and len(paths) > 8 else map(probe_image, paths)
            for slot, (readable, width, height, thumbnail) in zip(chunk, probed):
                records[slots[slot]][3:6] = [readable, width, height]
                if thumbnail is not None:
                    stacked[slot], filled[slot] = thumbnail, True
    kept_slots = np.flatnonzero(filled)
    for position, slot in enumerate(kept_slots):
        if position != slot:
            stacked[position] = stacked[slot]
    table = pd.DataFrame.from_records(
        records,
        columns=["article_id", "path", "exists", "readable", "width", "height", "size_bytes", "mtime_ns"],
    ).astype({"article_id": "int32", "width": "int32", "height": "int32", "size_bytes": "int64", "mtime_ns": "int64"})
    with_thumbnail = [slots[slot] for slot in kept_slots]
    thumbnails = Thumbnails(
        THUMBNAIL_SIZE,
        [records[i][1] for i in with_thumbnail],
        [image_key(records[i][6], records[i][7]) for i in with_thumbnail],
        stacked[: len(kept_slots)],
    )
    return table, thumbnails


__all__ = [
    "THUMBNAIL_SIZE",
    "Thumbnails",
    "catalogue_images",
    "catalogue_with_thumbnails",
    "load_image",
    "normalised_articles",
    "normalised_customers",
    "staged_transactions",
    "write_week",
]
