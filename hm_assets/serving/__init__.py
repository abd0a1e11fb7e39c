"""The http side of hm-recs: ``hm-recs serve`` (FastAPI + uvicorn) over a store (HM_HOME)."""
