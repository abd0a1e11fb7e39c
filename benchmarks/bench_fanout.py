"""The per-customer steps of one week, single-process vs fanned out over customer shards.

Copies a materialized HM_HOME (catalogue, transactions, features and retriever outputs of the
week present), then materializes `candidates` and `recommendations` (which computes each shard's
pair features in memory) for that week twice into separate copies:

- single: one shard per asset, the in-process executor (how `hm-recs run` works on one machine);
- fanned: ``--customers-per-shard`` customers per shard, each shard its own step, the
  multiprocess executor with ``--processes`` workers (how a cluster executor spreads a week).

Prints wall time of each and checks the outputs are identical.

    HM_DATA_DIR=/tmp/hm_small python benchmarks/bench_fanout.py --home /tmp/hm_home_small3 \
        --week 2026-11-18 --customers-per-shard 12500 --processes 2
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from host import machine

ASSETS = ("candidates", "recommendations")


def weekly_job():
    from hm_assets.definitions import build_definitions

    defs = build_definitions()

    return defs.resolve_job_def("weekly_recommendations")


def copy_inputs(source: Path, target: Path) -> None:
    # A store materialized before the pair features were computed in memory may still hold them: not an input.
    ignored = shutil.ignore_patterns(*ASSETS, "submission", "pair_features")
    shutil.copytree(source / "assets", target / "assets", ignore=ignored)


def materialize(home: Path, week: str, customers_per_shard: int, processes: int) -> float:
    import dagster as dg

    # The forkserver imports the project once; spawned step processes would each import it again.
    forkserver = {"forkserver": {"preload_modules": ["hm_assets.definitions"]}}
    executor = (
        {"multiprocess": {"max_concurrent": processes, "start_method": forkserver}} if processes > 1 else {"in_process": {}}
    )
    run_config = {
        "execution": {"config": executor},
        "resources": {"store": {"config": {"home": str(home), "customers_per_shard": customers_per_shard}}},
    }
    with tempfile.TemporaryDirectory() as dagster_home:
        instance = dg.DagsterInstance.local_temp(dagster_home)
        started = time.perf_counter()
        result = dg.execute_job(
            dg.reconstructable(weekly_job),
            instance=instance,
            run_config=run_config,
            asset_selection=[dg.AssetKey(a) for a in ASSETS],
            tags={"dagster/partition": week},
        )
        seconds = time.perf_counter() - started
        if not result.success:
            raise SystemExit(f"run failed in {home}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", required=True, help="a materialized HM_HOME (read only)")
    parser.add_argument("--week", required=True)
    parser.add_argument("--customers-per-shard", type=int, required=True)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    source = Path(args.home)
    with tempfile.TemporaryDirectory(dir=source.parent) as scratch:
        single, fanned = Path(scratch) / "single", Path(scratch) / "fanned"
        copy_inputs(source, single)
        copy_inputs(source, fanned)
        single_s = materialize(single, args.week, 10**9, 1)
        fanned_s = materialize(fanned, args.week, args.customers_per_shard, args.processes)
        for asset in ASSETS:
            a = pd.read_parquet(single / "assets" / asset / f"{args.week}.parquet")
            b = pd.read_parquet(fanned / "assets" / asset / f"{args.week}.parquet")
            pd.testing.assert_frame_equal(a, b)
        same_csv = (single / "assets" / "submission" / f"{args.week}.csv").read_bytes() == (
            fanned / "assets" / "submission" / f"{args.week}.csv"
        ).read_bytes()
        if not same_csv:
            raise SystemExit("submission CSVs differ")
    print(f"- machine: {machine()}")
    print(f"- command: `{' '.join(sys.argv)}`")
    print("| run | seconds |\n| --- | ---: |")
    print(f"| single process, one shard per asset | {single_s:.1f} |")
    print(
        f"| fanned out: {args.customers_per_shard:,} customers per shard, multiprocess executor, "
        f"{args.processes} processes | {fanned_s:.1f} |"
    )
    print("outputs identical: candidates, recommendations, submission CSV")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
