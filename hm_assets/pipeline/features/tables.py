"""The four weekly feature tables, each computed by ``sql/<name>.sql`` over a week's history; every
stage that reads a week registers them by these names."""

FEATURE_TABLES: tuple[str, ...] = (
    "customer_features",
    "customer_transaction_stats",
    "article_features",
    "article_transaction_stats",
)
