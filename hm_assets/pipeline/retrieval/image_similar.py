"""Image similarity: neighbours of the customer's recent purchases in the `image_index` (hnswlib).

The shared logic (seeds, batched index query, recency weighting, exclusions) is in
``content_similar.py``.
"""

from __future__ import annotations

from hm_assets.pipeline.retrieval.content_similar import ContentSimilarConfig, content_retriever

INDEX_ASSET = "image_index"


class ImageSimilarConfig(ContentSimilarConfig):
    pass


RETRIEVER = content_retriever(
    name="image_similar",
    description=(
        "Articles that look like the customer's recent purchases: nearest neighbours in the image-"
        "embedding index (timm ViT features), recency-weighted, already-bought excluded, on sale "
        "recently."
    ),
    index_asset=INDEX_ASSET,
    config_class=ImageSimilarConfig,
)
