"""The Dagster layer: assets (thin calls into ``hm_assets.pipeline``), partitions, resources, jobs,
sensors and the runner behind ``hm-recs run``. ``hm_assets.definitions`` builds ``defs`` from it."""
