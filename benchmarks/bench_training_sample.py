"""What drawing one labelled week's training sample costs the ranker, step by step.

The ranker draws each labelled week's sample once (the next rankers read it back): the buyers'
positives and sampled negatives chosen on the week's stored candidates (``ranker.training_keys``),
then the pair features of the chosen pairs only (``samples.week_pairs``). Both are timed, with the
process's peak RSS; nothing is written to the store.

    python benchmarks/bench_training_sample.py --home /tmp/bench_full --week 2020-09-16
"""

from __future__ import annotations

import argparse
import resource
import time

import pandas as pd

from hm_assets.pipeline.ranking import ranker, samples
from hm_assets.platform.history import stored_history_weeks
from hm_assets.platform.store import HMStore


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", required=True)
    parser.add_argument("--week", required=True, help="a labelled week: its candidates, feature tables, taste and purchases exist")
    args = parser.parse_args()
    config = ranker.RankerConfig()
    store = HMStore(home=args.home)
    week_keys = stored_history_weeks(store)
    truth = pd.read_parquet(store.require("transactions", args.week), columns=["customer_key", "article_id"])

    started = time.perf_counter()
    con = store.connect()
    chosen = ranker.training_keys(
        con, store.require("candidates", args.week), truth, config.negatives_per_customer, config.seed, config.max_rows_per_week
    )
    con.close()
    drawn = time.perf_counter()
    rows = samples.week_pairs(store, args.week, week_keys, chosen)
    done = time.perf_counter()

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print("| step | seconds |\n| --- | ---: |")
    print(f"| the sample's keys on the stored candidates ({len(chosen):,} rows, {chosen['customer_key'].nunique():,} buyers) | {drawn - started:.1f} |")
    print(f"| the chosen pairs' features ({len(ranker.feature_columns(rows))} columns) | {done - drawn:.1f} |")
    print(f"| **the sample** | **{done - started:.1f}** |")
    print(f"\npeak RSS {peak:.2f} GiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
