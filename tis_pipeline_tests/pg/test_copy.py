"""The binary COPY encoder: pure checks of its arithmetic, and round trips through the real server, where
every value must land exactly as the text (CSV) COPY lands it, or fail with the same error."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pandas as pd
import psycopg.errors
import pytest
import sqlalchemy as sa

from tis_pipeline.pg.copy import copy_bars_binary, copy_frame, copy_payload, frame_to_csv_bytes
from tis_pipeline.pg.copy_binary import SIGNATURE, TRAILER, encode_rows, exact_scale8, scaled_numeric
from tis_pipeline.pg.engine import engine, raw_connection

COLUMNS = ["symbol", "timestamp", "open", "high", "low", "close", "volume"]
EDGES = [
    0.0,
    -0.0,
    1e-8,
    5e-9,
    4.9999999e-9,
    1.5e-8,
    2.5e-8,
    0.1,
    0.3,
    0.1 + 0.2,
    1 / 3,
    2 / 3,
    1.005,
    0.123456785,
    0.123456775,
    123.456789125,
    99999999.99999999,
    2.0**26 - 1e-8,
    2.0**26,
    2.0**26 + 0.5,
    67108863.99999999,
    1e11 + 0.5,
    999999999999.0,
    999999999999.99,
    999999999999.999999,
    123456789012.12346,
    1e-5,
    7e-7,
    12345.6789,
    1e15 / 1e8,
    9007199.254740993,
    -1.5,
    -0.00000001,
    -123.45678901,
    42.0,
    float(2**40),
    3.5e9,
    1234567.12345678,
    5000.00000001,
    0.00000005,
    0.000000049999,
]


def decimals(values: np.ndarray, places: np.ndarray) -> np.ndarray:
    """``values`` rounded to a number of decimal places per value (floats as a file's text would give)."""
    scale = 10.0**places
    return np.round(values * scale) / scale


def text_rule(value: float) -> Decimal:
    """What the text path stores: the shortest round-trip decimal, rounded half away from zero to 8
    decimals."""
    return Decimal(repr(float(value))).quantize(Decimal("1e-8"), rounding=ROUND_HALF_UP)


def test_scaled_numeric_matches_the_text_rule_where_it_claims_exactness():
    rng = np.random.default_rng(7)
    values = np.concatenate(
        [
            np.array(EDGES),
            decimals(rng.uniform(0, 5000, 2000), rng.integers(0, 9, 2000)),
            rng.uniform(-1e7, 1e7, 500),
            np.round(rng.lognormal(5, 4, 500), 8),
            np.round(rng.uniform(0, 1e12, 200)),
        ]
    )
    whole, fraction, negative, exact = scaled_numeric(values)
    for v, w, f, neg, ok in zip(values, whole, fraction, negative, exact, strict=True):
        if ok:
            got = (Decimal(int(w)) + Decimal(int(f)) / Decimal(10**8)) * (-1 if neg else 1)
            assert got == text_rule(v), v
    assert exact.mean() > 0.7  # the usual values (≤ 8 decimals, prices of this world) are all encoded
    assert np.all(exact[np.isin(values, [0.1, 12345.6789, 42.0, 3.5e9, 999999999999.0, 1e-8])])


def test_scaled_numeric_leaves_out_what_it_cannot_prove():
    values = np.array([np.nan, np.inf, -np.inf, 1e12, 1e30, 0.1 + 0.2, 1 / 3, 2.0**26 + 0.5, 5e-9])
    assert not scaled_numeric(values)[3].any()


def test_encode_rows_frames_the_payload_and_skips_rows_it_cannot_encode():
    ts = pd.Series(pd.to_datetime(["2024-01-02 00:00", "2024-01-02 00:01", None], utc=True))
    payload, ok = encode_rows(
        pd.Series(["AB", "ABC", "AB"]), ts, [np.array([1.0, 1 / 3, 2.0]), np.array([1.0, 2.0, 3.0])]
    )
    assert ok.tolist() == [True, False, False]
    assert payload.startswith(SIGNATURE) and payload.endswith(TRAILER)
    # one row: field count, symbol, timestamp, two numerics of 4 + 18 bytes
    assert len(payload) == len(SIGNATURE) + 2 + (4 + 2) + (4 + 8) + 2 * (4 + 18) + len(TRAILER)


@pytest.fixture
def conn(database_url: str) -> Iterator[sa.Connection]:
    with engine(database_url).connect() as connection:
        transaction = connection.begin()
        try:
            connection.execute(
                sa.text("CREATE TEMP TABLE via_text (LIKE market_data_1m INCLUDING DEFAULTS) ON COMMIT DROP")
            )
            connection.execute(
                sa.text(
                    "CREATE TEMP TABLE via_binary (LIKE market_data_1m INCLUDING DEFAULTS) ON COMMIT DROP"
                )
            )
            yield connection
        finally:
            transaction.rollback()


def _frame(values: np.ndarray, symbols: list[str]) -> pd.DataFrame:
    n = len(values)
    start = pd.Timestamp("2024-01-02", tz="UTC")
    return pd.DataFrame(
        {
            "symbol": pd.array([symbols[i % len(symbols)] for i in range(n)], dtype="string"),
            "timestamp": pd.Series(start + pd.to_timedelta(np.arange(n), unit="min")).astype(
                "datetime64[us, UTC]"
            ),
            **{c: np.roll(values, k) for k, c in enumerate(COLUMNS[2:])},
        }
    )


@pytest.mark.pg
@pytest.mark.parametrize(
    ("freeze", "slice_rows", "parts"), [(False, None, 1), (True, None, 1), (True, 97, 1), (True, 97, 4)]
)
def test_binary_copy_lands_every_value_as_the_text_copy(conn, freeze, slice_rows, parts, monkeypatch):
    if slice_rows is not None:  # the rows encoded in many slices of one COPY
        monkeypatch.setattr("tis_pipeline.pg.copy.ENCODE_SLICE_ROWS", slice_rows)
    rng = np.random.default_rng(11)
    values = np.concatenate(
        [
            np.array([v for v in EDGES if abs(v) < 1e12]),
            decimals(rng.uniform(0, 5000, 3000), rng.integers(0, 12, 3000)),  # up to 11 decimals: rounding
            rng.uniform(0, 1e-6, 200),
            rng.uniform(-1e11, 1e11, 300),
            rng.uniform(0, 1e4, 300),
            np.round(rng.uniform(-1e11, 1e11, 200)),
            np.round(rng.lognormal(3, 6, 300), 8),
        ]
    )
    values = values[np.abs(np.round(values, 8)) < 1e12]
    frame = _frame(values, ["A", "BTC-USD", "X" * 20, "ÉTÉ", "SYM001"])
    raw = raw_connection(conn)
    assert copy_frame(raw, "via_text", frame, COLUMNS) == len(frame)
    # some rows (more than 8 decimals, non-integral values above 2**26) take the text path into the same table
    assert 0 < scaled_numeric(frame["open"].to_numpy())[3].mean() < 1
    # in parts (a day's pieces as they come: one empty, the text path's rows in several), one COPY
    cuts = np.linspace(0, len(frame), parts).astype(int).tolist()
    given = (
        frame
        if parts == 1
        else iter([frame.iloc[:0], *(frame.iloc[a:b] for a, b in itertools.pairwise(cuts))])
    )
    assert copy_bars_binary(raw, "via_binary", given, COLUMNS, freeze=freeze) == len(frame)
    differ = conn.execute(
        sa.text(
            'SELECT count(*) FROM via_text t FULL JOIN via_binary b USING (symbol, "timestamp") '
            "WHERE b.symbol IS NULL OR t.symbol IS NULL OR "
            "numeric_send(t.open) <> numeric_send(b.open) OR numeric_send(t.high) <> numeric_send(b.high) OR "
            "numeric_send(t.low) <> numeric_send(b.low) OR numeric_send(t.close) <> numeric_send(b.close) OR "
            "numeric_send(t.volume) <> numeric_send(b.volume) OR "
            "pg_column_size(t.open) <> pg_column_size(b.open) OR "
            "pg_column_size(t.volume) <> pg_column_size(b.volume)"
        )
    ).scalar_one()
    assert differ == 0
    stored = conn.execute(sa.text('SELECT open::text FROM via_binary ORDER BY "timestamp"')).scalars().all()
    assert [Decimal(s) for s in stored] == [text_rule(v) for v in frame["open"]]


@pytest.mark.pg
@pytest.mark.parametrize("bad", [1e30, 1e12, 999999999999.999999999, np.nan])
def test_values_numeric_cannot_hold_fail_as_on_the_text_path(conn, bad):
    frame = _frame(np.array([1.0, 2.0, bad]), ["ABC"])
    errors = []
    for table, copy in (("via_text", copy_frame), ("via_binary", copy_bars_binary)):
        conn.execute(sa.text("SAVEPOINT s"))
        with pytest.raises(
            psycopg.errors.NotNullViolation if np.isnan(bad) else psycopg.errors.DataError
        ) as err:
            copy(raw_connection(conn), table, frame, COLUMNS)
        errors.append(str(err.value).splitlines()[0].replace(table, "<table>"))
        conn.execute(sa.text("ROLLBACK TO SAVEPOINT s"))
    assert errors[0] == errors[1]


def test_exact_scale8_claims_only_what_the_float_proves():
    values = np.array(
        [0.1, 12345.6789, 67108863.99999999, 2.0**26, 2.0**26 + 0.5, 1e9, 1 / 3, np.nan, -0.00000001]
    )
    assert exact_scale8(values).tolist() == [True, True, True, False, False, False, False, False, True]
    rng = np.random.default_rng(5)
    stored = decimals(
        rng.uniform(-5e7, 5e7, 5000), rng.integers(0, 9, 5000)
    )  # what numeric(20,8) reads back as
    assert exact_scale8(stored).all()


@pytest.mark.pg
def test_boolean_and_jsonb_fields_land_as_the_text_copy_lands_them(conn):
    import pyarrow as pa

    frame = _frame(np.full(5, 2.0), ["ABC", "XY"])
    frame["open"] = [0.57, 1.0, 0.1, 1 / 3, 0.25]
    frame["mx_evidence"] = [0.57, 1.0, 0.0, 0.33, 0.25]
    frame["mx_confirm"] = [True, False, True, False, True]
    frame["mx_expert_contributions"] = [
        '{"fsm":[0.0123,-0.5]}',
        '{"a":[]}',
        '{"é":"x"}',
        "[1,2]",
        '{"k":null}',
    ]
    columns = [*COLUMNS, "mx_evidence", "mx_confirm", "mx_expert_contributions"]
    raw = raw_connection(conn)
    copy_frame(raw, "via_text", frame, columns)
    payload, encoded = encode_rows(
        frame["symbol"],
        frame["timestamp"],
        [frame[c].to_numpy() for c in columns[2:8]],
        flags=[frame["mx_confirm"].to_numpy()],
        json_text=pa.array(frame["mx_expert_contributions"]),
    )
    assert encoded.tolist() == [True, True, True, False, True]  # 1/3 has more than 8 decimals
    with raw.cursor() as cur:
        copy_payload(cur, f"COPY via_binary ({', '.join(columns)}) FROM STDIN (FORMAT binary)", payload)
    copy_frame(raw, "via_binary", frame[~encoded], columns)
    differ = conn.execute(
        sa.text(
            'SELECT count(*) FROM via_text t FULL JOIN via_binary b USING (symbol, "timestamp") '
            "WHERE (t.open, t.mx_evidence, t.mx_confirm, t.mx_expert_contributions, "
            "pg_column_size(t.mx_evidence)) "
            "IS DISTINCT FROM (b.open, b.mx_evidence, b.mx_confirm, b.mx_expert_contributions, "
            "pg_column_size(b.mx_evidence))"
        )
    ).scalar_one()
    assert differ == 0
    assert conn.execute(sa.text("SELECT count(*) FROM via_binary")).scalar_one() == 5


@pytest.mark.pg
def test_text_copy_of_columns_joined_from_pieces_lands_their_rows(conn):
    """Strings concatenated from pieces of which the first is empty (a window's quarantine: its first piece
    had no bad row) keep the pieces as chunks; the CSV holds their rows and nothing else."""
    frame = _frame(np.array([1.5, 2.5, 3.5]), ["ABC", "DEF"])
    frame["symbol"] = frame["symbol"].astype("str")
    pieces = pd.concat([frame.iloc[:0], frame.iloc[:1], frame.iloc[1:1], frame.iloc[1:]], ignore_index=True)
    assert frame_to_csv_bytes(pieces) == frame_to_csv_bytes(frame)
    assert b"\x00" not in frame_to_csv_bytes(pieces)
    assert copy_frame(raw_connection(conn), "via_text", pieces, COLUMNS) == 3
    stored = conn.execute(sa.text('SELECT symbol, open::float8 FROM via_text ORDER BY "timestamp"')).all()
    assert [tuple(r) for r in stored] == list(zip(frame["symbol"], frame["open"], strict=True))
