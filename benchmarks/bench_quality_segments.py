"""Where the gap to the oracle is: MAP@12 of the stored recommendations and of the oracle over the
week's buyers, split by how many purchases each made before the week; and the week's purchases by
kind (a re-buy, another colour of a product bought before, an article that never sold before the
week, a buyer without history, anything else) with the share of each found by the oracle's 12, the
ranker's 12 and the capped candidates; and MAP@12 of both over what the history can speak to (the
buyers with history, their purchases of articles that sold before the week).

The oracle (hm-synth's ``oracle.csv``) knows every customer's latent style, also of those who never
bought; the pipeline sees only their attributes. Splitting the buyers by the length of their
history shows how much of the gap is there and how much among customers whose history speaks.

    python benchmarks/bench_quality_segments.py --home HOME --data-dir DATA_DIR [--home ... --data-dir ...]

HOME is a world's ``HM_HOME`` kept by ``bench_quality.py --keep-homes`` (its recommendations and
transactions of the newest week the oracle covers), DATA_DIR the world's data set (its ``oracle.csv``).
"""

from __future__ import annotations

import sys
from pathlib import Path

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


def segments(home: Path, data_dir: Path) -> list[dict]:
    store = HMStore(home=str(home))
    con = store.connect()
    con.execute(f"CREATE VIEW customers AS SELECT * FROM read_parquet('{store.require('customers')}')")
    week = pd.read_csv(data_dir / "oracle.csv", usecols=["week"])["week"].max()
    truth = pd.read_parquet(store.require("transactions", week), columns=["customer_key", "article_id"])
    recs = pd.read_parquet(store.require("recommendations", week), columns=["customer_key", "article_id", "rank"])
    oracle = load_oracle(con, data_dir / "oracle.csv", week)
    earlier = [f"'{store.require('transactions', w)}'" for w in stored_history_weeks(store) if parse_week(w) < parse_week(week)]
    counts = con.execute(
        f"SELECT customer_key, count(*) AS n FROM read_parquet([{', '.join(earlier)}]) GROUP BY customer_key"
    ).df().set_index("customer_key")["n"]
    con.close()
    buyers = pd.Series(truth["customer_key"].unique())
    history = buyers.map(counts).fillna(0)
    rows = []
    for label, low, high in SEGMENTS:
        keys = buyers[history.between(low, high)]
        part = truth[truth["customer_key"].isin(keys)]
        ranker_map = map_at_k(recs[recs["customer_key"].isin(keys)], part)
        oracle_map = map_at_k(oracle[oracle["customer_key"].isin(keys)], part)
        rows.append({"home": home.name, "week": week, "purchases before": label, "buyers": len(keys),
                     "ranker": ranker_map, "oracle": oracle_map, "ranker / oracle": ranker_map / oracle_map if oracle_map else None})
    return rows


def purchase_kinds(home: Path, data_dir: Path) -> list[dict]:
    store = HMStore(home=str(home))
    con = store.connect()
    con.execute(f"CREATE VIEW customers AS SELECT * FROM read_parquet('{store.require('customers')}')")
    week = pd.read_csv(data_dir / "oracle.csv", usecols=["week"])["week"].max()
    earlier = [f"'{store.require('transactions', w)}'" for w in stored_history_weeks(store) if parse_week(w) < parse_week(week)]
    con.execute(f"CREATE VIEW history AS SELECT * FROM read_parquet([{', '.join(earlier)}])")
    con.execute(f"CREATE VIEW week_articles AS SELECT article_id, product_code FROM read_parquet('{store.require('articles')}')")
    con.register("oracle_rows", load_oracle(con, data_dir / "oracle.csv", week)[["customer_key", "article_id"]])
    found = con.execute(
        f"""
        WITH truth AS (SELECT DISTINCT customer_key, article_id FROM read_parquet('{store.require('transactions', week)}')),
        bought AS (SELECT DISTINCT h.customer_key, h.article_id, a.product_code FROM history h JOIN week_articles a USING (article_id))
        SELECT CASE
                   WHEN EXISTS (SELECT 1 FROM bought b WHERE b.customer_key = t.customer_key AND b.article_id = t.article_id)
                       THEN 're-buy'
                   WHEN EXISTS (SELECT 1 FROM bought b WHERE b.customer_key = t.customer_key AND b.product_code = a.product_code)
                       THEN 'other colour of a product bought'
                   WHEN NOT EXISTS (SELECT 1 FROM history h WHERE h.article_id = t.article_id) THEN 'never sold before'
                   WHEN NOT EXISTS (SELECT 1 FROM history h WHERE h.customer_key = t.customer_key) THEN 'buyer without history'
                   ELSE 'other' END AS kind,
               count(*) AS purchases,
               avg(CASE WHEN o.article_id IS NULL THEN 0 ELSE 1 END) AS "in oracle's 12",
               avg(CASE WHEN r.article_id IS NULL THEN 0 ELSE 1 END) AS "in ranker's 12",
               avg(CASE WHEN c.article_id IS NULL THEN 0 ELSE 1 END) AS "in candidates"
        FROM truth t JOIN week_articles a USING (article_id)
        LEFT JOIN oracle_rows o USING (customer_key, article_id)
        LEFT JOIN read_parquet('{store.require('recommendations', week)}') r USING (customer_key, article_id)
        LEFT JOIN read_parquet('{store.require('pair_features', week)}') c USING (customer_key, article_id)
        GROUP BY kind ORDER BY kind
        """
    ).df()
    con.close()
    found.insert(0, "home", home.name)
    found.insert(2, "share", found["purchases"] / found["purchases"].sum())
    return found.to_dict("records")


def observable(home: Path, data_dir: Path) -> dict:
    store = HMStore(home=str(home))
    con = store.connect()
    con.execute(f"CREATE VIEW customers AS SELECT * FROM read_parquet('{store.require('customers')}')")
    week = pd.read_csv(data_dir / "oracle.csv", usecols=["week"])["week"].max()
    truth = pd.read_parquet(store.require("transactions", week), columns=["customer_key", "article_id"])
    recs = pd.read_parquet(store.require("recommendations", week), columns=["customer_key", "article_id", "rank"])
    oracle = load_oracle(con, data_dir / "oracle.csv", week)
    earlier = [f"'{store.require('transactions', w)}'" for w in stored_history_weeks(store) if parse_week(w) < parse_week(week)]
    history = con.execute(f"SELECT DISTINCT customer_key, article_id FROM read_parquet([{', '.join(earlier)}])").df()
    con.close()
    seen = truth[truth["article_id"].isin(history["article_id"]) & truth["customer_key"].isin(history["customer_key"])]
    row: dict = {"home": home.name, "week": week}
    for name, part in (("all buyers", truth), ("with history, articles sold before", seen)):
        ranker_map = map_at_k(recs[recs["customer_key"].isin(part["customer_key"])], part)
        oracle_map = map_at_k(oracle[oracle["customer_key"].isin(part["customer_key"])], part)
        row.update({f"ranker, {name}": ranker_map, f"oracle, {name}": oracle_map, f"ranker / oracle, {name}": ranker_map / oracle_map})
    return row


def main() -> int:
    homes = world_homes(__doc__.splitlines()[0])
    print(f"Machine: {machine()}")
    rows = [row for home, data_dir in homes for row in segments(home, data_dir)]
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".4f"))
    print()
    rows = [row for home, data_dir in homes for row in purchase_kinds(home, data_dir)]
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".3f"))
    print()
    print(pd.DataFrame([observable(home, data_dir) for home, data_dir in homes]).to_markdown(index=False, floatfmt=".4f"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
