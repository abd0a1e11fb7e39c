"""Measure a generated (or real) data set against the real aggregates.

    python -m hm_assets.synthetic.validate OUT_DIR [--signals]

Uses DuckDB over the CSV files, so it also works on the full-size data set. Definitions:

- duplicate_group_share: share of (t_dat, customer_id, article_id) groups with more than one row;
- repurchase_article_within_weeks[i]: of distinct (customer, article, day) purchases made at
  least 3 weeks before the last day, the share re-bought by the same customer on a later day
  within 7*(i+1) days; repurchase_product_*: the same per product_code;
- inactive_last_3_months_share: customers (in customers.csv) with no purchase in the last 91 days;
- top_article_share: the best-selling article's share of all rows.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from .vocab import load_vocab

TXN_COLUMNS = {"t_dat": "DATE", "customer_id": "VARCHAR", "article_id": "VARCHAR", "price": "DOUBLE",
               "sales_channel_id": "INTEGER"}


def connect(data_dir: str | Path) -> duckdb.DuckDBPyConnection:
    data_dir = Path(data_dir)
    con = duckdb.connect()
    con.execute("SET preserve_insertion_order=false")
    con.execute("SET memory_limit='4GB'")
    con.execute("SET threads=2")
    cols = ", ".join(f"'{k}': '{v}'" for k, v in TXN_COLUMNS.items())
    con.execute(f"CREATE VIEW t AS SELECT * FROM read_csv('{data_dir / 'transactions_train.csv'}', header=true, "
                f"columns={{{cols}}})")
    con.execute(f"CREATE VIEW a AS SELECT * FROM read_csv('{data_dir / 'articles.csv'}', header=true, all_varchar=true)")
    con.execute(f"CREATE VIEW c AS SELECT * FROM read_csv('{data_dir / 'customers.csv'}', header=true, all_varchar=true)")
    return con


def _shares(con, sql: str) -> dict:
    return {str(k): round(float(v), 5) for k, v in con.execute(sql).fetchall()}


def measure(data_dir: str | Path) -> dict:
    con = connect(data_dir)
    m: dict = {}
    n, first, last, mean_price, ch2 = con.execute(
        "SELECT count(*), min(t_dat), max(t_dat), avg(price), avg((sales_channel_id = 2)::INT) FROM t").fetchone()
    m.update(rows=int(n), first_day=str(first), last_day=str(last), mean_price=round(mean_price, 6),
             channel_2_share=round(ch2, 4))
    con.execute("CREATE TEMP TABLE g AS SELECT t_dat, customer_id, article_id, count(*) AS n FROM t GROUP BY ALL")
    m["duplicate_group_share"] = round(con.execute("SELECT avg((n > 1)::INT) FROM g").fetchone()[0], 4)
    m["rows_per_customer_day"] = round(con.execute(
        "SELECT avg(s) FROM (SELECT sum(n) s FROM g GROUP BY t_dat, customer_id)").fetchone()[0], 3)
    # shares by article attributes
    con.execute("CREATE TEMP TABLE ta AS SELECT g.*, a.product_type_name, a.product_group_name, a.index_group_name, "
                "a.colour_group_name, a.product_code FROM g JOIN a USING (article_id)")
    for col in ("index_group_name", "product_group_name", "product_type_name", "colour_group_name"):
        m[f"txn_share_{col}"] = _shares(con, f"SELECT {col}, sum(n) / (SELECT sum(n) FROM ta) s FROM ta GROUP BY 1 ORDER BY 2 DESC LIMIT 12")
        m[f"cat_share_{col}"] = _shares(con, f"SELECT {col}, count(*) / (SELECT count(*) FROM a) s FROM a GROUP BY 1 ORDER BY 2 DESC LIMIT 12")
    top = [int(x[0]) for x in con.execute("SELECT sum(n) FROM g GROUP BY article_id ORDER BY 1 DESC LIMIT 200").fetchall()]
    m["top_article_share"] = round(top[0] / n, 5)
    m["top10_article_share"] = round(sum(top[:10]) / n, 5)
    k = max(1, int(round(0.0019 * con.execute("SELECT count(*) FROM a").fetchone()[0])))
    m["top_0.19pct_articles_share"] = round(sum(top[:k]) / n, 4)
    m["articles_sold_share"] = round(con.execute(
        "SELECT count(DISTINCT article_id) FROM g").fetchone()[0] / con.execute("SELECT count(*) FROM a").fetchone()[0], 4)
    # repurchase
    for level, key in (("article", "article_id"), ("product", "product_code")):
        r = con.execute(f"""
            WITH e AS (SELECT DISTINCT customer_id, {key} AS k, t_dat FROM ta),
            l AS (SELECT t_dat, lead(t_dat) OVER (PARTITION BY customer_id, k ORDER BY t_dat) AS nxt FROM e)
            SELECT avg(coalesce(nxt - t_dat <= 7, false)::INT), avg(coalesce(nxt - t_dat <= 14, false)::INT),
                   avg(coalesce(nxt - t_dat <= 21, false)::INT)
            FROM l WHERE t_dat <= DATE '{last}' - 21""").fetchone()
        m[f"repurchase_{level}_within_weeks"] = [round(float(x or 0), 4) for x in r]
    # customers
    m["customers"] = con.execute("SELECT count(*) FROM c").fetchone()[0]
    m["customers_with_transactions"] = con.execute("SELECT count(DISTINCT customer_id) FROM t").fetchone()[0]
    m["inactive_last_3_months_share"] = round(1 - con.execute(
        f"SELECT count(DISTINCT customer_id) FROM t WHERE t_dat > DATE '{last}' - 91").fetchone()[0] / m["customers"], 4)
    lw = con.execute(f"SELECT count(*), count(DISTINCT customer_id) FROM t WHERE t_dat > DATE '{last}' - 7").fetchone()
    m["last_week"] = {"transactions": lw[0], "customers": lw[1]}
    m["new_customers_last_4_weeks"] = con.execute(
        f"SELECT count(*) FROM (SELECT customer_id, min(t_dat) f FROM t GROUP BY 1) WHERE f > DATE '{last}' - 28").fetchone()[0]
    ages = con.execute("SELECT TRY_CAST(age AS INTEGER) FROM c").fetchnumpy()
    age = list(ages.values())[0]
    m["age_bucket_share"] = _age_buckets(age)
    m["club_member_status"] = _shares(con, "SELECT coalesce(club_member_status, ''), count(*) / (SELECT count(*) FROM c) FROM c GROUP BY 1")
    m["fashion_news_frequency"] = _shares(con, "SELECT coalesce(fashion_news_frequency, ''), count(*) / (SELECT count(*) FROM c) FROM c GROUP BY 1")
    # weekday profile (share of rows per weekday) and correlation of the daily curve with the real one
    daily = con.execute("SELECT t_dat, count(*) FROM t GROUP BY 1 ORDER BY 1").fetchdf()
    m["daily_rows_min_max"] = [int(daily.iloc[:, 1].min()), int(daily.iloc[:, 1].max())]
    return m


def _age_buckets(age) -> dict:
    age = np.asarray(age, dtype=float) if not hasattr(age, "mask") else np.where(age.mask, np.nan, age.data).astype(float)
    n = len(age)
    out = {"unknown": np.isnan(age).sum() / n}
    out["under_20"] = (age < 20).sum() / n
    for lo in (20, 30, 40, 50):
        out[f"{lo}_to_{lo + 9}"] = ((age >= lo) & (age < lo + 10)).sum() / n
    out["60_plus"] = (age >= 60).sum() / n
    return {k: round(float(v), 4) for k, v in out.items()}


def signals(data_dir: str | Path, truth_dir: str | Path | None = None) -> dict:
    """Evidence of the latent structure (pandas; meant for tiny/small data sets)."""
    data_dir = Path(data_dir)
    t = pd.read_csv(data_dir / "transactions_train.csv", dtype={"article_id": str}, parse_dates=["t_dat"])
    a = pd.read_csv(data_dir / "articles.csv", dtype={"article_id": str})
    t = t.merge(a[["article_id", "product_type_name", "colour_group_name", "section_name", "product_code"]],
                on="article_id")
    out: dict = {}
    last = t.t_dat.max()
    test_start = last - pd.Timedelta(days=6)
    train, test = t[t.t_dat < test_start], t[t.t_dat >= test_start]
    # customers' purchases concentrate on their own past product types / colours / sections
    for col in ("product_type_name", "colour_group_name", "section_name"):
        past = train.groupby(["customer_id", col]).size().rename("n").reset_index()
        past["share"] = past.n / past.groupby("customer_id").n.transform("sum")
        tt = test.merge(past[["customer_id", col, "share"]], on=["customer_id", col], how="inner")
        known = test[test.customer_id.isin(past.customer_id)]
        glob = train[col].value_counts(normalize=True)
        chance = known[col].map(glob).mean()  # expected share under no personalisation
        own = tt.share.sum() / max(len(known), 1)
        out[f"own_history_share_{col}"] = {"personal": round(float(own), 4), "chance": round(float(chance), 4)}
    # MAP@12: last-week popularity vs a simple personal recommender (repurchase + own-section popularity)
    out["map12"] = _map_baselines(train, test)
    if truth_dir is not None:
        tr = pd.read_csv(Path(truth_dir) / "articles_truth.csv", dtype={"article_id": str})
        out["outfit_lift"] = _outfit_lift(t, tr)
    return out


def _map_at_12(recs: dict, truth: pd.Series) -> float:
    scores = []
    for cid, bought in truth.items():
        rec = recs.get(cid, recs.get(None, []))
        hits, s = 0, 0.0
        for i, art in enumerate(rec[:12]):
            if art in bought and art not in rec[:i]:
                hits += 1
                s += hits / (i + 1)
        scores.append(s / min(len(bought), 12))
    return float(np.mean(scores)) if scores else 0.0


def _map_baselines(train: pd.DataFrame, test: pd.DataFrame) -> dict:
    """Last-week popularity vs a simple attribute-affinity recommender: the customer's recent
    purchases (re-buys), then last-2-weeks popular articles weighted by the customer's own shares
    of product type and section (the kind of feature a ranker uses)."""
    truth = test.groupby("customer_id").article_id.agg(lambda s: set(s))
    end = train.t_dat.max()
    last_week = train[train.t_dat > end - pd.Timedelta(days=7)]
    pop = last_week.article_id.value_counts().index.tolist()
    popular = {None: pop[:12]}
    recent_pop = train[train.t_dat > end - pd.Timedelta(days=14)].article_id.value_counts()
    cand = recent_pop.index[:600]
    art = train.drop_duplicates("article_id").set_index("article_id").loc[cand, ["product_type_name", "section_name"]]
    hist = train[train.customer_id.isin(truth.index)]
    personal = {None: pop[:12]}
    recent = hist[hist.t_dat > end - pd.Timedelta(days=14)].sort_values("t_dat", ascending=False)
    own_recent = recent.groupby("customer_id").article_id.agg(lambda s: list(dict.fromkeys(s))[:3])
    type_share = hist.groupby("customer_id").product_type_name.value_counts(normalize=True)
    sec_share = hist.groupby("customer_id").section_name.value_counts(normalize=True)
    base = np.log(recent_pop.loc[cand].to_numpy(float))
    for cid in truth.index:
        if cid not in type_share.index.get_level_values(0):
            continue
        ts = type_share.loc[cid]
        ss = sec_share.loc[cid]
        score = base + 2.0 * np.log(0.05 + art.product_type_name.map(ts).fillna(0).to_numpy()) \
            + 2.0 * np.log(0.05 + art.section_name.map(ss).fillna(0).to_numpy())
        rec = list(own_recent.get(cid, []))
        rec += [x for x in cand[np.argsort(-score)[:24]] if x not in rec]
        personal[cid] = rec[:12]
    p, q = _map_at_12(popular, truth), _map_at_12(personal, truth)
    return {"popularity": round(p, 5), "personal": round(q, 5), "ratio": round(q / max(p, 1e-9), 2)}


def _outfit_lift(t: pd.DataFrame, tr: pd.DataFrame) -> dict:
    """How often outfit partners are bought by the same customer on the same day, versus chance."""
    outfit = dict(zip(tr.article_id, tr.outfit))
    product = dict(zip(tr.article_id, tr.product_code))
    baskets = t.drop_duplicates(["t_dat", "customer_id", "article_id"]).groupby(["t_dat", "customer_id"]).article_id.agg(list)
    pairs_same_outfit = pairs_total = 0
    for arts in baskets:
        if len(arts) < 2:
            continue
        o = np.array([outfit[x] for x in arts])
        p = np.array([product[x] for x in arts])
        same = (o[:, None] == o[None, :]) & (o[:, None] >= 0) & (p[:, None] != p[None, :])
        diff_product = p[:, None] != p[None, :]
        pairs_same_outfit += int(np.triu(same, 1).sum())
        pairs_total += int(np.triu(diff_product, 1).sum())
    # chance: probability two random purchased items (different products) share an outfit
    sold = t.article_id.map(outfit)
    counts = sold[sold >= 0].value_counts()
    n = len(sold)
    chance = float(((counts / n) ** 2).sum())
    observed = pairs_same_outfit / max(pairs_total, 1)
    return {"observed": round(observed, 5), "chance": round(chance, 6), "lift": round(observed / max(chance, 1e-12), 1)}


def compare(m: dict) -> dict:
    """Pairs (synthetic, real) for the headline calibrations."""
    tg = load_vocab().targets
    return {
        "channel_2_share": (m["channel_2_share"], round(tg["channel_2_share"], 4)),
        "duplicate_group_share": (m["duplicate_group_share"], tg["duplicate_group_share"]),
        "mean_price": (m["mean_price"], round(tg["summary"]["avg_price"], 6)),
        "top_article_share": (m["top_article_share"], round(tg["top_article_share"], 5)),
        "repurchase_article_within_weeks": (m["repurchase_article_within_weeks"], tg["repurchase_article_within_weeks"]),
        "repurchase_product_within_weeks": (m["repurchase_product_within_weeks"], tg["repurchase_product_within_weeks"]),
        "inactive_last_3_months_share": (m["inactive_last_3_months_share"], tg["inactive_last_3_months_share"]),
        "index_group_txn_share": (m["txn_share_index_group_name"], {k: round(v, 4) for k, v in tg["index_group_txn_share"].items()}),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hm_assets.synthetic.validate")
    p.add_argument("data_dir")
    p.add_argument("--signals", action="store_true", help="also measure latent signals (small data sets only)")
    p.add_argument("--truth-dir", default=None)
    args = p.parse_args(argv)
    m = measure(args.data_dir)
    out = {"measures": m, "vs_real": compare(m)}
    if args.signals:
        out["signals"] = signals(args.data_dir, args.truth_dir)
    json.dump(out, sys.stdout, indent=1, default=str)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
