"""Content embeddings of articles: image (timm ViT), text (MiniLM) and attributes (weighted one-hot).

Each embedding is a Parquet file ``(article_id, content_hash, vector)`` (see ``cache.py``); the
hnswlib cosine indexes over them live in ``index.py``. The Dagster assets are in
``hm_assets/defs/assets/content.py``; the retrievers that use the indexes in ``hm_assets/pipeline/retrieval``.
"""
