"""Benchmark the synthetic data generator: wall time, peak memory, rows written.

    python benchmarks/bench_synthetic.py --preset small [--seed 0] [--out /tmp/hm-bench-small] [--keep] [--validate]

Runs ``python -m hm_assets.synthetic.cli OUT --preset P --seed S`` in a subprocess, samples the
resident memory of its whole process tree (the generator draws images in a second process for
big catalogues) every 0.2 s with psutil, and prints a Markdown table row. ``--validate`` also
measures the written data set against the real aggregates (DuckDB). The output folder is deleted
afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import psutil

from host import machine, tree_rss

ROOT = Path(__file__).resolve().parent.parent


def run(preset: str, seed: int, out: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "hm_assets.synthetic.cli", str(out), "--preset", preset, "--seed", str(seed), *extra]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=str(ROOT))
    ps = psutil.Process(proc.pid)
    peak_tree = peak_main = 0
    while proc.poll() is None:
        peak_tree = max(peak_tree, tree_rss(ps))
        try:
            peak_main = max(peak_main, ps.memory_info().rss)
        except psutil.NoSuchProcess:
            pass
        time.sleep(0.2)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"generator failed ({proc.returncode}):\n{stderr[-4000:]}")
    rows = {name: int(n.replace(",", "")) for name, n in re.findall(r"(\S+\.csv|images)\s+([\d,]+) (?:rows|files)", stdout)}
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {
        "preset": preset, "seed": seed, "command": " ".join(["hm-synth", str(out), "--preset", preset, "--seed", str(seed), *extra]),
        "wall_s": round(wall, 1), "peak_rss_tree_mib": round(peak_tree / 2**20), "peak_rss_main_mib": round(peak_main / 2**20),
        "rows": rows, "bytes": size, "stdout": stdout, "date": date.today().isoformat(), "machine": machine(),
    }


def markdown_row(r: dict) -> str:
    rows = r["rows"]
    return (f"| {r['preset']} | {rows.get('customers.csv', 0):,} | {rows.get('articles.csv', 0):,} | "
            f"{rows.get('transactions_train.csv', 0):,} | {rows.get('images', 0):,} | {r['wall_s']:.1f} | "
            f"{r['peak_rss_tree_mib']:,} ({r['peak_rss_main_mib']:,}) | {r['bytes'] / 2**20:,.0f} MiB |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small", choices=["tiny", "small", "full"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output folder (default /tmp/hm-bench-PRESET); never inside the repo")
    p.add_argument("--keep", action="store_true", help="keep the generated data set")
    p.add_argument("--validate", action="store_true", help="measure calibrations of the written data")
    p.add_argument("--json", default=None, help="also write the result as JSON here")
    p.add_argument("extra", nargs="*", help="extra hm-synth arguments (after --)")
    args = p.parse_args(argv)
    out = Path(args.out or f"/tmp/hm-bench-{args.preset}").resolve()
    if ROOT in out.parents:
        raise SystemExit("write benchmark data outside the repository")
    load_before = os.getloadavg()[0]
    result = run(args.preset, args.seed, out, args.extra)
    result["load_avg_1min_before_after"] = [round(load_before, 1), round(os.getloadavg()[0], 1)]
    if args.validate:
        sys.path.insert(0, str(ROOT))
        from hm_assets.synthetic.validate import compare, measure

        t0 = time.perf_counter()
        m = measure(out)
        result["validation_s"] = round(time.perf_counter() - t0, 1)
        result["measures"] = m
        result["vs_real"] = compare(m)
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    print(f"machine: {result['machine']}; date {result['date']}; "
          f"1-min load average before/after {result['load_avg_1min_before_after']}")
    print(f"command: {result['command']}")
    print("| preset | customers | articles | transactions | images | wall s | peak RSS MiB tree (main) | on disk |")
    print("|---|---|---|---|---|---|---|---|")
    print(markdown_row(result))
    if args.validate:
        print(json.dumps(result["vs_real"], indent=1, default=str))
    if args.json:
        Path(args.json).write_text(json.dumps({k: v for k, v in result.items() if k != "stdout"}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
