"""Features of articles and customers that the retrievers and the ranker share.

``taste``: ALS article vectors and customers' recency-weighted taste vectors; ``embeddings``: the
content embeddings of articles (image, text, attributes) and their nearest-neighbour indexes.
"""
