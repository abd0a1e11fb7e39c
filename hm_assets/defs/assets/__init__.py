"""The code location's assets, one module per stage; each asset is a thin call into ``hm_assets.pipeline``."""
