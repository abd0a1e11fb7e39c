"""Derive the generator's package data from the real H&M reference material.

Developer tool, run once by hand; the generator itself never imports this module and never reads
the reference folder::

    python -m hm_assets.synthetic.build_vocab /work/shared/hm_reference

Writes compact vocabularies and calibration targets into ``hm_assets/synthetic/data/``:

- ``departments.csv``  department_no -> department/section/index/index group/garment group, as
  they co-occur in the real sample (a department_no determines all of them).
- ``dept_types.csv``   (department_no, product_type_no) pairs seen in the real sample with a
  catalogue weight fitted (iterative proportional fitting) so that the catalogue shares of
  product type, index group and section match the full-data aggregates.
- ``product_types.csv`` product type no/name/group, catalogue and transaction shares, a price
  level (median real price, in 1/59000 units) per type.
- ``colours.csv``      colour groups with catalogue and transaction shares; ``colour_combos.csv``
  the perceived colour value/master combinations seen per colour group.
- ``appearances.csv``  graphical appearances with catalogue shares.
- ``daily.csv``        real daily transaction counts and mean price for all 734 days.
- ``customers.json``   age pmf (per year, bucket shares of the full data), club / news / FN /
  Active shares, postal-code concentration.
- ``targets.json``     other calibration targets (channel split, duplicates, repurchase, top
  article share, index-group transaction shares, summary).
- ``text.json.gz``     per product type: real prod_names, name suffixes, first sentences and
  detail sentences of detail_desc; a global pool of name stems.
"""

from __future__ import annotations

import gzip
import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(__file__).resolve().parent / "data"
PRICE_UNIT = 59000.0


def _load(ref: Path):
    a = pd.read_csv(ref / "real_sample" / "articles.csv", dtype=str)
    a = a.drop(columns=[c for c in a.columns if c.startswith("Unnamed")])
    a["article_id"] = a.article_id.str.zfill(10)
    c = pd.read_csv(ref / "real_sample" / "customers.csv", dtype=str)
    t = pd.read_csv(ref / "real_sample" / "transactions_train.csv", dtype=str)
    t["article_id"] = t.article_id.str.zfill(10)
    agg = {p.stem.replace("kaggle_hm_personalized_", ""): pd.read_csv(p) for p in (ref / "full_data_aggregates").glob("*.csv")}
    return a, c, t, agg


def _mode(s: pd.Series):
    return s.value_counts().index[0]


def build(ref: Path, out: Path = DATA) -> None:
    out.mkdir(parents=True, exist_ok=True)
    a, c, t, agg = _load(ref)

    # ---- product types: one code per name (the most frequent one)
    type_no = a.groupby("product_type_name").product_type_no.agg(_mode)
    type_group = a.groupby("product_type_name").product_group_name.agg(_mode)
    a["product_type_no"] = a.product_type_name.map(type_no)
    a["product_group_name"] = a.product_type_name.map(type_group)
    cat = agg["product_type_metrics"].set_index("product_type_name").share
    txn = agg["transaction_product_type_metrics"].set_index("product_type_name").share
    t["k"] = np.round(t.price.astype(float) * PRICE_UNIT).astype(int)
    tm = t.merge(a[["article_id", "product_type_name", "product_group_name"]], on="article_id", how="inner")
    type_price = tm.groupby("product_type_name").k.median()
    group_price = tm.groupby("product_group_name").k.median()
    pt = pd.DataFrame({"product_type_name": type_no.index, "product_type_no": type_no.values.astype(int)})
    pt["product_group_name"] = pt.product_type_name.map(type_group)
    pt["cat_share"] = pt.product_type_name.map(cat).fillna(1e-5)
    pt["txn_share"] = pt.product_type_name.map(txn).fillna(1e-6)
    n_price = pt.product_type_name.map(tm.groupby("product_type_name").size()).fillna(0)
    price = pt.product_type_name.map(type_price)
    price = price.where(n_price >= 8, pt.product_group_name.map(group_price))
    pt["price_k"] = price.fillna(tm.k.median()).round().astype(int)
    pt = pt.sort_values("cat_share", ascending=False).reset_index(drop=True)
    pt.to_csv(out / "product_types.csv", index=False)

    # ---- departments
    dcols = ["department_no", "department_name", "section_no", "section_name", "index_code", "index_name",
             "index_group_no", "index_group_name", "garment_group_no", "garment_group_name"]
    dep = a[dcols].drop_duplicates("department_no").sort_values("department_no", key=lambda s: s.astype(int))
    dep.to_csv(out / "departments.csv", index=False)

    # ---- (department, type) catalogue weights fitted to the aggregates' margins (IPF)
    dt = a.groupby(["department_no", "product_type_no"]).size().rename("n").reset_index()
    dt["product_type_no"] = dt.product_type_no.astype(int)
    dt = dt.merge(dep[["department_no", "index_group_name", "section_name"]], on="department_no")
    dt = dt.merge(pt[["product_type_no", "product_type_name"]], on="product_type_no")
    w = dt.n.astype(float).to_numpy()
    margins = []
    for col, name in [("product_type_name", "product_type_metrics"), ("index_group_name", "index_group_metrics"),
                      ("section_name", "section_metrics")]:
        target = agg[name].set_index(agg[name].columns[0]).share
        keys = dt[col]
        # renormalise the target over the categories present in the sample
        present = target[target.index.isin(set(keys))]
        margins.append((keys.to_numpy(), present / present.sum()))
    for _ in range(200):
        for keys, target in margins:
            cur = pd.Series(w).groupby(keys).sum()
            cur = cur / cur.sum()
            ratio = (pd.Series(keys).map(target) / pd.Series(keys).map(cur)).fillna(1.0).to_numpy()
            w = w * ratio
    w = w / w.sum()
    dt["weight"] = np.round(w, 8)
    dt[["department_no", "product_type_no", "n", "weight"]].to_csv(out / "dept_types.csv", index=False)

    # ---- colours
    ccols = ["colour_group_code", "colour_group_name"]
    col = a[ccols].drop_duplicates("colour_group_code").sort_values("colour_group_code", key=lambda s: s.astype(int))
    ccat = agg["color_metrics"].set_index("colour_group_name").share
    ctxn = agg["transaction_color_metrics"].set_index("colour_group_name").share
    col["cat_share"] = col.colour_group_name.map(ccat).fillna(1e-5)
    col["txn_share"] = col.colour_group_name.map(ctxn).fillna(1e-6)
    col.to_csv(out / "colours.csv", index=False)
    combos = (a.groupby(["colour_group_code", "perceived_colour_value_id", "perceived_colour_value_name",
                         "perceived_colour_master_id", "perceived_colour_master_name"]).size().rename("n").reset_index())
    combos.to_csv(out / "colour_combos.csv", index=False)

    # ---- graphical appearance
    ga = a.groupby(["graphical_appearance_no", "graphical_appearance_name"]).size().rename("n").reset_index()
    ga["share"] = (ga.n / ga.n.sum()).round(6)
    ga.sort_values("n", ascending=False).to_csv(out / "appearances.csv", index=False)

    # ---- daily curve
    daily = agg["transaction_daily_metrics"][["date", "transactions", "avg_price"]]
    daily.to_csv(out / "daily.csv", index=False)

    # ---- customers
    age = pd.to_numeric(c.age, errors="coerce").dropna().round().astype(int)
    pmf = age.value_counts().sort_index()
    pmf = pmf.reindex(range(16, 100), fill_value=0).astype(float) + 0.5
    buckets = agg["age_bucket_metrics"].set_index("age_bucket").share

    def bucket(x: int) -> str:
        if x < 20:
            return "under_20"
        if x >= 60:
            return "60_plus"
        lo = x // 10 * 10
        return f"{lo}_to_{lo + 9}"

    keys = pd.Series([bucket(x) for x in pmf.index], index=pmf.index)
    known = buckets.drop("unknown")
    known = known / known.sum()
    pmf = pmf * keys.map(known) / keys.map(pmf.groupby(keys).sum())
    pmf = pmf / pmf.sum()
    club = agg["customer_status_metrics"].set_index("club_member_status").share
    news = agg["fashion_news_metrics"].set_index("fashion_news_frequency").share
    fn = c.FN.notna()
    active = c.Active.notna()
    postal_top = c.postal_code.value_counts()
    customers = {
        "age_min": 16,
        "age_pmf": [round(float(x), 6) for x in pmf.values],
        "age_missing_share": float(buckets.get("unknown", 0.0116)),
        "age_bucket_shares": {k: float(v) for k, v in buckets.items()},
        "club_member_status": {k if k != "Unknown" else "": float(v) for k, v in club.items()},
        "fashion_news_frequency": {(k if k not in ("Unknown", "None") else ""): float(v) for k, v in news.items()
                                   if isinstance(k, str) and k != "None"},
        "fn_given_regularly": float((fn & (c.fashion_news_frequency == "Regularly")).sum() / max(1, (c.fashion_news_frequency == "Regularly").sum())),
        "fn_given_other": float((fn & (c.fashion_news_frequency != "Regularly")).sum() / max(1, (c.fashion_news_frequency != "Regularly").sum())),
        "active_given_fn": float((active & fn).sum() / max(1, fn.sum())),
        "active_given_not_fn": float((active & ~fn).sum() / max(1, (~fn).sum())),
        "postal_top_share": float(postal_top.iloc[0] / len(c)),
        "postal_singleton_share": float((postal_top == 1).sum() / len(c)),
    }
    (out / "customers.json").write_text(json.dumps(customers, indent=1))

    # ---- targets
    summ = agg["summary"].set_index("metric").value
    top = agg["top_article_transactions"]
    chan = agg["sales_channel_metrics"].set_index("sales_channel_id").share
    targets = {
        "summary": {k: float(v) for k, v in summ.items()},
        "channel_2_share": float(chan.loc[2]),
        "duplicate_group_share": 0.095,
        "repurchase_article_within_weeks": [0.051, 0.062, 0.066],
        "repurchase_product_within_weeks": [0.068, 0.085, 0.094],
        "inactive_last_3_months_share": 0.5,
        "last_week": {"transactions": 240311, "customers": 75481},
        "top_article_share": float(top.transactions.iloc[0] / summ["transactions"]),
        "top10_article_share": float(top.transactions.iloc[:10].sum() / summ["transactions"]),
        "top200_article_share": float(top.transactions.sum() / summ["transactions"]),
        "top200_counts": [int(x) for x in top.transactions],
        "index_group_txn_share": agg["transaction_index_group_metrics"].set_index("index_group_name").share.to_dict(),
        "index_group_cat_share": agg["index_group_metrics"].set_index("index_group_name").share.to_dict(),
        "product_group_txn_share": agg["transaction_product_group_metrics"].set_index("product_group_name").share.head(10).to_dict(),
        "age_bucket_share": {k: float(v) for k, v in buckets.items()},
    }
    (out / "targets.json").write_text(json.dumps(targets, indent=1))

    # ---- text pools
    sent_split = re.compile(r"(?<=\.)\s+(?=[A-Z0-9])")
    variant_suffix = re.compile(r"\s*\(\d+\)\s*$")
    rng = np.random.default_rng(0)
    text: dict = {"types": {}, "stems": []}
    stems: dict[str, int] = {}
    for name in a.prod_name.dropna().unique():
        first = variant_suffix.sub("", name).split(" ")[0]
        if re.fullmatch(r"[A-Z][a-z]{2,11}", first):
            stems[first] = stems.get(first, 0) + 1
    text["stems"] = sorted(stems)
    def split(d: str) -> list[str]:
        return [p.strip() for p in sent_split.split(d.strip()) if p.strip()]

    def cap(items: list, n: int) -> list:
        if len(items) <= n:
            return items
        idx = sorted(rng.choice(len(items), size=n, replace=False))
        return [items[i] for i in idx]

    for tname, g in a.groupby("product_type_name"):
        names = sorted({variant_suffix.sub("", n).strip() for n in g.prod_name.dropna()})
        suffixes = sorted({" ".join(n.split(" ")[1:]) for n in names if len(n.split(" ")) >= 2
                           and re.fullmatch(r"[A-Z][a-z]{2,11}", n.split(" ")[0])})
        details: dict[str, int] = {}
        for d in g.detail_desc.dropna().unique():
            for p in split(d)[1:]:
                if len(p) < 160:
                    details[p] = details.get(p, 0) + 1
        entry = {
            "names": cap(names, 60),
            "suffixes": cap(suffixes, 40),
            "descs": cap([split(d) for d in sorted(g.detail_desc.dropna().unique())], 50),
            "details": cap(sorted(details), 50),
            "by_index_group": {},
        }
        for ig, h in g.groupby("index_group_name"):
            descs = sorted(h.detail_desc.dropna().unique())
            if len(descs) >= 4 and h.index_group_name.nunique() == 1 and g.index_group_name.nunique() > 1:
                entry["by_index_group"][ig] = cap([split(d) for d in descs], 25)
        text["types"][tname] = entry
    with gzip.GzipFile(out / "text.json.gz", "wb", mtime=0) as fh:
        fh.write(json.dumps(text, sort_keys=True).encode("utf-8"))

    total = sum(p.stat().st_size for p in out.iterdir())
    print(f"wrote {out} ({total / 1024:.0f} KiB)")


if __name__ == "__main__":
    build(Path(sys.argv[1] if len(sys.argv) > 1 else "/work/shared/hm_reference"))
