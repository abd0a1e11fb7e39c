"""hm-recs: a retrieval-ranking fashion recommender for H&M-style retail data, as a Dagster code location."""
