"""Corrected days: rollups heal at the next run of any day, the independent checks see stale rollup and DSI
days in between, the blocking rollup checks catch a wrong aggregate, and missing symbols warn. Real Dagster
runs against a real PostgreSQL database."""

from datetime import date

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from tis_pipeline.market_data import completeness, rollups
from tis_pipeline.market_data.assets import market_data_1h, market_data_1m, market_data_15m
from tis_pipeline.market_data.checks import (
    expected_symbols_present,
    market_data_1h_source_changes_rolled_up,
    market_data_15m_source_changes_rolled_up,
)
from tis_pipeline.market_data.partitions import range_tags
from tis_pipeline.ops.jobs import stale_days_checks_job
from tis_pipeline.pg.day_partitions import bump_day_versions
from tis_pipeline.pg.engine import engine
from tis_pipeline.quality.rules import rule
from tis_pipeline_tests.market_data.test_assets import read_table, resources, table_digest

pytestmark = pytest.mark.pg
ROLLUPS = [market_data_15m, market_data_1h]
CHECKS = [market_data_15m_source_changes_rolled_up, market_data_1h_source_changes_rolled_up]


def run(url, first, last, assets, **bars):
    return dg.materialize(
        assets, resources=resources(url, **bars), raise_on_error=False, tags=range_tags(first, last)
    )


def hourly_checks(url):
    """One run of ``stale_days_checks_job`` (as its schedule runs it) → {(asset, check): evaluation}."""
    from tis_pipeline.dsi.assets import dsi
    from tis_pipeline.dsi.checks import scores_follow_their_bars

    defs = dg.Definitions(
        assets=[*ROLLUPS, dsi],
        asset_checks=[*CHECKS, scores_follow_their_bars],
        jobs=[stale_days_checks_job],
        resources=resources(url),
    )
    result = defs.resolve_job_def("stale_days_checks_job").execute_in_process(raise_on_error=False)
    assert result.success
    return {(c.asset_key.to_user_string(), c.check_name): c for c in result.get_asset_check_evaluations()}


def test_a_corrected_day_is_rolled_up_again_by_the_next_run_of_a_later_day(migrated_database_url):
    url = migrated_database_url
    day, end = pd.Timestamp("2024-07-01", tz="UTC"), pd.Timestamp("2024-07-02", tz="UTC")
    assert run(url, "2024-07-01", "2024-07-02", [market_data_1m, *ROLLUPS, *CHECKS]).success
    before = {t: table_digest(url, t, day, end) for t in ("market_data_15m", "market_data_1h")}
    assert all(c.passed for c in hourly_checks(url).values())

    # the day is corrected (other prices) and only the 1-minute asset runs
    assert run(url, "2024-07-01", "2024-07-01", [market_data_1m], seed=12).success
    with engine(url).connect() as conn:
        assert rollups.stale_days(conn, "market_data_15m") == [date(2024, 7, 1)]
    checks = hourly_checks(url)
    for table in ("market_data_15m", "market_data_1h"):
        stale = checks[(table, "source_changes_rolled_up")]
        assert not stale.passed and stale.severity == dg.AssetCheckSeverity.WARN
        assert stale.metadata["differing_days"].value == ["2024-07-01"]
        assert stale.metadata["failing_rows"].value > 0
        assert table_digest(url, table, day, end) == before[table]  # nothing rebuilt yet

    # the next run of a later day rebuilds the corrected day too
    result = run(url, "2024-07-03", "2024-07-03", [market_data_1m, *ROLLUPS, *CHECKS])
    assert result.success
    for table in ("market_data_15m", "market_data_1h"):
        meta = result.asset_materializations_for_node(table)[0].metadata
        assert meta["healed_days"].value == ["2024-07-01"]
        consistency = next(c for c in result.get_asset_check_evaluations() if c.check_name.startswith(table))
        assert consistency.passed and consistency.metadata["healed_days"].value == ["2024-07-01"]
    healed = {t: table_digest(url, t, day, end) for t in ("market_data_15m", "market_data_1h")}
    assert all(healed[t] != before[t] for t in healed)
    assert all(c.passed for c in hourly_checks(url).values())
    with engine(url).connect() as conn:
        assert rollups.stale_days(conn, "market_data_15m") == []
        assert rollups.stale_days(conn, "market_data_1h") == []

    # the healed rows are exactly a fresh rollup of the corrected day, and equal pandas' resample of it
    assert run(url, "2024-07-01", "2024-07-01", ROLLUPS).success
    assert {t: table_digest(url, t, day, end) for t in healed} == healed
    one_minute = read_table(url, "market_data_1m", day, end).set_index("timestamp")
    for table, freq in (("market_data_15m", "15min"), ("market_data_1h", "1h")):
        expected = (
            one_minute.groupby("symbol")
            .resample(freq)
            .agg({"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})
            .dropna()
            .reset_index()
        )
        stored = read_table(url, table, day, end)
        pd.testing.assert_frame_equal(stored, expected[stored.columns], check_dtype=False)


def test_the_blocking_rollup_check_catches_a_wrong_aggregate(migrated_database_url, monkeypatch):
    """The building SQL takes the largest volume instead of the sum (a wrong high or low would break the
    table's CHECK constraints first): the check recomputes from the 1-minute bars another way and fails (it
    used to compare the inserted bars with the same SQL's staged rows, and passed)."""
    assert "sum(volume) AS volume" in rollups._AGGREGATE_SQL
    monkeypatch.setattr(
        rollups, "_AGGREGATE_SQL", rollups._AGGREGATE_SQL.replace("sum(volume)", "max(volume)")
    )
    result = run(migrated_database_url, "2024-07-08", "2024-07-08", [market_data_1m, *ROLLUPS])
    assert not result.success
    check = next(
        c for c in result.get_asset_check_evaluations() if c.check_name == "market_data_15m_rollup_consistent"
    )
    assert not check.passed and check.metadata["failing_rows"].value > 0
    assert "market_data_1h" not in {
        e.asset_key.to_user_string() for e in result.get_asset_materialization_events()
    }


def test_the_hourly_rollup_check_catches_a_wrong_hourly_aggregate(migrated_database_url, monkeypatch):
    """Hourly bars built with the largest 15-minute volume from correct 15-minute bars: the hourly check (it
    used to compare with another aggregation of the same 15-minute table) fails."""
    url = migrated_database_url
    assert run(url, "2024-07-09", "2024-07-09", [market_data_1m, market_data_15m]).success
    monkeypatch.setattr(
        rollups, "_AGGREGATE_SQL", rollups._AGGREGATE_SQL.replace("sum(volume)", "max(volume)")
    )
    result = run(url, "2024-07-09", "2024-07-09", [market_data_1h])
    hourly = next(
        c for c in result.get_asset_check_evaluations() if c.check_name == "market_data_1h_rollup_consistent"
    )
    assert not hourly.passed and hourly.metadata["failing_rows"].value > 0


def test_the_dsi_check_fails_while_a_scored_day_is_older_than_its_bars(migrated_database_url):
    url = migrated_database_url
    assert run(url, "2024-07-15", "2024-07-16", [market_data_1m]).success
    with engine(url).begin() as conn:  # DSI scored both days (its run bumps these versions after the bars')
        bump_day_versions(conn, [date(2024, 7, 15), date(2024, 7, 16)], "dsi_day_versions")
    assert hourly_checks(url)[("dsi_evidence", "scores_follow_their_bars")].passed
    assert run(url, "2024-07-15", "2024-07-15", [market_data_1m], seed=12).success
    check = hourly_checks(url)[("dsi_evidence", "scores_follow_their_bars")]
    # the corrected day and the later day scored from its state are both stale
    assert not check.passed and check.metadata["stale_days_sample"].value == ["2024-07-15", "2024-07-16"]
    with engine(url).begin() as conn:
        bump_day_versions(conn, [date(2024, 7, 15), date(2024, 7, 16)], "dsi_day_versions")
    assert hourly_checks(url)[("dsi_evidence", "scores_follow_their_bars")].passed


def test_a_symbol_without_bars_on_a_day_warns(migrated_database_url):
    url = migrated_database_url
    assert run(url, "2024-07-22", "2024-07-26", [market_data_1m, expected_symbols_present]).success
    result = run(url, "2024-07-29", "2024-07-29", [market_data_1m, expected_symbols_present], symbols=["AAA"])
    assert result.success  # a warning, not a failure
    check = next(
        c for c in result.get_asset_check_evaluations() if c.check_name == "expected_symbols_present"
    )
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["missing_by_day"].value == {"2024-07-29": "BBB"}
    with engine(url).connect() as conn:
        count = conn.execute(
            sa.text(
                "SELECT count(*) FROM market_data_1m WHERE symbol = 'BBB' AND \"timestamp\" >= '2024-07-29'"
            )
        ).scalar_one()
    assert count == 0
    # the days' symbols probed along the key equal a DISTINCT of every bar, a day in the DEFAULT partition too
    with engine(url).begin() as conn:
        conn.execute(
            sa.text(
                'INSERT INTO market_data_1m (symbol, "timestamp", open, high, low, close, volume) '
                "VALUES ('CCC', '2024-07-31 10:00+00', 1, 1, 1, 1, 1)"
            )
        )
        seen = completeness.symbols_by_day(conn, date(2024, 7, 21), date(2024, 8, 1))
        distinct = conn.execute(
            sa.text(
                "SELECT DISTINCT CAST(\"timestamp\" AT TIME ZONE 'UTC' AS date), symbol FROM market_data_1m "
                "WHERE \"timestamp\" >= '2024-07-21 00:00+00' AND \"timestamp\" < '2024-08-02 00:00+00' "
                "ORDER BY 1, 2"
            )
        ).all()
    assert [tuple(r) for r in seen.itertuples(index=False)] == [tuple(r) for r in distinct]
    assert (date(2024, 7, 31), "CCC") in set(seen.itertuples(index=False)) and len(seen) == 5 * 2 + 1 + 1


def test_missing_symbols_skip_a_weekday_the_venue_keeps_closed():
    seen = pd.DataFrame(
        [(date(2024, 7, d), s) for d in (1, 2, 3, 4, 5, 8) for s in ("AAA", "BBB")], columns=["day", "symbol"]
    )
    # Sat 13th: no bars, and none on Sat 6th either (closed); Tue 9th: no bars at all, but bars a week before
    missing = completeness.missing_symbols(seen, [date(2024, 7, 13), date(2024, 7, 9)])
    assert missing.to_dict("records") == [
        {"day": date(2024, 7, 9), "symbol": "AAA"},
        {"day": date(2024, 7, 9), "symbol": "BBB"},
    ]


def day_count(url, table, day):
    with engine(url).connect() as conn:
        return conn.execute(
            sa.text(f'SELECT count(*) FROM {table} WHERE "timestamp" >= :a AND "timestamp" < :b'),
            {"a": pd.Timestamp(day, tz="UTC"), "b": pd.Timestamp(day, tz="UTC") + pd.Timedelta(days=1)},
        ).scalar_one()


def evaluation(result, table, check):
    return next(
        c
        for c in result.get_asset_check_evaluations()
        if c.asset_key.to_user_string() == table and c.check_name == check
    )


def test_a_day_retention_deleted_is_neither_stale_nor_brought_back(
    migrated_database_url, tmp_path, monkeypatch
):
    """15-minute days deleted by retention (1-minute bars kept longer) stay deleted when their 1-minute day is
    corrected: retention forgot their versions. The hourly day, kept, is healed from the 1-minute bars (it
    used to be rolled up from the missing 15-minute bars: emptied, and its blocking check failed)."""
    from tis_pipeline.ops import retention

    url = migrated_database_url
    monkeypatch.setenv("TIS_ARCHIVE_DIR", str(tmp_path / "archive"))
    assert run(url, "2024-08-01", "2024-08-02", [market_data_1m, *ROLLUPS, *CHECKS]).success
    hours = day_count(url, "market_data_1h", "2024-08-01")
    periods = {"market_data_1m": "90d", "market_data_15m": "10d", "market_data_1h": "1y"}
    with engine(url).begin() as conn:
        retention.apply(conn, pd.Timestamp("2024-08-20", tz="UTC"), periods)
        versions = conn.execute(
            sa.text("SELECT rollup, count(*) FROM rollup_source_versions GROUP BY 1 ORDER BY 1")
        ).all()
    assert versions == [("market_data_1h", 2)]  # the 15-minute days went, with their versions
    assert (
        day_count(url, "market_data_15m", "2024-08-01") == 0 < day_count(url, "market_data_1h", "2024-08-01")
    )

    assert run(url, "2024-08-01", "2024-08-01", [market_data_1m], seed=12).success  # a correction
    with engine(url).connect() as conn:
        assert rollups.stale_days(conn, "market_data_15m") == []
        assert rollups.stale_days(conn, "market_data_1h") == [date(2024, 8, 1)]
    before = table_digest(
        url, "market_data_1h", pd.Timestamp("2024-08-01", tz="UTC"), pd.Timestamp("2024-08-02", tz="UTC")
    )
    result = run(url, "2024-08-05", "2024-08-05", [market_data_1m, *ROLLUPS, *CHECKS])
    assert result.success
    assert result.asset_materializations_for_node("market_data_15m")[0].metadata["healed_days"].value == []
    assert day_count(url, "market_data_15m", "2024-08-01") == 0, "a deleted 15-minute day came back"
    hourly = result.asset_materializations_for_node("market_data_1h")[0].metadata
    assert hourly["healed_days"].value == ["2024-08-01"]
    assert evaluation(result, "market_data_1h", "market_data_1h_rollup_consistent").passed
    assert day_count(url, "market_data_1h", "2024-08-01") == hours
    after = table_digest(
        url, "market_data_1h", pd.Timestamp("2024-08-01", tz="UTC"), pd.Timestamp("2024-08-02", tz="UTC")
    )
    assert after != before
    with engine(url).connect() as conn:
        assert rollups.stale_days(conn, "market_data_1h") == []
    assert all(c.passed for c in hourly_checks(url).values())


def test_retention_keeps_the_minutes_of_a_stale_rollup_day_until_it_is_healed(
    migrated_database_url, tmp_path, monkeypatch
):
    """A day corrected after its rollups were built keeps its 1-minute bars past their period until the
    rollups are healed from them (they used to go as soon as any rollup existed, and the heal then emptied the
    rollup day)."""
    from tis_pipeline.ops import retention

    url = migrated_database_url
    monkeypatch.setenv("TIS_ARCHIVE_DIR", str(tmp_path / "archive"))
    assert run(url, "2024-09-02", "2024-09-03", [market_data_1m, *ROLLUPS]).success
    quarters = day_count(url, "market_data_15m", "2024-09-02")
    assert run(url, "2024-09-02", "2024-09-02", [market_data_1m], seed=12).success
    periods = {"market_data_1m": "7d"}
    as_of = pd.Timestamp("2024-09-20", tz="UTC")
    with engine(url).begin() as conn:
        outcome = next(o for o in retention.apply(conn, as_of, periods) if o.table == "market_data_1m")
    assert outcome.kept_without_rollup == day_count(url, "market_data_1m", "2024-09-02") > 0
    assert day_count(url, "market_data_1m", "2024-09-03") == 0
    result = run(url, "2024-09-10", "2024-09-10", [market_data_1m, *ROLLUPS, *CHECKS])
    assert result.success
    for table in ("market_data_15m", "market_data_1h"):
        assert result.asset_materializations_for_node(table)[0].metadata["healed_days"].value == [
            "2024-09-02"
        ]
    with engine(url).begin() as conn:
        retention.apply(conn, as_of, periods)
    assert day_count(url, "market_data_1m", "2024-09-02") == 0
    assert day_count(url, "market_data_15m", "2024-09-02") == quarters > 0


def test_one_run_heals_at_most_its_share_of_stale_days_and_leaves_the_rest_warned(
    migrated_database_url, monkeypatch
):
    url = migrated_database_url
    monkeypatch.setattr(rollups, "HEAL_DAYS_PER_RUN", 1)
    assert run(url, "2024-10-01", "2024-10-02", [market_data_1m, *ROLLUPS]).success
    assert run(url, "2024-10-01", "2024-10-02", [market_data_1m], seed=12).success
    first = run(url, "2024-10-07", "2024-10-07", [market_data_1m, *ROLLUPS, *CHECKS])
    assert first.success  # the days left are a warning
    for table in ("market_data_15m", "market_data_1h"):
        meta = first.asset_materializations_for_node(table)[0].metadata
        assert meta["healed_days"].value == ["2024-10-01"]
        assert meta["stale_days_left"].value == ["2024-10-02"]
        left = evaluation(first, table, "source_changes_rolled_up")
        assert not left.passed and left.metadata["differing_days"].value == ["2024-10-02"]
    second = run(url, "2024-10-08", "2024-10-08", [market_data_1m, *ROLLUPS, *CHECKS])
    assert second.success
    for table in ("market_data_15m", "market_data_1h"):
        meta = second.asset_materializations_for_node(table)[0].metadata
        assert meta["healed_days"].value == ["2024-10-02"] and meta["stale_days_left"].value == []
        assert evaluation(second, table, "source_changes_rolled_up").passed


@pytest.mark.parametrize("table", ["market_data_15m", "market_data_1h"])
def test_the_reference_in_two_halves_finds_what_the_one_query_finds(migrated_database_url, table):
    """``rollup_mismatch_sql`` aggregates the reference in two halves of the window cut on a bucket boundary;
    over any window (bounds off the buckets, the cut near a wrong bar) it finds the rows the reference as one
    query finds: a changed bar, a missing one and one too many."""
    url = migrated_database_url
    assert run(url, "2024-08-05", "2024-08-06", [market_data_1m, *ROLLUPS]).success
    with engine(url).begin() as conn:
        conn.execute(
            sa.text(
                f"UPDATE {table} SET volume = volume + 1 WHERE symbol = 'AAA' AND \"timestamp\" IN "
                "('2024-08-05 11:00+00', '2024-08-05 12:00+00', '2024-08-06 00:00+00')"
            )
        )
        conn.execute(
            sa.text(f"DELETE FROM {table} WHERE symbol = 'BBB' AND \"timestamp\" = '2024-08-05 23:00+00'")
        )
        conn.execute(
            sa.text(
                f'INSERT INTO {table} (symbol, "timestamp", open, high, low, close, volume) '
                "VALUES ('CCC', '2024-08-06 12:00+00', 1, 1, 1, 1, 1)"
            )
        )
    consistency = rule(f"{table}_rollup_consistent")
    one_query = rollups.rollup_compare_sql(consistency, f"({rollups.rollup_reference_sql(consistency)})")
    assert "UNION ALL" in rollups.rollup_mismatch_sql(consistency) and "UNION ALL" not in one_query
    windows = [
        ("2024-08-05 00:00", "2024-08-07 00:00"),
        ("2024-08-05 00:00", "2024-08-06 00:00"),
        ("2024-08-05 00:07", "2024-08-06 13:52"),
        ("2024-08-05 11:30", "2024-08-05 12:30"),
        ("2024-08-05 12:00", "2024-08-05 12:01"),
        ("2024-08-06 12:00", "2024-08-06 12:00"),
    ]
    found = []
    with engine(url).connect() as conn:
        for a, b in windows:
            window = {"start": pd.Timestamp(a, tz="UTC"), "end": pd.Timestamp(b, tz="UTC")}
            halves = conn.execute(sa.text(rollups.rollup_mismatch_sql(consistency)), window).all()
            assert halves == conn.execute(sa.text(one_query), window).all(), (a, b)
            found.append(len(halves))
    assert found[0] == 5 and found[1] == 3 and found[2] > 5 and found[-1] == 0
