"""The bad-input corpus (``tis_pipeline_tests/bad_inputs/``): every damaged file goes through the real ingest
(``market_data_1m`` materialized by Dagster into PostgreSQL) alone, and each test states the exact outcome:
the rows quarantined (file line, rule), or the error naming the file, and the good rows stored exactly once.

Files are bars of one symbol on their own UTC day (see the corpus README), so the tests share the session
database without touching each other's partitions. Every bar of row ``i`` has close = 100.25 + 0.25 i, so the
sum of the stored closes says exactly which rows arrived.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from tis_pipeline.market_data.assets import market_data_1m
from tis_pipeline.market_data.readers import catalog, files
from tis_pipeline.market_data.sources import BarSource
from tis_pipeline.pg.engine import engine
from tis_pipeline.resources import PostgresResource

CORPUS = Path(__file__).resolve().parents[1] / "bad_inputs"
NY = "America/New_York"
FULL = Decimal("5318.75")  # sum of close over the 50 standard rows: 50 * 100.25 + 0.25 * (0 + ... + 49)


def close(i: int) -> Decimal:
    return Decimal("100.25") + Decimal("0.25") * i


FALL_SUM = sum((close(i) for i in range(160)), Decimal(0))  # the 160 rows of the DST fall-back files


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


# ------------------------------------------------------------------------------------------------------------
# Helpers: one run on a directory holding just the given files; what the tables hold
# ------------------------------------------------------------------------------------------------------------


def ingest(url: str, tmp_path: Path, files: list[Path], day: str, tz: str = "UTC", name: str = "data"):
    data_dir = tmp_path / name
    data_dir.mkdir()
    for f in files:
        shutil.copy(f, data_dir / f.name)
    bars = BarSource(
        source="csv", data_dir=str(data_dir), tz=tz, manifest_path=str(tmp_path / f"{name}.json")
    )
    result = dg.materialize(
        [market_data_1m],
        partition_key=day,
        raise_on_error=False,
        resources={"db": PostgresResource(url=url), "bars": bars},
    )
    return result, data_dir


def metadata(result) -> dict:
    return {
        k: v.value for k, v in result.asset_materializations_for_node("market_data_1m")[0].metadata.items()
    }


def failure_message(result) -> str:
    failure = next(e for e in result.all_events if e.is_step_failure)
    return str(failure.step_failure_data.user_failure_data.description)


def stored(
    url: str, day: str, symbols: tuple[str, ...]
) -> tuple[int, int, Decimal, pd.Timestamp, pd.Timestamp]:
    """(rows, distinct minutes, sum of close, first, last) of the symbols' bars on the UTC day."""
    start = utc(day)
    with engine(url).connect() as conn:
        row = conn.execute(
            sa.text(
                'SELECT count(*), count(DISTINCT (symbol, "timestamp")), coalesce(sum(close), 0), '
                'min("timestamp"), max("timestamp") FROM market_data_1m '
                'WHERE "timestamp" >= :a AND "timestamp" < :b AND symbol = ANY(:s)'
            ),
            {"a": start, "b": start + pd.Timedelta(days=1), "s": list(symbols)},
        ).one()
    first = None if row[3] is None else pd.Timestamp(row[3]).tz_convert("UTC")
    last = None if row[4] is None else pd.Timestamp(row[4]).tz_convert("UTC")
    return int(row[0]), int(row[1]), Decimal(row[2]), first, last


def quarantined(url: str, day: str) -> list[dict]:
    with engine(url).connect() as conn:
        rows = (
            conn.execute(
                sa.text(
                    'SELECT source_file, source_line, symbol, "timestamp", raw_values, rule, message '
                    "FROM market_data_quarantine WHERE partition_date = :d "
                    "ORDER BY source_line, quarantine_id"
                ),
                {"d": pd.Timestamp(day).date()},
            )
            .mappings()
            .all()
        )
    return [dict(r) for r in rows]


def digest(url: str) -> dict[str, tuple[int, str]]:
    """Every row of both tables (all days), as a count and an md5."""
    out = {}
    with engine(url).connect() as conn:
        for table in ("market_data_1m", "market_data_quarantine"):
            out[table] = tuple(
                conn.execute(
                    sa.text(
                        "SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) "
                        f"FROM {table} t"
                    )
                ).one()
            )
    return out


# ------------------------------------------------------------------------------------------------------------
# Files that load: the exact rows quarantined and the exact rows stored
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    file: str
    day: str
    rows: int  # good rows stored (each once)
    close_sum: Decimal
    quarantine: tuple[tuple[int, str], ...] = ()  # (source_line, rule)
    first: str | None = "10:00"  # first and last stored bar (UTC time of day), None when there are no rows
    last: str | None = "10:49"
    tz: str = "UTC"
    symbols: tuple[str, ...] = ("BTCUSD",)
    note: str | None = None  # text the run's notes must hold
    skipped: str | None = None  # text the run's skipped_files must hold (else it must be empty)


CASES = [
    Case(
        "nan_and_empty.csv",
        "2023-05-01",
        48,
        FULL - close(10) - close(29),
        ((12, "market_data_1m_low_not_null"), (31, "market_data_1m_close_not_null")),
        note="2 row(s) could not be parsed and are kept with their raw text (first at line 12)",
    ),
    Case(
        "text_in_numeric.csv",
        "2023-05-02",
        48,
        FULL - close(7) - close(20),
        ((9, "market_data_1m_high_not_null"), (22, "market_data_1m_volume_not_null")),
    ),
    Case(
        "negative_and_zero_prices.csv",
        "2023-05-03",
        48,
        FULL - close(5) - close(15),
        ((7, "ck_market_data_1m_prices_positive"), (17, "ck_market_data_1m_prices_positive")),
    ),
    Case("high_below_low.csv", "2023-05-04", 49, FULL - close(12), ((14, "ck_market_data_1m_high_bounds"),)),
    Case(
        "open_outside_range.csv",
        "2023-05-05",
        48,
        FULL - close(8) - close(30),
        ((10, "ck_market_data_1m_high_bounds"), (32, "ck_market_data_1m_low_bounds")),
    ),
    Case(
        "negative_volume.csv",
        "2023-05-06",
        49,
        FULL - close(25),
        ((27, "ck_market_data_1m_volume_nonnegative"),),
    ),
    Case("duplicate_row.csv", "2023-05-07", 50, FULL, ((20, "market_data_1m_key_unique"),)),
    Case(
        "same_minute_different_values.csv",
        "2023-05-08",
        49,
        FULL - close(17),
        ((19, "market_data_1m_key_unique"), (20, "market_data_1m_key_unique")),
    ),
    Case("out_of_order.csv", "2023-05-09", 50, FULL),
    Case(
        "seconds_not_on_minute.csv",
        "2023-05-10",
        49,
        FULL - close(13),
        ((15, "market_data_1m_timestamp_aligned"),),
    ),
    Case("mixed_offsets.csv", "2023-05-12", 50, FULL),
    Case(
        "naive_new_york.csv",
        "2023-05-13",
        50,
        FULL,
        tz=NY,
        note="naive timestamps read as America/New_York (TIS_MARKET_TZ)",
    ),
    # 52 rows; rows 25, 26 are 02:00 and 02:01, which New York skipped: not moved onto 03:00/03:01
    Case(
        "dst_spring_forward.csv",
        "2024-03-10",
        50,
        sum((close(i) for i in range(52) if i not in (25, 26)), Decimal(0)),
        ((27, "market_data_1m_timestamp_not_null"), (28, "market_data_1m_timestamp_not_null")),
        "06:35",
        "07:24",
        NY,
        ("SPY",),
        "2 local time(s) do not exist in America/New_York (DST change) and were left as NaT",
    ),
    # 160 rows: 00:40-01:59 EDT, 01:00-01:59 EST, 02:00-02:19 EST = 04:40-07:19 UTC
    Case(
        "dst_fall_back.csv",
        "2024-11-03",
        160,
        FALL_SUM,
        (),
        "04:40",
        "07:19",
        NY,
        ("SPY",),
        "120 local time(s) fall in the hour repeated when America/New_York left daylight time",
    ),
    Case(
        "dst_fall_back_two_symbols.csv",
        "2024-11-03",
        320,
        2 * FALL_SUM,
        (),
        "04:40",
        "07:19",
        NY,
        ("SPY", "QQQ"),
        "240 local time(s) fall in the hour repeated when America/New_York left daylight time",
    ),
    Case("dst_fall_back_newest_first.csv", "2024-11-03", 160, FALL_SUM, (), "04:40", "07:19", NY, ("SPY",)),
    Case(
        "epoch_seconds_and_milliseconds.csv",
        "2023-05-14",
        50,
        FULL,
        note="epoch timestamps in mixed units (ms, s), told apart by magnitude per value",
    ),
    Case(
        "truncated_last_line.csv",
        "2023-05-15",
        49,
        FULL - close(49),
        ((51, "market_data_1m_open_not_null"),),
        last="10:48",
    ),
    Case(
        "header_only.csv",
        "2023-05-16",
        0,
        Decimal(0),
        first=None,
        last=None,
        skipped="header_only.csv`: holds no bars (empty, or a header only): nothing to load",
    ),
    Case(
        "empty.csv",
        "2023-05-17",
        0,
        Decimal(0),
        first=None,
        last=None,
        skipped="empty.csv`: holds no bars (empty, or a header only): nothing to load",
    ),
    Case("utf8_bom.csv", "2023-05-19", 50, FULL),
    Case("windows_line_endings.csv", "2023-05-20", 50, FULL),
    Case("quoted_thousands.csv", "2023-05-21", 50, 10 * FULL),
    Case("symbol_21_chars.csv", "2023-05-22", 49, FULL - close(9), ((11, "market_data_1m_symbol_format"),)),
    Case(
        "symbol_sql_injection.csv",
        "2023-05-23",
        49,
        FULL - close(14),
        ((16, "market_data_1m_symbol_format"),),
    ),
    Case(
        "value_too_large.csv",
        "2023-05-24",
        49,
        FULL - close(33),
        ((35, "market_data_1m_values_fit_numeric"),),
    ),
    Case(
        "wrong_field_count.csv",
        "2023-05-25",
        48,
        FULL - close(11) - close(38),
        ((13, "market_data_1m_open_not_null"), (40, "market_data_1m_open_not_null")),
    ),
    Case(
        "unparseable_timestamp.csv",
        "2023-05-28",
        49,
        FULL - close(22),
        ((24, "market_data_1m_timestamp_not_null"),),
    ),
    Case(
        "null_close.json",
        "2023-05-29",
        49,
        FULL - close(16),
        ((17, "market_data_1m_close_not_null"),),
        symbols=("ETHUSD",),
    ),
    Case("nan_close.parquet", "2023-05-30", 49, FULL - close(20), ((21, "market_data_1m_close_not_null"),)),
    # years a nanosecond timestamp cannot hold: one bad row each, not the whole file
    Case(
        "timestamp_after_2262.csv",
        "2023-06-01",
        49,
        FULL - close(20),
        ((22, "market_data_1m_timestamp_not_null"),),
    ),
    Case(
        "timestamp_before_1677.csv",
        "2023-06-02",
        49,
        FULL - close(30),
        ((32, "market_data_1m_timestamp_not_null"),),
    ),
    Case("symbol_long_s.csv", "2023-06-03", 49, FULL - close(5), ((7, "market_data_1m_symbol_format"),)),
    Case(
        "row_before_partition_start.csv",
        "2023-06-04",
        49,
        FULL - close(10),
        note="row_before_partition_start.csv: 1 row(s) stamped before the first partition (2015-01-01) "
        "(first at line 12: 1970-01-01T10:10:00+00:00) belong to no partition: not loaded, not quarantined",
    ),
    Case("volume_nine_decimals.csv", "2023-06-05", 50, FULL),
]

pg = pytest.mark.pg


@pg
@pytest.mark.parametrize("case", CASES, ids=[c.file for c in CASES])
def test_a_damaged_file_loads_its_good_rows_once_and_quarantines_the_bad_ones(database_url, tmp_path, case):
    result, data_dir = ingest(database_url, tmp_path, [CORPUS / case.file], case.day, tz=case.tz)
    assert result.success
    got = quarantined(database_url, case.day)
    assert [(q["source_line"], q["rule"]) for q in got] == list(case.quarantine)
    assert {q["source_file"] for q in got} <= {str(data_dir / case.file)}
    rows, distinct, close_sum, first, last = stored(database_url, case.day, case.symbols)
    assert (rows, distinct, close_sum) == (case.rows, case.rows, case.close_sum)
    day = pd.Timestamp(case.day)
    assert first == (None if case.first is None else utc(f"{day:%Y-%m-%d} {case.first}"))
    assert last == (None if case.last is None else utc(f"{day:%Y-%m-%d} {case.last}"))
    meta = metadata(result)
    assert meta["rows_written_by_run"] == case.rows
    assert meta["quarantined_rows"] == len(case.quarantine)
    if case.note is not None:
        assert case.note in meta["notes"]
    if case.skipped is None:
        assert meta["skipped_files"] == "_none_"
    else:
        assert meta["skipped_files"] == f"- `{data_dir}/{case.skipped}"


@pg
def test_out_of_order_rows_are_each_stored_at_their_own_minute(database_url, tmp_path):
    day = "2023-06-09"  # the out_of_order file, moved to a day of its own
    text = (CORPUS / "out_of_order.csv").read_text().replace("2023-05-09", day)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "out_of_order.csv").write_text(text)
    assert ingest(database_url, tmp_path, [tmp_path / "src" / "out_of_order.csv"], day)[0].success
    with engine(database_url).connect() as conn:
        pairs = conn.execute(
            sa.text(
                'SELECT extract(epoch FROM "timestamp" - :ten)::int / 60, close FROM market_data_1m '
                "WHERE \"timestamp\" >= :a AND \"timestamp\" < :a + interval '1 day' AND symbol = 'BTCUSD' "
                'ORDER BY "timestamp"'
            ),
            {"a": utc(day), "ten": utc(f"{day} 10:00")},
        ).all()
    assert [(m, c) for m, c in pairs] == [(i, close(i)) for i in range(50)]


@pg
def test_the_quarantine_keeps_the_raw_text_and_the_injected_symbol_is_only_data(database_url, tmp_path):
    result, data_dir = ingest(database_url, tmp_path, [CORPUS / "symbol_sql_injection.csv"], "2023-05-23")
    assert result.success
    [row] = quarantined(database_url, "2023-05-23")
    line = (CORPUS / "symbol_sql_injection.csv").read_text().split("\n")[15]
    assert line.startswith("2023-05-23 10:14:00,X'; DROP TABLE modules;--,")
    assert row["symbol"] == "X'; DROP TABLE MODULES;--"
    assert row["timestamp"] == utc("2023-05-23 10:14")
    # a row rejected for its values (not for a parse failure) is kept as the reader parsed it
    assert row["raw_values"] == {
        "symbol": "X'; DROP TABLE MODULES;--",
        "timestamp": "2023-05-23T10:14:00+00:00",
        "open": 103.5,
        "high": 104.25,
        "low": 103.0,
        "close": 103.75,
        "volume": 24.0,
        "raw": None,
    }
    assert row["message"] == (
        "symbol is empty, longer than 20 characters or has characters outside [A-Za-z0-9._/:-]"
    )
    assert row["source_file"] == str(data_dir / "symbol_sql_injection.csv")
    with engine(database_url).connect() as conn:
        assert conn.execute(sa.text("SELECT to_regclass('public.modules') IS NOT NULL")).scalar_one()
        assert conn.execute(sa.text("SELECT count(*) FROM modules")).scalar_one() >= 0


@pg
def test_unparseable_timestamps_are_quarantined_on_the_run_day_with_their_line(database_url, tmp_path):
    assert ingest(database_url, tmp_path, [CORPUS / "dst_spring_forward.csv"], "2024-03-10", tz=NY)[0].success
    got = quarantined(database_url, "2024-03-10")
    assert [(q["source_line"], q["timestamp"], q["raw_values"]["raw"]) for q in got] == [
        (27, None, "2024-03-10 02:00,SPY,106.25,107.00,105.75,106.50,35"),
        (28, None, "2024-03-10 02:01,SPY,106.50,107.25,106.00,106.75,36"),
    ]
    # the bars on either side of the gap are one minute apart in UTC: nothing was shifted onto 03:00/03:01
    with engine(database_url).connect() as conn:
        around = conn.execute(
            sa.text(
                "SELECT \"timestamp\", close FROM market_data_1m WHERE symbol = 'SPY' "
                "AND \"timestamp\" BETWEEN '2024-03-10 06:58+00' AND '2024-03-10 07:01+00' ORDER BY 1"
            )
        ).all()
    assert [(pd.Timestamp(t).tz_convert("UTC"), c) for t, c in around] == [
        (utc("2024-03-10 06:58"), close(23)),
        (utc("2024-03-10 06:59"), close(24)),
        (utc("2024-03-10 07:00"), close(27)),
        (utc("2024-03-10 07:01"), close(28)),
    ]


@pg
def test_a_future_row_is_in_no_partition_and_is_reported(database_url, tmp_path):
    """A row stamped 2099 in a file of 2023-05-11 lies outside that day's window, and its own day is no
    partition yet (Dagster refuses the key), so the outcome is: the day loads its 49 rows, nothing is
    quarantined, and the run's notes name the future row."""
    result, data_dir = ingest(database_url, tmp_path, [CORPUS / "future_timestamp.csv"], "2023-05-11")
    assert result.success
    assert stored(database_url, "2023-05-11", ("BTCUSD",))[:3] == (49, 49, FULL - close(40))
    assert quarantined(database_url, "2023-05-11") == []
    assert (
        f"{data_dir / 'future_timestamp.csv'}: 1 row(s) stamped later than now (first at line 42: "
        "2099-05-11T10:40:00+00:00) belong to no partition that exists yet: not loaded, not quarantined"
        in metadata(result)["notes"]
    )
    with engine(database_url).connect() as conn:
        assert (
            conn.execute(
                sa.text("SELECT count(*) FROM market_data_1m WHERE \"timestamp\" >= '2090-01-01'")
            ).scalar_one()
            == 0
        )
    with pytest.raises(dg.DagsterUnknownPartitionError):
        ingest(database_url, tmp_path, [CORPUS / "future_timestamp.csv"], "2099-05-11", name="future")


# ------------------------------------------------------------------------------------------------------------
# Files that fail the run: the error names the file (and line), and both tables keep what they held
# ------------------------------------------------------------------------------------------------------------


def baseline(url: str, tmp_path: Path, day: str) -> Path:
    """A good file of BTCUSD for the day (30 bars from 09:00, one with a negative volume at line 7),
    loaded."""
    lines = ["timestamp,symbol,open,high,low,close,volume"]
    for i in range(30):
        lines.append(f"{day} 09:{i:02d}:00,BTCUSD,50,51,49,50.5,{-1 if i == 5 else 100 + i}")
    src = tmp_path / "src"
    src.mkdir()
    (src / "baseline.csv").write_text("\n".join(lines) + "\n")
    result, data_dir = ingest(url, tmp_path, [src / "baseline.csv"], day, name="baseline")
    assert result.success
    assert stored(url, day, ("BTCUSD",))[:3] == (29, 29, Decimal("1464.5"))
    assert [(q["source_line"], q["rule"]) for q in quarantined(url, day)] == [
        (7, "ck_market_data_1m_volume_nonnegative")
    ]
    return data_dir / "baseline.csv"


FAILING = [
    # (file, day, the exact start of the failure message; {path} is the file in the run's directory)
    (
        "too_many_bad_rows.csv",
        "2023-05-27",
        "1 partition day(s) have more than 5% bad rows (2023-05-27: 10.0%); nothing was written. "
        "Rules broken: "
        "{'ck_market_data_1m_volume_nonnegative': 4, 'ck_market_data_1m_high_bounds': 1}. First rows: "
        "[{'source_file': '{path}', 'source_line': 5, 'rule': 'ck_market_data_1m_volume_nonnegative'}",
    ),
]


@pg
@pytest.mark.parametrize(("file", "day", "message"), FAILING, ids=[f[0] for f in FAILING])
def test_a_file_that_fails_the_run_changes_nothing(database_url, tmp_path, file, day, message):
    good = baseline(database_url, tmp_path, day)
    before = digest(database_url)
    result, data_dir = ingest(database_url, tmp_path, [CORPUS / file], day)
    assert not result.success
    assert failure_message(result).startswith(message.replace("{path}", str(data_dir / file)))
    assert digest(database_url) == before
    assert stored(database_url, day, ("BTCUSD",))[:3] == (29, 29, Decimal("1464.5"))
    assert [(q["source_file"], q["source_line"]) for q in quarantined(database_url, day)] == [(str(good), 7)]


# ------------------------------------------------------------------------------------------------------------
# Reader-level: the DST fixes in readers/timestamps.py, without a database
# ------------------------------------------------------------------------------------------------------------

FALL = (
    [f"2024-11-03 00:{m:02d}" for m in range(40, 60)]
    + [f"2024-11-03 01:{m:02d}" for m in range(60)] * 2
    + [f"2024-11-03 02:{m:02d}" for m in range(20)]
)
FALL_UTC = list(pd.date_range("2024-11-03 04:40", periods=160, freq="min", tz="UTC"))


def write(tmp_path: Path, name: str, times: list[str], symbols=("SPY",)) -> Path:
    path = tmp_path / name
    body = [f"{t},{s},1,2,0.5,1.5,{i}" for i, t in enumerate(times) for s in symbols]
    path.write_text("timestamp,symbol,open,high,low,close,volume\n" + "\n".join(body) + "\n")
    return path


@pytest.mark.parametrize("order", ["forward", "newest_first"])
def test_repeated_fall_back_hour_is_split_by_file_order_per_symbol(tmp_path, order):
    times = FALL if order == "forward" else FALL[::-1]
    f = files.read_file(write(tmp_path, "fall.csv", times, ("SPY", "QQQ")), tz=NY).frame
    assert f["raw"].isna().all()
    for s in ("SPY", "QQQ"):
        got = f.loc[f["symbol"] == s, "timestamp"].tolist()
        assert got == (FALL_UTC if order == "forward" else FALL_UTC[::-1])


def test_an_identical_row_inside_the_repeated_hour_stays_a_duplicate_of_its_own_pass(tmp_path):
    times = [*FALL[:50], FALL[49], *FALL[50:]]  # 01:29 EDT written twice
    f = files.read_file(write(tmp_path, "fall.csv", times), tz=NY).frame
    assert f["timestamp"].tolist() == [*FALL_UTC[:50], FALL_UTC[49], *FALL_UTC[50:]]


def test_a_repeated_hour_whose_order_does_not_tell_is_left_as_bad_rows(tmp_path):
    once = FALL[:80] + FALL[140:]  # 01:00-01:59 appears once: EDT or EST cannot be told
    res = files.read_file(write(tmp_path, "once.csv", once), tz=NY)
    f = res.frame
    assert f["timestamp"].isna().tolist() == [False] * 20 + [True] * 60 + [False] * 20
    assert f["raw"].notna().sum() == 60
    assert any(
        "60 local time(s) fall in the hour repeated when America/New_York left daylight time and "
        "their order does not say which pass they belong to; left as NaT" in n
        for n in res.notes
    )
    assert not any("do not exist" in n for n in res.notes)


def test_an_unparseable_row_after_a_future_row_stays_in_the_present_window(tmp_path):
    lines = ["timestamp,open,high,low,close,volume"]
    lines += [f"2023-05-11 10:{m:02d}:00,1,2,0.5,1.5,1" for m in range(10)]
    lines += [
        "2099-05-11 10:10:00,1,2,0.5,1.5,1",
        "garbage,1,2,0.5,1.5,1",
        "2023-05-11 10:12:00,1,2,0.5,1.5,1",
    ]
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f.csv").write_text("\n".join(lines) + "\n")
    res = catalog.read_bar_files(tmp_path / "d", utc("2023-05-11"), utc("2023-05-12"))
    assert res.frame["source_line"].tolist() == [*range(2, 12), 13, 14]
    assert res.frame["timestamp"].isna().tolist() == [False] * 10 + [True, False]
    assert sum("stamped later than now (first at line 12" in n for n in res.notes) == 1
    later = catalog.read_bar_files(tmp_path / "d", utc("2023-05-12"), utc("2023-05-13"))
    assert len(later.frame) == 0 and not any("stamped later" in n for n in later.notes)


def test_files_that_give_no_row_to_any_window_are_listed_as_skipped(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    header = "timestamp,open,high,low,close,volume\n"
    (root / "gap_only.csv").write_text(
        header + "".join(f"2024-03-10 02:{m:02d},1,2,0.5,1.5,1\n" for m in range(5))
    )  # no such New York times
    (root / "future_only.csv").write_text(
        header + "".join(f"2099-01-01 10:{m:02d},1,2,0.5,1.5,1\n" for m in range(5))
    )
    (root / "header_only.csv").write_text(header)
    res = catalog.read_bar_files(root, utc("2024-03-10"), utc("2024-03-11"), tz=NY)
    assert len(res.frame) == 0
    assert sorted(res.skipped) == [
        (
            str(root / "future_only.csv"),
            "all its rows are stamped later than now (from 2099-01-01T15:00:00+00:00)",
        ),
        (str(root / "gap_only.csv"), "none of its 5 row(s) has a usable timestamp: they fit no partition"),
        (str(root / "header_only.csv"), "holds no bars (empty, or a header only): nothing to load"),
    ]


def test_corpus_readme_lists_every_file():
    readme = (CORPUS / "README.md").read_text()
    files = sorted(p.name for p in CORPUS.iterdir() if p.suffix not in (".md", ".py"))
    assert len(files) >= 27
    assert [f for f in files if f"`{f}`" not in readme] == []
    tested = {c.file for c in CASES} | {f[0] for f in FAILING} | {"future_timestamp.csv"}
    tested |= {u.file for u in UNREADABLE if (CORPUS / u.file).exists()}
    assert sorted(tested) == files
    assert json.loads((CORPUS / "null_close.json").read_text())[16]["close"] is None


# ------------------------------------------------------------------------------------------------------------
# Files that cannot be read at all: left out within their limit, named, and the other files' days still load
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unreadable:
    file: str  # the name in the data directory (a corpus file, or one made by ``make``)
    reason: str  # the start of the reason the run names it with
    make: str | None = None  # how the test makes it at run time


UNREADABLE = [
    Unreadable(
        "binary_named.csv", "binary_named.csv, line 1: binary content (NUL bytes), not a text bar file"
    ),
    Unreadable("half_written.parquet", "half_written.parquet: corrupt or incomplete Parquet file: "),
    Unreadable(
        "gzip_bomb.csv.gz",
        "gzip_bomb.csv.gz: the gz archive expands to more than 200 x its 8,267 compressed bytes "
        "(TIS_MAX_COMPRESSION_RATIO): stopped at 1,653,400 bytes, likely a compression bomb",
    ),
    Unreadable("pipe.csv", "pipe.csv: a FIFO (named pipe), not a regular file: not read", make="fifo"),
    Unreadable("loop.csv", "loop.csv: cannot stat: Too many levels of symbolic links", make="loop"),
    Unreadable(
        "zero.csv",
        "zero.csv: a character device (symlink to /dev/zero), not a regular file: not read",
        make="dev_zero",
    ),
    Unreadable(
        "wide.csv",
        "wide.csv, line 2: a line of 19,999,999 bytes, over the limit of 65,536 bytes (TIS_MAX_LINE_BYTES)",
        make="ten_million_fields",
    ),
]


def make_unreadable(data_dir: Path, case: Unreadable) -> None:
    path = data_dir / case.file
    if case.make is None:
        shutil.copy(CORPUS / case.file, path)
    elif case.make == "fifo":
        os.mkfifo(path)  # never committed: made here, and nothing ever writes to it
    elif case.make == "loop":
        path.symlink_to(path)
    elif case.make == "dev_zero":
        path.symlink_to("/dev/zero")
    else:  # a header and one line of 10 M fields (20 MB)
        path.write_bytes(b"timestamp,symbol,open,high,low,close,volume\n" + b"1," * 9_999_999 + b"1\n")


def good_day(data_dir: Path, day: str) -> None:
    lines = ["timestamp,symbol,open,high,low,close,volume"]
    lines += [f"{day} {10 + i // 60:02d}:{i % 60:02d}:00,BTCUSD,{100 + 0.25 * i},{100.75 + 0.25 * i},"
              f"{99.5 + 0.25 * i},{100.25 + 0.25 * i},{10 + i}" for i in range(50)]  # fmt: skip
    (data_dir / "good.csv").write_text("\n".join(lines) + "\n")


def materialize_within(seconds: float, **kwargs) -> dg.ExecuteInProcessResult:
    """``dg.materialize`` that must end within ``seconds`` (a blocked read would otherwise hang the test)."""
    out: list = []
    worker = threading.Thread(target=lambda: out.append(dg.materialize(**kwargs)), daemon=True)
    worker.start()
    worker.join(seconds)
    assert out, f"the run did not end within {seconds} s"
    return out[0]


def check_evaluation(result, name: str):
    return next(e for e in result.get_asset_check_evaluations() if e.check_name == name)


@pg
@pytest.mark.parametrize("case", UNREADABLE, ids=[u.file for u in UNREADABLE])
def test_an_unreadable_file_is_left_out_named_and_the_other_files_days_load(database_url, tmp_path, case):
    day = f"2023-06-{10 + UNREADABLE.index(case):02d}"
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    good_day(data_dir, day)
    make_unreadable(data_dir, case)
    bars = BarSource(source="csv", data_dir=str(data_dir), manifest_path=str(tmp_path / "m.json"))
    result = materialize_within(
        120,
        assets=[market_data_1m],
        partition_key=day,
        raise_on_error=False,
        resources={"db": PostgresResource(url=database_url), "bars": bars},
    )
    assert result.success
    assert stored(database_url, day, ("BTCUSD",))[:3] == (50, 50, FULL)
    meta = metadata(result)
    assert meta["rows_written_by_run"] == 50
    named = f"- `{data_dir / case.file}`: {data_dir}/{case.reason}"
    assert meta["unreadable_files"].startswith(named)
    check = check_evaluation(result, "market_data_1m_source_files_readable")
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.description.startswith("1 of 1 rows fail: every file under the data directory")
    sample = check.metadata["failing_rows_sample"].value.records[0].data
    assert sample["source_file"] == str(data_dir / case.file)
    assert sample["why"].startswith(f"{data_dir}/{case.reason}")
    # the manifest records the error, so the next scan does not read the file again
    entry = json.loads((tmp_path / "m.json").read_text())["files"][str(data_dir / case.file)]
    assert entry["error"].startswith(f"{data_dir}/{case.reason}")


@pg
def test_an_unreadable_file_with_a_date_in_its_name_blocks_only_that_day(database_url, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    good_day(data_dir, "2023-06-20")
    (data_dir / "btcusd_2023-06-21.csv").write_bytes((CORPUS / "binary_named.csv").read_bytes())
    bars = BarSource(source="csv", data_dir=str(data_dir), manifest_path=str(tmp_path / "m.json"))
    resources = {"db": PostgresResource(url=database_url), "bars": bars}
    other = dg.materialize([market_data_1m], partition_key="2023-06-20", resources=resources)
    assert other.success and stored(database_url, "2023-06-20", ("BTCUSD",))[:3] == (50, 50, FULL)
    assert metadata(other)["unreadable_files"] == "_none_"
    held = dg.materialize(
        [market_data_1m], partition_key="2023-06-21", resources=resources, raise_on_error=False
    )
    assert not held.success
    path = data_dir / "btcusd_2023-06-21.csv"
    assert failure_message(held) == (
        f"cannot read bar file: {path}: failed to read: {path}, line 1: binary content (NUL bytes), "
        "not a text bar file"
    )


@pg
def test_digits_beyond_eight_decimals_are_counted_in_a_warning(database_url, tmp_path):
    result, _ = ingest(database_url, tmp_path, [CORPUS / "volume_nine_decimals.csv"], "2023-06-05")
    assert result.success
    check = check_evaluation(result, "market_data_1m_values_fit_scale")
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.description.startswith("1 of 50 rows fail: no price or volume has non-zero digits beyond")
    with engine(database_url).connect() as conn:
        volume = conn.execute(
            sa.text("SELECT volume FROM market_data_1m WHERE \"timestamp\" = '2023-06-05 10:15+00'")
        ).scalar_one()
    assert volume == 0  # what the warning is about: numeric(20,8) rounded 1e-9 away
    clean, _ = ingest(database_url, tmp_path, [CORPUS / "out_of_order.csv"], "2023-05-09", name="clean")
    assert check_evaluation(clean, "market_data_1m_values_fit_scale").passed


@pg
def test_rows_before_the_first_partition_are_counted_and_noted(database_url, tmp_path):
    result, data_dir = ingest(
        database_url, tmp_path, [CORPUS / "row_before_partition_start.csv"], "2023-06-04"
    )
    assert result.success
    meta = metadata(result)
    assert meta["rows_outside_partitions"] == 1
    assert (
        f"{data_dir}/row_before_partition_start.csv: 1 row(s) stamped before the first partition"
        in (meta["notes"])
    )
    assert quarantined(database_url, "2023-06-04") == []
    future, _ = ingest(database_url, tmp_path, [CORPUS / "future_timestamp.csv"], "2023-05-11", name="f")
    assert metadata(future)["rows_outside_partitions"] == 1


@pg
def test_a_non_ascii_symbol_is_not_folded_into_the_ascii_one(database_url, tmp_path):
    assert ingest(database_url, tmp_path, [CORPUS / "symbol_long_s.csv"], "2023-06-03")[0].success
    [row] = quarantined(database_url, "2023-06-03")
    assert (row["source_line"], row["symbol"]) == (7, "BTCU\u017fD")  # ASCII letters upper-cased, not U+017F
    with engine(database_url).connect() as conn:
        symbols = conn.execute(
            sa.text("SELECT DISTINCT symbol FROM market_data_1m WHERE \"timestamp\"::date = '2023-06-03'")
        ).scalars()
        assert list(symbols) == ["BTCUSD"]


MEMORY_PROBE = """
import resource, sys
import pandas as pd
from tis_pipeline.market_data.readers import catalog
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
day = pd.Timestamp("2023-06-10", tz="UTC")
res = catalog.read_bar_files(sys.argv[1], day, day + pd.Timedelta(days=1))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(len(res.frame), len(res.unreadable), (after - before) // 1024)
"""


def test_reading_the_unreadable_files_stays_within_a_memory_bound(tmp_path):
    """Every unreadable case in one directory, read by a fresh interpreter: the peak RSS grows by less than
    200 MB over the interpreter's own (before the limits, the 10-M-field line alone passed 8 GB)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    good_day(data_dir, "2023-06-10")
    for case in UNREADABLE:
        make_unreadable(data_dir, case)
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(data_dir)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    rows, unreadable, grew_mb = map(int, done.stdout.split())
    assert (rows, unreadable) == (50, len(UNREADABLE))
    assert grew_mb < 200
