"""Ranking: from the retrievers' candidates to each customer's top 12.

``stage`` is the entry point (``select_candidates``: filtered union and calibrated cap;
``pair_features``; ``recommend_lists``); ``candidates`` and ``filters`` are the union's parts,
``ranker`` the LightGBM ranker, its training rows and the submission frame; ``samples`` the ranker's
labelled weeks' samples (their pair features computed from the stored candidates, kept);
``one_customer`` the same stage for one customer over arrays (the online path; equal to the SQL by test).
"""
