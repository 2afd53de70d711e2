"""The rollups' evidence from the buckets of the scored bars (``store.rollup_bucket_rows`` +
``update_rollup_evidence_from``, as the one-step run and the shards write it) against the aggregate of the
written 1-minute bars (the test's own SQL): the same 15-minute and hourly values, half-way means, gaps,
buckets cut between pieces or split between files, and buckets of other days included."""

import tempfile

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from tis_pipeline.dsi import store
from tis_pipeline.pg.buckets import bucket_sql
from tis_pipeline.pg.copy import copy_frame
from tis_pipeline.pg.engine import engine, raw_connection

pytestmark = pytest.mark.pg
DAY = pd.Timestamp("2024-03-04", tz="UTC")


def _bars() -> pd.DataFrame:
    """Two days of three symbols with random evidence (k / 100) and confirmations; BBB's first buckets have
    means half-way between two hundredths (0.505 and 0.1075 rounded half up), CCC has a gap of an hour."""
    rng = np.random.default_rng(7)
    parts = []
    for symbol, minutes in (
        ("AAA", np.arange(0, 2 * 1440, 1)),
        ("BBB", np.r_[0, 1, 15, 16, 17, 18, np.arange(30, 300)]),
        ("CCC", np.r_[np.arange(0, 100), np.arange(160, 1400), np.arange(1440, 1440 + 37)]),
    ):
        evidence = rng.integers(0, 101, len(minutes)) / 100.0
        if symbol == "BBB":
            evidence[:6] = [0.50, 0.51, 0.10, 0.11, 0.11, 0.11]
        parts.append(
            pd.DataFrame(
                {
                    "symbol": symbol,
                    "timestamp": DAY + pd.to_timedelta(minutes, unit="min"),
                    "mx_evidence": evidence,
                    "mx_confirm": rng.random(len(minutes)) < 0.02,
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def _rollup_rows(bars: pd.DataFrame, minutes: int) -> pd.DataFrame:
    buckets = bars.assign(timestamp=bars["timestamp"].dt.floor(f"{minutes}min"))[["symbol", "timestamp"]]
    return buckets.drop_duplicates().assign(open=1.0, high=1.0, low=1.0, close=1.0, volume=1.0)


def _rollups(conn: sa.Connection) -> dict[str, list[tuple]]:
    return {
        table: [
            tuple(row)
            for row in conn.execute(
                sa.text(
                    f'SELECT symbol, "timestamp", mx_evidence::text, mx_confirm FROM {table} '
                    'ORDER BY symbol, "timestamp"'
                )
            )
        ]
        for table in ("market_data_15m", "market_data_1h")
    }


def _evidence_from_the_written_bars(conn: sa.Connection, start: pd.Timestamp, end: pd.Timestamp) -> None:
    """The oracle: each rollup's evidence aggregated from the bars below it as written, round(avg, 2) and
    bool_or, as the rollups themselves are built."""
    for target, source, minutes in (
        ("market_data_15m", "market_data_1m", 15),
        ("market_data_1h", "market_data_15m", 60),
    ):
        conn.execute(
            sa.text(f"""
            UPDATE {target} r SET mx_evidence = a.e, mx_confirm = a.c
            FROM (SELECT symbol, {bucket_sql(minutes)} b, round(avg(mx_evidence), 2) e, bool_or(mx_confirm) c
                  FROM {source} WHERE "timestamp" >= :a AND "timestamp" < :b GROUP BY 1, 2) a
            WHERE r.symbol = a.symbol AND r."timestamp" = a.b"""),
            {"a": start, "b": end},
        )


def test_the_rollups_from_the_scored_buckets_equal_those_from_the_written_bars(migrated_database_url):
    bars = _bars()
    start, end = DAY, DAY + pd.Timedelta(days=2)
    with engine(migrated_database_url).begin() as conn:
        raw = raw_connection(conn)
        copy_frame(raw, "market_data_1m", bars.assign(open=1.0, high=1.0, low=1.0, close=1.0, volume=1.0))
        copy_frame(raw, "market_data_15m", _rollup_rows(bars, 15))
        copy_frame(raw, "market_data_1h", _rollup_rows(bars, 60))
    with engine(migrated_database_url).connect() as conn:
        with conn.begin() as outer:
            _evidence_from_the_written_bars(conn, start, end)
            expected = _rollups(conn)
            outer.rollback()
        assert _rollups(conn)["market_data_15m"][0][2] is None  # the rollback left them unscored
        conn.rollback()
        with conn.begin() as outer, tempfile.TemporaryFile() as first, tempfile.TemporaryFile() as rest:
            # pieces as the run makes them: whole symbols of a day, in symbol and time order; here one more
            # cut through a bucket, whose two halves must add up; AAA in one file, the others in a second
            # (two shards of symbols)
            for _, of_day in bars.groupby(bars["timestamp"].dt.floor("D")):
                for symbol, piece in of_day.sort_values(["symbol", "timestamp"]).groupby("symbol"):
                    buckets = first if symbol == "AAA" else rest
                    cut = 7 if len(piece) > 7 else len(piece)
                    buckets.write(store.rollup_bucket_rows(piece.iloc[:cut]))
                    buckets.write(store.rollup_bucket_rows(piece.iloc[cut:]))
            store.update_rollup_evidence_from(conn, [first, rest], start, end)
            got = _rollups(conn)
            outer.rollback()
    assert got == expected
    by_bucket = {(s, t.isoformat()): e for s, t, e, _ in expected["market_data_15m"]}
    assert by_bucket["BBB", "2024-03-04T00:00:00+00:00"] == "0.51"  # 0.505, half up
    assert by_bucket["BBB", "2024-03-04T00:15:00+00:00"] == "0.11"  # 0.1075
    assert len(expected["market_data_15m"]) > 250 and all(
        e is not None for _, _, e, _ in expected["market_data_1h"]
    )
    assert any(c for *_, c in expected["market_data_1h"]) and not all(
        c for *_, c in expected["market_data_1h"]
    )


def test_bucket_rows_sum_the_evidence_in_hundredths_per_symbol_and_bucket():
    bars = pd.DataFrame(
        {
            "symbol": ["AAA"] * 3 + ["BBB"] * 2,
            "timestamp": pd.to_datetime(
                [
                    "2024-03-04 00:14",
                    "2024-03-04 00:15",
                    "2024-03-04 00:29",
                    "2024-03-04 00:00",
                    "2024-03-04 00:01",
                ],
                utc=True,
            ),
            "mx_evidence": [0.29, 0.57, 0.01, 1.0, 0.0],
            "mx_confirm": [False, False, True, False, False],
        }
    )
    rows = store.rollup_bucket_rows(bars).decode().splitlines()
    epoch_us = lambda t: pd.Timestamp(t, tz="UTC").value // 1000  # noqa: E731
    assert rows == [
        f'"AAA",{epoch_us("2024-03-04 00:00")},29,1,false',
        f'"AAA",{epoch_us("2024-03-04 00:15")},58,2,true',
        f'"BBB",{epoch_us("2024-03-04 00:00")},100,2,false',
    ]
    assert store.rollup_bucket_rows(bars.iloc[:0]) == b""


def _hot_updates(url: str, table: str) -> tuple[int, int]:
    """(rows updated, of which heap-only) of ``table`` since the database was made."""
    with engine(url).connect() as conn:
        stats = "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = :t"
        row = conn.execute(sa.text(stats), {"t": table}).one()
    return int(row[0]), int(row[1])


def test_the_evidence_update_keeps_the_rollups_rows_on_their_pages(migrated_database_url):
    """The rollup tables leave half of each page free (migration 20261208_rollup_fillfactor), so that DSI's
    update of every row's evidence is a heap-only tuple: no new entry in the primary key, no row moved to
    another page. Filled to the brim, almost every update moved its row (only the last page had room)."""
    rng = np.random.default_rng(11)
    minutes = np.arange(1440)
    bars = pd.concat(
        [
            pd.DataFrame(
                {
                    "symbol": f"H{i:02d}",
                    "timestamp": DAY + pd.to_timedelta(minutes, unit="min"),
                    "mx_evidence": rng.integers(0, 101, len(minutes)) / 100.0,
                    "mx_confirm": rng.random(len(minutes)) < 0.05,
                }
            )
            for i in range(20)
        ],
        ignore_index=True,
    )
    url = migrated_database_url
    with engine(url).begin() as conn:
        options = dict(
            conn.execute(
                sa.text(
                    "SELECT relname, array_to_string(reloptions, ',') FROM pg_class "
                    "WHERE relname IN ('market_data_15m', 'market_data_1h')"
                )
            ).all()
        )
        raw = raw_connection(conn)
        copy_frame(raw, "market_data_15m", _rollup_rows(bars, 15))
        copy_frame(raw, "market_data_1h", _rollup_rows(bars, 60))
    assert options == {"market_data_15m": "fillfactor=50", "market_data_1h": "fillfactor=50"}
    with engine(url).begin() as conn, tempfile.TemporaryFile() as buckets:
        for _, piece in bars.groupby("symbol"):
            buckets.write(store.rollup_bucket_rows(piece))
        store.update_rollup_evidence_from(conn, [buckets], DAY, DAY + pd.Timedelta(days=1))
    engine(url).dispose()  # the updating session ends: its statistics are flushed
    for table, rows in (("market_data_15m", 20 * 96), ("market_data_1h", 20 * 24)):
        updated, heap_only = _hot_updates(url, table)
        assert updated == rows
        assert heap_only >= 0.8 * rows, f"{table}: {heap_only} of {updated} updates stayed on their page"
