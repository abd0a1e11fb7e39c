"""Ingest: the Kaggle-format input folder into the store.

``ingest`` is the entry point (normalised articles and customers, the weekly transaction files,
catalogue images); ``data_contract`` is what the input must hold and how ids are formatted.
"""
