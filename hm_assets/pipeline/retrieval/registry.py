"""Every retriever of the pipeline. Adding one: write its module, then list it here."""

from __future__ import annotations

from hm_assets.pipeline.retrieval import (
    also_bought,
    attribute_similar,
    image_similar,
    popularity_model,
    purchase_history_similar,
    repurchase,
    taste_popular,
    taste_similar,
    text_similar,
)
from hm_assets.pipeline.retrieval.base import Retriever

RETRIEVERS: tuple[Retriever, ...] = (
    popularity_model.RETRIEVER,
    purchase_history_similar.RETRIEVER,
    also_bought.RETRIEVER,
    repurchase.RETRIEVER,
    taste_popular.RETRIEVER,
    taste_similar.RETRIEVER,
    image_similar.RETRIEVER,
    text_similar.RETRIEVER,
    attribute_similar.RETRIEVER,
)


def retriever_names() -> list[str]:
    return [r.name for r in RETRIEVERS]
