"""``hm-recs``: run the weekly pipeline on a data folder in the Kaggle format, from the shell."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path


WORKER_HEALTHCHECK_SECONDS = 60


def _root_cause(exc: BaseException) -> BaseException:
    import dagster as dg

    seen = exc
    while True:
        if isinstance(seen, dg.DagsterExecutionStepExecutionError) and seen.user_exception is not None:
            seen = seen.user_exception
        elif isinstance(seen, dg.DagsterUserCodeExecutionError) and getattr(seen, "user_exception", None) is not None:
            seen = seen.user_exception
        elif seen.__cause__ is not None and isinstance(seen, dg.DagsterError):
            seen = seen.__cause__
        else:
            return seen


def _print_week_summary(home: Path, week: str) -> None:
    path = home / "assets" / "evaluation" / f"{week}.json"
    if not path.exists():
        return
    metrics = json.loads(path.read_text())
    if not metrics.get("has_truth"):
        print(f"  {week}: live week, no purchases observed yet (recommendations only)")
        return
    oracle = ""
    if "map12_oracle" in metrics:
        oracle = f" | oracle {metrics['map12_oracle']:.5f} (ranker/oracle {metrics['ranker_vs_oracle']:.2f})"
    print(
        f"  {week}: MAP@12 ranker {metrics['map12_ranker']:.5f} | trending {metrics['map12_trending']:.5f} | "
        f"last week's top-12 {metrics['map12_last_week_top12']:.5f} | ranker/trending "
        f"{metrics['ranker_vs_trending']:.2f}x{oracle} | recall after filters {metrics['recall_after_filters']:.3f}"
    )


def command_run(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir).expanduser().resolve()
    os.environ["HM_DATA_DIR"] = str(data_dir)
    if args.home:
        os.environ["HM_HOME"] = str(Path(args.home).expanduser().resolve())
    from hm_assets.platform.settings import hm_home

    home = hm_home()
    if home == data_dir or data_dir in home.parents:
        print(f"error: HM_HOME ({home}) must not be inside the input folder {data_dir}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        from hm_assets.platform.guards import install_process_memory_budget

        install_process_memory_budget()  # HM_MEMORY_BUDGET, when set: a clear MemoryError, not an OOM kill
        from hm_assets.pipeline.ingest.data_contract import TRANSACTIONS_FILE, InputDataError
        from hm_assets.pipeline.ingest.data_range import scan_data_range

        data_range = scan_data_range(data_dir)
        if data_range is None:
            raise InputDataError(data_dir / TRANSACTIONS_FILE, "missing or unreadable: cannot tell the data's date range")
        from hm_assets.defs.runner import dagster_instance, plan_weeks, run_weeks, target_week
        from hm_assets.platform.settings import BUILT_WEEKS, DEFAULT_TRAINING_WEEKS, hm_first_week
        from hm_assets.platform.weeks import first_built_week

        target = target_week(data_range, args.week)
        backtest_weeks = args.backtest_weeks
        if backtest_weeks is None:
            # the live week has no truth: by default the newest week with known purchases is evaluated too
            backtest_weeks = 2 if target == data_range.live_week and not args.no_evaluate else 1
        training_weeks = args.training_weeks if args.training_weeks is not None else DEFAULT_TRAINING_WEEKS
        planned = plan_weeks(data_range, target, training_weeks, backtest_weeks)
        earliest = (planned.training_side or planned.full)[0]
        if earliest < first_built_week(data_range, BUILT_WEEKS, hm_first_week()):
            os.environ["HM_FIRST_WEEK"] = earliest.isoformat()  # the partition set must hold every planned week
        from hm_assets.definitions import build_definitions

        defs = build_definitions()

        plan = run_weeks(
            defs, dagster_instance(), data_range, target, training_weeks=training_weeks, backtest_weeks=backtest_weeks
        )
    except Exception as exc:  # the CLI's contract: a clear message and a non-zero exit
        cause = _root_cause(exc)
        print(f"error: {cause}", file=sys.stderr)
        return 1
    print(f"done in {time.perf_counter() - started:.0f} s; outputs under {home}")
    for week in plan.full:
        _print_week_summary(home, week.isoformat())
    submission = home / "assets" / "submission" / f"{target.isoformat()}.csv"
    if args.submission:
        destination = Path(args.submission).expanduser().resolve()
        if data_dir == destination.parent or data_dir in destination.parents:
            print(f"error: the submission must not be written into the input folder {data_dir}", file=sys.stderr)
            return 2
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(submission, destination)
        submission = destination
    print(f"Kaggle submission for week {target}: {submission}")
    return 0


def _store_for(args: argparse.Namespace):
    if args.home:
        os.environ["HM_HOME"] = str(Path(args.home).expanduser().resolve())
    from hm_assets.platform.store import HMStore

    return HMStore()


def _from_service(args: argparse.Namespace) -> dict | None:
    """The answer of a running ``hm-recs serve`` (the same on-demand path, with the week already
    loaded), or None when none answers at ``--server`` or it serves another week."""
    from urllib.error import URLError
    from urllib.parse import quote, urlencode
    from urllib.request import urlopen

    from hm_assets.platform.settings import hm_serve_url

    base = (args.server or hm_serve_url()).rstrip("/")
    try:
        with urlopen(f"{base}/healthz", timeout=0.5) as answer:
            health = json.loads(answer.read())
    except (URLError, OSError, ValueError):
        return None
    if not isinstance(health, dict) or not health.get("week") or (args.week and health["week"] != args.week):
        return None
    from hm_assets.platform.settings import hm_home

    home = Path(args.home).expanduser().resolve() if args.home else hm_home()
    if Path(health.get("store", "")).resolve() != home:
        return None  # a service over another store
    query = {"age": args.age} if args.age is not None else {}
    if args.bought:
        query["bought"] = ",".join(args.bought)
    url = f"{base}/customers/{quote(str(args.customer_id), safe='')}/recommendations?{urlencode(query)}"
    try:
        with urlopen(url, timeout=30) as answer:
            return json.loads(answer.read())
    except URLError as exc:  # HTTPError: a 4xx names the problem
        detail = getattr(exc, "read", lambda: b"")()
        raise ValueError(json.loads(detail).get("detail", str(exc)) if detail else str(exc)) from None


RECOMMENDATION_COLUMNS = ("rank", "article_id", "prod_name", "product_type_name", "colour_group_name", "score", "retrievers")


def _table_text(rows: list[dict]) -> str:
    """The 12 as a plain-text table (article ids in the Kaggle spelling, "fallback" for unscored fill)."""
    cells = [
        [
            str(row["rank"]), f"{int(row['article_id']):010d}", str(row["prod_name"]), str(row["product_type_name"]),
            str(row["colour_group_name"]), "fallback" if row["score"] is None else f"{row['score']:.4f}", row["retrievers"],
        ]
        for row in rows
    ]
    widths = [max(len(c) for c in column) for column in zip(RECOMMENDATION_COLUMNS, *cells)]
    lines = [RECOMMENDATION_COLUMNS, *cells]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)


def command_recommend(args: argparse.Namespace) -> int:
    """The customer's 12 right now, recomputed on demand (optionally after new purchases): asked of
    a running ``hm-recs serve`` when one serves the week (no heavy import here), else computed here
    after loading the week."""
    started = time.perf_counter()
    try:
        answer = None if args.local else _from_service(args)
        if answer is not None:
            rows = [
                {**item, "score": item["score"], "retrievers": ", ".join(item["retrievers"])} for item in answer["items"]
            ]
            week, known, customer_id, key = answer["week"], answer["known"], answer["customer_id"], answer["customer_key"]
            how = f"answered by the service at {args.server or os.environ.get('HM_SERVE_URL') or 'http://127.0.0.1:8000'}"
        else:
            import math

            from hm_assets.serving.on_demand import OnDemandRecommender

            with OnDemandRecommender(_store_for(args), args.week) as recommender:
                loaded = time.perf_counter() - started
                recs = recommender.recommend(args.customer_id, bought=args.bought or (), age=args.age)
            rows = [
                {**row, "score": None if math.isnan(row["score"]) else float(row["score"])}
                for row in recs.to_dict("records")
            ]
            week, known, customer_id, key = recs.attrs["week"], recs.attrs["known"], recs.attrs["customer_id"], recs.attrs["customer_key"]
            how = f"week loaded here in {loaded:.2f} s (start hm-recs serve to keep it loaded)"
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    who = "known customer" if known else "new customer (cold start)"
    print(f"week {week} · {who} {customer_id} (customer_key {key})")
    if args.bought:
        print("after buying: " + " ".join(f"{int(a):010d}" for a in args.bought))
    print(_table_text(rows))
    print(f"{how}; answered in {time.perf_counter() - started:.2f} s")
    return 0


def command_show(args: argparse.Namespace) -> int:
    """A customer's recent purchases and the week's stored recommendations."""
    try:
        import pandas as pd

        from hm_assets.serving.on_demand import (
            find_customer,
            format_table,
            newest_purchases,
            newest_recommendation_week,
            stored_recommendations,
        )

        store = _store_for(args)
        week = args.week or newest_recommendation_week(store)
        customers = pd.read_parquet(store.require("customers"), columns=["customer_key", "customer_id"])
        who = find_customer(customers, args.customer_id)
        purchases = newest_purchases(store, week, who.key, args.purchases)
        recs = stored_recommendations(store, week, who.key)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not who.known:
        print(f"error: no customer {args.customer_id} in {store.asset_path('customers')}", file=sys.stderr)
        return 1
    print(f"week {week} · customer {who.customer_id} (customer_key {who.key})")
    print(f"\nRecent purchases before {week} (newest first):")
    print(format_table(purchases))
    print(f"\nStored recommendations for {week}:")
    print(format_table(recs))
    return 0


def command_serve(args: argparse.Namespace) -> int:
    """The http service over the store: real-time recommendations of a week, and the galleries,
    submissions and plots the UI links to; with ``--workers N``, N processes on the port
    (``hm_assets/serving/workers.py``)."""
    import uvicorn

    store = _store_for(args)
    if args.week and args.week not in store.partitions("recommendations"):
        print(f"error: week {args.week} has no recommendations under {store.asset_dir('recommendations')}", file=sys.stderr)
        return 1
    if (args.reload_seconds < 0 or (args.threads is not None and args.threads < 1) or (args.computed_lists or 0) < 0
            or args.workers < 1):
        print("error: --reload-seconds and --computed-lists must be >= 0, --threads and --workers >= 1", file=sys.stderr)
        return 2
    print(f"serving {store.root} on http://{args.host}:{args.port} (set HM_SERVE_URL if the UI reaches it elsewhere); "
          f"{args.workers} worker{'s' if args.workers > 1 else ''} loading week {args.week or 'newest'} …", flush=True)
    if args.workers == 1:
        from hm_assets.serving.app import create_app
        from hm_assets.serving.service import COMPUTED_LISTS

        kept = COMPUTED_LISTS if args.computed_lists is None else args.computed_lists
        app = create_app(store, week=args.week, reload_seconds=args.reload_seconds, threads=args.threads, computed_lists=kept)
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
        return 0
    from hm_assets.serving.workers import ServeConfig, worker_folder

    config = ServeConfig(home=str(store.root), week=args.week, reload_seconds=args.reload_seconds, threads=args.threads,
                         computed_lists=args.computed_lists, workers=args.workers, folder="")
    with worker_folder(config):  # the workers' shared folder, named in the environment they inherit
        # A worker holds the interpreter lock for long stretches while it loads a week: uvicorn's
        # supervisor must not take its slow answers to a health ping for a hung worker.
        uvicorn.run("hm_assets.serving.app:worker_app", factory=True, workers=args.workers, host=args.host,
                    port=args.port, log_level="warning", timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from hm_assets.platform.settings import DEFAULT_TRAINING_WEEKS

    parser = argparse.ArgumentParser(prog="hm-recs", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="materialize one target week end to end and write the Kaggle submission")
    run.add_argument("--data-dir", required=True, help="folder with articles.csv, customers.csv, transactions_train.csv, images/")
    run.add_argument("--week", help="target week (a Wednesday, YYYY-MM-DD); default: the week after the data ends")
    run.add_argument("--submission", help="also copy the Kaggle submission CSV here")
    run.add_argument("--home", help="output folder (default: $HM_HOME)")
    run.add_argument("--training-weeks", type=int, default=None,
                     help=f"labelled earlier weeks the ranker learns from (default {DEFAULT_TRAINING_WEEKS})")
    run.add_argument("--backtest-weeks", type=int, default=None,
                     help="run this many weeks ending at the target (default: with the live week as target, 2: the "
                          "newest week with known purchases is evaluated too; else 1)")
    run.add_argument("--no-evaluate", action="store_true",
                     help="with the live week as target, skip the newest known week (no MAP@12 figures)")
    run.set_defaults(handler=command_run)
    recommend = sub.add_parser("recommend", help="a customer's 12 recommendations now, recomputed on demand")
    recommend.add_argument("customer_id", help="the 64-hex customer_id (or customer_key); an unknown id is a new customer")
    recommend.add_argument("--week", help="week whose artefacts to use (default: the newest with recommendations)")
    recommend.add_argument("--bought", nargs="+", metavar="ARTICLE_ID", help="articles bought just now (before the week)")
    recommend.add_argument("--age", type=float, help="the customer's age (new customers; overrides a known one's)")
    recommend.add_argument("--home", help="output folder (default: $HM_HOME)")
    recommend.add_argument("--server", help="a running hm-recs serve to ask (default: $HM_SERVE_URL or http://127.0.0.1:8000)")
    recommend.add_argument("--local", action="store_true", help="load the week here even when a service answers")
    recommend.set_defaults(handler=command_recommend)
    show = sub.add_parser("show", help="a customer's recent purchases and stored recommendations")
    show.add_argument("customer_id", help="the 64-hex customer_id (or customer_key)")
    show.add_argument("--week", help="week (default: the newest with recommendations)")
    show.add_argument("--purchases", type=int, default=12, help="how many recent purchases to list")
    show.add_argument("--home", help="output folder (default: $HM_HOME)")
    show.set_defaults(handler=command_show)
    serve = sub.add_parser("serve", help="the http service: real-time recommendations, and the files the UI links to")
    serve.add_argument("--home", help="output folder (default: $HM_HOME)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--week", help="serve this week and stay on it (default: the newest with recommendations, then each newer one)")
    serve.add_argument("--reload-seconds", type=float, default=30.0,
                       help="how often to look for a newer week with recommendations (default 30; 0: never)")
    serve.add_argument("--threads", type=int, default=None,
                       help="computations (purchases, on-demand lists) run at once, per worker (default: one per core, shared "
                            "out among the workers)")
    serve.add_argument("--workers", type=int, default=1,
                       help="server processes on the port, each with the week loaded (its memory each), sharing the "
                            "event log, reloads and metrics (default 1)")
    serve.add_argument("--computed-lists", type=int, default=None,
                       help="computed lists kept per week, answered again without computing until the customer's "
                            "next purchase (default 20000; 0: none)")
    serve.set_defaults(handler=command_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
