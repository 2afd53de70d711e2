"""Tests for tis_pipeline.market_data.readers: the real shared bar files, small fixtures of every shape, the
manifest and windowed reads. The shared files are read in place (never copied into the repository)."""

from __future__ import annotations

import gzip
import json
import os
import random
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tis_pipeline.market_data.readers import catalog
from tis_pipeline.market_data.readers.catalog import FileInfo, read_bar_files, scan
from tis_pipeline.market_data.readers.contract import FRAME_COLUMNS, BarFileError
from tis_pipeline.market_data.readers.files import read_file
from tis_pipeline.market_data.readers.symbols import symbol_from_path
from tis_pipeline_tests.support.shared import shared_dir

SHARED = shared_dir() / "data" / "market"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
NY = "America/New_York"


@pytest.fixture(scope="module")
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"the shared real market data is absent: {SHARED} does not exist")
    return SHARED


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


@pytest.fixture
def load_calls(monkeypatch) -> list[str]:
    """Counts how often a file is actually parsed (files.load_file is the one parser entry point)."""
    calls: list[str] = []
    original = catalog.load_file

    def counting(path, *args, **kwargs):
        calls.append(str(path))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(catalog, "load_file", counting)
    return calls


def assert_frame_contract(frame: pd.DataFrame) -> None:
    assert list(frame.columns) == FRAME_COLUMNS
    assert str(frame["timestamp"].dtype) == "datetime64[ns, UTC]"
    for c in ("open", "high", "low", "close", "volume"):
        assert frame[c].dtype == np.float64, c
    assert frame["volume_missing"].dtype == np.bool_
    assert frame["source_line"].dtype == np.int64
    assert frame["raw"].dtype == object
    assert pd.api.types.is_string_dtype(frame["symbol"])
    assert pd.api.types.is_string_dtype(frame["source_file"])


def assert_bad_rows_have_a_missing_value(frame: pd.DataFrame) -> None:
    """The contract with the validator: a row with raw text has a NaN/NaT/missing value, a clean row none."""
    missing = (
        frame["timestamp"].isna()
        | frame[["open", "high", "low", "close", "volume"]].isna().any(axis=1)
        | frame["symbol"].isna()
    )
    assert (frame["raw"].notna() == missing).all()


# ------------------------------------------------------------------------------------------------------------
# The real shared files (expected values from SOURCES.md)
# ------------------------------------------------------------------------------------------------------------

REAL_ONE_MINUTE = [
    # relative path, tz, rows, symbol, first UTC, last UTC, volume_missing, first source_line
    (
        "freqtrade/UNITTEST_BTC-1m.json",
        "UTC",
        13681,
        "UNITTEST_BTC",
        "2017-11-04 23:02",
        "2017-11-14 22:59",
        False,
        1,
    ),
    (
        "freqtrade/XRP_ETH-1m.feather",
        "UTC",
        2469,
        "XRP_ETH",
        "2019-10-11 00:00",
        "2019-10-13 11:19",
        False,
        1,
    ),
    (
        "mplfinance/SP500_NOV2019_IDay.csv",
        NY,
        1563,
        "SP500",
        "2019-11-05 14:30",
        "2019-11-08 20:59",
        False,
        2,
    ),
    (
        "nautilus_trader/btc-perp-20211231-20220201_1m.csv",
        "UTC",
        45031,
        "BTC-PERP",
        "2021-12-31 23:01",
        "2022-02-01 05:31",
        False,
        2,
    ),
    (
        "nautilus_trader/fxcm/gbpusd-m1-bid-2012.csv",
        "UTC",
        30117,
        "GBPUSD",
        "2012-02-01",
        "2012-03-01",
        True,
        2,
    ),
    (
        "nautilus_trader/fxcm/usdjpy-m1-bid-2013.csv",
        "UTC",
        28761,
        "USDJPY",
        "2013-02-01",
        "2013-03-01",
        True,
        2,
    ),
    (
        "backtrader/2006-01-02-volume-min-001.txt",
        "UTC",
        30889,
        "BACKTRADER",
        "2006-01-02 09:01",
        "2006-02-27 22:00",
        False,
        2,
    ),
]
LEAN_BTC = [
    ("20161007", 1419, "2016-10-07 00:00", "2016-10-07 23:59"),
    ("20161008", 1400, "2016-10-08 00:00", "2016-10-08 23:59"),
    ("20161009", 1397, "2016-10-09 00:00", "2016-10-09 23:59"),
    ("20170903", 1440, "2017-09-03 00:00", "2017-09-03 23:59"),
    ("20170904", 1440, "2017-09-04 00:00", "2017-09-04 23:59"),
    ("20171217", 1440, "2017-12-17 00:00", "2017-12-17 23:59"),
    ("20180404", 1007, "2018-04-04 00:00", "2018-04-04 16:47"),
    ("20180405", 1440, "2018-04-05 00:00", "2018-04-05 23:59"),
    ("20180406", 1440, "2018-04-06 00:00", "2018-04-06 23:59"),
]
LEAN_IBM = [
    ("20131004", 411, "2013-10-04 12:28", "2013-10-04 23:55"),
    ("20131007", 453, "2013-10-07 08:00", "2013-10-07 23:26"),
    ("20131008", 424, "2013-10-08 12:47", "2013-10-08 23:23"),
    ("20131009", 423, "2013-10-09 13:12", "2013-10-09 23:31"),
    ("20131010", 434, "2013-10-10 11:13", "2013-10-10 22:20"),
    ("20131011", 421, "2013-10-11 12:11", "2013-10-11 23:52"),
]
IBM_DIR = "lean/Data/equity/usa/minute/ibm"
BTC_DIR = "lean/Data/crypto/coinbase/minute/btcusd"


def check_clean_one_minute(frame: pd.DataFrame, rows: int, symbol: str, first: str, last: str) -> None:
    assert_frame_contract(frame)
    assert len(frame) == rows
    assert set(frame["symbol"]) == {symbol}
    assert frame["timestamp"].min() == ts(first)
    assert frame["timestamp"].max() == ts(last)
    assert frame["timestamp"].iloc[0] == ts(first)
    assert frame["timestamp"].iloc[-1] == ts(last)
    assert not frame[["open", "high", "low", "close", "volume"]].isna().any().any()
    assert frame["raw"].isna().all()
    assert frame["timestamp"].is_unique
    assert_bad_rows_have_a_missing_value(frame)


@pytest.mark.parametrize(
    ("rel", "tz", "rows", "symbol", "first", "last", "volume_missing", "first_line"),
    REAL_ONE_MINUTE,
    ids=[r[0] for r in REAL_ONE_MINUTE],
)
def test_real_one_minute_files(shared, rel, tz, rows, symbol, first, last, volume_missing, first_line):
    res = read_file(shared / rel, tz=tz)
    check_clean_one_minute(res.frame, rows, symbol, first, last)
    assert res.skipped == []
    assert bool(res.frame["volume_missing"].all()) is volume_missing
    assert bool(res.frame["volume_missing"].any()) is volume_missing
    if volume_missing:
        assert (res.frame["volume"] == 0).all()
    assert res.frame["source_line"].iloc[0] == first_line
    assert res.frame["source_line"].iloc[-1] == first_line + rows - 1
    assert set(res.frame["source_file"]) == {str(shared / rel)}


@pytest.mark.parametrize(("day", "rows", "first", "last"), LEAN_BTC, ids=[d[0] for d in LEAN_BTC])
def test_real_lean_crypto_files(shared, day, rows, first, last):
    res = read_file(shared / BTC_DIR / f"{day}_trade.zip")
    check_clean_one_minute(res.frame, rows, "BTCUSD", first, last)
    assert res.frame["source_line"].iloc[0] == 1
    assert not any("10,000" in n for n in res.notes)  # crypto prices are not scaled


@pytest.mark.parametrize(("day", "rows", "first", "last"), LEAN_IBM, ids=[d[0] for d in LEAN_IBM])
def test_real_lean_equity_files(shared, day, rows, first, last):
    res = read_file(shared / IBM_DIR / f"{day}_trade.zip")  # default tz=UTC: the Lean layout says New York
    check_clean_one_minute(res.frame, rows, "IBM", first, last)
    assert res.frame["close"].between(170, 200).all()  # USD, not deci-cents


def test_real_values_are_exact(shared):
    ibm = read_file(shared / IBM_DIR / "20131004_trade.zip").frame
    # inner CSV line 1: 30480000,1838600,1838600,1838600,1838600,22956 -> 08:28 New York = 12:28 UTC
    assert ibm.iloc[0][["open", "high", "low", "close", "volume"]].tolist() == [
        183.86,
        183.86,
        183.86,
        183.86,
        22956.0,
    ]
    assert ibm["timestamp"].iloc[0] == ts("2013-10-04 12:28")
    ibm7 = read_file(shared / IBM_DIR / "20131007_trade.zip").frame
    assert ibm7["open"].iloc[0] == 181.52
    sp = read_file(shared / "mplfinance/SP500_NOV2019_IDay.csv", tz=NY).frame
    # Date,Open,Close,High,Low,Volume / 11/5/2019 9:30,3080.8,3080.49,3081.47,3080.3,0
    assert sp.iloc[0][["open", "high", "low", "close", "volume"]].tolist() == [
        3080.8,
        3081.47,
        3080.3,
        3080.49,
        0.0,
    ]
    bt = read_file(shared / "backtrader/2006-01-02-volume-min-001.txt").frame
    # 2006-01-02,09:01:00,3602.00,3603.00,3597.00,3599.00,5699,0
    assert bt.iloc[0][["open", "high", "low", "close", "volume"]].tolist() == [
        3602.0,
        3603.0,
        3597.0,
        3599.0,
        5699.0,
    ]
    ft = read_file(shared / "freqtrade/UNITTEST_BTC-1m.json").frame
    assert ft.iloc[0][["open", "volume"]].tolist() == [0.00162008, 108.14853839]
    btc = read_file(shared / BTC_DIR / "20161007_trade.zip").frame
    assert btc.iloc[0][["open", "high", "low", "close", "volume"]].tolist() == [
        611.78,
        611.91,
        611.78,
        611.9,
        1.13872,
    ]


def test_real_naive_file_with_default_tz_is_read_as_utc_with_a_note(shared):
    path = shared / "mplfinance/SP500_NOV2019_IDay.csv"
    res = read_file(path)
    assert res.frame["timestamp"].iloc[0] == ts("2019-11-05 09:30")
    assert f"{path}: naive timestamps read as UTC (TIS_MARKET_TZ)" in res.notes
    res_ny = read_file(path, tz=NY)
    assert f"{path}: naive timestamps read as {NY} (TIS_MARKET_TZ)" in res_ny.notes


def test_real_backtrader_header_mismatch_is_noted(shared):
    res = read_file(shared / "backtrader/2006-01-02-volume-min-001.txt")
    assert any("header has 7 names but rows have 8 fields" in n for n in res.notes)


@pytest.mark.parametrize(
    ("rel", "label", "rows", "first", "last"),
    [
        ("freqtrade/ETH_BTC-5m.feather", "5m", 5760, "2018-01-10 04:55", "2018-01-30 04:50"),
        ("backtesting.py/EURUSD.csv", "1h", 5000, "2017-04-19 09:00", "2018-02-07 15:00"),
        ("mplfinance/yahoofinance-SPY-20080101-20180101.csv", "1d", 2519, "2007-12-31", "2017-12-29"),
    ],
)
def test_real_coarse_files_are_skipped(shared, rel, label, rows, first, last, tmp_path):
    res = read_file(shared / rel)
    assert_frame_contract(res.frame)
    assert len(res.frame) == 0
    assert res.skipped == [(str(shared / rel), f"interval {label}, not 1-minute: skipped")]
    info = {i.path: i for i in scan(shared / rel)}[str(shared / rel)]
    assert info.interval_seconds == {"5m": 300, "1h": 3600, "1d": 86400}[label]
    assert (info.rows, info.first, info.last) == (rows, ts(first), ts(last))


def test_real_scan_and_manifest_reuse(shared, tmp_path, load_calls):
    manifest = tmp_path / "manifest.json"
    infos = scan(shared, manifest_path=manifest)
    assert len(load_calls) == 25 == len(infos)  # every bar file, not SOURCES.md
    by_rel = {str(Path(i.path).relative_to(shared)): i for i in infos}
    assert all(i.error is None for i in infos)
    ibm = by_rel[f"{IBM_DIR}/20131007_trade.zip"]
    assert (ibm.fmt, ibm.symbols, ibm.rows, ibm.interval_seconds) == ("zip-csv", ["IBM"], 453, 60)
    assert (ibm.first, ibm.last) == (ts("2013-10-07 08:00"), ts("2013-10-07 23:26"))
    assert by_rel["freqtrade/XRP_ETH-1m.feather"].fmt == "feather"
    assert by_rel["freqtrade/UNITTEST_BTC-1m.json"].fmt == "json"
    assert by_rel["nautilus_trader/fxcm/gbpusd-m1-bid-2012.csv"].fmt == "csv"
    assert json.loads(manifest.read_text())["files"][ibm.path]["rows"] == 453

    load_calls.clear()
    again = scan(shared, manifest_path=manifest)
    assert load_calls == []  # nothing re-read
    assert again == infos


def test_real_read_bars_reads_only_overlapping_files(shared, tmp_path, load_calls):
    manifest = tmp_path / "manifest.json"
    scan(shared, manifest_path=manifest)
    load_calls.clear()
    res = read_bar_files(shared, ts("2013-10-07"), ts("2013-10-08"), manifest_path=manifest)
    assert load_calls == [str(shared / IBM_DIR / "20131007_trade.zip")]
    check_clean_one_minute(res.frame, 453, "IBM", "2013-10-07 08:00", "2013-10-07 23:26")
    assert sorted(res.skipped) == sorted(
        [
            (str(shared / "backtesting.py/EURUSD.csv"), "interval 1h, not 1-minute: skipped"),
            (str(shared / "freqtrade/ETH_BTC-5m.feather"), "interval 5m, not 1-minute: skipped"),
            (
                str(shared / "mplfinance/yahoofinance-SPY-20080101-20180101.csv"),
                "interval 1d, not 1-minute: skipped",
            ),
        ]
    )
    # a window inside one file keeps only its rows (start inclusive, end exclusive)
    load_calls.clear()
    res = read_bar_files(shared, ts("2012-02-01 00:00"), ts("2012-02-01 00:10"), manifest_path=manifest)
    assert load_calls == [str(shared / "nautilus_trader/fxcm/gbpusd-m1-bid-2012.csv")]
    assert res.frame["timestamp"].tolist() == list(
        pd.date_range("2012-02-01", periods=10, freq="1min", tz="UTC")
    )
    # naive bounds are UTC; a window with no data reads nothing
    load_calls.clear()
    res = read_bar_files(
        shared, pd.Timestamp("1999-01-01"), pd.Timestamp("1999-02-01"), manifest_path=manifest
    )
    assert load_calls == [] and len(res.frame) == 0


def test_real_read_bars_totals_per_lean_symbol(shared):
    ibm = read_bar_files(shared / IBM_DIR, ts("2013-01-01"), ts("2014-01-01"))
    assert len(ibm.frame) == 2566
    assert (ibm.frame["timestamp"].min(), ibm.frame["timestamp"].max()) == (
        ts("2013-10-04 12:28"),
        ts("2013-10-11 23:52"),
    )
    btc = read_bar_files(shared / BTC_DIR, ts("2016-01-01"), ts("2019-01-01"))
    assert len(btc.frame) == 12423
    assert (btc.frame["timestamp"].min(), btc.frame["timestamp"].max()) == (
        ts("2016-10-07"),
        ts("2018-04-06 23:59"),
    )


# ------------------------------------------------------------------------------------------------------------
# Symbols from paths
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "symbol"),
    [
        ("lean/Data/equity/usa/minute/ibm/20131004_trade.zip", "IBM"),
        ("lean/Data/crypto/coinbase/minute/btcusd/20161007_trade.zip", "BTCUSD"),
        ("freqtrade/UNITTEST_BTC-1m.json", "UNITTEST_BTC"),
        ("freqtrade/XRP_ETH-1m.feather", "XRP_ETH"),
        ("freqtrade/ETH_BTC-5m.feather", "ETH_BTC"),
        ("nautilus_trader/btc-perp-20211231-20220201_1m.csv", "BTC-PERP"),
        ("nautilus_trader/fxcm/gbpusd-m1-bid-2012.csv", "GBPUSD"),
        ("mplfinance/SP500_NOV2019_IDay.csv", "SP500"),
        ("mplfinance/yahoofinance-SPY-20080101-20180101.csv", "SPY"),
        ("backtrader/2006-01-02-volume-min-001.txt", "BACKTRADER"),
        ("x/aapl_1min.csv.gz", "AAPL"),
        ("x/BRK.B-daily.parquet", "BRK.B"),
        ("x/EURUSD_H1.csv", "EURUSD"),
        ("solusdt/2024-01-05.csv", "SOLUSDT"),
        ("data/1m.csv", "DATA"),
    ],
)
def test_symbol_from_path(path, symbol):
    assert symbol_from_path(path) == symbol


# ------------------------------------------------------------------------------------------------------------
# Small fixtures: one per shape
# ------------------------------------------------------------------------------------------------------------


def bars(res) -> list[tuple]:
    f = res.frame
    return list(
        zip(
            f["symbol"],
            f["timestamp"],
            f["open"],
            f["high"],
            f["low"],
            f["close"],
            f["volume"],
            f["source_line"],
            strict=True,
        )
    )


def test_semicolon_separated_with_decimal_comma_and_dotted_dates():
    res = read_file(FIXTURES / "eurusd-semicolon-1m.csv")
    assert_frame_contract(res.frame)
    assert bars(res) == [
        ("EURUSD-SEMICOLON", ts("2021-01-04 09:30"), 1.2250, 1.2260, 1.2240, 1.2255, 1500.0, 2),
        ("EURUSD-SEMICOLON", ts("2021-01-04 09:31"), 1.2255, 1.2270, 1.2250, 1.2265, 12.0, 3),
        ("EURUSD-SEMICOLON", ts("2021-01-04 09:32"), 1.2265, 1.2266, 1.2230, 1.2231, 7.0, 4),
    ]


def test_semicolon_file_with_dot_decimals_is_not_decimal_comma(tmp_path):
    path = tmp_path / "dots.csv"
    path.write_text("time;open;high;low;close;volume\n2021-01-04 09:30;1.5;2.25;1.0;2.0;1.000\n")
    assert bars(read_file(path)) == [("DOTS", ts("2021-01-04 09:30"), 1.5, 2.25, 1.0, 2.0, 1.0, 2)]


def test_tab_separated_iso_with_t():
    res = read_file(FIXTURES / "tabbed_1min.tsv")
    assert bars(res)[0] == ("TABBED", ts("2021-01-04 09:30"), 10.0, 10.5, 9.5, 10.2, 100.0, 2)
    assert len(res.frame) == 3


def test_no_header():
    res = read_file(FIXTURES / "noheader.csv")
    assert bars(res) == [
        ("NOHEADER", ts("2021-01-04 09:30"), 1.0, 2.0, 0.5, 1.5, 100.0, 1),
        ("NOHEADER", ts("2021-01-04 09:31"), 1.5, 2.5, 1.0, 2.0, 200.0, 2),
        ("NOHEADER", ts("2021-01-04 09:32"), 2.0, 2.1, 1.9, 2.05, 300.0, 3),
    ]


def test_epoch_seconds():
    res = read_file(FIXTURES / "epoch_s.csv")
    assert res.frame["timestamp"].tolist() == [
        ts("2021-01-04 09:30"),
        ts("2021-01-04 09:31"),
        ts("2021-01-04 09:32"),
    ]
    assert res.frame["open"].tolist() == [1.0, 1.05, 1.1]
    assert not any("naive" in n for n in res.notes)  # epoch is UTC by definition


def test_epoch_milliseconds_with_a_seconds_value_decided_per_value():
    res = read_file(FIXTURES / "epoch_ms.csv")
    assert res.frame["timestamp"].tolist() == list(
        pd.date_range("2021-01-04 09:30", periods=4, freq="1min", tz="UTC")
    )
    assert res.frame["symbol"].iloc[0] == "EPOCH_MS"
    assert any("mixed units" in n for n in res.notes)


def test_compact_date_time_without_header():
    res = read_file(FIXTURES / "eurusd_m1_histdata.csv")
    assert bars(res)[0] == ("EURUSD", ts("2011-03-01 09:31"), 1.38010, 1.38020, 1.38000, 1.38015, 0.0, 1)
    assert res.frame["timestamp"].iloc[-1] == ts("2011-03-01 09:33")
    assert not res.frame["volume_missing"].any()


def test_compact_date_and_time_columns_with_symbol_column():
    res = read_file(FIXTURES / "finam_export.txt", tz="Europe/Moscow")
    # 20110301 93100 Moscow (UTC+3 in 2011) = 06:31 UTC; TIME is not zero-padded
    assert bars(res)[0] == ("SBER", ts("2011-03-01 06:31"), 100.5, 101.0, 100.0, 100.8, 1500.0, 2)
    assert len(res.frame) == 3


def test_iso_with_mixed_offsets_and_microseconds():
    res = read_file(FIXTURES / "iso_offsets.csv")
    assert res.frame["timestamp"].tolist() == [
        ts("2021-03-01 08:30:00.123456"),
        ts("2021-03-01 08:31:00"),
        ts("2021-03-01 08:32:00.000001"),
        ts("2021-03-01 08:33:00"),
    ]
    assert not any("naive" in n for n in res.notes)


def test_date_and_time_in_separate_named_columns():
    res = read_file(FIXTURES / "date_time_columns.csv", tz=NY)
    assert bars(res)[0] == ("DATE_TIME_COLUMNS", ts("2021-01-04 14:30"), 7.0, 7.5, 6.5, 7.2, 10.0, 2)


def test_date_and_am_pm_time_columns(tmp_path):
    path = tmp_path / "ampm.csv"
    path.write_text(
        "Date,Time,Open,High,Low,Close,Volume\n"
        "01/04/2021,12:59 PM,1,2,0.5,1.5,1\n"
        "01/04/2021,01:00 PM,1,2,0.5,1.5,1\n"
    )
    assert read_file(path).frame["timestamp"].tolist() == [ts("2021-01-04 12:59"), ts("2021-01-04 13:00")]
    bad = tmp_path / "words.csv"
    bad.write_text(
        "Date,Time,Open,High,Low,Close\n01/04/2021,half past nine,1,2,0.5,1.5\n01/04/2021,ten,1,2,0.5,1.5\n"
    )
    with pytest.raises(BarFileError, match="column 'Time' is not a recognisable time of day"):
        read_file(bad)  # never silently fall back to the date alone


def test_headerless_symbol_column_before_epoch(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("aapl,1609752600,1,2,0.5,1.5,100\naapl,1609752660,1,2,0.5,1.25,200\n")
    assert bars(read_file(path)) == [
        ("AAPL", ts("2021-01-04 09:30"), 1.0, 2.0, 0.5, 1.5, 100.0, 1),
        ("AAPL", ts("2021-01-04 09:31"), 1.0, 2.0, 0.5, 1.25, 200.0, 2),
    ]


def test_nonstandard_column_order_by_name_and_by_content():
    named = read_file(FIXTURES / "ochl-order.csv")  # Date,Open,Close,High,Low
    assert bars(named)[0] == ("OCHL-ORDER", ts("2019-11-05 09:30"), 1.0, 2.0, 0.5, 1.5, 0.0, 2)
    assert named.frame["volume_missing"].all()
    unnamed = read_file(FIXTURES / "ochl_noheader.csv")  # same order, no header: told by the values
    assert [b[2:6] for b in bars(unnamed)] == [
        (1.0, 2.0, 0.5, 1.5),
        (1.5, 1.6, 1.1, 1.2),
        (1.2, 1.4, 1.0, 1.3),
    ]
    assert any("not in open,high,low,close order" in n for n in unnamed.notes)


def test_json_records_with_a_missing_field():
    path = FIXTURES / "records-1m.json"
    res = read_file(path)
    f = res.frame
    assert len(f) == 4
    assert f["symbol"].iloc[0] == "RECORDS"
    assert f["timestamp"].iloc[2] == ts("2021-01-04 09:32")
    assert np.isnan(f["close"].iloc[2])
    assert json.loads(f["raw"].iloc[2]) == {
        "timestamp": "2021-01-04T09:32:00Z",
        "open": 3.3,
        "high": 3.3,
        "low": 3.0,
        "volume": 12,
    }
    assert f["raw"].isna().tolist() == [True, True, False, True]
    assert f["source_line"].tolist() == [1, 2, 3, 4]


def test_json_arrays_wrapped_in_an_object_with_string_numbers():
    res = read_file(FIXTURES / "wrapped_arrays.json")
    assert bars(res) == [
        ("WRAPPED_ARRAYS", ts("2021-01-04 09:30"), 4.0, 4.5, 3.5, 4.2, 100.0, 1),
        ("WRAPPED_ARRAYS", ts("2021-01-04 09:31"), 4.2, 4.4, 4.1, 4.3, 110.0, 2),
        ("WRAPPED_ARRAYS", ts("2021-01-04 09:32"), 4.3, 4.3, 4.0, 4.1, 120.0, 3),
    ]


def test_json_nested_under_an_exchange_envelope(tmp_path):
    path = tmp_path / "ETHUSD-1m.json"
    path.write_text(
        json.dumps(
            {
                "error": [],
                "result": {"XETHZUSD": [[1609752600, "730.1", "731", "729", "730.5", "5"]], "last": 1},
            }
        )
    )
    assert bars(read_file(path)) == [("ETHUSD", ts("2021-01-04 09:30"), 730.1, 731.0, 729.0, 730.5, 5.0, 1)]


def test_json_lines(tmp_path):
    path = tmp_path / "ndj.jsonl"
    path.write_text('{"t": 1609752600, "o": 1, "h": 2, "l": 0.5, "c": 1.5, "v": 3}\n' * 1)
    res = read_file(path)
    assert bars(res) == [("NDJ", ts("2021-01-04 09:30"), 1.0, 2.0, 0.5, 1.5, 3.0, 1)]


def _parquet_frame(tz: str | None) -> pd.DataFrame:
    idx = pd.date_range("2021-06-01 09:30", periods=5, freq="1min", tz=tz, name="datetime")
    return pd.DataFrame(
        {
            "Open": [1.0, 2, 3, 4, 5],
            "High": [2.0, 3, 4, 5, 6],
            "Low": [0.5, 1, 2, 3, 4],
            "Close": [1.5, 2, 3, 4, 5],
        },
        index=idx,
    ).assign(Volume=[10, 20, 30, 40, 50])


def test_parquet_with_tz_aware_index(tmp_path):
    path = tmp_path / "msft_1m.parquet"
    _parquet_frame(NY).to_parquet(path)
    res = read_file(path)
    assert bars(res)[0] == ("MSFT", ts("2021-06-01 13:30"), 1.0, 2.0, 0.5, 1.5, 10.0, 1)
    assert len(res.frame) == 5
    assert not any("naive" in n for n in res.notes)


def test_parquet_naive_uses_tz_argument(tmp_path):
    path = tmp_path / "msft.parquet"
    _parquet_frame(None).to_parquet(path)
    res = read_file(path, tz=NY)
    assert res.frame["timestamp"].iloc[0] == ts("2021-06-01 13:30")
    assert f"{path}: naive timestamps read as {NY} (TIS_MARKET_TZ)" in res.notes


def test_feather(tmp_path):
    path = tmp_path / "NVDA-1m.feather"
    _parquet_frame("UTC").reset_index().to_feather(path)
    res = read_file(path)
    assert bars(res)[-1] == ("NVDA", ts("2021-06-01 09:34"), 5.0, 6.0, 4.0, 5.0, 50.0, 5)


def test_gzip_csv(tmp_path):
    path = tmp_path / "abc-1m.csv.gz"
    path.write_bytes(gzip.compress((FIXTURES / "noheader.csv").read_bytes()))
    res = read_file(path)
    assert bars(res)[1] == ("ABC", ts("2021-01-04 09:31"), 1.5, 2.5, 1.0, 2.0, 200.0, 2)
    assert {i.path: i.fmt for i in scan(tmp_path)}[str(path)] == "gz-csv"


def test_zip_with_several_members(tmp_path):
    path = tmp_path / "bundle.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("AAA.csv", (FIXTURES / "noheader.csv").read_text())
        zf.writestr("sub/BBB.tsv", (FIXTURES / "tabbed_1min.tsv").read_text())
    res = read_file(path)
    f = res.frame
    assert f.groupby("symbol").size().to_dict() == {"AAA": 3, "BBB": 3}
    assert set(f["source_file"]) == {f"{path}!AAA.csv", f"{path}!sub/BBB.tsv"}
    assert f.loc[f["symbol"] == "BBB", "source_line"].tolist() == [2, 3, 4]


def test_bom_and_crlf(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(
        b"\xef\xbb\xbfTimestamp,Open,High,Low,Close,Volume\r\n"
        b"2021-01-04 09:30,1,2,0.5,1.5,3\r\n2021-01-04 09:31,1,2,0.5,1.25,4\r\n"
    )
    res = read_file(path)
    assert bars(res) == [
        ("BOM", ts("2021-01-04 09:30"), 1.0, 2.0, 0.5, 1.5, 3.0, 2),
        ("BOM", ts("2021-01-04 09:31"), 1.0, 2.0, 0.5, 1.25, 4.0, 3),
    ]
    assert res.frame["raw"].isna().all()


def test_quoted_numbers_with_thousands_separators():
    res = read_file(FIXTURES / "quoted_thousands.csv")
    assert bars(res) == [
        ("QUOTED_THOUSANDS", ts("2021-01-04 09:30"), 1234.5, 1240.0, 1230.25, 1235.0, 12000.0, 2),
        ("QUOTED_THOUSANDS", ts("2021-01-04 09:31"), 1235.0, 1236.0, 1233.0, 1234.0, 9500.0, 3),
    ]


def test_bad_rows_are_kept_with_raw_text_and_line_numbers():
    path = FIXTURES / "messy.csv"
    res = read_file(path)
    f = res.frame
    assert_frame_contract(f)
    assert f["source_line"].tolist() == [2, 3, 4, 6, 7, 8, 9, 10]  # line 5 is blank
    lines = path.read_text().split("\n")
    expected_raw = {3: lines[2], 4: lines[3], 6: lines[5], 7: lines[6], 8: lines[7], 10: lines[9]}
    got_raw = {int(n): r for n, r in zip(f["source_line"], f["raw"], strict=True) if r is not None}
    assert got_raw == expected_raw
    assert isinstance(got_raw[3], str)
    by_line = f.set_index("source_line")
    ohlcv = ["open", "high", "low", "close", "volume"]
    assert np.isnan(by_line.loc[3, "high"]) and by_line.loc[3, "low"] == 0.9  # text in a numeric column
    # a wrong column count: values cannot be trusted by position, the timestamp is kept
    assert by_line.loc[4, "raw"].endswith(",10,99")
    assert by_line.loc[4, ohlcv].isna().all() and by_line.loc[4, "timestamp"] == ts("2021-01-04 09:32")
    assert np.isnan(by_line.loc[6, "low"]) and by_line.loc[6, "high"] == 1.1  # NaN
    assert np.isnan(by_line.loc[7, "close"]) and by_line.loc[7, "volume"] == 10  # empty field
    assert pd.isna(by_line.loc[8, "timestamp"]) and by_line.loc[8, "open"] == 1.0  # unparseable timestamp
    # truncated last line (no newline): timestamp kept, values NaN
    assert by_line.loc[10, "timestamp"] == ts("2021-01-04 09:37") and by_line.loc[10, ohlcv].isna().all()
    assert by_line.loc[9, "raw"] is None and by_line.loc[9, "close"] == 1.0
    assert_bad_rows_have_a_missing_value(f)
    assert (
        f"{path}: 6 row(s) could not be parsed and are kept with their raw text (first at line 3)"
        in res.notes
    )


def test_header_only_and_empty_files(tmp_path):
    header = tmp_path / "hdr.csv"
    header.write_text("timestamp,open,high,low,close,volume\n")
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    empty_json = tmp_path / "none.json"
    empty_json.write_text("[]")
    for path, note in (
        (header, "header only: no rows"),
        (empty, "empty file: no rows"),
        (empty_json, "empty JSON array"),
    ):
        res = read_file(path)
        assert_frame_contract(res.frame)
        assert len(res.frame) == 0
        assert any(n.startswith(f"{path}: {note}") for n in res.notes), res.notes
        assert res.skipped == []


def test_binary_garbage_named_csv_raises(tmp_path):
    path = tmp_path / "garbage.csv"
    path.write_bytes(random.Random(7).randbytes(5000))
    with pytest.raises(BarFileError) as exc:
        read_file(path)
    assert exc.value.path == str(path)
    assert str(exc.value).startswith(f"{path}")
    assert "binary content" in str(exc.value)


def test_corrupt_and_half_written_parquet_raise(tmp_path):
    good = tmp_path / "ok.parquet"
    _parquet_frame("UTC").to_parquet(good)
    half = tmp_path / "half.parquet"
    half.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    fake = tmp_path / "fake.parquet"
    fake.write_bytes(b"PAR1" + b"\x00" * 100)
    for path in (half, fake):
        with pytest.raises(BarFileError, match="corrupt or incomplete Parquet") as exc:
            read_file(path)
        assert exc.value.path == str(path) and str(path) in str(exc.value)


def test_unreadable_zip_and_invalid_json_raise(tmp_path):
    bad_zip = tmp_path / "x.zip"
    bad_zip.write_bytes(b"PK\x03\x04" + random.Random(3).randbytes(300))
    with pytest.raises(BarFileError, match="unreadable zip archive") as exc:
        read_file(bad_zip)
    assert exc.value.path == str(bad_zip)
    bad_json = tmp_path / "x.json"
    bad_json.write_text("[\n  [1609752600000, 1, 2, 0.5, 1.5, 3],\n  [1609752660000, 1, 2\n")
    with pytest.raises(BarFileError, match="invalid JSON") as exc:
        read_file(bad_json)
    assert exc.value.line == 4
    assert str(exc.value).startswith(f"{bad_json}, line 4: ")


# ------------------------------------------------------------------------------------------------------------
# Reader limits (readers/limits.py), each moved through its environment variable
# ------------------------------------------------------------------------------------------------------------


def repetitive_csv(rows: int) -> bytes:
    """A valid 1-minute CSV of ``rows`` rows that compresses well (about 40 bytes a row)."""
    lines = ["timestamp,symbol,open,high,low,close,volume"]
    lines += [f"2021-01-04 {9 + i // 60:02d}:{i % 60:02d}:00,AAA,1,2,0.5,1.5,10" for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


def test_file_size_limit_from_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "aaa.csv"
    path.write_bytes(repetitive_csv(30))
    size = path.stat().st_size
    assert len(read_file(path).frame) == 30  # within the default of 1 GiB
    monkeypatch.setenv("TIS_MAX_FILE_BYTES", str(size - 1))
    with pytest.raises(BarFileError) as exc:
        read_file(path)
    assert exc.value.path == str(path)
    assert str(exc.value) == (
        f"{path}: {size:,} bytes, over the limit of {size - 1:,} bytes (TIS_MAX_FILE_BYTES)"
    )
    monkeypatch.setenv("TIS_MAX_FILE_BYTES", str(size))
    assert len(read_file(path).frame) == 30  # at the limit is within it


def test_decompressed_size_limit_from_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "aaa.csv.gz"
    text = repetitive_csv(300)
    path.write_bytes(gzip.compress(text))
    assert path.stat().st_size < 2_000 < len(text)
    monkeypatch.setenv("TIS_MAX_FILE_BYTES", "2000")  # the .gz is within it, its text is not
    with pytest.raises(BarFileError) as exc:
        read_file(path)
    assert str(exc.value) == (
        f"{path}: the gz archive expands to more than 2,000 bytes (TIS_MAX_FILE_BYTES): stopped there"
    )


def test_compression_ratio_limit_from_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "aaa.csv.gz"
    text = repetitive_csv(300)
    path.write_bytes(gzip.compress(text))
    packed = path.stat().st_size
    ratio = len(text) / packed
    assert 5 < ratio < 200  # the default of 200 reads it
    assert len(read_file(path).frame) == 300
    monkeypatch.setenv("TIS_MAX_COMPRESSION_RATIO", "2.5")
    with pytest.raises(BarFileError) as exc:
        read_file(path)
    assert exc.value.path == str(path)
    assert str(exc.value) == (
        f"{path}: the gz archive expands to more than 2.5 x its {packed:,} compressed bytes "
        f"(TIS_MAX_COMPRESSION_RATIO): stopped at {int(2.5 * packed):,} bytes, likely a compression bomb"
    )
    monkeypatch.setenv("TIS_MAX_COMPRESSION_RATIO", str(ratio + 0.01))
    assert len(read_file(path).frame) == 300


def test_line_length_limit_from_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "aaa.csv"
    long_row = "2021-01-04 09:31:00,AAA,1.000000000000000000000000000000,2,0.5,1.5,10"
    path.write_text(
        f"timestamp,symbol,open,high,low,close,volume\n2021-01-04 09:30:00,AAA,1,2,0.5,1.5,10\n{long_row}\n"
    )
    assert len(read_file(path).frame) == 2
    monkeypatch.setenv("TIS_MAX_LINE_BYTES", "60")
    with pytest.raises(BarFileError) as exc:
        read_file(path)
    assert (exc.value.path, exc.value.line) == (str(path), 3)
    assert str(exc.value) == (
        f"{path}, line 3: a line of {len(long_row)} bytes, over the limit of 60 bytes (TIS_MAX_LINE_BYTES)"
    )
    monkeypatch.setenv("TIS_MAX_LINE_BYTES", str(len(long_row)))
    assert len(read_file(path).frame) == 2


def test_field_count_limit_from_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "aaa.csv"
    path.write_text(
        "timestamp,symbol,open,high,low,close,volume\n"
        "2021-01-04 09:30:00,AAA,1,2,0.5,1.5,10\n"
        "2021-01-04 09:31:00,AAA,1,2,0.5,1.5,10,,\n"
    )
    assert len(read_file(path).frame) == 2  # the trailing empty fields are within the default of 256
    monkeypatch.setenv("TIS_MAX_FIELDS", "8")
    with pytest.raises(BarFileError) as exc:
        read_file(path)
    assert (exc.value.path, exc.value.line) == (str(path), 3)
    assert (
        str(exc.value) == f"{path}, line 3: a line of 9 fields, over the limit of 8 fields (TIS_MAX_FIELDS)"
    )
    monkeypatch.setenv("TIS_MAX_FIELDS", "9")
    assert len(read_file(path).frame) == 2


def test_zip_member_over_the_limits_from_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "bundle.zip"
    text = repetitive_csv(300)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("AAA.csv", text)
    packed = zipfile.ZipFile(path).getinfo("AAA.csv").compress_size
    assert path.stat().st_size < 3_000 < len(text)
    assert len(read_file(path).frame) == 300
    monkeypatch.setenv("TIS_MAX_FILE_BYTES", "3000")  # the zip is within it, its member is not
    with pytest.raises(BarFileError) as exc:
        read_file(path)
    assert exc.value.path == str(path)
    assert str(exc.value) == (
        f"{path}: member 'AAA.csv': {len(text):,} bytes, over the limit of 3,000 bytes (TIS_MAX_FILE_BYTES)"
    )
    monkeypatch.delenv("TIS_MAX_FILE_BYTES")
    monkeypatch.setenv("TIS_MAX_COMPRESSION_RATIO", "2")
    with pytest.raises(BarFileError) as exc:
        read_file(path)
    assert str(exc.value) == (
        f"{path}: member 'AAA.csv' expands to more than 2 x its {packed:,} compressed bytes "
        f"(TIS_MAX_COMPRESSION_RATIO): stopped at {2 * packed:,} bytes, likely a compression bomb"
    )


def test_a_file_refused_by_a_limit_is_read_once_the_limit_is_raised(tmp_path, monkeypatch):
    """The manifest remembers the limits like tz: a changed limit re-learns the files."""
    root = tmp_path / "data"
    root.mkdir()
    path = root / "aaa.csv"
    path.write_bytes(repetitive_csv(30))
    manifest = tmp_path / "manifest.json"
    monkeypatch.setenv("TIS_MAX_FILE_BYTES", "100")
    [refused] = scan(root, manifest_path=manifest)
    assert refused.error is not None and "(TIS_MAX_FILE_BYTES)" in refused.error
    monkeypatch.delenv("TIS_MAX_FILE_BYTES")
    [read] = scan(root, manifest_path=manifest)
    assert read.error is None and read.rows == 30


def test_named_timestamp_in_no_known_format(tmp_path):
    odd = tmp_path / "odd.csv"
    odd.write_text(
        "timestamp,open,high,low,close\nJan 4 2021 9:30am,1,2,0.5,1.5\nJan 4 2021 9:31am,1,2,0.5,1.5\n"
    )
    res = read_file(odd)
    assert res.frame["timestamp"].tolist() == [ts("2021-01-04 09:30"), ts("2021-01-04 09:31")]
    assert any("parsed value by value" in n for n in res.notes)
    odd.write_text("timestamp,open,high,low,close\nfoo,1,2,0.5,1.5\nbar,1,2,0.5,1.5\n")
    with pytest.raises(BarFileError, match=r"cannot recognise the timestamp format \(e.g. 'foo', 'bar'\)"):
        read_file(odd)


def test_unrecognisable_text_raises_with_the_reason(tmp_path):
    path = tmp_path / "notes.csv"
    path.write_text("name,comment,owner,team,place\nfoo,bar,baz,qux,quux\nfoo,bar,baz,qux,quux\n")
    with pytest.raises(BarFileError, match="no timestamp column found"):
        read_file(path)


def test_bar_label_close_shifts_back_one_interval():
    path = FIXTURES / "tabbed_1min.tsv"
    opened = read_file(path)
    closed = read_file(path, bar_label="close")
    assert (closed.frame["timestamp"] == opened.frame["timestamp"] - pd.Timedelta(minutes=1)).all()
    assert closed.frame["timestamp"].iloc[0] == ts("2021-01-04 09:29")
    assert any("bar_label=close" in n for n in closed.notes)
    with pytest.raises(ValueError, match="bar_label"):
        read_file(path, bar_label="middle")


def test_json_arrays_of_the_wrong_length_and_an_empty_symbol_cell(tmp_path):
    arrays = tmp_path / "arr.json"
    arrays.write_text(
        "[[1609752600000, 1, 2, 0.5, 1.5, 3], [1609752660000, 1, 2, 0.5], [1609752720000, 1, 2, 0.5, 1.5, 3]]"
    )
    f = read_file(arrays).frame
    assert f["raw"].tolist() == [None, "[1609752660000, 1, 2, 0.5]", None]
    assert f["timestamp"].iloc[1] == ts("2021-01-04 09:31") and f[["open", "close"]].iloc[1].isna().all()
    assert_bad_rows_have_a_missing_value(f)
    symbols = tmp_path / "syms.csv"
    symbols.write_text(
        "ticker,time,open,high,low,close,volume\n"
        "abc,2021-01-04 09:30,1,2,0.5,1.5,3\n"
        " ,2021-01-04 09:31,1,2,0.5,1.5,3\n"
    )
    f = read_file(symbols).frame
    assert f["symbol"].iloc[0] == "ABC" and pd.isna(f["symbol"].iloc[1])
    assert f["raw"].tolist() == [None, " ,2021-01-04 09:31,1,2,0.5,1.5,3"]
    assert_bad_rows_have_a_missing_value(f)
    assert scan(symbols)[0].symbols == ["ABC"]


def test_several_symbols_in_one_file_each_with_its_interval():
    path = FIXTURES / "multi_symbol.csv"
    res = read_file(path)
    f = res.frame
    assert f["symbol"].tolist() == ["AAA", "AAA", "AAA"]  # upper-cased from the column
    assert f["source_line"].tolist() == [2, 4, 6]
    assert f["close"].tolist() == [1.5, 1.8, 1.75]
    assert res.skipped == [(str(path), "symbol BBB: interval 5m, not 1-minute: skipped")]
    info = scan(path)[0]
    assert (info.symbols, info.interval_seconds, info.rows) == (["AAA", "BBB"], 60, 6)


def test_dst_gap_local_times_are_kept_as_bad_rows(tmp_path):
    path = tmp_path / "dst.csv"
    rows = [f"2021-03-14 01:5{m},1,2,0.5,1.5,1" for m in (8, 9)] + ["2021-03-14 02:00,1,2,0.5,1.5,1"]
    rows += ["2021-03-14 03:00,1,2,0.5,1.5,1", "2021-03-14 03:01,1,2,0.5,1.5,1"]
    path.write_text("datetime,open,high,low,close,volume\n" + "\n".join(rows) + "\n")
    f = read_file(path, tz=NY).frame
    assert f["timestamp"].tolist()[:2] == [ts("2021-03-14 06:58"), ts("2021-03-14 06:59")]
    assert pd.isna(f["timestamp"].iloc[2]) and f["raw"].iloc[2] == rows[2]  # 02:00 does not exist in New York
    assert f["timestamp"].tolist()[3:] == [ts("2021-03-14 07:00"), ts("2021-03-14 07:01")]


def test_us_dates_day_first_when_the_values_say_so(tmp_path):
    path = tmp_path / "eu.csv"
    path.write_text("Date,Open,High,Low,Close\n13/1/2021 9:30,1,2,0.5,1.5\n13/1/2021 9:31,1,2,0.5,1.5\n")
    assert read_file(path).frame["timestamp"].tolist() == [ts("2021-01-13 09:30"), ts("2021-01-13 09:31")]


def test_lean_layout_is_detected_from_the_path(tmp_path):
    def lean_zip(kind: str, market: str, sym: str) -> Path:
        folder = tmp_path / "Data" / kind / market / "minute" / sym
        folder.mkdir(parents=True)
        path = folder / "20200102_trade.zip"
        with zipfile.ZipFile(path, "w") as zf:
            # 09:30 and 09:31 after midnight
            zf.writestr(
                f"20200102_{sym}_minute_trade.csv",
                "34200000,1000000,1010000,990000,1005000,100\n34260000,1005000,1006000,1004000,1005000,50",
            )
        return path

    eq = read_file(lean_zip("equity", "usa", "xyz"))
    assert bars(eq) == [
        ("XYZ", ts("2020-01-02 14:30"), 100.0, 101.0, 99.0, 100.5, 100.0, 1),
        ("XYZ", ts("2020-01-02 14:31"), 100.5, 100.6, 100.4, 100.5, 50.0, 2),
    ]
    cr = read_file(lean_zip("crypto", "kraken", "abcusd"))  # UTC, not scaled
    assert bars(cr)[0] == (
        "ABCUSD",
        ts("2020-01-02 09:30"),
        1000000.0,
        1010000.0,
        990000.0,
        1005000.0,
        100.0,
        1,
    )
    quote = tmp_path / "Data" / "equity" / "usa" / "minute" / "xyz" / "20200102_quote.zip"
    quote.write_bytes(b"irrelevant")
    res = read_file(quote)
    assert len(res.frame) == 0 and res.skipped == [(str(quote), "Lean quote file, not trade bars: skipped")]
    plain = tmp_path / "elsewhere" / "20200102_trade.zip"  # same bytes outside a Lean tree: nothing assumed
    plain.parent.mkdir()
    shutil.copy(lean_zip("equity", "india", "qqq"), plain)
    assert read_file(plain).frame["open"].iloc[0] == 1000000.0
    no_date = tmp_path / "elsewhere" / "trades.zip"
    with zipfile.ZipFile(no_date, "w") as zf:
        zf.writestr("trades.csv", "34200000,1,2,0.5,1.5,100\n34260000,1,2,0.5,1.5,100\n")
    with pytest.raises(BarFileError, match="milliseconds since midnight, but the file name has no YYYYMMDD"):
        read_file(no_date)


# ------------------------------------------------------------------------------------------------------------
# Manifest and read_bars on fixtures copied to a temporary directory
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture
def data_dir(tmp_path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    for name in ("noheader.csv", "tabbed_1min.tsv", "messy.csv", "iso_offsets.csv", "multi_symbol.csv"):
        shutil.copy(FIXTURES / name, root / name)
    (root / "README.txt").write_text("not bars")
    return root


def test_manifest_relearns_changed_and_touched_files_only(data_dir, tmp_path, load_calls):
    manifest = tmp_path / "m" / "manifest.json"
    first = scan(data_dir, manifest_path=manifest)
    assert sorted(Path(c).name for c in load_calls) == sorted(
        ["noheader.csv", "tabbed_1min.tsv", "messy.csv", "iso_offsets.csv", "multi_symbol.csv"]
    )
    assert all(isinstance(i, FileInfo) for i in first)

    load_calls.clear()
    assert scan(data_dir, manifest_path=manifest) == first
    assert load_calls == []

    changed = data_dir / "noheader.csv"
    with changed.open("a") as fh:
        fh.write("2021-01-04 09:33:00,2.05,2.2,2.0,2.1,400\n")
    load_calls.clear()
    second = {i.path: i for i in scan(data_dir, manifest_path=manifest)}
    assert load_calls == [str(changed)]
    assert second[str(changed)].rows == 4
    assert second[str(changed)].last == ts("2021-01-04 09:33")

    touched = data_dir / "iso_offsets.csv"
    st = touched.stat()
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    load_calls.clear()
    scan(data_dir, manifest_path=manifest)
    assert load_calls == [str(touched)]

    load_calls.clear()
    scan(data_dir, manifest_path=manifest, tz=NY)  # another time zone changes what naive files mean
    assert len(load_calls) == 5


def test_manifest_records_failures_and_read_bars_leaves_them_out(data_dir, tmp_path):
    manifest = tmp_path / "manifest.json"
    whole = read_bar_files(data_dir, ts("2021-01-04"), ts("2021-01-05"), manifest_path=manifest)
    bad = data_dir / "zz_garbage.csv"
    bad.write_bytes(random.Random(11).randbytes(2000))
    infos = {Path(i.path).name: i for i in scan(data_dir, manifest_path=manifest)}
    error = infos["zz_garbage.csv"].error
    assert "binary content" in error
    assert infos["zz_garbage.csv"].rows == 0
    # a file that cannot be read cannot show which days it holds: named in every window, the others still read
    with_bad = read_bar_files(data_dir, ts("2021-01-04"), ts("2021-01-05"), manifest_path=manifest)
    assert with_bad.unreadable == [(str(bad), error)]
    pd.testing.assert_frame_equal(with_bad.frame, whole.frame)
    # even in a window that no good file overlaps
    empty = read_bar_files(data_dir, ts("2030-01-01"), ts("2030-01-02"), manifest_path=manifest)
    assert empty.unreadable == [(str(bad), error)] and len(empty.frame) == 0

    # with a date in its name it blocks that day's windows, and only those
    dated = data_dir / "zz_garbage_2021-01-04.csv"
    bad.rename(dated)
    with pytest.raises(BarFileError) as exc:
        read_bar_files(data_dir, ts("2021-01-04 12:00"), ts("2021-01-04 13:00"), manifest_path=manifest)
    assert exc.value.path == str(dated)
    assert str(exc.value).startswith(f"{dated}: failed to read: {dated}, line 1: binary content")
    other = read_bar_files(data_dir, ts("2021-01-05"), ts("2021-01-06"), manifest_path=manifest)
    assert other.unreadable == []


def test_read_bars_windows_keep_bad_rows_once(data_dir, tmp_path, load_calls):
    manifest = tmp_path / "manifest.json"
    scan(data_dir, manifest_path=manifest)
    load_calls.clear()
    whole = read_bar_files(data_dir, ts("2021-01-04"), ts("2021-01-05"), manifest_path=manifest)
    assert sorted(Path(c).name for c in load_calls) == [
        "messy.csv",
        "multi_symbol.csv",
        "noheader.csv",
        "tabbed_1min.tsv",
    ]
    assert whole.frame.groupby("symbol").size().to_dict() == {
        "AAA": 3,
        "MESSY": 8,
        "NOHEADER": 3,
        "TABBED": 3,
    }
    assert (
        str(data_dir / "multi_symbol.csv"),
        "symbol BBB: interval 5m, not 1-minute: skipped",
    ) in whole.skipped

    # split the day at 09:35: the unparseable-timestamp row (line 8) follows the row before it (09:34)
    early = read_bar_files(data_dir, ts("2021-01-04"), ts("2021-01-04 09:35"), manifest_path=manifest).frame
    late = read_bar_files(data_dir, ts("2021-01-04 09:35"), ts("2021-01-05"), manifest_path=manifest).frame
    messy_early = early.loc[early["symbol"] == "MESSY", "source_line"].tolist()
    messy_late = late.loc[late["symbol"] == "MESSY", "source_line"].tolist()
    assert messy_early == [2, 3, 4, 6, 7, 8]
    assert messy_late == [9, 10]
    assert len(early) + len(late) == len(whole.frame)
    assert (late["timestamp"].dropna() >= ts("2021-01-04 09:35")).all()

    load_calls.clear()
    march = read_bar_files(data_dir, ts("2021-03-01"), ts("2021-03-02"), manifest_path=manifest)
    assert load_calls == [str(data_dir / "iso_offsets.csv")]
    assert len(march.frame) == 4


def test_hundreds_of_thousands_of_rows_parse_exactly(tmp_path):
    n = 300_000
    start = pd.Timestamp("2020-01-01")
    stamps = pd.date_range(start, periods=n, freq="1min").strftime("%Y-%m-%d %H:%M:%S")
    price = np.round(100 + np.cumsum(np.random.default_rng(0).normal(0, 0.01, n)), 4)
    frame = pd.DataFrame(
        {
            "timestamp": stamps,
            "open": price,
            "high": price + 0.01,
            "low": price - 0.01,
            "close": price,
            "volume": 5,
        }
    )
    path = tmp_path / "SPEED-1m.csv"
    frame.to_csv(path, index=False)
    res = read_file(path)  # its speed is a benchmark's business (bench/), not a test's
    assert len(res.frame) == n
    assert (res.frame["timestamp"].to_numpy() == pd.DatetimeIndex(stamps, tz="UTC").to_numpy()).all()
    assert np.array_equal(res.frame["close"].to_numpy(), price) and (res.frame["volume"] == 5).all()
