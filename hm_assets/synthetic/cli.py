"""``hm-synth OUT_DIR --preset {tiny,small,full} --seed N [--end-date YYYY-MM-DD]``"""

from __future__ import annotations

import argparse
import sys
import time

from .generator import PRESETS, generate
from .timeline import parse_end_date


def _end_date(value: str):
    try:
        return parse_end_date(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hm-synth",
        description="Generate a synthetic H&M data set in the Kaggle layout (articles.csv, customers.csv, "
                    "transactions_train.csv, images/). Same preset + seed + end date -> identical files.")
    p.add_argument("out_dir", help="folder to create (written atomically; an existing generated data set is replaced)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="small",
                   help="tiny: tests (seconds); small: demo (a minute or two); full: the real data's size; world-*: "
                        "16k-customer worlds of different structure (benchmarks/bench_quality.py)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--end-date", type=_end_date, default=None,
                   help="last day, a Tuesday (default: full -> 2020-09-22, else the most recent Tuesday before today)")
    p.add_argument("--no-images", action="store_true", help="skip the images folder")
    p.add_argument("--no-oracle", action="store_true",
                   help="skip oracle.csv (the model's expected top-12 of each buyer in the last weeks)")
    p.add_argument("--no-overwrite", action="store_true", help="fail if OUT_DIR exists and is not empty")
    p.add_argument("--truth-dir", default=None, help="also write the latent structure (for validation) here")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    t0 = time.perf_counter()

    def progress(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f}s] {msg}", file=sys.stderr, flush=True)

    try:
        summary = generate(args.out_dir, preset=args.preset, seed=args.seed, end_date=args.end_date,
                           images=not args.no_images, oracle=not args.no_oracle, overwrite=not args.no_overwrite,
                           truth_dir=args.truth_dir, progress=None if args.quiet else progress)
    except (FileExistsError, ValueError) as exc:
        print(f"hm-synth: error: {exc}", file=sys.stderr)
        return 2
    rows = summary["rows"]
    print(f"hm-synth: wrote {summary['out_dir']} (preset {summary['preset']}, seed {summary['seed']})")
    print(f"  dates          {summary['start_date']} .. {summary['end_date']} ({summary['days']} days)")
    print(f"  articles.csv           {rows['articles']:>12,} rows")
    print(f"  customers.csv          {rows['customers']:>12,} rows")
    print(f"  transactions_train.csv {rows['transactions']:>12,} rows")
    print(f"  images                 {summary['images']:>12,} files")
    print(f"  seconds                {summary['seconds']:>12.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
