"""Seconds, CPU seconds (how many of the cores were busy) and peak RSS of chosen stages of one week, at any scale (e.g. the `full` preset).

Each stage is one Dagster materialization in this process (the same assets as `hm-recs run`);
RSS is sampled every 0.2 s. The catalogue stage is the articles, customers and images tables; the
content steps are stages of their own (``text_embeddings``, ``image_embeddings``,
``attribute_embeddings``, ``text_index`` …), each given every core as ``hm-recs run`` gives them.
The first catalogue snapshot of the full preset:

    HM_DATA_DIR=/tmp/hm_full HM_HOME=/tmp/bench_full python benchmarks/bench_stages.py --week 2020-09-16 \
        --stages catalogue,text_embeddings,image_embeddings,attribute_embeddings,text_index,image_index,attribute_index

    HM_DATA_DIR=/tmp/hm_full HM_HOME=/tmp/bench_full python benchmarks/bench_stages.py --week 2020-09-16 \
        --stages catalogue,transactions,customer_features+customer_transaction_stats+article_features+article_transaction_stats,repurchase,also_bought,popularity_model,purchase_history_similar
"""

from __future__ import annotations

import argparse
import os
import resource
import threading
import time

import psutil

TORCH_STEPS = ("text_embeddings", "image_embeddings")
CONTENT = (*TORCH_STEPS, "attribute_embeddings", "text_index", "image_index", "attribute_index")


def cpu_seconds() -> float:
    """User and system CPU seconds of this process and its finished children (a stage's threads count)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class PeakRss:
    def __init__(self) -> None:
        self.process = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self._stop.wait(0.2)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--week", required=True)
    parser.add_argument("--stages", required=True, help="comma-separated; '+' joins assets into one stage")
    parser.add_argument("--retrievers", default="", help="comma-separated subset for `candidates` (default: all)")
    parser.add_argument("--training-weeks", type=int, default=None, help="the ranker's labelled weeks (default: the pipeline's)")
    parser.add_argument("--max-rows-per-week", type=int, default=None, help="the ranker's row budget per labelled week (default: the pipeline's)")
    parser.add_argument("--device", default="", help="torch device of the embedding steps (default: cuda when torch sees one, else cpu)")
    args = parser.parse_args()
    ranker_config = {"training_weeks": args.training_weeks, "max_rows_per_week": args.max_rows_per_week}
    run_config = {"ops": {"ranker": {"config": {k: v for k, v in ranker_config.items() if v is not None}}}}
    if args.retrievers:
        run_config["ops"]["candidates"] = {"config": {"retrievers": args.retrievers.split(",")}}

    import dagster as dg

    from hm_assets.definitions import build_definitions
    from hm_assets.defs.runner import RANGE_END_TAG, RANGE_START_TAG
    from hm_assets.platform.settings import hm_data_dir
    from hm_assets.pipeline.ingest.data_range import env_data_range

    defs = build_definitions()
    data_range = env_data_range(hm_data_dir())

    instance = dg.DagsterInstance.ephemeral()
    job = defs.resolve_job_def("weekly_recommendations")
    catalogue = defs.resolve_job_def("catalogue_snapshot")
    ingest = defs.resolve_job_def("ingest_transactions")
    print("| stage | seconds | CPU seconds | cores busy | peak RSS (GiB) |\n| --- | ---: | ---: | ---: | ---: |", flush=True)
    for stage in args.stages.split(","):
        keys = [dg.AssetKey(name) for name in stage.split("+")]
        started, cpu = time.perf_counter(), cpu_seconds()
        with PeakRss() as rss:
            if stage == "catalogue":
                catalogue.execute_in_process(
                    instance=instance,
                    asset_selection=[dg.AssetKey(k) for k in ("articles", "customers", "article_images")],
                )
            elif all(key.to_user_string() in CONTENT for key in keys):
                torch_config = {"torch_threads": os.cpu_count() or 1, "device": args.device}
                config = {"ops": {k.to_user_string(): {"config": torch_config} for k in keys if k.to_user_string() in TORCH_STEPS}}
                catalogue.execute_in_process(instance=instance, asset_selection=keys, run_config=config)
            elif stage == "transactions":
                tags = {RANGE_START_TAG: data_range.first_week.isoformat(), RANGE_END_TAG: args.week}
                ingest.execute_in_process(instance=instance, asset_selection=keys, tags=tags)
            else:
                names = {k.to_user_string() for k in keys}
                config = {"ops": {k: v for k, v in run_config["ops"].items() if k in names}}
                job.execute_in_process(instance=instance, asset_selection=keys, partition_key=args.week, run_config=config)
        wall, used = time.perf_counter() - started, cpu_seconds() - cpu
        print(f"| {stage} | {wall:.1f} | {used:.1f} | {used / wall:.2f} | {rss.peak / 2**30:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
