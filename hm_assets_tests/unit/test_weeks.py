from datetime import date, datetime

import dagster as dg
import pytest

from hm_assets.platform.weeks import (
    DataRange,
    first_built_week,
    follows_calendar,
    parse_week,
    week_start,
    weekly_partitions,
)
from hm_assets.pipeline.ingest.data_range import scan_data_range


def test_weeks_start_on_wednesday():
    assert week_start(date(2020, 9, 22)) == date(2020, 9, 16)  # Tuesday -> the Wednesday before
    assert week_start(date(2020, 9, 23)) == date(2020, 9, 23)
    with pytest.raises(ValueError, match="Wednesday"):
        parse_week("2020-09-22")


def test_real_range_partitions_end_with_the_competition_week():
    keys = weekly_partitions(DataRange(date(2018, 9, 20), date(2020, 9, 22))).get_partition_keys()
    assert keys[0] == "2018-09-19" and keys[-1] == "2020-09-23"
    assert all(date.fromisoformat(k).weekday() == 2 for k in keys)
    assert len(keys) == 106  # every week of the data plus the live week, not weeks up to today


def test_partitions_follow_the_session_data(tiny_data):
    from hm_assets.defs.partitions import WeekPartitions
    from hm_assets.platform.settings import BUILT_WEEKS

    data_range = scan_data_range(tiny_data)
    weeks = WeekPartitions.from_data(tiny_data)
    history = weeks.history_keys()
    assert history[0] == data_range.first_week.isoformat()  # every week of transactions is history
    keys = weeks.weekly.get_partition_keys()
    # the pipeline's weeks: BUILT_WEEKS up to the live (not yet observed) week, not the whole history
    assert len(keys) == BUILT_WEEKS < len(history) and keys[-1] == history[-1]
    assert keys[BUILT_WEEKS - 1] == data_range.live_week.isoformat()
    assert data_range.last_day.weekday() == 1  # the synthetic data ends on a Tuesday


def test_current_data_follows_the_calendar_and_an_archive_ends_with_its_data():
    current = DataRange(date(2026, 6, 3), date(2026, 11, 24))  # live week 2026-11-25
    assert follows_calendar(current, today=date(2026, 11, 30))
    assert follows_calendar(current, today=date(2026, 12, 3))  # next week's data may come a day late
    assert not follows_calendar(current, today=date(2026, 12, 9))
    assert not follows_calendar(DataRange(date(2018, 9, 20), date(2020, 9, 22)), today=date(2026, 12, 1))
    calendar = weekly_partitions(current, date(2026, 9, 2), follow_calendar=True)
    keys = calendar.get_partition_keys(current_time=datetime(2026, 12, 10, 12))
    assert keys[0] == "2026-09-02" and keys[-1] == "2026-12-09"  # the weeks appear as time passes
    archive = weekly_partitions(current, date(2026, 9, 2)).get_partition_keys(current_time=datetime(2026, 12, 10, 12))
    assert archive[-1] == "2026-11-25"


def test_first_built_week_counts_back_from_the_live_week():
    data = DataRange(date(2026, 6, 3), date(2026, 11, 24))
    assert first_built_week(data, 12) == date(2026, 9, 9)  # 12 weeks up to 2026-11-25
    assert first_built_week(data, 100) == date(2026, 6, 10)  # never before the second week of data
    assert first_built_week(data, 12, "2026-07-01") == date(2026, 7, 1)
    with pytest.raises(ValueError, match="Wednesday"):
        first_built_week(data, 12, "2026-07-02")


def test_partition_time_window_is_wednesday_to_wednesday(tiny_data):
    from hm_assets.defs.partitions import WeekPartitions

    weekly = WeekPartitions.from_data(tiny_data).weekly
    key = weekly.get_partition_keys()[3]
    window = weekly.time_window_for_partition_key(key)
    assert window.start.date() == date.fromisoformat(key) and (window.end - window.start).days == 7


def test_definitions_load():
    from hm_assets.definitions import build_definitions

    defs = build_definitions()
    dg.Definitions.validate_loadable(defs)
    keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    assert {"transactions", "popularity_model", "recommendations", "evaluation", "backtest_summary"} <= keys
    for job in ("catalogue_snapshot", "ingest_transactions", "weekly_recommendations", "backtest_report"):
        assert defs.resolve_job_def(job) is not None
    assert {s.name for s in defs.sensors} == {"new_transactions", "live_week_after_ingest"}
    assert all(s.default_status == dg.DefaultSensorStatus.RUNNING for s in defs.sensors)


def test_the_ranker_reads_its_labelled_weeks_pair_feature_inputs_and_the_recommendations_their_own_weeks():
    """Pair features are computed, not stored: the ranker's deps are what its labelled weeks' pair
    features are computed from (earlier weeks only), the recommendations' those of their own week."""
    from hm_assets.definitions import build_definitions
    from hm_assets.pipeline.ranking.ranker import MAX_TRAINING_WEEKS
    from hm_assets.pipeline.ranking.samples import PAIR_FEATURE_INPUTS

    defs = build_definitions()
    ranker, recommendations = defs.resolve_assets_def("ranker"), defs.resolve_assets_def("recommendations")
    inputs = {dg.AssetKey(name) for name in PAIR_FEATURE_INPUTS}
    assert inputs | {dg.AssetKey("transactions")} <= ranker.dependency_keys
    for key in inputs:
        mapping = ranker.get_partition_mapping(key)
        assert (mapping.start_offset, mapping.end_offset) == (-MAX_TRAINING_WEEKS, -1)
    assert inputs | {dg.AssetKey("ranker"), dg.AssetKey("transactions")} <= recommendations.dependency_keys
    assert all(recommendations.get_partition_mapping(key) is None for key in inputs)
    assert dg.AssetKey("pair_features") not in defs.resolve_all_asset_keys()


def test_the_partition_sets_come_from_the_data_the_definitions_are_built_for(tiny_data, tmp_path, monkeypatch):
    """Nothing is fixed at import: one process builds the code location for two data folders and
    each gets the weeks of its own data (the jobs, the checks and the sensors too)."""
    from hm_assets.definitions import build_definitions
    from hm_assets.pipeline.ingest.data_contract import TRANSACTIONS_FILE
    from hm_assets.platform.weeks import WEEK

    shorter = tmp_path / "shorter"
    shorter.mkdir()
    header, *rows = (tiny_data / TRANSACTIONS_FILE).read_text().splitlines(keepends=True)
    cut = (scan_data_range(tiny_data).live_week - 2 * WEEK).isoformat()
    (shorter / TRANSACTIONS_FILE).write_text(header + "".join(r for r in rows if r[:10] < cut))

    def weekly_keys(data_dir) -> list[str]:
        monkeypatch.setenv("HM_DATA_DIR", str(data_dir))
        defs = build_definitions()
        job_keys = defs.resolve_job_def("weekly_recommendations").partitions_def.get_partition_keys()
        assert defs.resolve_assets_def("recommendations").partitions_def.get_partition_keys() == job_keys
        return job_keys

    full, short = weekly_keys(tiny_data), weekly_keys(shorter)
    assert full[-1] == scan_data_range(tiny_data).live_week.isoformat()
    assert short[-1] == scan_data_range(shorter).live_week.isoformat() == (date.fromisoformat(full[-1]) - 2 * WEEK).isoformat()
