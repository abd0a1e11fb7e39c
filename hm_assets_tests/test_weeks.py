from datetime import date

import dagster as dg
import pytest

from hm_assets.weeks import DataRange, parse_week, scan_data_range, week_start, weekly_partitions


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
    from hm_assets.partitions import weekly_partitions_def

    data_range = scan_data_range(tiny_data)
    keys = weekly_partitions_def.get_partition_keys()
    assert keys[0] == data_range.first_week.isoformat()
    assert keys[-1] == data_range.live_week.isoformat()  # the live (not yet observed) week is present
    assert data_range.last_day.weekday() == 1  # the synthetic data ends on a Tuesday


def test_partition_time_window_is_wednesday_to_wednesday(tiny_data):
    from hm_assets.partitions import weekly_partitions_def

    key = weekly_partitions_def.get_partition_keys()[3]
    window = weekly_partitions_def.time_window_for_partition_key(key)
    assert window.start.date() == date.fromisoformat(key) and (window.end - window.start).days == 7


def test_definitions_load():
    from hm_assets.definitions import defs

    dg.Definitions.validate_loadable(defs)
    keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    assert {"transactions", "popularity_model", "recommendations", "evaluation", "backtest_summary"} <= keys
    assert defs.resolve_job_def("weekly_recommendations") is not None
    assert defs.resolve_schedule_def("weekly_recommendations_schedule") is not None
