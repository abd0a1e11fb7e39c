"""hm-synth's oracle: the latent model's expected top-12 of each buyer of the last weeks."""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from hm_assets.pipeline.evaluation.baselines import trending
from hm_assets.pipeline.evaluation.metrics import map_at_k
from hm_assets.synthetic import generate
from hm_assets.synthetic.generator import ORACLE_FILE, WORLDS
from hm_assets.synthetic.transactions import follow_share_by_gap

END = date(2024, 6, 25)  # a Tuesday
DATA_FILES = ("articles.csv", "customers.csv", "transactions_train.csv")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_oracle(folder: Path) -> pd.DataFrame:
    """One row per (week, customer, article) with its rank."""
    oracle = pd.read_csv(folder / ORACLE_FILE, dtype=str)
    rows = oracle.assign(article_id=oracle["prediction"].str.split(" ")).explode("article_id")
    rows["rank"] = rows.groupby(["week", "customer_id"]).cumcount() + 1
    return rows.drop(columns="prediction")


def week_frames(folder: Path, week: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(history before the week, the week's purchases) with customer_key = customer_id."""
    t = pd.read_csv(folder / "transactions_train.csv", dtype={"customer_id": str, "article_id": str}, parse_dates=["t_dat"])
    t = t.rename(columns={"customer_id": "customer_key"})
    start = pd.Timestamp(week)
    t["t_dat"] = t["t_dat"].dt.date
    start = start.date()
    return t[t["t_dat"] < start], t[(t["t_dat"] >= start) & (t["t_dat"] < start + pd.Timedelta(days=7))]


def test_oracle_leaves_the_data_set_byte_identical(tmp_path):
    with_oracle = tmp_path / "with"
    without = tmp_path / "without"
    generate(with_oracle, preset="tiny", seed=3, end_date=END, images=False)
    generate(without, preset="tiny", seed=3, end_date=END, images=False, oracle=False)
    for name in DATA_FILES:
        assert digest(with_oracle / name) == digest(without / name), name
    assert (with_oracle / ORACLE_FILE).exists() and not (without / ORACLE_FILE).exists()
    oracle = read_oracle(with_oracle)
    weeks = sorted(oracle["week"].unique())
    assert len(weeks) == 4 and weeks[-1] == "2024-06-19"  # the last four Wednesday weeks
    assert oracle.groupby(["week", "customer_id"]).size().max() == 12
    # exactly the buyers of each week: the oracle is scored where MAP@12 scores
    for week in weeks:
        _, truth = week_frames(with_oracle, week)
        assert set(oracle.loc[oracle["week"] == week, "customer_id"]) == set(truth["customer_key"])


@pytest.mark.parametrize("world", sorted(WORLDS))
def test_oracle_beats_trending_on_every_world(tmp_path, world):
    """Each world at a fifth of its size: the data's own model against the trending baseline, both
    scored with Kaggle's MAP@12 on the last week."""
    folder = tmp_path / world
    generate(folder, preset=world, seed=0, end_date=END, images=False, n_customers=4_000, n_articles=1_500,
             n_transactions=80_000, weeks=16)
    oracle = read_oracle(folder)
    week = oracle["week"].max()
    history, truth = week_frames(folder, week)
    con = duckdb.connect()
    con.register("transactions", history)
    buyers = truth["customer_key"].unique()
    baseline = trending(con, date.fromisoformat(week), buyers)
    ours = oracle[oracle["week"] == week]
    map_oracle = map_at_k(ours.rename(columns={"customer_id": "customer_key"}), truth)
    map_trending = map_at_k(baseline, truth)
    assert map_oracle > 1.5 * map_trending, (world, map_oracle, map_trending)


def test_oracle_on_a_world_whose_answer_is_known(tmp_path):
    """Everyone only ever re-buys their latest article (looks back one item, always accepts, keeps
    the same article, no extras): the oracle must put exactly that article first for every buyer
    who had bought before, and it must be what they bought."""
    folder = tmp_path / "rebuy"
    generate(folder, preset="tiny", seed=1, end_date=END, images=False,
             p_history=1.0, p_history_follow=1.0, lookback_p=1.0, tau_history=1e9, tau_basic=1e9, tau_sibling=1e9,
             p_repeat_nonbasic=1.0, p_repeat_follow=1.0, p_same_article=1.0, p_outfit=0.0, p_variant=0.0)
    oracle = read_oracle(folder)
    week = oracle["week"].max()
    history, truth = week_frames(folder, week)
    latest = history.groupby("customer_key", sort=False)["article_id"].last()  # file order: the latest row last
    first = oracle[(oracle["week"] == week) & (oracle["rank"] == 1)].set_index("customer_id")["article_id"]
    returning = first.index.intersection(latest.index)
    assert len(returning) > 50
    assert (first.loc[returning] == latest.loc[returning]).all()
    # and it is right: every returning buyer bought that article
    bought = set(zip(truth["customer_key"], truth["article_id"]))
    assert all((c, latest[c]) in bought for c in returning)


def test_follow_up_share_by_gap_is_read_from_the_session_plan():
    # customer 0: sessions on days 0, 2 (a follow-up), 10; customer 1: days 1, 3 (not a follow-up), 4 (a follow-up)
    day = np.array([0, 2, 10, 1, 3, 4])
    cust = np.array([0, 0, 0, 1, 1, 1])
    follow = np.array([False, True, False, False, False, True])
    share = follow_share_by_gap(day, cust, follow, before_day=11, max_gap=20)
    assert share[2] == pytest.approx(0.5)  # gap 2: one follow-up in two
    assert share[1] == pytest.approx(1.0)
    assert share[8] == 0.0
    assert share[20] == 0.0  # first sessions
    # sessions on or after before_day are not looked at
    assert follow_share_by_gap(day, cust, follow, before_day=4, max_gap=20)[1] == 0.0
