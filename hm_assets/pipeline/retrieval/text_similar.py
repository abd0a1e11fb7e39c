"""Text similarity: neighbours of the customer's recent purchases in the `text_index` (hnswlib).

The shared logic (seeds, batched index query, recency weighting, exclusions) is in
``content_similar.py``.
"""

from __future__ import annotations

from hm_assets.pipeline.retrieval.content_similar import ContentSimilarConfig, content_retriever

INDEX_ASSET = "text_index"


class TextSimilarConfig(ContentSimilarConfig):
    pass


RETRIEVER = content_retriever(
    name="text_similar",
    description=(
        "Articles described like the customer's recent purchases: nearest neighbours in the text-"
        "embedding index (MiniLM over name, type, colour, appearance, description), recency-weighted, "
        "already-bought excluded, on sale recently."
    ),
    index_asset=INDEX_ASSET,
    config_class=TextSimilarConfig,
)
