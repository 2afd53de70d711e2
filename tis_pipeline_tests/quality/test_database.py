"""The registry against the migrated database: same CHECKs by name and bound, same NOT NULLs, and the database
accepts the clean frames and rejects each violation with the rule's own constraint."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import psycopg.errors
import pytest
import sqlalchemy as sa

from tis_pipeline.market_data.rollups import rollup_mismatch_sql
from tis_pipeline.pg.engine import engine
from tis_pipeline.quality.evaluate import evaluate_frame
from tis_pipeline.quality.rules import MARKET_TABLES, RULES, TABLES, rule, rules_for
from tis_pipeline_tests.quality.frames import START, market_1m, market_rollup, valid_case, violation
from tis_pipeline_tests.support.constraints import compare, database_checks

pytestmark = pytest.mark.pg


@pytest.fixture
def conn(database_url: str) -> Iterator[sa.Connection]:
    """A connection whose work is rolled back: the session's database stays empty for other tests."""
    with engine(database_url).connect() as connection:
        transaction = connection.begin()
        try:
            yield connection
        finally:
            transaction.rollback()


def test_registry_and_database_agree_check_for_check(conn):
    in_db = database_checks(conn)
    diff = compare(in_db)
    assert diff.ok, diff.describe()
    assert len(in_db) == len([r for r in RULES if r.is_db_check]) == 64


def test_not_null_rules_are_the_databases_not_null_columns(conn):
    rows = conn.execute(
        sa.text(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND is_nullable = 'NO' AND column_default IS NULL "
            "AND table_name = ANY(:tables)"
        ),
        {"tables": list(TABLES)},
    ).all()
    in_db = {(r.table_name, r.column_name) for r in rows}
    registry = {(r.table, r.column) for r in RULES if r.kind == "not_null"}
    assert registry == in_db


def _insert(conn: sa.Connection, table: str, frame: pd.DataFrame) -> None:
    """INSERT the rule columns of ``frame`` (ids, defaults and foreign keys are left to the database)."""
    columns = list(dict.fromkeys(c for r in rules_for(table) for c in r.columns if c in frame.columns))
    statement = sa.text(
        f"INSERT INTO {table} ({', '.join(f'{chr(34)}{c}{chr(34)}' for c in columns)}) "
        f"VALUES ({', '.join(f':p{i}' for i in range(len(columns)))})"
    )
    params = []
    for row in frame[columns].itertuples(index=False, name=None):
        values = [None if (v is None or (not isinstance(v, str) and pd.isna(v))) else v for v in row]
        values = [v.item() if isinstance(v, np.generic) else v for v in values]
        params.append({f"p{i}": v for i, v in enumerate(values)})
    conn.execute(statement, params)


@pytest.mark.parametrize("table", TABLES)
def test_database_accepts_every_clean_frame(conn, table):
    case = valid_case(table)
    # other test files of the session may have left rows: count what this insert added
    before = conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
    _insert(conn, table, case.frame)
    assert conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one() - before == len(case.frame)


DB_ENFORCED = [
    r
    for r in RULES
    if r.is_db_check or r.kind == "not_null" or (r.kind == "unique" and r.table in MARKET_TABLES)
]


@pytest.mark.parametrize("rule_under_test", DB_ENFORCED, ids=lambda r: r.name)
def test_database_rejects_each_violation_with_the_rules_constraint(conn, rule_under_test):
    case = violation(rule_under_test)
    report = evaluate_frame(case.frame, case.table, now=case.now, sources=case.sources)
    mask = report[rule_under_test.name].mask
    clean, bad = case.frame[~mask], case.frame[mask]
    _insert(conn, case.table, clean)
    if (
        rule_under_test.kind == "unique"
    ):  # every copy of a duplicated key fails the rule; the first one goes in
        _insert(conn, case.table, bad.iloc[:1])
        bad = bad.iloc[1:]
    assert len(bad)
    for position in range(len(bad)):
        with pytest.raises(sa.exc.IntegrityError) as raised, conn.begin_nested():
            _insert(conn, case.table, bad.iloc[[position]])
        error = raised.value.orig
        if rule_under_test.kind == "not_null":
            assert isinstance(error, psycopg.errors.NotNullViolation)
            assert error.diag.column_name == rule_under_test.column
        elif rule_under_test.kind == "unique":
            assert isinstance(error, psycopg.errors.UniqueViolation)
            # the primary key, or its index on the partition the row landed in (market_data_1m is partitioned)
            assert error.diag.table_name.startswith(case.table)
            assert error.diag.constraint_name == f"pk_{case.table}" or error.diag.constraint_name.endswith(
                "pkey"
            )
        else:
            assert isinstance(error, psycopg.errors.CheckViolation)
            assert error.diag.constraint_name == rule_under_test.name


@pytest.mark.parametrize("table", ["market_data_15m", "market_data_1h"])
def test_rollup_sql_finds_the_bars_the_pandas_rule_finds(conn, table):
    bars = market_1m()
    for column in ("open", "high", "low", "close", "volume"):
        bars[column] = bars[column].round(8)  # DECIMAL(20,8), so that both sides compare stored values
    rollup = market_rollup(bars, MARKET_TABLES[table])
    altered = rollup.index[[1, len(rollup) - 2]]
    rollup.loc[altered, "close"] = rollup.loc[altered, "close"] + 0.01
    _insert(conn, "market_data_1m", bars)
    _insert(conn, table, rollup)
    window = {"start": START, "end": START + pd.Timedelta(days=1)}
    found = conn.execute(sa.text(rollup_mismatch_sql(rule(f"{table}_rollup_consistent"))), window).all()
    report = evaluate_frame(rollup, table, now=START + pd.Timedelta(days=1), sources={"market_data_1m": bars})
    flagged = rollup[report[f"{table}_rollup_consistent"].mask]
    assert [(r.symbol, pd.Timestamp(r.timestamp)) for r in found] == list(
        zip(flagged["symbol"], flagged["timestamp"], strict=True)
    )
    assert len(found) == 2


def test_rollup_sql_takes_first_and_last_by_time_whatever_the_holes(conn):
    """Open and close are the first and last bars by time also where a bucket's opening or closing slot has no
    bar, where one bar is all a bucket holds, and where a bar off the minute grid follows the closing slot's
    bar: the SQL rollups (from 1-minute bars, and hourly from 15-minute bars) equal pandas' first/last."""
    from tis_pipeline.market_data.rollups import rollup_source_sql, rollup_via_sql
    from tis_pipeline.quality.evaluate import rollup_bars

    bars = market_1m()
    for column in ("open", "high", "low", "close", "volume"):
        bars[column] = bars[column].round(8)
    minute = (bars["timestamp"] - START) // pd.Timedelta(minutes=1)
    aaa = bars["symbol"] == "AAA"
    # AAA: the opening or closing minute missing, a bucket of one bar; BBB: whole quarters missing at both
    # edges of the 02:00 hour, so that the hourly rollup from 15-minute bars has holes at its edges too
    holes = (
        (aaa & minute.isin([0, 29, 59, 60, 119]))
        | (aaa & minute.between(30, 44) & (minute != 37))
        | (~aaa & (minute.between(120, 134) | minute.between(165, 179) | (minute == 45)))
    )
    late = bars[
        aaa & minute.isin([74, 179])
    ].copy()  # after the closing slots of 01:00-01:15 and the 02:00 hour
    late["timestamp"] += pd.Timedelta(seconds=30)
    late["close"] = late["low"]
    assert (late["close"].to_numpy() != bars.loc[late.index, "close"].to_numpy()).all()
    bars = pd.concat([bars[~holes], late]).sort_values(["symbol", "timestamp"], ignore_index=True)
    _insert(conn, "market_data_1m", bars)
    window = {"start": START, "end": START + pd.Timedelta(days=1)}

    def assert_equal(sql_rows, minutes):
        got = pd.DataFrame(sql_rows).sort_values(["symbol", "bucket"], ignore_index=True)
        want = rollup_bars(bars, minutes)
        assert list(zip(got["symbol"], got["bucket"], strict=True)) == list(
            zip(want["symbol"], want["timestamp"], strict=True)
        )
        for column in ("open", "high", "low", "close"):
            assert [float(v) for v in got[column]] == want[column].tolist(), column
        np.testing.assert_allclose(got["volume"].astype(float), want["volume"], rtol=1e-12)
        assert got["source_bars"].tolist() == want["source_bars"].tolist()

    quarter = (
        conn.execute(sa.text(rollup_source_sql(rule("market_data_15m_rollup_consistent"))), window)
        .mappings()
        .all()
    )
    assert_equal(quarter, 15)
    assert_equal(
        conn.execute(sa.text(rollup_source_sql(rule("market_data_1h_rollup_consistent"))), window)
        .mappings()
        .all(),
        60,
    )
    _insert(conn, "market_data_15m", pd.DataFrame(quarter).rename(columns={"bucket": "timestamp"}))
    assert_equal(
        conn.execute(
            sa.text(rollup_via_sql(rule("market_data_1h_rollup_consistent"), "market_data_15m")), window
        )
        .mappings()
        .all(),
        60,
    )
