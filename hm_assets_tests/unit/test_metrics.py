import math

import pandas as pd
import pytest

from hm_assets.pipeline.evaluation.metrics import PairSet, average_precision, map_at_k, recall


def recs(rows):
    return pd.DataFrame(rows, columns=["customer_key", "article_id", "rank"])


def truth(rows):
    return pd.DataFrame(rows, columns=["customer_key", "article_id"])


def test_average_precision_hand_computed():
    # hits at ranks 1 and 3 of 2 true items: (1/1 + 2/3) / 2
    assert average_precision([10, 20, 30], {10, 30}) == pytest.approx((1 + 2 / 3) / 2)
    # denominator is min(|truth|, 12): 13 true items, one hit at rank 1
    assert average_precision([1], set(range(1, 14))) == pytest.approx(1 / 12)
    # duplicates in the prediction count once
    assert average_precision([5, 5, 7], {7}) == pytest.approx(1 / 2)
    # hits after rank 12 do not count
    assert average_precision(list(range(100, 112)) + [1], {1}) == 0.0


def test_map_excludes_customers_without_purchases_and_counts_missing_lists_as_zero():
    predictions = recs([(1, 10, 1), (1, 20, 2), (2, 30, 1), (3, 40, 1)])
    bought = truth([(1, 20), (2, 99), (4, 50)])  # customer 3 bought nothing: excluded; 4 has no list: 0
    expected = ((1 / 2) / 1 + 0.0 + 0.0) / 3
    assert map_at_k(predictions, bought) == pytest.approx(expected)


def test_map_matches_reference_implementation():
    predictions = recs([(c, a, r) for c in range(5) for r, a in enumerate(range(c, c + 15), start=1)])
    bought = truth([(c, a) for c in range(5) for a in (c + 1, c + 4, c + 13, 77)])
    reference = []
    for c in range(5):
        ranked = predictions[predictions.customer_key == c].sort_values("rank").article_id.tolist()
        reference.append(average_precision(ranked, set(bought[bought.customer_key == c].article_id)))
    assert map_at_k(predictions, bought) == pytest.approx(sum(reference) / 5)


def test_recall_counts_distinct_pairs():
    bought = truth([(1, 10), (1, 10), (1, 11), (2, 12)])
    assert recall(truth([(1, 10), (2, 99)]), bought) == pytest.approx(1 / 3)
    assert math.isnan(recall(truth([(1, 10)]), truth([])))


def test_a_pair_set_finds_exactly_its_pairs_whatever_the_keys_size():
    big = 2**59 + 7  # customer keys are 60-bit, article ids INTEGER
    pairs = PairSet(truth([(big, 2**31 - 1), (big, 5), (3, 5), (3, 5)]))
    assert len(pairs) == 3  # distinct, in first-seen order
    found = pairs.found(truth([(big, 5), (big, 5), (3, 2**31 - 1), (4, 5), (3, 6), (big + 1, 5)]))
    assert found.tolist() == [False, True, False]
    assert pairs.found(truth([])).tolist() == [False, False, False]
    assert PairSet(truth([])).found(truth([(1, 2)])).tolist() == []
