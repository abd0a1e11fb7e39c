"""Features of articles and customers that the retrievers and the ranker share.

``tables``: the names of the four weekly feature tables (``sql/<name>.sql``); ``taste``: ALS article vectors and customers' recency-weighted taste vectors; ``embeddings``: the
content embeddings of articles (image, text, attributes) and their nearest-neighbour indexes.
"""
