"""Attribute similarity: neighbours of the customer's recent purchases in the `attribute_index` (hnswlib).

The shared logic (seeds, batched index query, recency weighting, exclusions) is in
``content_similar.py``.
"""

from __future__ import annotations

import pandas as pd

from hm_assets.retrievers.base import RetrievalContext, Retriever
from hm_assets.retrievers.content_similar import ContentSimilarConfig, content_similar_candidates

INDEX_ASSET = "attribute_index"


class AttributeSimilarConfig(ContentSimilarConfig):
    pass


def attribute_similar_candidates(ctx: RetrievalContext, config: AttributeSimilarConfig) -> pd.DataFrame:
    return content_similar_candidates(ctx, config, INDEX_ASSET)


RETRIEVER = Retriever(
    name="attribute_similar",
    description=(
        "Articles sharing the attributes of the customer's recent purchases (type, colour, appearance, "
        "department, price band): nearest neighbours in the attribute-embedding index, recency-weighted, "
        "already-bought excluded, on sale recently."
    ),
    generate=attribute_similar_candidates,
    config_class=AttributeSimilarConfig,
    deps=(INDEX_ASSET,),
    kinds=frozenset({"duckdb", "hnswlib"}),
)
