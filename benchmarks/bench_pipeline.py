"""Benchmark one weekly partition end to end: wall time and peak RSS per asset.

Runs `hm-recs run` in a subprocess against a fresh HM_HOME and DAGSTER_HOME, samples the process
tree's resident memory every 0.2 s, then reads each step's start and end from the Dagster event
log and attributes the peak RSS seen during it. Prints a Markdown table.

    python benchmarks/bench_pipeline.py --data-dir /tmp/hm_small --home /tmp/bench_small \
        [--training-weeks 1] [--backtest-weeks 1] [--week YYYY-MM-DD] [--out results.md]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from host import machine, tree_rss

from hm_assets.platform.settings import DEFAULT_TRAINING_WEEKS


def sample(process: psutil.Process, samples: list[tuple[float, int]], stop: threading.Event) -> None:
    while not stop.is_set():
        samples.append((time.time(), tree_rss(process)))
        stop.wait(0.2)


def step_windows(dagster_home: Path) -> list[tuple[str, str, float, float]]:
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    import dagster as dg

    instance = dg.DagsterInstance.get()
    windows = []
    for run in reversed(instance.get_runs()):
        partition = run.tags.get("dagster/partition", run.tags.get("dagster/asset_partition_range_start", "-"))
        starts: dict[str, float] = {}
        for record in instance.all_logs(run.run_id):
            event = record.dagster_event
            if event is None or event.step_key is None:
                continue
            if event.event_type_value == "STEP_START":
                starts[event.step_key] = record.timestamp
            elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE") and event.step_key in starts:
                windows.append((partition, event.step_key, starts[event.step_key], record.timestamp))
    return windows


def asset_totals(rows: list[tuple[str, str, float, float]]) -> list[tuple[str, str, float, float]]:
    """Per partition and asset: seconds summed over its steps (the in-process executor runs them
    one after another; a sharded asset is plan + shards + combine) and the peak RSS among them."""
    totals: dict[tuple[str, str], list[float]] = {}
    for partition, step, seconds, peak in rows:
        asset = step.split(".", 1)[0]
        entry = totals.setdefault((partition, asset), [0.0, 0.0])
        entry[0] += seconds
        entry[1] = max(entry[1], peak)
    return [(p, a, sec, peak) for (p, a), (sec, peak) in totals.items()]


def summary_lines(rows: list[tuple[str, str, float, float]]) -> list[str]:
    lines = ["", "| partition | asset | seconds | peak RSS (GiB) |", "| --- | --- | ---: | ---: |"]
    totals = asset_totals(rows)
    lines += [f"| {p} | {a} | {sec:.1f} | {rss:.2f} |" for p, a, sec, rss in totals]
    lines += ["", "| partition | steps' seconds, summed | peak RSS (GiB) |", "| --- | ---: | ---: |"]
    for partition in dict.fromkeys(p for p, *_ in totals):
        mine = [t for t in totals if t[0] == partition]
        lines.append(f"| {partition} | {sum(t[2] for t in mine):.1f} | {max(t[3] for t in mine):.2f} |")
    return lines


def parse_table(text: str) -> list[tuple[str, str, float, float]]:
    """The per-step rows of an earlier output of this script."""
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[2].replace(".", "", 1).isdigit():
            rows.append((cells[0], cells[1], float(cells[2]), float(cells[3])))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir")
    parser.add_argument("--home", help="fresh output folder (deleted first)")
    parser.add_argument("--week")
    parser.add_argument("--training-weeks", type=int, default=DEFAULT_TRAINING_WEEKS)
    parser.add_argument("--backtest-weeks", type=int, default=1)
    parser.add_argument("--out")
    parser.add_argument("--summarize", help="only print the per-asset summary of an earlier --out file")
    args = parser.parse_args()
    if args.summarize:
        print("\n".join(summary_lines(parse_table(Path(args.summarize).read_text()))))
        return 0

    home = Path(args.home).resolve()
    shutil.rmtree(home, ignore_errors=True)
    dagster_home = home / "dagster"
    env = {**os.environ, "HM_HOME": str(home), "DAGSTER_HOME": str(dagster_home)}
    command = [
        str(Path(sys.executable).with_name("hm-recs")), "run", "--data-dir", args.data_dir,
        "--training-weeks", str(args.training_weeks), "--backtest-weeks", str(args.backtest_weeks),
    ]
    if args.week:
        command += ["--week", args.week]
    log = home.parent / f"{home.name}.log"
    home.mkdir(parents=True)
    started = time.time()
    with log.open("w") as handle:
        child = subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT)
        samples: list[tuple[float, int]] = []
        stop = threading.Event()
        sampler = threading.Thread(target=sample, args=(psutil.Process(child.pid), samples, stop), daemon=True)
        sampler.start()
        code = child.wait()
        stop.set()
        sampler.join()
    wall = time.time() - started
    if code != 0:
        print(f"hm-recs run failed ({code}); see {log}. The steps it finished:", file=sys.stderr)

    rows = []
    for partition, step, begin, end in step_windows(dagster_home):
        peak = max((rss for t, rss in samples if begin - 0.2 <= t <= end + 0.2), default=0)
        rows.append((partition, step, end - begin, peak / 2**30))
    peak_all = max(rss for _, rss in samples) / 2**30
    lines = [
        f"- machine: {machine()}",
        f"- command: `{' '.join(command)}` (HM_HOME={home})",
        f"- total wall time {wall:.0f} s, peak RSS of the process tree {peak_all:.2f} GiB",
        "",
        "| partition | step | seconds | peak RSS (GiB) |",
        "| --- | --- | ---: | ---: |",
    ]
    lines += [f"| {p} | {s} | {sec:.1f} | {rss:.2f} |" for p, s, sec, rss in rows]
    lines += summary_lines(rows)
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
