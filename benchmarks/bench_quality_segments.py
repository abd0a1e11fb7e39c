"""Where the gap to the oracle is: MAP@12 of the stored recommendations and of the oracle over the
week's buyers, split by how many purchases each made before the week; and the week's purchases by
kind (a re-buy, another colour of a product bought before, an article that never sold before the
week, a buyer without history, anything else) with the share of each found by the oracle's 12, the
ranker's 12 and the capped candidates; and MAP@12 of both over what the history can speak to (the
buyers with history, their purchases of articles that sold before the week); and, for the buyers
without history, what popularity by their attributes could reach at best: the scored week's own
bestsellers (known only in hindsight), overall and among the buyers with history of the same
5-year age band.

The oracle (hm-synth's ``oracle.csv``) knows every customer's latent style, also of those who never
bought; the pipeline sees only their attributes. Splitting the buyers by the length of their
history shows how much of the gap is there and how much among customers whose history speaks.

    python benchmarks/bench_quality_segments.py --home HOME --data-dir DATA_DIR [--home ... --data-dir ...]

HOME is a world's ``HM_HOME`` kept by ``bench_quality.py --keep-homes`` (its recommendations and
transactions of the newest week the oracle covers), DATA_DIR the world's data set (its ``oracle.csv``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd

from host import machine, world_homes

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hm_assets.pipeline.evaluation.evaluation import load_oracle  # noqa: E402
from hm_assets.pipeline.evaluation.metrics import map_at_k  # noqa: E402
from hm_assets.platform.history import stored_history_weeks  # noqa: E402
from hm_assets.platform.store import HMStore  # noqa: E402
from hm_assets.platform.weeks import parse_week  # noqa: E402

# purchases before the week: (label, lowest, highest)
SEGMENTS = [("none", 0, 0), ("1-5", 1, 5), ("6-20", 6, 20), ("over 20", 21, float("inf"))]


@dataclass
class ScoredWeek:
    """A world home's newest week the oracle covers: its purchases, the stored recommendations, the
    oracle's 12 and the earlier weeks' history, read once for every table."""

    home: Path
    week: str
    truth: pd.DataFrame
    recs: pd.DataFrame
    oracle: pd.DataFrame
    history: pd.DataFrame  # customer_key, article_id of every purchase before the week
    articles: pd.DataFrame  # article_id, product_code
    customers: pd.DataFrame  # customer_key, age
    candidates: Path


def scored_week(home: Path, data_dir: Path) -> ScoredWeek:
    store = HMStore(home=str(home))
    con = store.connect()
    con.execute(f"CREATE VIEW customers AS SELECT * FROM read_parquet('{store.require('customers')}')")
    week = pd.read_csv(data_dir / "oracle.csv", usecols=["week"])["week"].max()
    earlier = [f"'{store.require('transactions', w)}'" for w in stored_history_weeks(store) if parse_week(w) < parse_week(week)]
    history = con.execute(f"SELECT customer_key, article_id FROM read_parquet([{', '.join(earlier)}])").df()
    scored = ScoredWeek(
        home=home,
        week=week,
        truth=pd.read_parquet(store.require("transactions", week), columns=["customer_key", "article_id"]),
        recs=pd.read_parquet(store.require("recommendations", week), columns=["customer_key", "article_id", "rank"]),
        oracle=load_oracle(con, data_dir / "oracle.csv", week),
        history=history,
        articles=pd.read_parquet(store.require("articles"), columns=["article_id", "product_code"]),
        customers=pd.read_parquet(store.require("customers"), columns=["customer_key", "age"]),
        candidates=store.require("candidates", week),
    )
    con.close()
    return scored


def ranker_and_oracle(scored: ScoredWeek, truth: pd.DataFrame) -> tuple[float, float]:
    """MAP@12 of the stored recommendations and of the oracle against ``truth`` (a part of the week's)."""
    buyers = truth["customer_key"]
    return (map_at_k(scored.recs[scored.recs["customer_key"].isin(buyers)], truth),
            map_at_k(scored.oracle[scored.oracle["customer_key"].isin(buyers)], truth))


def segments(scored: ScoredWeek) -> list[dict]:
    counts = scored.history["customer_key"].value_counts()
    buyers = pd.Series(scored.truth["customer_key"].unique())
    history = buyers.map(counts).fillna(0)
    rows = []
    for label, low, high in SEGMENTS:
        keys = buyers[history.between(low, high)]
        ranker_map, oracle_map = ranker_and_oracle(scored, scored.truth[scored.truth["customer_key"].isin(keys)])
        rows.append({"home": scored.home.name, "week": scored.week, "purchases before": label, "buyers": len(keys),
                     "ranker": ranker_map, "oracle": oracle_map, "ranker / oracle": ranker_map / oracle_map if oracle_map else None})
    return rows


def purchase_kinds(scored: ScoredWeek) -> list[dict]:
    con = duckdb.connect()
    for name, frame in (("history", scored.history), ("oracle_rows", scored.oracle[["customer_key", "article_id"]]),
                        ("recs", scored.recs), ("truth_rows", scored.truth), ("week_articles", scored.articles)):
        con.register(name, frame)
    found = con.execute(
        f"""
        WITH truth AS (SELECT DISTINCT t.customer_key, t.article_id, a.product_code FROM truth_rows t JOIN week_articles a USING (article_id)),
        bought AS (SELECT DISTINCT h.customer_key, h.article_id, a.product_code FROM history h JOIN week_articles a USING (article_id))
        SELECT CASE
                   WHEN EXISTS (SELECT 1 FROM bought b WHERE b.customer_key = t.customer_key AND b.article_id = t.article_id)
                       THEN 're-buy'
                   WHEN EXISTS (SELECT 1 FROM bought b WHERE b.customer_key = t.customer_key AND b.product_code = t.product_code)
                       THEN 'other colour of a product bought'
                   WHEN NOT EXISTS (SELECT 1 FROM history h WHERE h.article_id = t.article_id) THEN 'never sold before'
                   WHEN NOT EXISTS (SELECT 1 FROM history h WHERE h.customer_key = t.customer_key) THEN 'buyer without history'
                   ELSE 'other' END AS kind,
               count(*) AS purchases,
               avg(CASE WHEN o.article_id IS NULL THEN 0 ELSE 1 END) AS "in oracle's 12",
               avg(CASE WHEN r.article_id IS NULL THEN 0 ELSE 1 END) AS "in ranker's 12",
               avg(CASE WHEN c.article_id IS NULL THEN 0 ELSE 1 END) AS "in candidates"
        FROM truth t
        LEFT JOIN oracle_rows o USING (customer_key, article_id)
        LEFT JOIN recs r USING (customer_key, article_id)
        LEFT JOIN read_parquet('{scored.candidates}') c USING (customer_key, article_id)
        GROUP BY kind ORDER BY kind
        """
    ).df()
    con.close()
    found.insert(0, "home", scored.home.name)
    found.insert(2, "share", found["purchases"] / found["purchases"].sum())
    return found.to_dict("records")


def observable(scored: ScoredWeek) -> dict:
    truth, history = scored.truth, scored.history
    seen = truth[truth["article_id"].isin(history["article_id"]) & truth["customer_key"].isin(history["customer_key"])]
    row: dict = {"home": scored.home.name, "week": scored.week}
    for name, part in (("all buyers", truth), ("with history, articles sold before", seen)):
        ranker_map, oracle_map = ranker_and_oracle(scored, part)
        row.update({f"ranker, {name}": ranker_map, f"oracle, {name}": oracle_map, f"ranker / oracle, {name}": ranker_map / oracle_map})
    return row


def cold_start_bound(scored: ScoredWeek) -> dict:
    """MAP@12 over the buyers without history: the stored lists, the oracle, and two lists that know
    the scored week's purchases: its 12 bestsellers, and those of the buyers with history of the
    customer's 5-year age band (customers without an age form a band of their own)."""
    cold = scored.truth[~scored.truth["customer_key"].isin(scored.history["customer_key"])]
    warm = scored.truth[scored.truth["customer_key"].isin(scored.history["customer_key"])]
    keys = cold["customer_key"].unique()
    band = (pd.to_numeric(scored.customers.set_index("customer_key")["age"], errors="coerce") // 5).fillna(-1)

    def lists(tops: dict, bands: pd.Series) -> pd.DataFrame:
        rows = [(key, article, rank) for key, b in zip(keys, bands)
                for rank, article in enumerate(tops.get(b, []), start=1)]
        return pd.DataFrame(rows, columns=["customer_key", "article_id", "rank"])

    overall = scored.truth["article_id"].value_counts().index[:12]
    by_band = {b: g["article_id"].value_counts().index[:12] for b, g in warm.assign(band=warm["customer_key"].map(band)).groupby("band")}
    ranker_map, oracle_map = ranker_and_oracle(scored, cold)
    return {
        "home": scored.home.name, "week": scored.week, "buyers without history": len(keys),
        "ranker": ranker_map, "oracle": oracle_map,
        "the week's 12 bestsellers (hindsight)": map_at_k(lists({0: overall}, pd.Series(0, index=keys)), cold),
        "the week's 12 bestsellers of the age band (hindsight)": map_at_k(lists(by_band, band.reindex(keys).fillna(-1)), cold),
    }


def main() -> int:
    homes = world_homes(__doc__.splitlines()[0])
    print(f"Machine: {machine()}")
    weeks = [scored_week(home, data_dir) for home, data_dir in homes]
    print(pd.DataFrame([row for scored in weeks for row in segments(scored)]).to_markdown(index=False, floatfmt=".4f"))
    print()
    print(pd.DataFrame([row for scored in weeks for row in purchase_kinds(scored)]).to_markdown(index=False, floatfmt=".3f"))
    print()
    print(pd.DataFrame([observable(scored) for scored in weeks]).to_markdown(index=False, floatfmt=".4f"))
    print()
    print(pd.DataFrame([cold_start_bound(scored) for scored in weeks]).to_markdown(index=False, floatfmt=".4f"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
