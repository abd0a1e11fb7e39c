"""hm-recs: a retrieval-ranking fashion recommender for H&M-style retail data, as a Dagster code location."""

import os

# OpenMP threads (LightGBM, implicit, torch) spin while they wait by default. On a busy machine, or
# with torch's and LightGBM's thread pools in one process, or several runs at once on 2 cores, that
# turns a 0.2 s LightGBM fit into 5-50 s. Waiting passively changes no result. Set before any of
# those libraries is loaded; an explicit OMP_WAIT_POLICY wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
