"""Text similarity: neighbours of the customer's recent purchases in the `text_index` (hnswlib).

The shared logic (seeds, batched index query, recency weighting, exclusions) is in
``content_similar.py``.
"""

from __future__ import annotations

import pandas as pd

from hm_assets.retrievers.base import RetrievalContext, Retriever
from hm_assets.retrievers.content_similar import ContentSimilarConfig, content_similar_candidates

INDEX_ASSET = "text_index"


class TextSimilarConfig(ContentSimilarConfig):
    pass


def text_similar_candidates(ctx: RetrievalContext, config: TextSimilarConfig) -> pd.DataFrame:
    return content_similar_candidates(ctx, config, INDEX_ASSET)


RETRIEVER = Retriever(
    name="text_similar",
    description=(
        "Articles described like the customer's recent purchases: nearest neighbours in the text-"
        "embedding index (MiniLM over name, type, colour, appearance, description), recency-weighted, "
        "already-bought excluded, on sale recently."
    ),
    generate=text_similar_candidates,
    config_class=TextSimilarConfig,
    deps=(INDEX_ASSET,),
    kinds=frozenset({"duckdb", "hnswlib"}),
)
