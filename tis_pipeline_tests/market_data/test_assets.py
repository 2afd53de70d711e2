"""Real Dagster runs of the market-data assets against a real PostgreSQL database."""

import itertools

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from tis_pipeline.market_data import describe, synthetic
from tis_pipeline.market_data.assets import market_data_1h, market_data_1m, market_data_15m
from tis_pipeline.market_data.partitions import range_tags
from tis_pipeline.market_data.sources import BarSource
from tis_pipeline.pg.engine import engine
from tis_pipeline.resources import PostgresResource
from tis_pipeline_tests.support.locks import wait_for_lock_waiters

pytestmark = pytest.mark.pg
SYMBOLS = ["AAA", "BBB"]
ASSETS = [market_data_1m, market_data_15m, market_data_1h]


def resources(url, **bars):
    return {
        "db": PostgresResource(url=url),
        "bars": BarSource(**{"source": "synthetic", "symbols": SYMBOLS, "seed": 11, **bars}),
    }


def materialize_range(url, first, last, assets=ASSETS, **bars):
    return dg.materialize(
        assets, resources=resources(url, **bars), raise_on_error=False, tags=range_tags(first, last)
    )


def table_digest(url, table, first, end):
    with engine(url).connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT count(*), "
                "md5(coalesce(string_agg(t::text, '|' ORDER BY symbol, \"timestamp\"), '')) "
                f'FROM {table} t WHERE "timestamp" >= :a AND "timestamp" < :b'
            ),
            {"a": first, "b": end},
        ).one()


def read_table(url, table, first, end):
    with engine(url).connect() as conn:
        return pd.read_sql(
            sa.text(
                'SELECT symbol, "timestamp", open::float8, high::float8, low::float8, close::float8, '
                "volume::float8 "
                f'FROM {table} WHERE "timestamp" >= :a AND "timestamp" < :b ORDER BY symbol, "timestamp"'
            ),
            conn,
            params={"a": first, "b": end},
        )


def test_one_partition_writes_the_source_rows_and_rerun_is_identical(database_url):
    day = pd.Timestamp("2024-02-05", tz="UTC")
    result = dg.materialize(ASSETS, partition_key="2024-02-05", resources=resources(database_url))
    assert result.success
    expected = synthetic.day_bars(day, SYMBOLS, seed=11)
    stored = read_table(database_url, "market_data_1m", day, day + pd.Timedelta(days=1))
    assert len(stored) == len(expected)
    np.testing.assert_array_equal(stored["close"].to_numpy(), expected["close"].to_numpy())
    meta = result.asset_materializations_for_node("market_data_1m")[0].metadata
    assert meta["dagster/row_count"].value == len(expected)
    assert meta["quarantined_rows"].value == 0
    missing = meta["missing_minutes_by_symbol"].value
    assert missing == {
        s: int(
            1440
            - (expected["symbol"] == s).sum()
            - (1439 - (expected[expected["symbol"] == s]["timestamp"].max() - day).seconds // 60)
        )
        for s in SYMBOLS
    }
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert (
        checks["market_data_15m_rollup_consistent"].passed
        and checks["market_data_1h_rollup_consistent"].passed
    )
    errors = [c for c in checks.values() if c.severity == dg.AssetCheckSeverity.ERROR]
    assert len(errors) >= 17 and all(c.passed for c in errors)
    gaps = checks["market_data_1m_no_gaps"]
    assert not gaps.passed and gaps.severity == dg.AssetCheckSeverity.WARN
    assert gaps.metadata["missing_minutes"].value == sum(missing.values())
    assert gaps.metadata["partition_start"].value == day.isoformat()
    before = {
        t: table_digest(database_url, t, day, day + pd.Timedelta(days=1))
        for t in ("market_data_1m", "market_data_15m", "market_data_1h")
    }
    again = dg.materialize(ASSETS, partition_key="2024-02-05", resources=resources(database_url))
    assert again.success
    after = {t: table_digest(database_url, t, day, day + pd.Timedelta(days=1)) for t in before}
    assert after == before
    assert before["market_data_15m"][0] == len(
        expected.groupby(["symbol", expected["timestamp"].dt.floor("15min")])
    )


def test_a_range_is_one_run_and_rollups_match_pandas_resample(database_url):
    result = materialize_range(database_url, "2024-03-01", "2024-03-03")
    assert result.success
    assert (
        len(result.dagster_run.tags)
        and result.dagster_run.tags["dagster/asset_partition_range_end"] == "2024-03-03"
    )
    meta = result.asset_materializations_for_node("market_data_1m")
    assert {m.partition for m in meta} == {"2024-03-01", "2024-03-02", "2024-03-03"}
    first, end = pd.Timestamp("2024-03-01", tz="UTC"), pd.Timestamp("2024-03-04", tz="UTC")
    source = synthetic.bars(first, end, SYMBOLS, seed=11)
    for table, rule in (("market_data_15m", "15min"), ("market_data_1h", "1h")):
        expected = (
            source.set_index("timestamp")
            .groupby("symbol")
            .resample(rule)
            .agg({"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})
            .dropna(subset=["open"])
            .reset_index()
        )
        stored = read_table(database_url, table, first, end)
        assert len(stored) == len(expected)
        for column in ("open", "high", "low", "close"):
            np.testing.assert_array_equal(stored[column].to_numpy(), expected[column].to_numpy())
        np.testing.assert_allclose(stored["volume"].to_numpy(), expected["volume"].to_numpy(), rtol=1e-12)
        assert (stored["timestamp"].to_numpy() == expected["timestamp"].to_numpy()).all()


def test_too_many_bad_rows_fail_the_run_and_change_nothing(database_url, monkeypatch):
    first, end = pd.Timestamp("2024-04-01", tz="UTC"), pd.Timestamp("2024-04-02", tz="UTC")
    assert materialize_range(database_url, "2024-04-01", "2024-04-01", [market_data_1m]).success
    before = table_digest(database_url, "market_data_1m", first, end)

    real = synthetic.bars

    def damaged(*args, **kwargs):
        frame = real(*args, **kwargs)
        frame.loc[frame.index[::10], "low"] = frame["high"] * 2  # 10 % of rows break low <= open/close
        return frame

    monkeypatch.setattr(synthetic, "bars", damaged)
    result = materialize_range(database_url, "2024-04-01", "2024-04-01", [market_data_1m])
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "more than 5%" in str(failure.step_failure_data.user_failure_data.description)
    assert table_digest(database_url, "market_data_1m", first, end) == before


def test_a_few_bad_rows_are_quarantined_once_and_the_rest_loads(database_url, monkeypatch):
    real = synthetic.bars

    def damaged(*args, **kwargs):
        frame = real(*args, **kwargs)
        frame.loc[frame.index[:3], "volume"] = -1.0
        return frame

    monkeypatch.setattr(synthetic, "bars", damaged)
    for _ in range(2):  # re-ingesting replaces the quarantine rows too
        result = materialize_range(database_url, "2024-04-10", "2024-04-10", [market_data_1m])
        assert result.success
    with engine(database_url).connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT rule, count(*) FROM market_data_quarantine "
                "WHERE partition_date = '2024-04-10' GROUP BY rule"
            )
        ).all()
    assert rows == [("ck_market_data_1m_volume_nonnegative", 3)]
    meta = result.asset_materializations_for_node("market_data_1m")[0].metadata
    assert meta["quarantined_rows"].value == 3
    expected = len(
        real(pd.Timestamp("2024-04-10", tz="UTC"), pd.Timestamp("2024-04-11", tz="UTC"), SYMBOLS, 11)
    )
    assert meta["dagster/row_count"].value == expected - 3


def test_connection_killed_mid_copy_leaves_previous_rows_intact(database_url):
    first, end = pd.Timestamp("2024-05-01", tz="UTC"), pd.Timestamp("2024-05-02", tz="UTC")
    assert materialize_range(database_url, "2024-05-01", "2024-05-01", [market_data_1m]).success
    before = table_digest(database_url, "market_data_1m", first, end)
    assert before[0] > 2000
    # the server itself ends the writing session when, after the COPY, it alters the new partition: a real
    # dropped connection in the middle of the write
    with engine(database_url).begin() as conn:
        conn.execute(
            sa.text("""
            CREATE FUNCTION tis_test_kill() RETURNS event_trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); END $$;
            CREATE EVENT TRIGGER tis_test_kill ON ddl_command_end WHEN TAG IN ('ALTER TABLE')
              EXECUTE FUNCTION tis_test_kill();
        """)
        )
    try:
        result = materialize_range(database_url, "2024-05-01", "2024-05-01", [market_data_1m], seed=12)
        assert not result.success
        failure = next(e for e in result.all_events if e.is_step_failure)
        assert "terminat" in str(failure.step_failure_data.error).lower()
    finally:
        engine(database_url).dispose()
        with engine(database_url).begin() as conn:
            conn.execute(sa.text("DROP EVENT TRIGGER tis_test_kill; DROP FUNCTION tis_test_kill();"))
    assert staging_leftovers(database_url) == 0
    assert table_digest(database_url, "market_data_1m", first, end) == before


def test_ingests_of_two_days_at_once_wait_for_each_other_instead_of_deadlocking(database_url):
    """Both swaps delete from the DEFAULT partition, then need it exclusively to attach their day: without the
    partition-change lock each would hold what the other waits for. Held at their first statement, both wait;
    released, both must land."""
    from concurrent.futures import ThreadPoolExecutor

    days = ("2024-07-01", "2024-07-02")
    holder = engine(database_url).connect()
    try:
        holder.execute(sa.text("LOCK TABLE market_data_1m_default IN SHARE MODE"))
        with ThreadPoolExecutor(max_workers=2) as pool:
            runs = [pool.submit(materialize_range, database_url, day, day, [market_data_1m]) for day in days]
            wait_for_lock_waiters(database_url, 2)  # one at the DEFAULT partition, one at the lock behind it
            holder.rollback()
            results = [run.result() for run in runs]
    finally:
        holder.close()
    assert [r.success for r in results] == [True, True], [
        str(e.step_failure_data.error) for r in results for e in r.all_events if e.is_step_failure
    ]
    for day in days:
        first = pd.Timestamp(day, tz="UTC")
        expected = synthetic.bars(first, first + pd.Timedelta(days=1), SYMBOLS, seed=11)
        assert table_digest(database_url, "market_data_1m", first, first + pd.Timedelta(days=1))[0] == len(
            expected
        )


def staging_leftovers(url) -> int:
    """Tables built for a swap (``market_data_1m_pYYYYMMDD_<tag>``) that were neither attached nor dropped."""
    with engine(url).connect() as conn:
        return conn.execute(
            sa.text(r"SELECT count(*) FROM pg_class WHERE relname ~ '^market_data_1m_p[0-9]{8}_[0-9a-f]{8}'")
        ).scalar_one()


def test_a_swap_that_fails_in_its_transaction_drops_the_built_days(database_url):
    """The days are built and committed on their own connections; a failure while swapping them in rolls the
    swap back and drops them, so the table keeps its rows and no built table is left behind."""
    first, end = pd.Timestamp("2024-05-06", tz="UTC"), pd.Timestamp("2024-05-08", tz="UTC")
    assert materialize_range(database_url, "2024-05-06", "2024-05-07", [market_data_1m]).success
    before = table_digest(database_url, "market_data_1m", first, end)
    with engine(database_url).begin() as conn:
        conn.execute(
            sa.text("""
            CREATE FUNCTION tis_test_refuse() RETURNS event_trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'refused by test'; END $$;
            CREATE EVENT TRIGGER tis_test_refuse ON ddl_command_end WHEN TAG IN ('ALTER INDEX')
              EXECUTE FUNCTION tis_test_refuse();
        """)
        )
    try:
        result = materialize_range(database_url, "2024-05-06", "2024-05-07", [market_data_1m], seed=12)
        assert not result.success
        failure = next(e for e in result.all_events if e.is_step_failure)
        assert "refused by test" in str(failure.step_failure_data.error)
    finally:
        with engine(database_url).begin() as conn:
            conn.execute(sa.text("DROP EVENT TRIGGER tis_test_refuse; DROP FUNCTION tis_test_refuse();"))
    assert staging_leftovers(database_url) == 0
    assert table_digest(database_url, "market_data_1m", first, end) == before


def test_swap_keeps_other_sources_rows_and_absorbs_the_default_partition(database_url):
    day = pd.Timestamp("2024-02-20", tz="UTC")
    with engine(database_url).begin() as conn:
        conn.execute(
            sa.text(
                'INSERT INTO market_data_1m (symbol, "timestamp", open, high, low, close, volume) VALUES '
                "('OTHER', '2024-02-20 10:00+00', 1, 2, 1, 2, 5), "
                "('AAA', '2024-02-20 10:00:00+00', 9, 9, 9, 9, 9)"
            )
        )
        assert conn.execute(sa.text("SELECT count(*) FROM market_data_1m_default")).scalar_one() >= 2
    replaced, counts = [], []
    for _ in range(2):
        result = materialize_range(database_url, "2024-02-20", "2024-02-20", [market_data_1m])
        assert result.success
        meta = result.asset_materializations_for_node("market_data_1m")[0].metadata
        replaced.append(meta["rows_deleted_by_run"].value)
        counts.append((meta["rows_written_by_run"].value, meta["dagster/row_count"].value))
    with engine(database_url).connect() as conn:
        other = (
            conn.execute(
                sa.text(
                    "SELECT close::float8 FROM market_data_1m "
                    "WHERE symbol = 'OTHER' AND \"timestamp\" = '2024-02-20 10:00+00'"
                )
            )
            .scalars()
            .all()
        )
        in_default = conn.execute(
            sa.text(
                "SELECT count(*) FROM market_data_1m_default WHERE \"timestamp\" >= '2024-02-20' "
                "AND \"timestamp\" < '2024-02-21'"
            )
        ).scalar_one()
        partition = conn.execute(sa.text("SELECT count(*) FROM market_data_1m_p20240220")).scalar_one()
    expected = synthetic.day_bars(day, SYMBOLS, seed=11)
    stored = read_table(database_url, "market_data_1m", day, day + pd.Timedelta(days=1))
    assert other == [2.0]
    assert in_default == 0
    assert partition == len(expected) + 1
    # first run: the one AAA row of the DEFAULT partition; second: the source's rows of the old partition, not
    # OTHER
    assert replaced == [1, len(expected)]
    # the run wrote the source's rows; the table's "Row count" for the day also holds OTHER's row
    assert counts == [(len(expected), len(expected) + 1)] * 2
    aaa = stored[stored["symbol"] == "AAA"]
    np.testing.assert_array_equal(
        aaa["close"].to_numpy(), expected[expected["symbol"] == "AAA"]["close"].to_numpy()
    )


def alter_on_insert(url: str, table: str, symbol: str, timestamp: str, assignment: str) -> None:
    """A trigger of the test's own database that alters one bar of ``table`` on its way in (literals of the
    test)."""
    with engine(url).begin() as conn:
        conn.execute(
            sa.text(f"""
            CREATE FUNCTION tis_test_alter_{table}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF NEW.symbol = '{symbol}' AND NEW."timestamp" = '{timestamp}' THEN {assignment}; END IF;
              RETURN NEW;
            END $$;
            CREATE TRIGGER tis_test_alter_{table} BEFORE INSERT ON {table} FOR EACH ROW
              EXECUTE FUNCTION tis_test_alter_{table}();
        """)
        )


def test_a_failing_blocking_check_stops_everything_downstream(migrated_database_url):
    """A rollup the database altered on its way in: the blocking check fails and nothing downstream runs."""
    from tis_pipeline.dsi.assets import dsi

    url = migrated_database_url
    alter_on_insert(url, "market_data_15m", "BBB", "2024-06-10 12:00+00", "NEW.volume := NEW.volume + 1")
    result = dg.materialize(
        [*ASSETS, dsi],
        resources=resources(url),
        raise_on_error=False,
        tags=range_tags("2024-06-10", "2024-06-10"),
    )
    assert not result.success
    check = next(
        c for c in result.get_asset_check_evaluations() if c.check_name == "market_data_15m_rollup_consistent"
    )
    assert not check.passed and check.metadata["failing_rows"].value == 1
    assert "BBB" in str(check.metadata["failing_rows_sample"].value)
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "market_data_1h" not in materialized and "dsi_evidence" not in materialized
    with engine(url).connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM market_data_1h")).scalar_one() == 0
        assert conn.execute(sa.text("SELECT count(*) FROM dsi_evidence")).scalar_one() == 0


def test_the_hourly_check_catches_a_wrong_hourly_bar(migrated_database_url):
    """The hourly rule's check compares with the 15-minute rollup: an hourly bar altered on its way in fails
    it."""
    url = migrated_database_url
    alter_on_insert(
        url, "market_data_1h", "AAA", "2024-06-11 09:00+00", "NEW.close := NEW.close + 0.00000001"
    )
    result = materialize_range(url, "2024-06-11", "2024-06-11")
    assert not result.success
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["market_data_15m_rollup_consistent"].passed
    hourly = checks["market_data_1h_rollup_consistent"]
    assert not hourly.passed and hourly.metadata["failing_rows"].value == 1
    assert "09:00" in str(hourly.metadata["failing_rows_sample"].value)


def test_the_hourly_check_ties_its_buckets_to_the_one_minute_bars(migrated_database_url):
    """An hour with 1-minute bars but no 15-minute bars (the 15-minute table changed since its check) is
    reported missing by the hourly check, and the gap counts come from the 1-minute bars."""
    url = migrated_database_url
    assert materialize_range(url, "2024-06-12", "2024-06-12").success
    with engine(url).begin() as conn:
        conn.execute(
            sa.text("""DELETE FROM market_data_15m WHERE symbol = 'BBB'
                                AND "timestamp" >= '2024-06-12 03:00+00'
                                AND "timestamp" < '2024-06-12 04:00+00'""")
        )
    result = materialize_range(url, "2024-06-12", "2024-06-12", assets=[market_data_1h])
    hourly = next(
        c for c in result.get_asset_check_evaluations() if c.check_name == "market_data_1h_rollup_consistent"
    )
    assert not hourly.passed and hourly.metadata["failing_rows"].value == 1
    assert "03:00" in str(hourly.metadata["failing_rows_sample"].value)
    meta = result.asset_materializations_for_node("market_data_1h")[0].metadata
    one_minute = read_table(
        url, "market_data_1m", pd.Timestamp("2024-06-12", tz="UTC"), pd.Timestamp("2024-06-13", tz="UTC")
    )
    assert meta["missing_minutes"].value == 2 * 1440 - len(one_minute)


def test_a_bad_later_day_of_a_range_fails_it_and_drops_the_days_already_built(database_url, monkeypatch):
    first, end = pd.Timestamp("2024-04-20", tz="UTC"), pd.Timestamp("2024-04-23", tz="UTC")
    assert materialize_range(database_url, "2024-04-20", "2024-04-22", [market_data_1m]).success
    before = table_digest(database_url, "market_data_1m", first, end)
    real = synthetic.bars

    def third_day_damaged(start, stop, *args, **kwargs):
        frame = real(start, stop, *args, **kwargs)
        if pd.Timestamp(start) == pd.Timestamp("2024-04-22", tz="UTC"):
            frame.loc[frame.index[::10], "low"] = frame["high"] * 2
        return frame

    monkeypatch.setattr(synthetic, "bars", third_day_damaged)
    # the first two days are read, validated and handed to the partition builds before the third one fails
    result = materialize_range(database_url, "2024-04-20", "2024-04-22", [market_data_1m], seed=13)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "2024-04-22: 10.0%" in str(failure.step_failure_data.user_failure_data.description)
    assert staging_leftovers(database_url) == 0
    assert table_digest(database_url, "market_data_1m", first, end) == before


def test_a_day_handed_to_the_builds_in_two_parts_is_refused(database_url):
    from tis_pipeline.pg import day_partitions, migrate

    migrate.upgrade(database_url)
    day = pd.Timestamp("2024-04-25", tz="UTC")
    bars = synthetic.day_bars(day, SYMBOLS, seed=11)
    builds = day_partitions.DayBuilds(engine(database_url), day, day + pd.Timedelta(days=1))
    builds.add(bars[bars["symbol"] == "AAA"])
    with pytest.raises(ValueError, match="2024-04-25 came in two parts"):
        builds.add(bars[bars["symbol"] == "BBB"])
    builds.abandon()
    assert staging_leftovers(database_url) == 0


def test_the_synthetic_source_in_day_pieces_equals_one_read_of_the_range():
    source = BarSource(source="synthetic", symbols=SYMBOLS, seed=11)
    first, end = pd.Timestamp("2024-06-01", tz="UTC"), pd.Timestamp("2024-06-04", tz="UTC")
    pieces = list(source.read_pieces(first, end))
    assert [p.frame["timestamp"].dt.floor("D").unique().tolist() for p in pieces] == [
        [first + pd.Timedelta(days=i)] for i in range(3)
    ]
    joined = pd.concat([p.frame for p in pieces], ignore_index=True)
    whole = source.read(first, end).frame
    pd.testing.assert_frame_equal(joined, whole)


def _scratch_tables(url):
    with engine(url).connect() as conn:
        return conn.execute(
            sa.text("SELECT tablename FROM pg_tables WHERE tablename LIKE 'rollup_expected%'")
        ).all()


def test_the_rollups_leave_no_scratch_tables_whether_they_succeed_or_fail(migrated_database_url):
    """The expected rollup is staged in unlogged tables on connections of their own: a run drops them, and so
    does a run whose transaction fails after they were built (here a trigger refuses an hourly bar)."""
    url = migrated_database_url
    assert materialize_range(url, "2024-06-13", "2024-06-14").success
    assert _scratch_tables(url) == []
    with engine(url).begin() as conn:
        conn.execute(
            sa.text("""
            CREATE FUNCTION tis_test_refuse_hour() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'refused by the test'; END $$;
            CREATE TRIGGER tis_test_refuse_hour BEFORE INSERT ON market_data_1h FOR EACH ROW
              EXECUTE FUNCTION tis_test_refuse_hour();""")
        )
    result = materialize_range(url, "2024-06-13", "2024-06-14", assets=[market_data_15m, market_data_1h])
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert failure.step_key == "market_data_1h" and "refused by the test" in str(
        failure.step_failure_data.error
    )
    assert _scratch_tables(url) == []


@pytest.mark.parametrize(("table", "minutes"), [("market_data_15m", 15), ("market_data_1h", 60)])
def test_the_pieces_of_a_rollup_window_are_cut_on_its_bucket_boundaries(table, minutes):
    """A bucket never straddles two pieces, even for a window that is not a whole number of days."""
    from tis_pipeline.market_data.rollups import ROLLUP_PIECES, _rollup_cuts

    start = pd.Timestamp("2024-03-04", tz="UTC")
    for end, pieces in (
        (start + pd.Timedelta(minutes=200), 3 if minutes == 60 else ROLLUP_PIECES),
        (start + pd.Timedelta(days=3, minutes=7), ROLLUP_PIECES),
    ):
        cuts = _rollup_cuts(table, start, end)
        assert cuts[0] == start and cuts[-1] == end and len(cuts) == pieces + 1
        assert all(a < b for a, b in itertools.pairwise(cuts))
        assert all((cut - start) % pd.Timedelta(minutes=minutes) == pd.Timedelta(0) for cut in cuts[1:-1])


def test_the_rollup_pieces_read_the_snapshot_of_the_replacing_transaction(database_url):
    from tis_pipeline.market_data import rollups
    from tis_pipeline.pg import day_partitions

    day = pd.Timestamp("2024-06-10", tz="UTC")
    assert materialize_range(database_url, "2024-06-10", "2024-06-10", [market_data_1m]).success
    eng = engine(database_url)
    with eng.begin() as conn:
        snapshot = day_partitions.export_snapshot(conn)
        # a write committed after the snapshot and before the pieces start: all of them must miss it
        with eng.begin() as other:
            other.execute(
                sa.text("DELETE FROM market_data_1m WHERE symbol = 'BBB' AND \"timestamp\" >= :a"), {"a": day}
            )
        pinned = rollups.stage_expected_rollup(
            eng, "market_data_15m", day, day + pd.Timedelta(days=1), snapshot
        )
        unpinned = rollups.stage_expected_rollup(eng, "market_data_15m", day, day + pd.Timedelta(days=1))
        assert len(pinned.tables) == 4
        assert pinned.ready() == 2 * 96  # both symbols, every quarter hour of the day
        assert unpinned.ready() == 96  # only AAA is left
    rollups.discard_expected(eng, pinned)
    rollups.discard_expected(eng, unpinned)
    assert _scratch_tables(database_url) == []


def test_the_metadata_names_the_range_what_the_plot_leaves_out_and_the_rows_of_run_and_table(
    migrated_database_url,
):
    """Issue 16 §3: a 3-day range of 5 symbols: the plots draw all 5 and name both ends of the range;
    ``rows_written_by_run`` is what the run wrote, ``dagster/row_count`` (the UI's "Row count") the table's
    rows for the range, another source's row included."""
    url, five = migrated_database_url, ["AAA", "BBB", "CCC", "DDD", "EEE"]
    first, end = pd.Timestamp("2024-03-01", tz="UTC"), pd.Timestamp("2024-03-04", tz="UTC")
    with engine(url).begin() as conn:
        conn.execute(
            sa.text(
                'INSERT INTO market_data_1m (symbol, "timestamp", open, high, low, close, volume) VALUES '
                "('OTHER', '2024-03-02 10:00+00', 1, 2, 1, 2, 5)"
            )
        )
    result = materialize_range(url, "2024-03-01", "2024-03-03", symbols=five)
    assert result.success
    source = synthetic.bars(first, end, five, seed=11)
    one = result.asset_materializations_for_node("market_data_1m")[0].metadata
    assert one["rows_written_by_run"].value == len(source)
    assert one["rows_deleted_by_run"].value == 0
    assert one["dagster/row_count"].value == len(source) + 1
    assert one["range"].value == "2024-03-01..2024-03-03"
    for table in ("market_data_15m", "market_data_1h"):
        meta = result.asset_materializations_for_node(table)[0].metadata
        count, _ = table_digest(url, table, first, end)
        assert meta["dagster/row_count"].value == count == meta["rows_written_by_run"].value
        plot = meta["plot"].value
        assert plot.startswith(f"![{table} 2024-03-01..2024-03-03](data:image/png;base64,")
        assert "Days 2024-03-01..2024-03-03 of the run's 2024-03-01..2024-03-03" in plot
        assert "6 of 6 symbols shown" in plot  # the five and OTHER, whose bar is rolled up too
    again = materialize_range(url, "2024-03-01", "2024-03-03", [market_data_1m], symbols=five)
    meta = again.asset_materializations_for_node("market_data_1m")[0].metadata
    assert meta["rows_deleted_by_run"].value == meta["rows_written_by_run"].value == len(source)
    assert meta["dagster/row_count"].value == len(source) + 1


def test_a_plot_of_many_symbols_says_which_it_leaves_out():
    day = pd.Timestamp("2024-03-01", tz="UTC")
    twelve = [f"S{i:02d}" for i in range(12)]
    frame = synthetic.bars(day, day + pd.Timedelta(days=2), twelve, seed=11)
    assert describe.symbols_drawn(frame) == "8 of 12 symbols shown; not shown: S08, S09, S10, S11"
    assert describe.plot_title("market_data_15m", frame) == (
        "market_data_15m 2024-03-01..2024-03-02\n8 of 12 symbols shown"
    )
    assert describe.plot_title("market_data_15m", frame[frame["symbol"] == "S00"]) == (
        "market_data_15m 2024-03-01..2024-03-02"
    )
    assert describe.price_volume_png(frame, "market_data_15m").startswith(b"\x89PNG")
