"""Retrieval: candidate articles per customer, one module per retriever.

``base`` is the retriever contract (``fit`` once per week, ``retrieve`` for any customers);
``registry.RETRIEVERS`` is the entry point: every registered retriever, in order.
"""
