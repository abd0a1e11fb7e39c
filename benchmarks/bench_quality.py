"""Quality on every hm-synth world with one default configuration, next to the baselines and the
data's own oracle.

For each world and seed: generate the data set (``hm-synth --preset WORLD --seed S``, skipped when
present), run ``hm-recs run --data-dir DIR`` with no flags at all in a fresh ``HM_HOME`` (the
default run: the live week plus the newest week with known purchases, which it evaluates), then
read that week's ``evaluation`` record. Prints one row per (world, seed) and the mean per world:
last week's top-12, trending, the best single retriever, the ranker, the oracle, ranker/trending,
ranker/oracle, the recall of the truth and the share of the oracle's top-12 held by the union of
retrievers, after the rules and the cap, and by the ranker's 12.

    python benchmarks/bench_quality.py [--worlds world-loyal world-trends ...] [--seeds 0 1] \\
        [--root /tmp/hm_quality] [--end-date 2026-11-24] [--out quality.md] [--keep-homes | --reuse-homes]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import pandas as pd

from host import machine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hm_assets.synthetic.generator import WORLDS  # noqa: E402

TABLE_COLUMNS = {
    "last_week_top12": "last week's top-12",
    "trending": "trending",
    "best_single": "best single retriever",
    "ranker": "ranker",
    "oracle": "oracle",
    "ranker_vs_trending": "ranker / trending",
    "ranker_vs_oracle": "ranker / oracle",
    "oracle_order_of_candidates": "our candidates in the oracle's order",
    "oracle_vs_trending": "oracle / trending",
    "recall_union": "recall of truth: union",
    "recall_after_filters": "recall of truth: after cap",
    "oracle_recall_union": "oracle's 12 in union",
    "oracle_recall_after_filters": "oracle's 12 after cap",
    "oracle_recall_ranker": "oracle's 12 in ranker's 12",
}


def tool(name: str) -> str:
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


def newest_known_week(data_dir: Path) -> str:
    """The Wednesday starting the data's last week (its end date is a Tuesday)."""
    last = pd.read_csv(data_dir / "oracle.csv", usecols=["week"])["week"].max()
    return str(last)


def ranking_ceiling(home: Path, data_dir: Path, week: str) -> float:
    """MAP@12 of our own capped candidates in the oracle's order: for each buyer, the oracle's 12
    that are among the candidates, then the ranker's list. What a perfect ranker could take from
    what retrieval kept (the ranking stage's ceiling on this data)."""
    import duckdb

    from hm_assets.pipeline.evaluation.evaluation import load_oracle
    from hm_assets.pipeline.evaluation.metrics import map_at_k

    assets = home / "assets"
    con = duckdb.connect()
    con.execute(f"CREATE VIEW customers AS SELECT * FROM read_parquet('{assets / 'customers.parquet'}')")
    truth = con.sql(f"SELECT DISTINCT customer_key, article_id FROM read_parquet('{assets / 'transactions' / f'{week}.parquet'}')").df()
    oracle = load_oracle(con, data_dir / "oracle.csv", week)
    kept = con.sql(f"SELECT customer_key, article_id FROM read_parquet('{assets / 'candidates' / f'{week}.parquet'}')").df()
    ranked = con.sql(f"SELECT customer_key, article_id, rank FROM read_parquet('{assets / 'recommendations' / f'{week}.parquet'}')").df()
    inside = oracle.merge(kept, on=["customer_key", "article_id"])
    combined = pd.concat([inside, ranked.assign(rank=ranked["rank"] + 100)], ignore_index=True)
    return map_at_k(combined, truth)


def run_world(world: str, seed: int, root: Path, end_date: str, keep_home: bool, reuse_home: bool = False) -> dict:
    data_dir = root / f"{world}-seed{seed}"
    home = root / f"home-{world}-seed{seed}"
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OPENBLAS_NUM_THREADS": "1"}
    env.pop("HM_HOME", None)
    env.pop("DAGSTER_HOME", None)
    if not (data_dir / "oracle.csv").exists():
        subprocess.run([tool("hm-synth"), str(data_dir), "--preset", world, "--seed", str(seed), "--end-date", end_date, "-q"],
                       check=True, env=env)
    if not reuse_home:
        shutil.rmtree(home, ignore_errors=True)
    started = time.perf_counter()
    log = root / f"{world}-seed{seed}.log"
    with open(log, "w") as fh:
        done = subprocess.run([tool("hm-recs"), "run", "--data-dir", str(data_dir), "--home", str(home)],
                              stdout=fh, stderr=subprocess.STDOUT, env=env)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"hm-recs run failed on {world} seed {seed}; see {log}")
    week = newest_known_week(data_dir)
    metrics = json.loads((home / "assets" / "evaluation" / f"{week}.json").read_text())
    singles = {k[len("map12_"):]: v for k, v in metrics.items()
               if k.startswith("map12_") and k[len("map12_"):] not in ("ranker", "trending", "last_week_top12", "oracle")}
    best = max(singles, key=singles.get)
    row = {
        "world": world, "seed": seed, "week": week, "buyers": metrics["buyers"],
        "last_week_top12": metrics["map12_last_week_top12"], "trending": metrics["map12_trending"],
        "best_single": singles[best], "best_single_name": best, "ranker": metrics["map12_ranker"],
        "oracle": metrics.get("map12_oracle"), "ranker_vs_trending": metrics["ranker_vs_trending"],
        "ranker_vs_oracle": metrics.get("ranker_vs_oracle"), "oracle_vs_trending": metrics.get("oracle_vs_trending"),
        "seconds": round(seconds),
    }
    row["oracle_order_of_candidates"] = round(ranking_ceiling(home, data_dir, week), 6)
    for name in ("recall_union", "recall_after_filters", "oracle_recall_union", "oracle_recall_after_filters",
                 "oracle_recall_ranker"):
        row[name] = metrics.get(name)
    for name, value in metrics.items():
        if name.startswith("oracle_recall_") and name[len("oracle_recall_"):] in singles:
            row[name] = value
    if not (keep_home or reuse_home):
        shutil.rmtree(home, ignore_errors=True)
    return row


def markdown(rows: pd.DataFrame) -> str:
    shown = rows.copy()
    shown["buyers"] = shown["buyers"].round().astype(int)
    shown["best single retriever"] = [f"{v:.4f} ({n})" for v, n in zip(shown["best_single"], shown["best_single_name"])]
    columns = ["world", "seed", "buyers"] + [c for c in TABLE_COLUMNS if c != "best_single"]
    shown = shown[columns[:5] + ["best single retriever"] + columns[5:]]
    shown = shown.rename(columns=TABLE_COLUMNS)
    return shown.to_markdown(index=False, floatfmt=".4f")


def summary_rows(rows: pd.DataFrame) -> pd.DataFrame:
    numeric = [c for c in TABLE_COLUMNS if c != "best_single"] + ["best_single", "buyers"]
    means = rows.groupby("world", sort=False)[numeric].mean().reset_index()
    means["seed"] = "mean"
    means["best_single_name"] = rows.groupby("world", sort=False)["best_single_name"].agg(lambda s: "/".join(sorted(set(s)))).values
    return means


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", nargs="+", default=list(WORLDS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--root", default="/tmp/hm_quality", help="data sets, logs and (with --keep-homes) outputs")
    parser.add_argument("--end-date", default=None, help="the data's last day, a Tuesday (default: the most recent one)")
    parser.add_argument("--out", help="also write the Markdown record here")
    parser.add_argument("--keep-homes", action="store_true", help="keep each run's HM_HOME")
    parser.add_argument("--reuse-homes", action="store_true",
                        help="run in each world's HM_HOME left by an earlier --keep-homes run (kept again): the catalogue's "
                             "embeddings come from its cache, every week the run plans is rebuilt; same outputs, shorter runs")
    parser.add_argument("--resume", action="store_true",
                        help="reuse the rows of runs already finished under --root (quality.jsonl) with the same code")
    args = parser.parse_args()
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    end_date = args.end_date or (date.today() - timedelta(days=(date.today().weekday() - 1) % 7 or 7)).isoformat()
    started = time.perf_counter()
    header = machine()
    finished = root / "quality.jsonl"
    done: dict[tuple[str, int], dict] = {}
    if args.resume and finished.exists():
        for line in finished.read_text().splitlines():
            row = json.loads(line)
            done[(row["world"], row["seed"])] = row
    elif finished.exists():
        finished.unlink()
    rows = []
    for world in args.worlds:
        for seed in args.seeds:
            row = done.get((world, seed)) or run_world(world, seed, root, end_date, args.keep_homes, args.reuse_homes)
            rows.append(row)
            if (world, seed) not in done:
                with open(finished, "a") as fh:
                    fh.write(json.dumps(row) + "\n")
            print(f"{world} seed {seed}: ranker {row['ranker']:.4f} trending {row['trending']:.4f} "
                  f"oracle {row['oracle']:.4f} ({row['seconds']} s)", flush=True)
    frame = pd.DataFrame(rows)
    frame.to_csv(root / "quality.csv", index=False)
    table = pd.concat([frame, summary_rows(frame)], ignore_index=True)
    text = "\n".join([
        f"Machine: {header}",
        f"Command: python benchmarks/bench_quality.py --worlds {' '.join(args.worlds)} --seeds "
        f"{' '.join(map(str, args.seeds))} --end-date {end_date}" + (" --reuse-homes" if args.reuse_homes else ""),
        f"Wall time: {time.perf_counter() - started:.0f} s for {len(rows)} runs of `hm-recs run` with defaults",
        "",
        markdown(table),
    ])
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
