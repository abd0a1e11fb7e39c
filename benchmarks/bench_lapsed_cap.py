"""What a lower candidate cap for lapsed customers costs in MAP@12 and saves in pairs, with the ranker
held fixed.

The week's stored ranker scores the pair features of the week's buyers, computed from the week's
stored candidates; each (lapsed after N days, cap) then keeps a lapsed buyer's best candidates in
the cap's own order (calibrated priority, best rank, retrievers, article id) and the 12 best scored
of them. So only the removed candidates change the lists: a retrained ranker would also see other
training samples (measure that with the ablation's ``map_with`` and several seeds). The pairs saved
count every customer of the week. Every candidate is scored by the whole model (no prescreen: it
would pick among the uncapped candidates).

Run it on a week built with one cap for everyone (``candidates`` config
``max_per_lapsed_customer: 120``), else the lapsed customers' lists are capped already:

    python benchmarks/bench_lapsed_cap.py --home /tmp/bench_full --week 2020-09-16 \\
        [--days 91 182 365] [--caps 60 40 30 20]
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from computed_pairs import computed_pairs
from host import machine

from hm_assets.defs.resources import HMStore
from hm_assets.pipeline.evaluation.metrics import map_at_k
from hm_assets.pipeline.ranking.candidates import CAP_ORDER, previous_week_calibration
from hm_assets.pipeline.ranking.ranker import stored_scorer, top_k
from hm_assets.pipeline.retrieval.registry import retriever_names
from hm_assets.platform.sql import float_matrix


def buyers_scored(store: HMStore, week: str, truth: pd.DataFrame) -> pd.DataFrame:
    """The week's buyers' pairs: keys, days since the customer's last purchase, their place in the
    cap's order (``priority_rank``) and the stored ranker's score."""
    names = retriever_names()
    calibration = previous_week_calibration(store, week, names)
    scorer = stored_scorer(store, week)
    priority = calibration.priority_sql(names) if calibration is not None else "0.0::DOUBLE"
    with computed_pairs(store, week, truth) as pairs:
        # days_since_last_purchase as the pair features have it: customer_transaction_stats, LEFT JOINed.
        keys = pairs.con.sql(
            "SELECT customer_key, article_id, CAST(s.days_since_last_purchase AS DOUBLE) AS days, "
            f"row_number() OVER (PARTITION BY customer_key ORDER BY {CAP_ORDER}) AS priority_rank "
            f"FROM (SELECT *, {priority} AS priority FROM candidates) "
            "LEFT JOIN customer_transaction_stats s USING (customer_key)"
        ).df()
        frames = []
        for batch in pairs.batches(scorer.features):
            matrix = float_matrix(batch, scorer.features)
            frames.append(pd.DataFrame({
                "customer_key": batch.column("customer_key").to_numpy(zero_copy_only=False),
                "article_id": batch.column("article_id").to_numpy(zero_copy_only=False),
                "score": scorer.score_matrix(matrix),
            }))
    scores = pd.concat(frames, ignore_index=True)
    return keys.merge(scores, on=["customer_key", "article_id"], validate="one_to_one")


def pairs_saved(store: HMStore, week: str, days: list[int], caps: list[int]) -> pd.DataFrame:
    """Pairs of the whole week a lapsed cap removes, for every (days, cap)."""
    con = store.connect()
    table = con.sql(
        f"""
        WITH c AS (SELECT customer_key, count(*) AS n FROM read_parquet('{store.require('candidates', week)}') GROUP BY 1),
        s AS (SELECT customer_key, days_since_last_purchase AS d FROM read_parquet('{store.require('customer_transaction_stats', week)}'))
        SELECT t.days, k.cap, sum(n) AS pairs,
               sum(CASE WHEN d IS NULL OR d > t.days THEN greatest(n - k.cap, 0) ELSE 0 END) AS saved
        FROM c LEFT JOIN s USING (customer_key),
             (SELECT unnest({list(days)}) AS days) t, (SELECT unnest({list(caps)}) AS cap) k
        GROUP BY ALL ORDER BY 1, 2
        """
    ).df()
    con.close()
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", required=True)
    parser.add_argument("--week", required=True)
    parser.add_argument("--days", nargs="+", type=int, default=[91, 182, 365])
    parser.add_argument("--caps", nargs="+", type=int, default=[60, 40, 30, 20])
    args = parser.parse_args()
    store = HMStore(home=args.home)
    truth = pd.read_parquet(store.require("transactions", args.week), columns=["customer_key", "article_id"])
    pairs = buyers_scored(store, args.week, truth)
    last = pairs.groupby("customer_key")["days"].first()
    base = map_at_k(top_k(pairs[["customer_key", "article_id", "score"]]), truth)
    saved = pairs_saved(store, args.week, args.days, args.caps).set_index(["days", "cap"])
    rows = []
    for days in args.days:
        lapsed = pairs["days"].isna() | (pairs["days"] > days)
        for cap in args.caps:
            kept = pairs.loc[~lapsed | (pairs["priority_rank"] <= cap), ["customer_key", "article_id", "score"]]
            value = map_at_k(top_k(kept), truth)
            row = saved.loc[(days, cap)]
            rows.append({
                "lapsed after (days)": days, "their cap": cap,
                "lapsed buyers": round(float(np.mean(last.isna() | (last > days))), 3),
                "MAP@12": round(value, 5), "difference": round(value - base, 5),
                "pairs saved": int(row["saved"]), "share of pairs": round(float(row["saved"] / row["pairs"]), 3),
            })
    print(machine())
    print(f"home {args.home}, week {args.week}: {last.size:,} buyers with candidates, {len(pairs):,} of their pairs; "
          f"MAP@12 with every candidate {base:.5f} (these buyers only)\n")
    print(pd.DataFrame(rows).to_markdown(index=False))


if __name__ == "__main__":
    main()
