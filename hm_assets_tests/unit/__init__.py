"""Fast tests: functions and small Dagster runs over tiny in-memory or generated data, no materialized week."""
