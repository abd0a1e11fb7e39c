"""Filtered union, business rules, pair features and the leakage check on hand-made data."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from hm_assets.pipeline.evaluation.quality_checks import leakage_problems
from hm_assets.pipeline.ranking.candidates import CandidateCap, apply_rules, build_union, filtered_candidates
from hm_assets.pipeline.retrieval.base import ranked_candidates
from hm_assets.pipeline.ranking.filters import RULE_NAMES, prepare_rule_inputs, rules_by_name
from hm_assets.platform.sql import load_sql
from hm_assets_tests.builders import articles_frame, customers_frame, transactions_frame, week_connection

CUTOFF = date(2020, 9, 23)


def write(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_parquet(path, index=False)
    return path


def candidates_frame(rows):
    frame = pd.DataFrame(rows, columns=["customer_key", "article_id", "score", "rank"])
    return frame.astype({"customer_key": "int64", "article_id": "int32", "score": "float32", "rank": "int16"})


@pytest.fixture
def world():
    articles = articles_frame(
        [
            {"article_id": 1, "product_type_no": 253, "colour_group_code": 9},
            {"article_id": 2, "product_type_no": 253, "colour_group_code": 10},
            {"article_id": 3, "product_type_no": 272, "colour_group_code": 9, "product_group_name": "Garment Lower body"},
            {"article_id": 4, "index_group_name": "Baby/Children", "index_group_no": 4},
            {"article_id": 5},  # never sold: out of stock
        ]
    )
    customers = customers_frame([7, 8])
    rows = [("2020-09-%02d" % d, 7, 1, 0.02, 2) for d in (1, 2, 3)]
    rows += [("2020-09-10", 7, 3, 0.03, 2), ("2020-09-15", 8, 2, 0.02, 1), ("2020-09-16", 8, 4, 0.01, 1)]
    rows += [("2020-09-2%d" % d, 9, a, 0.02, 1) for d in range(0, 3) for a in (1, 2, 3, 4)]
    return articles, customers, transactions_frame(rows)


def test_one_customer_candidates_equal_the_batch_selection(world, tmp_path):
    """The online path ranks, unites, filters and caps one customer's candidates over arrays; the
    batch does it in SQL for every customer: the same rows, columns, types and values, with ties and
    duplicate proposals (coarse scores), a retriever that proposes nothing, rules that remove some
    candidates, a calibration whose rates change the cap's order, and customers the lapsed cap tells
    apart (10 never bought)."""
    import numpy as np

    from hm_assets.pipeline.ranking.candidates import RANK_BANDS, OPEN_BAND, RetrieverCalibration
    from hm_assets.pipeline.ranking.filters import RULES
    from hm_assets.pipeline.ranking.one_customer import CustomerRows, WeekRules, customer_candidates
    from hm_assets.pipeline.ranking.stage import select_candidates

    articles, customers, txns = world
    rng = np.random.default_rng(0)
    raws = {
        name: pd.DataFrame({
            "customer_key": rng.choice([7, 8, 9, 10], n), "article_id": rng.integers(1, 6, n),
            "score": rng.integers(0, 5, n) / 4,
        })
        for name, n in (("a", 60), ("b", 35), ("c", 0))
    }
    caps = {"a": 3, "b": 50, "c": 5}
    bands = [*RANK_BANDS, OPEN_BAND]
    calibration = RetrieverCalibration("2020-09-16", pd.DataFrame({
        "retriever": ["a"] * len(bands) + ["b"] * len(bands), "band": bands * 2,
        "proposed": 100, "bought": 1, "hit_rate": list(np.linspace(0.3, 0.01, len(bands))) + list(np.linspace(0.05, 0.2, len(bands))),
    }))
    # customer 9 bought 1-3 days before the cut-off, 8 seven days and 7 thirteen: the last cap tells them apart
    caps_and_calibrations = (
        (CandidateCap(4, 4), calibration), (CandidateCap(2, 2), calibration), (CandidateCap(4, 4), None),
        (CandidateCap(4, 2, lapsed_after_days=5), calibration),
    )
    for cap, calibrated in caps_and_calibrations:
        con = week_connection(txns, articles, customers, CUTOFF)
        prepare_rule_inputs(con, CUTOFF)
        sources = {name: write(ranked_candidates(con, raw, caps[name]).df(), tmp_path / f"{name}.parquet") for name, raw in raws.items()}
        selection = select_candidates(con, sources, list(RULES), CUTOFF, cap, calibrated, rule_inputs_ready=True)
        assert sum(effect.removed for effect in selection.effects) > 0  # the rules have something to do
        batch = con.sql("SELECT * FROM candidates").df()
        week_rules = WeekRules.read(con, list(RULES), CUTOFF)
        for key in (7, 8, 9, 10):
            mine = customer_candidates(
                con, {name: raw[raw["customer_key"] == key] for name, raw in raws.items()}, caps, week_rules,
                CustomerRows.read(con, key, CUTOFF), cap, calibrated,
            )
            theirs = batch[batch["customer_key"] == key].reset_index(drop=True)
            assert len(theirs) > 0
            # dtypes aside: DuckDB makes a rank column nullable (Int16) when any customer's row is NULL
            pd.testing.assert_frame_equal(mine, theirs, check_exact=True, check_dtype=False, obj=f"customer {key}, cap {cap}")


def test_union_keeps_every_retriever_score_and_rank(world, tmp_path):
    articles, customers, txns = world
    con = week_connection(txns, articles, customers, CUTOFF)
    sources = {
        "a": write(candidates_frame([(7, 1, 0.9, 1), (7, 2, 0.5, 2)]), tmp_path / "a.parquet"),
        "b": write(candidates_frame([(7, 2, 3.0, 1), (8, 3, 1.0, 1)]), tmp_path / "b.parquet"),
    }
    assert build_union(con, sources) == 3
    union = con.sql("SELECT * FROM union_candidates ORDER BY customer_key, article_id").df()
    both = union[(union.customer_key == 7) & (union.article_id == 2)].iloc[0]
    assert both.score_a == pytest.approx(0.5) and both.rank_a == 2 and both.score_b == 3.0 and both.rank_b == 1
    assert both.n_retrievers == 2 and both.best_rank == 1
    assert pd.isna(union[(union.customer_key == 7) & (union.article_id == 1)].iloc[0].score_b)


def test_rules_remove_what_they_say_and_count_true_purchases(world, tmp_path):
    articles, customers, txns = world
    truth = transactions_frame([("2020-09-24", 7, 5, 0.02, 2)])
    con = week_connection(txns, articles, customers, CUTOFF, truth=truth)
    source = write(candidates_frame([(7, 5, 1.0, 1), (7, 2, 0.5, 2), (8, 4, 0.3, 1)]), tmp_path / "a.parquet")
    build_union(con, {"a": source})
    prepare_rule_inputs(con, CUTOFF)
    effects = {e.rule: e for e in apply_rules(con, rules_by_name(["out_of_stock"]), CUTOFF, has_truth=True)}
    assert effects["out_of_stock"].removed == 1 and effects["out_of_stock"].removed_true == 1
    kept = filtered_candidates(con, CandidateCap(10, 10)).df()
    assert set(zip(kept.customer_key, kept.article_id)) == {(7, 2), (8, 4)}


def test_rule_inputs_handed_to_a_shard_equal_those_it_would_compute(world):
    """The candidates' plan computes the rules' whole-history inputs once (``rule_input_tables``) and
    every shard registers them: the same tables, column types and rows as computing them on the
    shard's own connection."""
    from hm_assets.pipeline.ranking.filters import RULE_INPUTS, rule_input_tables

    articles, customers, txns = world
    tables = rule_input_tables(week_connection(txns, articles, customers, CUTOFF), CUTOFF)
    assert set(tables) == set(RULE_INPUTS) and any(table.num_rows > 0 for table in tables.values())
    computed = week_connection(txns, articles, customers, CUTOFF)
    prepare_rule_inputs(computed, CUTOFF)
    handed = week_connection(txns, articles, customers, CUTOFF)
    prepare_rule_inputs(handed, CUTOFF, tables=tables)
    for name in RULE_INPUTS:
        assert handed.sql(f"DESCRIBE {name}").fetchall() == computed.sql(f"DESCRIBE {name}").fetchall()
        order = ", ".join(f"{i + 1}" for i in range(len(handed.sql(f"SELECT * FROM {name}").columns)))
        assert (
            handed.sql(f"SELECT * FROM {name} ORDER BY {order}").fetchall()
            == computed.sql(f"SELECT * FROM {name} ORDER BY {order}").fetchall()
        )


def test_rules_are_switchable_and_names_checked():
    assert [r.name for r in rules_by_name(RULE_NAMES)] == RULE_NAMES
    assert rules_by_name([]) == []
    with pytest.raises(ValueError, match="unknown filter rule"):
        rules_by_name(["no_such_rule"])


def test_cap_per_customer_prefers_best_rank(world, tmp_path):
    articles, customers, txns = world
    con = week_connection(txns, articles, customers, CUTOFF)
    source = write(candidates_frame([(7, a, 1.0 / r, r) for r, a in enumerate([3, 1, 2], start=1)]), tmp_path / "a.parquet")
    build_union(con, {"a": source})
    apply_rules(con, [], CUTOFF, has_truth=False)
    assert filtered_candidates(con, CandidateCap(2, 2)).df().article_id.tolist() == [3, 1]


def test_a_lapsed_customer_keeps_fewer_candidates(world, tmp_path):
    """Customer 8 bought 7 days before the cut-off, 7 thirteen days before, 10 never: with lapsed
    customers at 13+ days, 7 and 10 keep their best candidate only, 8 its best three."""
    articles, customers, txns = world
    con = week_connection(txns, articles, customers, CUTOFF)
    rows = [(key, article, 1.0 / rank, rank) for key in (7, 8, 10) for rank, article in enumerate([3, 1, 2, 4], start=1)]
    build_union(con, {"a": write(candidates_frame(rows), tmp_path / "a.parquet")})
    apply_rules(con, [], CUTOFF, has_truth=False)
    kept = filtered_candidates(con, CandidateCap(3, 1, lapsed_after_days=10)).df()
    assert kept.groupby("customer_key")["article_id"].apply(list).to_dict() == {7: [3], 8: [3, 1, 2], 10: [3]}
    assert len(filtered_candidates(con, CandidateCap(3, 1, lapsed_after_days=13)).df()) == 3 + 3 + 1  # 13 days: not lapsed
    assert CandidateCap(3, 1, 10).limit(None) == 1 and CandidateCap(3, 1, 10).limit(10) == 3
    with pytest.raises(ValueError, match="positive counts"):
        CandidateCap(0, 1)


def test_pair_features_preference_share_is_hand_computed(world, tmp_path):
    articles, customers, txns = world
    con = week_connection(txns, articles, customers, CUTOFF)
    source = write(candidates_frame([(7, 2, 1.0, 1), (7, 3, 0.5, 2), (7, 1, 0.3, 3)]), tmp_path / "a.parquet")
    build_union(con, {"retr": source})
    con.execute("CREATE TABLE candidates AS SELECT * FROM union_candidates")
    pairs = con.sql(load_sql("pair_features"), params={"cutoff": CUTOFF}).df().set_index("article_id")
    # customer 7 bought article 1 three times (type 253, colour 9) and article 3 once (type 272, colour 9)
    assert pairs.loc[2, "pref_product_type"] == pytest.approx(3 / 4)
    assert pairs.loc[2, "pref_colour_group"] == pytest.approx(0.0)
    assert pairs.loc[3, "pref_colour_group"] == pytest.approx(4 / 4)
    assert pairs.loc[3, "pref_product_group"] == pytest.approx(1 / 4)
    assert pairs.loc[3, "bought_same_article"] == 1 and pairs.loc[3, "days_since_bought_article"] == 13
    assert pairs.loc[2, "bought_same_article"] == 0
    assert pairs.loc[2, "score_retr"] == 1.0 and pairs.loc[2, "rank_retr"] == 1
    # article 3 sold at 0.03 once and 0.02 three times (median 0.02); customer 7's median paid is 0.02
    assert pairs.loc[3, "price_vs_customer_median"] == pytest.approx(1.0, rel=1e-3)
    assert pairs.loc[3, "price_vs_customer_max"] == pytest.approx(0.02 / 0.03, rel=1e-3)
    # purchases since: article 3 was customer 7's last purchase, article 1 came one purchase before it;
    # every article here is one product (the builder's default product code)
    assert pairs.loc[3, "items_since_bought_article"] == 0 and pairs.loc[1, "items_since_bought_article"] == 1
    assert pd.isna(pairs.loc[2, "items_since_bought_article"]) and pairs.loc[2, "items_since_bought_product"] == 0
    # buyers who bought the article on more than one day: article 1 both (7 and 9), article 3 one of two (9)
    assert pairs.loc[1, "rebuy_rate"] == pytest.approx(1.0) and pairs.loc[3, "rebuy_rate"] == pytest.approx(0.5)
    # every article sells at its type's median price, as customer 7 pays: no gap to the usual level
    assert pairs.loc[3, "price_level_gap"] == pytest.approx(0.0, abs=1e-6)


def test_leakage_check_fails_on_a_planted_leak(world, tmp_path):
    articles, customers, txns = world
    clean = week_connection(txns, articles, customers, CUTOFF)
    leaky_txns = pd.concat([txns, transactions_frame([("2020-09-25", 7, 2, 0.02, 2)])], ignore_index=True)
    # a leaking pipeline: the history is cut a week too late
    leaky = week_connection(leaky_txns, articles, customers, date(2020, 9, 30))
    results = {}
    for name, con in (("clean", clean), ("leaky", leaky)):
        paths = []
        for table in ("customer_transaction_stats", "article_transaction_stats", "customer_features"):
            path = tmp_path / name / table / "w.parquet"
            path.parent.mkdir(parents=True)
            con.sql(load_sql(table), params={"cutoff": CUTOFF}).write_parquet(str(path))
            paths.append(path)
        results[name] = leakage_problems(duckdb.connect(), *paths)
    assert results["clean"] == []
    assert results["leaky"] and "customer_transaction_stats" in results["leaky"][0]


def test_calibration_measures_hit_rate_per_retriever_and_rank_band(tmp_path):
    from hm_assets.pipeline.ranking.candidates import PRIOR_STRENGTH, calibrate

    # Week W-1: retriever "strong" hit 2 of its 2 rank-1 candidates, "weak" 0 of 2; customer 9 bought nothing.
    strong = write(candidates_frame([(7, 1, 1.0, 1), (8, 2, 1.0, 1), (9, 3, 1.0, 1)]), tmp_path / "strong.parquet")
    weak = write(candidates_frame([(7, 4, 1.0, 1), (8, 5, 1.0, 1)]), tmp_path / "weak.parquet")
    truth = write(transactions_frame([("2020-09-17", 7, 1, 0.02, 2), ("2020-09-18", 8, 2, 0.02, 2)]), tmp_path / "t.parquet")
    calibration = calibrate(duckdb.connect(), "2020-09-16", {"strong": strong, "weak": weak}, truth)
    table = calibration.table.set_index("retriever")
    assert table.loc["strong", "proposed"] == 2 and table.loc["strong", "bought"] == 2  # buyers only
    assert table.loc["weak", "bought"] == 0
    overall = 2 / 4
    assert calibration.rate("strong", 1) == pytest.approx((2 + PRIOR_STRENGTH * overall) / (2 + PRIOR_STRENGTH))
    assert calibration.rate("strong", 1) > calibration.rate("weak", 1)
    assert calibration.rate("strong", 50) == 0.0  # a band never seen


def test_calibrated_priority_gives_each_rank_its_bands_rate_combined_by_noisy_or():
    import numpy as np

    from hm_assets.pipeline.ranking.candidates import OPEN_BAND, RANK_BANDS, RetrieverCalibration

    bands = [*RANK_BANDS, OPEN_BAND]
    calibration = RetrieverCalibration("2020-09-16", pd.DataFrame({
        "retriever": ["a"] * len(bands) + ["b"] * len(bands), "band": bands * 2, "proposed": 100, "bought": 1,
        "hit_rate": list(np.linspace(0.3, 0.01, len(bands))) + list(np.linspace(0.05, 0.2, len(bands))),
    }))
    # every band's edges, the open band far out, and a retriever that did not propose the pair
    ranks_a = [1, 2, 3, 4, 5, 6, 10, 11, 20, 21, 30, 31, 50, 51, 100, 101, 5000, None]
    ranks_b = [None, 7, 1, 100, 101, None, 3, 2, 60, 55, 30, 31, 50, 51, 100, 101, 5000, None]
    frame = pd.DataFrame({"rank_a": pd.array(ranks_a, dtype="Int16"), "rank_b": pd.array(ranks_b, dtype="Int16")})
    con = duckdb.connect()
    con.register("pairs", frame)
    got = con.execute(f"SELECT {calibration.priority_sql(['a', 'b'])} FROM pairs").fetchnumpy()

    def rate(name: str, rank: int | None) -> float:
        if rank is None:
            return 0.0
        return calibration.rate(name, next((upper for upper in RANK_BANDS if rank <= upper), OPEN_BAND))

    expected = [1 - (1 - rate("a", a)) * (1 - rate("b", b)) for a, b in zip(ranks_a, ranks_b)]
    assert list(next(iter(got.values()))) == expected  # to the bit: the online path computes the same doubles
    assert expected[-1] == 0.0 and expected[0] == pytest.approx(calibration.rate("a", 1))  # b did not propose it


def test_calibrated_cap_keeps_the_likelier_candidates_not_the_best_ranks(world, tmp_path):
    from hm_assets.pipeline.ranking.candidates import RetrieverCalibration

    articles, customers, txns = world
    con = week_connection(txns, articles, customers, CUTOFF)
    # "weak" proposes article 1 at rank 1; "strong" proposes 2 at rank 4 and 3 at rank 30.
    sources = {
        "weak": write(candidates_frame([(7, 1, 1.0, 1)]), tmp_path / "weak.parquet"),
        "strong": write(candidates_frame([(7, 2, 0.8, 4), (7, 3, 0.1, 30)]), tmp_path / "strong.parquet"),
    }
    build_union(con, sources)
    apply_rules(con, [], CUTOFF, has_truth=False)
    assert set(filtered_candidates(con, CandidateCap(1, 1)).df().article_id) == {1}  # uncalibrated: best rank wins
    table = pd.DataFrame(
        [("weak", 1, 1000, 2, 0.002), ("strong", 5, 1000, 40, 0.04), ("strong", 30, 1000, 30, 0.03)],
        columns=["retriever", "band", "proposed", "bought", "hit_rate"],
    )
    calibration = RetrieverCalibration("2020-09-16", table)
    kept = filtered_candidates(con, CandidateCap(2, 2), calibration, list(sources)).df()
    assert set(kept.article_id) == {2, 3}


def test_per_customer_rules_in_memory_remove_what_their_sql_removes():
    """The online path evaluates the article-only rules once a week (their SQL over every article) and
    the per-customer rules over arrays: for customers each rule applies to, and for one it does not,
    the same removals as the rules' SQL."""
    import numpy as np

    from hm_assets.pipeline.ranking.filters import RULES
    from hm_assets.pipeline.ranking.one_customer import CustomerRows, WeekRules, _removed_by_rules

    articles = articles_frame(
        [{"article_id": a} for a in range(1, 12)]
        + [{"article_id": 60, "index_group_name": "Baby/Children"}, {"article_id": 61}, {"article_id": 62}, {"article_id": 63}]
    )
    rows = [("2020-09-%02d" % (1 + i), 50, 1 + i, 0.02 + 0.001 * i, 1) for i in range(10)]  # 10 store purchases, no kids
    rows += [("2020-09-%02d" % (1 + i), 51, 1 + i, 0.02, 1 + i % 2) for i in range(10)]  # both channels
    rows += [("2020-09-10", 52, 60, 0.02, 2)]  # one purchase
    rows += [("2020-09-%02d" % (2 + i % 20), 90 + i, 62, 0.02, 2) for i in range(25)]  # 62: sold online only
    rows += [("2020-09-15", 90, a, price, 1) for a, price in ((60, 0.01), (61, 0.2), (63, 0.025))]  # on sale
    con = week_connection(transactions_frame(rows), articles, customers_frame([50, 51, 52] + [90 + i for i in range(25)]), CUTOFF)
    prepare_rule_inputs(con, CUTOFF)
    week_rules = WeekRules.read(con, list(RULES), CUTOFF)
    candidates = np.array([11, 60, 61, 62, 63, 64], dtype=np.int64)  # 64: in no table
    removed = {}
    for key in (50, 51, 52):
        mine = week_rules.removed(con, CustomerRows.read(con, key, CUTOFF), candidates)
        theirs = _removed_by_rules(con, list(RULES), CUTOFF, key, candidates)
        assert mine.tolist() == theirs.tolist(), key
        removed[key] = set(candidates[mine].tolist())
    # 11 and 64 (not sold in 3 weeks) for anyone; customer 50: 60 (children's), 61 (over twice the most paid),
    # 62 (store-only buyer, sold online only); customer 51 buys in both channels
    assert removed[50] == {11, 60, 61, 62, 64}
    assert removed[51] == {11, 60, 61, 64} and removed[52] == {11, 64}


def test_a_week_s_candidates_file_records_the_calibration_its_cap_used(tmp_path):
    """The calibration travels in the candidates file's metadata and is read back to the bit (the
    online path's cap then orders as the batch's did); a file for other retrievers, or written
    before files carried it, records nothing, and a week without one records that."""
    import numpy as np

    from hm_assets.pipeline.ranking.candidates import (
        CALIBRATION_KEY, OPEN_BAND, RANK_BANDS, RetrieverCalibration, calibration_record, recorded_calibration,
    )
    from hm_assets.platform.store import write_parquet

    bands = [*RANK_BANDS, OPEN_BAND]
    table = pd.DataFrame({
        "retriever": ["it's"] * len(bands) + ["b"] * len(bands),  # a quote survives the SQL
        "band": np.array(bands * 2, dtype=np.int32), "proposed": np.arange(2 * len(bands), dtype=np.int64) * 1000 + 7,
        "bought": np.arange(2 * len(bands), dtype=np.int64), "hit_rate": np.random.default_rng(0).random(2 * len(bands)) / 3,
    })
    calibration = RetrieverCalibration("2020-09-16", table)
    rows = duckdb.sql("SELECT range AS customer_key FROM range(5)")
    for written, names in ((calibration, ["it's", "b"]), (None, ["b"])):
        path = tmp_path / f"candidates-{len(names)}.parquet"
        assert write_parquet(rows, path, metadata={CALIBRATION_KEY: calibration_record(written, names)}) == 5
        found, read = recorded_calibration(path, list(reversed(names)))
        assert found
        if written is None:
            assert read is None
            continue
        pd.testing.assert_frame_equal(read.table, table)
        assert read.week == "2020-09-16" and read.priority_sql(names) == calibration.priority_sql(names)
        assert recorded_calibration(path, ["b"]) == (False, None)  # measured for other retrievers
    plain = tmp_path / "older.parquet"
    write_parquet(rows, plain)
    assert recorded_calibration(plain, ["b"]) == (False, None)
