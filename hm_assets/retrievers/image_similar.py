"""Image similarity: neighbours of the customer's recent purchases in the `image_index` (hnswlib).

The shared logic (seeds, batched index query, recency weighting, exclusions) is in
``content_similar.py``.
"""

from __future__ import annotations

import pandas as pd

from hm_assets.retrievers.base import RetrievalContext, Retriever
from hm_assets.retrievers.content_similar import ContentSimilarConfig, content_similar_candidates

INDEX_ASSET = "image_index"


class ImageSimilarConfig(ContentSimilarConfig):
    pass


def image_similar_candidates(ctx: RetrievalContext, config: ImageSimilarConfig) -> pd.DataFrame:
    return content_similar_candidates(ctx, config, INDEX_ASSET)


RETRIEVER = Retriever(
    name="image_similar",
    description=(
        "Articles that look like the customer's recent purchases: nearest neighbours in the image-"
        "embedding index (timm ViT features), recency-weighted, already-bought excluded, on sale "
        "recently."
    ),
    generate=image_similar_candidates,
    config_class=ImageSimilarConfig,
    deps=(INDEX_ASSET,),
    kinds=frozenset({"duckdb", "hnswlib"}),
)
