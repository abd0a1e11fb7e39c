"""The recommender's stages, in the order the data flows: ingest → features → retrieval → ranking → evaluation.

Each stage is plain Python over DuckDB and Parquet, with no Dagster in it; the assets in
``hm_assets.defs.assets``, the online path in ``hm_assets.serving`` and the tools and tests call the
same entry points.
"""
