"""Where one after-purchase update spends its time, step by step, in process (no HTTP, no event log).

    python benchmarks/bench_online_steps.py --home HM_HOME [--week W] [--customers 60] [--threads 1]

Loads the week's ``OnDemandRecommender`` (as ``hm-recs serve`` does), warms it, then for
``--customers`` customers with history (a fixed sample) ranks each once with one purchase of a
random article, and prints the p50 and max of every step of ``OnDemandRecommender.rank``'s own
``timings`` (preparation, each retriever, candidates, pair features, scoring) and of the whole call,
plus the process's CPU time per call. ``bench_serving.py`` measures the same path behind the service.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from host import machine  # noqa: E402

from hm_assets.platform.store import HMStore  # noqa: E402
from hm_assets.serving.on_demand import OnDemandRecommender  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", required=True, help="a materialized store (HM_HOME); only read")
    parser.add_argument("--week", help="the week (default: the newest with recommendations)")
    parser.add_argument("--customers", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1, help="DuckDB threads of a call (OnDemandRecommender's threads)")
    args = parser.parse_args()
    print(machine())
    started = time.perf_counter()
    recommender = OnDemandRecommender(HMStore(home=args.home), args.week, threads=args.threads).warm()
    print(f"week {recommender.week}: loaded and warmed in {time.perf_counter() - started:.1f} s")
    keys: list[int] = []
    for key in recommender.customers["customer_key"].sample(frac=1.0, random_state=0):
        if len(keys) == args.customers:
            break
        if len(recommender.newest_purchases(int(key), limit=1)):
            keys.append(int(key))
    articles = recommender.articles["article_id"].sample(len(keys), random_state=0).tolist()
    steps: dict[str, list[float]] = {}
    cpu = time.process_time()
    for key, article in zip(keys, articles):
        for step, seconds in recommender.rank(key, bought=[article]).timings.items():
            steps.setdefault(step, []).append(seconds * 1000)
    cpu_ms = (time.process_time() - cpu) * 1000 / max(len(keys), 1)
    print(f"{len(keys)} customers, one purchase each; DuckDB threads per call: {args.threads}")
    print("| step | p50 ms | max ms |\n| --- | ---: | ---: |")
    for step, values in steps.items():
        print(f"| {step} | {statistics.median(values):.1f} | {max(values):.1f} |")
    print(f"process CPU per call: {cpu_ms:.1f} ms")
    recommender.close()


if __name__ == "__main__":
    main()
