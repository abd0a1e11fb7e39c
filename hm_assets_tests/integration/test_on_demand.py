"""On-demand recommendations on a tiny materialized run: they reproduce the stored week, adapt to new
purchases and to a new customer's age; plus the ``hm-recs recommend`` / ``show`` commands.

The run (``recs_run``, see ``hm_assets_tests/tiny_run.py``) is shared with ``test_gallery.py`` and
``test_service.py``: a training week and the newest week with truth, with the default ranker.
"""

from __future__ import annotations

import os
import pickle
import sys
import time

import numpy as np
import pandas as pd
import pytest

from hm_assets_tests.tiny_run import customers_with_history


@pytest.fixture(scope="module")
def store(recs_run):
    from hm_assets.platform.store import HMStore

    return HMStore(home=str(recs_run.home))


@pytest.fixture(scope="module")
def recommender(store, recs_run):
    from hm_assets.serving.on_demand import OnDemandRecommender

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


def test_reproduces_the_stored_recommendations(recommender, store, stored, recs_run):
    """Without new purchases the on-demand list is the stored one: the same code (retrievers on a
    one-customer view, the batch's union, rules, pair-feature SQL and ranker) on the same data.
    Exact equality is expected; float summation order could in principle flip a near-tie, hence the
    tolerance of one differing list."""
    keys = customers_with_history(store, recs_run.week, 16)
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


def _style_walkers(store, recs_run, count: int) -> pd.DataFrame:
    """Customers with history and a consistent style (under the generator's latent taste their
    first style cluster carries most of their purchases), steadiest first."""
    from hm_assets.serving.on_demand import customer_key_from_id

    truth = pd.read_csv(recs_run.truth / "customers_truth.csv")
    truth["customer_key"] = truth["customer_id"].map(customer_key_from_id)
    with_history = set(customers_with_history(store, recs_run.week, 10**6))
    steady = truth[truth["customer_key"].isin(with_history)].sort_values(["weight_1", "customer_key"], ascending=[False, True])
    return steady.head(count).reset_index(drop=True)


def test_three_purchases_each_move_the_list_towards_their_style(recommender, store, recs_run):
    """The seed's walkthrough (a lace top, then a jacket, then a dress, the 12 following each
    purchase), measured on 50 customers with a consistent style. Each buys, three times in
    succession, an article of another style the generator says they like (their second style
    cluster) that their current list does not show — the best seller of that style they do not own.
    After every purchase the 50 lists hold more articles of that style than before, more lists move
    towards it than away, and nearly every list changes. On the tiny data (2026-11-24), with the
    default ranker (300 trees, the prescreen keeping 20), taste_similar and the lapsed customers' cap,
    the 50 lists held 30 -> 56 -> 84 -> 98 articles of the style (lists moving towards / away at each
    purchase: 19/2, 25/4, 14/6; changed 50, 50, 50). With 400 trees, keeping 24 and no lapsed cap:
    29 -> 70 -> 91 -> 106; without taste_similar as well, 22 -> 59 -> 78 -> 92."""
    articles = pd.read_csv(recs_run.truth / "articles_truth.csv", dtype={"article_id": str})
    cluster = pd.Series(articles["cluster"].to_numpy(), index=articles["article_id"].astype(int))
    weeks = sorted(p for p in store.asset_dir("transactions").glob("*.parquet") if p.stem < recs_run.week)
    history = pd.concat(pd.read_parquet(p) for p in weeks)
    recent = pd.concat(pd.read_parquet(p) for p in weeks[-4:])
    # best sellers first: of the last four weeks, then of the whole history
    by_sales = list(dict.fromkeys([*recent["article_id"].value_counts().index, *history["article_id"].value_counts().index]))
    in_style, up, down, changed, walked = np.zeros(4, dtype=int), np.zeros(3, dtype=int), np.zeros(3, dtype=int), np.zeros(3, dtype=int), 0
    for walker in _style_walkers(store, recs_run, 80).itertuples():
        style = walker.cluster_2
        owned = set(history.loc[history["customer_key"] == walker.customer_key, "article_id"])
        shelf = [int(a) for a in by_sales if cluster.get(int(a)) == style and a not in owned]
        lists, bought = [recommender.recommend(walker.customer_key)["article_id"].tolist()], []
        for _ in range(3):
            unseen = [a for a in shelf if a not in bought and a not in lists[-1]]
            if not unseen:
                break  # a small style of the tiny catalogue: too few articles to walk through
            bought.append(unseen[0])
            lists.append(recommender.recommend(walker.customer_key, bought=bought)["article_id"].tolist())
        if len(lists) < 4:
            continue
        counts = np.array([int((cluster.reindex(found).to_numpy() == style).sum()) for found in lists])
        assert all(len(found) == 12 and not set(bought[:n]) & set(found) for n, found in enumerate(lists[1:], start=1))
        in_style += counts
        up += np.diff(counts) > 0
        down += np.diff(counts) < 0
        changed += [lists[n] != lists[n + 1] for n in range(3)]
        walked += 1
        if walked == 50:
            break
    print(f"\narticles of the bought style in {walked} lists after 0, 1, 2, 3 purchases: {in_style.tolist()}; "
          f"lists moving towards / away at each purchase: {up.tolist()} / {down.tolist()}; changed: {changed.tolist()}")
    assert walked == 50
    assert (np.diff(in_style) > 0).all()  # each purchase moves the lists towards its style
    assert (up > down).all()
    assert (changed >= 45).all()


def test_newest_purchases_from_the_loaded_week_equal_the_stored_files(recommender, store, recs_run):
    """The service's purchase history comes from the recommender's loaded week; the CLI's ``show``
    reads the files: the same rows."""
    from hm_assets.serving.on_demand import newest_purchases

    for key in customers_with_history(store, recs_run.week, 6):
        loaded = recommender.newest_purchases(key, 12)
        assert len(loaded)
        pd.testing.assert_frame_equal(loaded, newest_purchases(store, recs_run.week, key, 12), check_dtype=False)


def test_a_longer_list_is_ranked_whole_past_the_prescreen(recommender, store, recs_run):
    """The service may ask for up to 100 articles; the prescreen then lets that many through to the
    whole model instead of filling the list from the bestsellers."""
    assert recommender.scorer is not None and recommender.scorer.prescreen is not None
    key = customers_with_history(store, recs_run.week, 3)[0]
    keep = recommender.scorer.prescreen.keep
    ranked = recommender.rank(key, k=keep + 10)
    candidates = ranked.pairs["article_id"].nunique()
    assert candidates > keep + 10
    assert ranked.recs["score"].notna().sum() == keep + 10
    usual = recommender.rank(key)
    scores = recommender._score(usual.pairs)
    left_out = int(usual.pairs["article_id"][np.isnan(scores)].iloc[0])
    assert recommender.explain(key, left_out)["prescreened_out"]
    assert not recommender.explain(key, int(usual.recs["article_id"].iloc[0]))["prescreened_out"]


def test_the_history_read_from_its_files_gives_the_same_lists(recommender, store, recs_run):
    """``history_in_memory=False`` (the gallery's recommender) reads the history through a view of
    its files: the same lists, scores and retrievers as the in-memory copy, for customers with
    history, with a purchase just made, and new ones (scores: see ``_same_list``)."""
    from hm_assets.serving.on_demand import OnDemandRecommender

    keys = customers_with_history(store, recs_run.week, 6)
    with OnDemandRecommender(store, recs_run.week, history_in_memory=False) as from_files:
        assert from_files._con.execute(
            "SELECT table_type FROM information_schema.tables WHERE table_name = 'h_history'"
        ).fetchall() == [("VIEW",)]
        for key in keys:
            mine = from_files.recommend(key)
            theirs = recommender.recommend(key)
            _same_list(mine, theirs)
            bought = [int(theirs["article_id"].iloc[0])]
            assert from_files.recommend(key, bought=bought)["article_id"].tolist() == (
                recommender.recommend(key, bought=bought)["article_id"].tolist()
            )
        for age in (17, 45, 70):
            _same_list(from_files.recommend(f"new-customer-age-{age}", age=age), recommender.recommend(f"new-customer-age-{age}", age=age))


def test_the_cap_s_calibration_is_the_one_the_week_s_candidates_record(recommender, store, recs_run):
    """The recommender reads the calibration the week's cap used from its candidates file: the one
    the previous week's outputs give when measured again."""
    from hm_assets.pipeline.ranking.candidates import previous_week_calibration, recorded_calibration

    names = [r.name for r in recommender.retrievers]
    found, recorded = recorded_calibration(store.require("candidates", recs_run.week), names)
    measured = previous_week_calibration(store, recs_run.week, names)
    assert found and recorded is not None and measured is not None
    pd.testing.assert_frame_equal(recorded.table, measured.table)
    assert recommender.calibration.priority_sql(names) == measured.priority_sql(names)


def _same_list(mine: pd.DataFrame, theirs: pd.DataFrame) -> None:
    """The same articles in the same order, proposed by the same retrievers; the scores equal but for
    float summation order (the customer's rows come in another order from the files)."""
    assert mine["article_id"].tolist() == theirs["article_id"].tolist()
    assert mine["retrievers"].tolist() == theirs["retrievers"].tolist()
    np.testing.assert_allclose(mine["score"].to_numpy(float), theirs["score"].to_numpy(float), rtol=1e-5, atol=1e-7)


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


# A state pickled before the package layout changed: its class under the old module path
# (GLOBAL module name, NEWOBJ with no arguments).
OLD_MODULE = ".".join(["hm_assets", "retrievers", "popularity_model"])
OLD_LAYOUT_STATE = b"c" + OLD_MODULE.encode() + b"\nPopularityState\n)\x81."


def test_a_state_pickled_under_old_module_paths_is_fitted_again(recommender, monkeypatch, caplog):
    """A stored state this code cannot unpickle is fitted again, with a warning, as a missing one is."""
    from hm_assets.pipeline.retrieval.popularity_model import RETRIEVER, PopularityState
    from hm_assets.serving import on_demand

    # The old package must be absent even where an editable install of an older checkout provides it.
    monkeypatch.setitem(sys.modules, OLD_MODULE.rpartition(".")[0], None)
    with pytest.raises(ModuleNotFoundError):
        pickle.loads(OLD_LAYOUT_STATE)
    monkeypatch.setattr(on_demand, "load_state", lambda path: pickle.loads(OLD_LAYOUT_STATE))
    with caplog.at_level("WARNING", logger="hm_assets.serving.on_demand"):
        state = recommender._state(RETRIEVER)
    assert isinstance(state, PopularityState)
    assert "unreadable stored state" in caplog.text


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

        assert "known customer" in printed and "week loaded here in" in printed
        assert main(["recommend", customer_id, "--bought", "0000000001", *home]) == 1
        assert "unknown article" in capsys.readouterr().err
        assert main(["show", "nobody", *home]) == 1
    finally:
        if previous is None:
            os.environ.pop("HM_HOME", None)
        else:
            os.environ["HM_HOME"] = previous
