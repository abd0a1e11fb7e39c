"""Where the ranking stage loses: the ranker trained on the purchases and on the oracle's 12.

The oracle (hm-synth's ``oracle.csv``) is each buyer's expected top-12 under the generator's latent
model: a label without the noise of one week's purchases. For a world's newest week with truth,
the pipeline's ranker (default settings, the pair features of the same earlier weeks, computed
from their stored candidates) is trained twice, once on what the buyers bought and once on the
oracle's 12 of those weeks, and both score the week. If the oracle-trained ranker does much better,
the ranking stage is short of labels (more weeks, less noise); if not, it is short of features:
what the pair features say about a customer and an article does not hold what the oracle knows.

    python benchmarks/bench_ranker_labels.py --home HOME --data-dir DATA_DIR [--home ... --data-dir ...]

HOME is a world's ``HM_HOME`` kept by ``bench_quality.py --keep-homes`` (its candidates, feature
tables, article taste and transactions), DATA_DIR the world's data set (its ``oracle.csv``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pandas as pd

from host import machine, world_homes

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hm_assets.pipeline.evaluation.evaluation import load_oracle  # noqa: E402
from hm_assets.pipeline.evaluation.metrics import map_at_k  # noqa: E402
from hm_assets.pipeline.ranking import ranker  # noqa: E402
from hm_assets.pipeline.ranking.samples import draw_week_sample, labelled_weeks, week_pairs  # noqa: E402
from hm_assets.platform.history import stored_history_weeks  # noqa: E402
from hm_assets.platform.store import HMStore  # noqa: E402


def compare(home: Path, data_dir: Path) -> dict:
    store = HMStore(home=str(home))
    con = store.connect()
    con.execute(f"CREATE VIEW customers AS SELECT * FROM read_parquet('{home / 'assets' / 'customers.parquet'}')")
    oracle_weeks = pd.read_csv(data_dir / "oracle.csv", usecols=["week"])["week"].drop_duplicates().sort_values().tolist()
    week = oracle_weeks[-1]
    config = ranker.RankerConfig()
    # the earlier weeks the oracle covers, as many as the pipeline's ranker would use
    training = [w for w in labelled_weeks(store, week, config.training_weeks) if w in oracle_weeks]
    if not training:
        raise SystemExit(f"{home}: no stored week before {week} has an oracle")
    labels = {
        "purchases": {w: pd.read_parquet(store.require("transactions", w), columns=["customer_key", "article_id"]) for w in training},
        "oracle's 12": {w: load_oracle(con, data_dir / "oracle.csv", w)[["customer_key", "article_id"]] for w in training},
    }
    truth = pd.read_parquet(store.require("transactions", week), columns=["customer_key", "article_id"])
    oracle = load_oracle(con, data_dir / "oracle.csv", week)
    week_keys = stored_history_weeks(store)
    pairs = week_pairs(store, week, week_keys, truth[["customer_key"]])
    row: dict = {"home": str(home), "week": week, "training_weeks": ", ".join(training),
                 "oracle": map_at_k(oracle[oracle["customer_key"].isin(truth["customer_key"])], truth)}
    for name, by_week in labels.items():
        started = time.perf_counter()
        frames = [
            draw_week_sample(store, w, week_keys, by_week[w], config.negatives_per_customer, config.seed, config.max_rows_per_week)
            for w in training
        ]
        booster = ranker.train(ranker.stack_weeks(frames), config.settings())
        scored = pairs[["customer_key", "article_id"]].assign(score=ranker.predict(booster, pairs))
        top = ranker.top_k(scored)
        row[f"ranker on {name}"] = map_at_k(top, truth)
        row[f"ranker on {name}: oracle's 12 found"] = map_at_k(top, oracle)
        row[f"ranker on {name}: seconds"] = round(time.perf_counter() - started)
    con.close()
    return row


def main() -> int:
    homes = world_homes(__doc__.splitlines()[0])
    print(f"Machine: {machine()}")
    rows = []
    for home, data_dir in homes:
        rows.append(compare(home, data_dir))
        print(json.dumps(rows[-1]), flush=True)
    frame = pd.DataFrame(rows)
    frame["home"] = frame["home"].map(lambda h: Path(h).name)
    print(frame.drop(columns=[c for c in frame.columns if c.endswith("seconds")]).to_markdown(index=False, floatfmt=".4f"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
