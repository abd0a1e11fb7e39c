"""On-demand recommendations on a tiny materialized run: they reproduce the stored week, adapt to new
purchases and to a new customer's age; plus the ``hm-recs recommend`` / ``show`` commands.

The run (``recs_run``, see ``hm_assets_tests/tiny_run.py``) is shared with ``test_gallery.py`` and
``test_service.py``: a training week and the newest week with truth, with a small ranker.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd
import pytest


@pytest.fixture(scope="module")
def store(recs_run):
    from hm_assets.store import HMStore

    return HMStore(home=str(recs_run.home))


@pytest.fixture(scope="module")
def recommender(store, recs_run):
    from hm_assets.on_demand import OnDemandRecommender

    started = time.perf_counter()
    with OnDemandRecommender(store, recs_run.week) as loaded:
        load = time.perf_counter() - started
        started = time.perf_counter()
        loaded.warm()
        print(f"\non-demand: loaded in {load:.2f} s, global steps {time.perf_counter() - started:.2f} s {loaded.load_seconds}")
        yield loaded


@pytest.fixture(scope="module")
def stored(store, recs_run) -> pd.DataFrame:
    return pd.read_parquet(store.require("recommendations", recs_run.week))


def _customers_with_history(store, week: str, count: int) -> list[int]:
    history = pd.concat(
        pd.read_parquet(p, columns=["customer_key"]) for p in sorted(store.asset_dir("transactions").glob("*.parquet")) if p.stem < week
    )
    keys = np.sort(history["customer_key"].unique())
    return [int(k) for k in keys[:: max(len(keys) // count, 1)][:count]]


def test_reproduces_the_stored_recommendations(recommender, store, stored, recs_run):
    """Without new purchases the on-demand list is the stored one: the same code (retrievers on a
    one-customer view, the batch's union, rules, pair-feature SQL and ranker) on the same data.
    Exact equality is expected; float summation order could in principle flip a near-tie, hence the
    tolerance of one differing list."""
    keys = _customers_with_history(store, recs_run.week, 16)
    no_history = stored[~stored["customer_key"].isin(keys)]["customer_key"].unique()
    keys += [int(k) for k in no_history[:: max(len(no_history) // 4, 1)][:4]]
    identical, overlaps, seconds = 0, [], []
    for key in keys:
        mine = recommender.recommend(key)
        seconds.append(mine.attrs["seconds"])
        theirs = stored[stored["customer_key"] == key].sort_values("rank")["article_id"].tolist()
        identical += mine["article_id"].tolist() == theirs
        overlaps.append(len(set(theirs) & set(mine["article_id"])))
        assert len(mine) == 12 and mine["article_id"].is_unique
    print(f"\n{identical}/{len(keys)} identical lists; overlaps {overlaps}; mean {np.mean(seconds):.3f} s per call")
    assert identical >= len(keys) - 1
    assert min(overlaps) >= 10


def test_a_purchase_moves_the_list_towards_it(recommender, store, recs_run):
    """After buying an article, the lists hold more articles of its style cluster (the synthetic
    world's latent taste unit: customers buy mostly within a cluster), they change, and the article
    itself is not recommended again. 24 customers and three bestsellers: on the tiny data of three
    end dates (2026-11-03, -17, -24) every such purchase moved the 24 lists by 6 to 47 articles
    towards its cluster, and changed 22 to 24 of them; with the taste features (the customer's
    recent taste follows the purchase), on 2026-11-24 by 34, 9 and 32 articles, all 24 changed."""
    truth = pd.read_csv(recs_run.truth / "articles_truth.csv", dtype={"article_id": str})
    cluster = pd.Series(truth["cluster"].to_numpy(), index=truth["article_id"].astype(int))
    names = recommender.articles.set_index("article_id")["prod_name"]
    history = pd.concat(
        pd.read_parquet(p) for p in sorted(store.asset_dir("transactions").glob("*.parquet"))[-6:] if p.stem < recs_run.week
    )
    bestsellers = history["article_id"].value_counts().index.astype(int)
    keys = _customers_with_history(store, recs_run.week, 24)
    for article_id in (bestsellers[1], bestsellers[3], bestsellers[5]):
        before = after = changed = 0
        for key in keys:
            old = recommender.recommend(key)
            new = recommender.recommend(key, bought=[f"{article_id:010d}"])
            assert article_id not in set(new["article_id"]) and len(new) == 12
            assert new.attrs["bought"] == [article_id]
            before += int((cluster.reindex(old["article_id"]).to_numpy() == cluster[article_id]).sum())
            after += int((cluster.reindex(new["article_id"]).to_numpy() == cluster[article_id]).sum())
            changed += old["article_id"].tolist() != new["article_id"].tolist()
        print(f"\nbought {article_id:010d} ({names[article_id]}, style cluster {cluster[article_id]}): "
              f"{before} -> {after} recommendations of that cluster in {len(keys)} lists; {changed} lists changed")
        assert after > before  # the lists move towards the purchase's style
        assert changed >= len(keys) - 2


def test_cold_start_adapts_to_age(recommender):
    teen = recommender.recommend("brand-new-customer", age=17)
    senior = recommender.recommend("brand-new-customer", age=70)
    again = recommender.recommend("brand-new-customer", age=17)
    assert not teen.attrs["known"] and len(teen) == len(senior) == 12
    assert teen["article_id"].tolist() == again["article_id"].tolist()
    assert teen["article_id"].tolist() != senior["article_id"].tolist()
    assert len(set(teen["article_id"]) & set(senior["article_id"])) < 12
    assert set(", ".join(teen["retrievers"]).replace(" ", "").split(",")) <= {"popularity_model", ""}
    # A hex id that is not in customers.csv is a new customer too.
    unknown = recommender.recommend("f" * 64, age=17)
    assert not unknown.attrs["known"] and unknown["article_id"].tolist() == teen["article_id"].tolist()


def test_rejects_unknown_articles_and_attributes(recommender):
    with pytest.raises(ValueError, match="unknown article"):
        recommender.recommend("someone", bought=["0000000001"])
    with pytest.raises(ValueError, match="attribute"):
        recommender.recommend("someone", attributes={"shoe_size": 38})


def test_latency(recommender, store, recs_run):
    keys = _customers_with_history(store, recs_run.week, 10)
    bought = int(recommender.articles["article_id"].iloc[0])
    calls = [recommender.recommend(k, bought=[bought] if i % 2 else ()).attrs["seconds"] for i, k in enumerate(keys)]
    print(f"\non-demand latency (tiny, warm): mean {np.mean(calls):.3f} s, max {np.max(calls):.3f} s over {len(calls)} calls")


def test_cli_recommend_and_show(recs_run, stored, capsys):
    from hm_assets.cli import main

    customers = pd.read_parquet(recs_run.home / "assets" / "customers.parquet")
    key = int(stored["customer_key"].iloc[0])
    customer_id = customers.set_index("customer_key").loc[key, "customer_id"]
    home = ["--home", str(recs_run.home)]
    article = f"{int(stored['article_id'].iloc[0]):010d}"
    previous = os.environ.get("HM_HOME")
    try:
        assert main(["show", customer_id, *home]) == 0
        shown = capsys.readouterr().out
        assert f"week {recs_run.week}" in shown and "Stored recommendations" in shown
        for article_id in stored[stored["customer_key"] == key]["article_id"]:
            assert f"{int(article_id):010d}" in shown

        assert main(["recommend", customer_id, "--week", recs_run.week, "--bought", article, *home]) == 0
        printed = capsys.readouterr().out
        rows = [line for line in printed.splitlines() if line.strip()[:2].strip().isdigit()]
        assert len(rows) == 12 and all(len(line.split()[1]) == 10 for line in rows)
        assert f"after buying: {article}" in printed

        assert "known customer" in printed and "loaded in" in printed
        assert main(["recommend", customer_id, "--bought", "0000000001", *home]) == 1
        assert "unknown article" in capsys.readouterr().err
        assert main(["show", "nobody", *home]) == 1
    finally:
        if previous is None:
            os.environ.pop("HM_HOME", None)
        else:
            os.environ["HM_HOME"] = previous
