"""Attribute similarity: neighbours of the customer's recent purchases in the `attribute_index` (hnswlib).

The shared logic (seeds, batched index query, recency weighting, exclusions) is in
``content_similar.py``.
"""

from __future__ import annotations

from hm_assets.pipeline.retrieval.content_similar import ContentSimilarConfig, content_retriever

INDEX_ASSET = "attribute_index"


class AttributeSimilarConfig(ContentSimilarConfig):
    pass


RETRIEVER = content_retriever(
    name="attribute_similar",
    description=(
        "Articles sharing the attributes of the customer's recent purchases (type, colour, appearance, "
        "department, price band): nearest neighbours in the attribute-embedding index, recency-weighted, "
        "already-bought excluded, on sale recently."
    ),
    index_asset=INDEX_ASSET,
    config_class=AttributeSimilarConfig,
)
