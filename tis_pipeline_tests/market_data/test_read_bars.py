"""Reading bars back from PostgreSQL: the binary column arrays give the very frame the text COPY gives."""

from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from tis_pipeline.market_data import store
from tis_pipeline.pg import day_partitions
from tis_pipeline.pg.engine import engine

pytestmark = pytest.mark.pg
DAY = pd.Timestamp("2024-05-06", tz="UTC")
VOLUMES = [Decimal("0.1"), Decimal("123456789.12345678"), Decimal("99999999999.99999999")]
ALL = ("symbol", "timestamp", "open", "high", "low", "close", "volume", "mx_evidence", "mx_confirm")


def _insert(conn, symbols: list[str]) -> None:
    rng = np.random.default_rng(3)
    for k, symbol in enumerate(symbols):
        n = 50
        close = np.round(rng.lognormal(3, 2, n), 8)
        conn.execute(
            sa.text(
                'INSERT INTO market_data_1m (symbol, "timestamp", open, high, low, close, volume, '
                "mx_evidence, mx_confirm) "
                "VALUES (:s, :t, :o, :h, :l, :c, :v, :e, :x)"
            ),
            [
                {
                    "s": symbol,
                    "t": DAY + pd.Timedelta(minutes=i),
                    "o": float(close[i]),
                    "h": float(close[i]) * 2,
                    "l": float(close[i]) / 2,
                    "c": float(close[i]),
                    "v": VOLUMES[i % 3],
                    "e": None if i % 4 == 0 else round(i / n, 2),
                    "x": None if i % 5 == 0 else bool((i + k) % 2),
                }
                for i in range(n)
            ],
        )


def _text(conn, columns):
    window = (
        'FROM market_data_1m WHERE "timestamp" >= %(start)s AND "timestamp" < %(end)s '
        'ORDER BY symbol, "timestamp"'
    )
    params = {"start": DAY.to_pydatetime(), "end": (DAY + pd.Timedelta(days=1)).to_pydatetime()}
    return store._read_bars_text(conn, window, params, columns)


@pytest.mark.parametrize(
    "symbols",
    [["ZZ", "A", "BTC-USD", "X" * 20], ["AAA", "ÉTÉÉÉÉÉÉÉÉÉÉÉ"]],
    ids=["ascii", "a symbol of more than 20 bytes"],
)
def test_read_bars_equals_the_text_copy(migrated_database_url, symbols):
    with engine(migrated_database_url).begin() as conn:
        _insert(conn, symbols)
        for columns in (store.read_bars.__defaults__[0], ALL, ("timestamp", "mx_confirm")):
            got = store.read_bars(conn, "market_data_1m", DAY, DAY + pd.Timedelta(days=1), columns)
            expected = _text(conn, columns)
            pd.testing.assert_frame_equal(got, expected, check_exact=True)
        frame = store.read_bars(conn, "market_data_1m", DAY, DAY + pd.Timedelta(days=1), ALL)
    assert len(frame) == 50 * len(symbols)
    assert list(frame["symbol"].unique()) == sorted(symbols)
    assert frame["volume"].tolist()[:3] == [float(v) for v in VOLUMES]
    assert frame["mx_evidence"].isna().sum() == 13 * len(symbols) and frame[
        "mx_confirm"
    ].isna().sum() == 10 * len(symbols)


def test_read_bars_of_an_empty_window(migrated_database_url):
    with engine(migrated_database_url).connect() as conn:
        frame = store.read_bars(conn, "market_data_1m", DAY, DAY + pd.Timedelta(days=1))
    assert frame.empty and list(frame.columns) == list(store.read_bars.__defaults__[0])


@pytest.mark.parametrize(
    ("symbols", "minutes", "grouped"),
    [
        (["B", "B", "A", "A"], [1, 2, 1, 2], True),  # symbols in any order, each together and in time order
        (["A", "B", "A"], [1, 1, 2], False),  # A comes back after B
        (["A", "A", "B"], [2, 1, 1], False),  # A's bars out of time order
        ([], [], True),
    ],
)
def test_the_order_of_the_arrays_is_checked(symbols, minutes, grouped):
    padded = np.array([s.ljust(20).encode() for s in symbols], dtype="S20")
    assert store._grouped_in_time(padded, np.array(minutes, dtype=">i8")) is grouped


def test_days_with_bars_probes_each_day_and_finds_what_a_scan_finds(migrated_database_url):
    days = [DAY + pd.Timedelta(days=k) for k in range(6)]
    with engine(migrated_database_url).connect() as conn, conn.begin() as transaction:
        # a day with a partition of its own, two whose bars sit in the DEFAULT partition, an empty partition,
        # and a bar in the last minute of a day
        for day in (days[1], days[4]):
            conn.execute(
                sa.text(
                    f'CREATE TABLE "{day_partitions.partition_name(day)}" PARTITION OF market_data_1m '
                    f"FOR VALUES FROM ('{day.isoformat()}') TO ('{(day + pd.Timedelta(days=1)).isoformat()}')"
                )
            )
        for day, minute in ((days[1], 600), (days[2], 0), (days[3], 1439)):
            conn.execute(
                sa.text(
                    'INSERT INTO market_data_1m (symbol, "timestamp", open, high, low, close, volume) '
                    "VALUES ('A', :t, 1, 1, 1, 1, 0)"
                ),
                {"t": day + pd.Timedelta(minutes=minute)},
            )
        scan = [
            pd.Timestamp(d, tz="UTC")
            for d in conn.execute(
                sa.text(
                    "SELECT DISTINCT date_trunc('day', \"timestamp\" AT TIME ZONE 'UTC') FROM market_data_1m "
                    'WHERE "timestamp" >= :a AND "timestamp" < :b ORDER BY 1'
                ),
                {"a": days[0], "b": days[5]},
            ).scalars()
        ]
        assert store.days_with_bars(conn, "market_data_1m", days[0], days[5]) == scan == days[1:4]
        # windows that start or end inside a day see only that part of it
        assert store.days_with_bars(conn, "market_data_1m", days[1] + pd.Timedelta(hours=11), days[3]) == [
            days[2]
        ]
        assert store.days_with_bars(conn, "market_data_1m", days[2], days[3] + pd.Timedelta(hours=23)) == [
            days[2]
        ]
        assert store.days_with_bars(conn, "market_data_1m", days[5], days[5]) == []
        transaction.rollback()


def _insert_days(conn, symbols: list[str], days: list[pd.Timestamp]) -> None:
    """Bars of ``symbols`` on ``days``: the first day in a partition of its own, the others in DEFAULT."""
    first = days[0]
    conn.execute(
        sa.text(
            f'CREATE TABLE "{day_partitions.partition_name(first)}" PARTITION OF market_data_1m '
            f"FOR VALUES FROM ('{first.isoformat()}') TO ('{(first + pd.Timedelta(days=1)).isoformat()}')"
        )
    )
    rng = np.random.default_rng(11)
    rows = []
    for day in days:
        for k, symbol in enumerate(symbols):
            for minute in rng.choice(1440, size=30 + 7 * k, replace=False):
                price = float(np.round(rng.lognormal(3, 1), 8))
                rows.append(
                    {
                        "s": symbol,
                        "t": day + pd.Timedelta(minutes=int(minute)),
                        "p": price,
                        "e": None if minute % 3 == 0 else round(float(minute % 100) / 100, 2),
                        "x": None if minute % 4 == 0 else bool(minute % 2),
                    }
                )
    conn.execute(
        sa.text(
            'INSERT INTO market_data_1m (symbol, "timestamp", open, high, low, close, volume, '
            "mx_evidence, mx_confirm) "
            "VALUES (:s, :t, :p, :p, :p, :p, 1, :e, :x)"
        ),
        rows,
    )


def test_read_bars_reads_every_symbol_of_a_window_and_its_halves(migrated_database_url):
    days = [DAY, DAY + pd.Timedelta(days=1)]
    symbols = ["A", "BTC-USD", "ETH", "MSFT", "Z.B", "ÉTÉ"]
    eng = engine(migrated_database_url)
    with eng.begin() as conn:
        _insert_days(conn, symbols, days)
    windows = [
        (DAY, DAY + pd.Timedelta(days=1)),  # a day partition
        (DAY + pd.Timedelta(days=1), DAY + pd.Timedelta(days=2)),  # a day in DEFAULT
        (DAY + pd.Timedelta(hours=6), DAY + pd.Timedelta(days=1, hours=18)),
    ]  # across both, cut inside
    with eng.connect() as conn:
        assert day_partitions.window_symbols(conn, DAY, DAY + pd.Timedelta(days=2)) == sorted(symbols)
        for start, end in windows:
            for columns in (store.BAR_READ_COLUMNS, ALL):
                whole = store.read_bars(conn, "market_data_1m", start, end, columns)
                assert len(whole) > 0 and set(whole["symbol"]) == set(symbols)
                assert all(
                    whole[c].dtype == "float64"
                    for c in columns
                    if c not in ("symbol", "timestamp", "mx_confirm")
                )
        # lower and upper halves meet in the middle symbol, in the table's order
        lower = store.read_bars(conn, "market_data_1m", DAY, DAY + pd.Timedelta(days=1), symbols_below="MSFT")
        upper = store.read_bars(conn, "market_data_1m", DAY, DAY + pd.Timedelta(days=1), symbols_from="MSFT")
        assert sorted(set(lower["symbol"])) == ["A", "BTC-USD", "ETH"]
        assert sorted(set(upper["symbol"])) == ["MSFT", "Z.B", "ÉTÉ"]
        assert store.read_bars(conn, "market_data_1m", DAY - pd.Timedelta(days=1), DAY).empty
