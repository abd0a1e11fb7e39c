"""The content retrievers (image/text/attribute similarity) on a hand-made history and index."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from hm_assets.pipeline.features.embeddings.index import load_index, save_index
from hm_assets.pipeline.retrieval import attribute_similar, image_similar, text_similar
from hm_assets.pipeline.retrieval.base import CANDIDATE_COLUMNS, RetrievalContext, finalize_candidates

CUTOFF = date(2020, 9, 16)
MODULES = [image_similar, text_similar, attribute_similar]

# three clusters of four articles; inside a cluster x01 is closest to x02, then x03, then x04
CLUSTERS = {100: 0, 200: 1, 300: 2}
ARTICLES = [base + i for base in CLUSTERS for i in range(1, 5)]
NOT_ON_SALE = {104, 304}


def article_vectors() -> np.ndarray:
    vectors = []
    for article in ARTICLES:
        base, i = article // 100 * 100, article % 100
        v = np.zeros(8, dtype=np.float32)
        v[CLUSTERS[base]] = 1.0
        v[3 + CLUSTERS[base]] = 0.1 * i  # moves along a private axis: neighbours in id order
        vectors.append(v)
    return np.stack(vectors)


def purchase(customer: int, article: int, days_ago: int) -> tuple:
    return (CUTOFF - timedelta(days=days_ago), customer, article, 0.02, 2)


HISTORY = [
    purchase(1, 101, 2),  # customer 1: a recent 101 ...
    purchase(1, 201, 25),  # ... an older 201 ...
    purchase(1, 102, 60),  # ... and 102 long ago (outside the lookback: not a seed, still "already bought")
    purchase(2, 301, 10),
    purchase(3, 101, 100),  # customer 3: nothing recent -> no candidates
    *[purchase(9, a, 5) for a in ARTICLES if a not in NOT_ON_SALE],  # the rest of the shop: what is on sale
    purchase(1, 999, 400),  # an article that is not in the index at all
]


@pytest.fixture
def context(tmp_path: Path):
    ids = np.array(ARTICLES, dtype=np.int32)
    inputs = {}
    for module in MODULES:
        target = tmp_path / "assets" / f"{module.INDEX_ASSET}.parquet"
        save_index(ids, article_vectors(), target, threads=1)
        inputs[module.INDEX_ASSET] = target
    con = duckdb.connect()
    frame = pd.DataFrame(HISTORY, columns=["t_dat", "customer_key", "article_id", "price", "sales_channel_id"])
    con.register("history_df", frame)
    con.execute(
        """
        CREATE VIEW transactions AS
        SELECT CAST(t_dat AS DATE) AS t_dat, CAST(customer_key AS BIGINT) AS customer_key,
               CAST(article_id AS INTEGER) AS article_id, CAST(price AS FLOAT) AS price,
               CAST(sales_channel_id AS TINYINT) AS sales_channel_id
        FROM history_df WHERE t_dat < DATE '2020-09-16'
        """
    )
    yield RetrievalContext(con=con, cutoff=CUTOFF, week_key=str(CUTOFF), customer_keys=np.array([1, 2, 3, 9]),
                           inputs=inputs)
    con.close()


def generate(module, ctx, **overrides) -> pd.DataFrame:
    config = module.RETRIEVER.config_class(**overrides)
    return module.RETRIEVER.generate(ctx, config)


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.RETRIEVER.name)
def test_neighbours_of_recent_purchases_excluding_bought_and_off_sale(module, context):
    raw = generate(module, context)
    assert list(raw.columns) == ["customer_key", "article_id", "score"]
    by_customer = {k: g.sort_values("score", ascending=False)["article_id"].tolist() for k, g in raw.groupby("customer_key")}
    assert set(by_customer) == {1, 2}  # 3 bought nothing recently; 9 bought everything on sale
    first = by_customer[1]
    assert first[0] == 103  # nearest unbought, on-sale neighbour of the most recent purchase
    assert not {101, 102, 201, 999} & set(first)  # already bought (102 long ago), or unknown to the index
    assert not NOT_ON_SALE & set(first)  # 104 is not on sale
    assert set(first) == {103, 202, 203, 204}  # neighbours of its seeds only (other clusters are dissimilar)
    assert by_customer[2] == [302, 303]
    assert (raw["score"] > 0).all() and np.isfinite(raw["score"]).all()


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.RETRIEVER.name)
def test_switches_recency_and_contract(module, context):
    everything = generate(module, context, on_sale_only=False)
    first = everything[everything["customer_key"] == 1].set_index("article_id")["score"]
    assert 104 in first.index  # not filtered when on_sale_only is off
    # a neighbour of the 2-days-old seed outranks the same-rank neighbour of the 25-days-old seed
    assert first[103] > first[203]
    index = load_index(context.inputs[module.INDEX_ASSET])
    sim = float(index.vectors(np.array([101]))[0] @ index.vectors(np.array([103]))[0])
    assert first[103] == pytest.approx(sim * 0.5 ** (2 / 14), rel=1e-4)

    slow = generate(module, context, half_life_days=1000.0, on_sale_only=False)
    slow_first = slow[slow["customer_key"] == 1].set_index("article_id")["score"]
    assert slow_first[103] == pytest.approx(sim * 0.5 ** (2 / 1000), rel=1e-4)

    short = generate(module, context, lookback_weeks=1)  # only customer 1's 2-days-old purchase and shop stock
    assert short.loc[short["customer_key"] == 1, "article_id"].tolist() == [103]

    capped = generate(module, context, max_candidates=1)
    assert capped.groupby("customer_key").size().max() == 1
    final = finalize_candidates(everything, module.RETRIEVER.config_class().max_candidates)
    assert list(final.columns) == CANDIDATE_COLUMNS
    assert final.dtypes.astype(str).tolist() == ["int64", "int32", "float32", "int16"]
    assert not final.duplicated(["customer_key", "article_id"]).any()
    assert module.RETRIEVER.deps == (module.INDEX_ASSET,)


def test_empty_index_and_no_history(tmp_path, context):
    target = tmp_path / "empty" / "image_index.parquet"
    save_index(np.empty(0, np.int32), np.empty((0, 8), np.float32), target)
    context.inputs["image_index"] = target
    empty = generate(image_similar, context)
    assert empty.empty and list(empty.columns) == ["customer_key", "article_id", "score"]
    context.con.execute("CREATE OR REPLACE VIEW transactions AS SELECT * FROM history_df WHERE false")
    assert generate(text_similar, context).empty


def test_index_files_are_committed_by_the_parquet(tmp_path):
    target = tmp_path / "assets" / "text_index.parquet"
    ids = np.array(ARTICLES, dtype=np.int32)
    builds = [save_index(ids, article_vectors(), target, threads=1) for _ in range(3)]
    graphs = sorted(p.name for p in target.parent.glob("text_index-*.hnsw"))
    assert builds[-1].index_file.name in graphs and len(graphs) == 2  # current + the previous one
    index = load_index(target)
    assert index.article_ids.tolist() == ARTICLES
    neighbours = index.neighbours(np.array([201, 201, 999]), 2)
    assert neighbours["seed_article_id"].tolist() == [201, 201]
    assert neighbours["article_id"].tolist() == [202, 203]
