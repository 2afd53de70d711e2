"""Source profiles (readers/profiles.py), the override file (readers/overrides.py), the dry run
(readers/survey.py, ``tis files``) and the warning check on market_data_1m.

Every file is written here in its source's exact naming and layout from values generated in the test or from
the shared real bars (read in place); no vendor file is copied into the repository."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from tis_pipeline.market_data.assets import market_data_1m
from tis_pipeline.market_data.checks import source_files_recognised
from tis_pipeline.market_data.partitions import range_tags
from tis_pipeline.market_data.readers.catalog import read_bar_files, scan
from tis_pipeline.market_data.readers.files import read_file
from tis_pipeline.market_data.readers.overrides import SourceRulesError, load_rules
from tis_pipeline.market_data.readers.profiles import FIXED_EST, Head, match
from tis_pipeline.market_data.readers.survey import probe_dir, survey, symbol_key
from tis_pipeline.market_data.sources import BarSource
from tis_pipeline.pg.engine import engine
from tis_pipeline.resources import PostgresResource
from tis_pipeline.settings import PROJECT_ROOT
from tis_pipeline_tests.support.shared import shared_dir

SHARED = shared_dir() / "data" / "market"
NY = "America/New_York"


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def minutes(start: str, n: int, seed: int = 7) -> pd.DataFrame:
    """``n`` consecutive 1-minute bars from ``start`` (UTC): a seeded random walk, OHLC consistent."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range(utc(start), periods=n, freq="1min").as_unit("ns")
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    open_ = np.concatenate([[100.0], close[:-1]])
    spread = np.abs(rng.normal(0, 5e-4, n)) * close
    return pd.DataFrame(
        {
            "timestamp": ts,
            "open": np.round(open_, 5),
            "high": np.round(np.maximum(open_, close) + spread, 5),
            "low": np.round(np.minimum(open_, close) - spread, 5),
            "close": np.round(close, 5),
            "volume": np.round(rng.uniform(0.1, 10.0, n), 3),
        }
    )


def epoch(ts: pd.Series, unit: str) -> np.ndarray:
    ns = ts.dt.as_unit("ns").astype("int64").to_numpy()
    return ns // {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}[unit]


def ohlcv(bars: pd.DataFrame, sep: str = ",") -> list[str]:
    return [
        sep.join(f"{v:.5f}".rstrip("0").rstrip(".") for v in row)
        for row in bars[["open", "high", "low", "close"]].itertuples(index=False)
    ]


# ---- writers: one per source, in its own naming and layout ------------------------------------------------


def binance_csv(bars: pd.DataFrame, unit: str = "ms", header: bool = False) -> str:
    open_t = epoch(bars["timestamp"], unit)
    close_t = open_t + (60 * {"ms": 1000, "us": 1_000_000}[unit] - 1)
    lines = [
        f"{o},{p},{v},{c},{v * 100:.4f},{i % 50 + 1},{v / 2:.3f},{v * 50:.4f},0"
        for o, p, v, c, i in zip(open_t, ohlcv(bars), bars["volume"], close_t, range(len(bars)), strict=True)
    ]
    head = (
        ["open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
         "taker_buy_quote_volume,ignore"]
        if header
        else []
    )  # fmt: skip
    return "\n".join(head + lines) + "\n"


def write_binance_zip(folder: Path, name: str, bars: pd.DataFrame, **kw) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{name}.csv", binance_csv(bars, **kw))
    return path


def histdata_ascii(bars: pd.DataFrame, wall: pd.Series) -> str:
    stamps = wall.dt.strftime("%Y%m%d %H%M%S")
    return "".join(f"{t};{p.replace(',', ';')};0\n" for t, p in zip(stamps, ohlcv(bars), strict=True))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def only_symbols(res) -> set[str]:
    return set(res.frame["symbol"])


# ------------------------------------------------------------------------------------------------------------
# The issue's table: every row maps to its symbol
# ------------------------------------------------------------------------------------------------------------


def issue_files(tmp: Path) -> dict[str, Path]:
    bars = minutes("2024-03-01", 30)
    est_wall = bars["timestamp"].dt.tz_convert(FIXED_EST).dt.tz_localize(None)
    out = {}
    out["BTCUSDT"] = write_binance_zip(tmp, "BTCUSDT-1m-2024-03", bars)
    out["EURUSD"] = write(tmp / "DAT_ASCII_EURUSD_M1_2019.csv", histdata_ascii(bars, est_wall))
    zpath = tmp / "HISTDATA_COM_ASCII_GBPUSD_M1_201901.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("DAT_ASCII_GBPUSD_M1_201901.csv", histdata_ascii(bars, est_wall))
        zf.writestr(
            "DAT_ASCII_GBPUSD_M1_201901.txt", "HistData.com (c) 2010-2019\nFile: ...\nGap of 62s found\n"
        )
    out["GBPUSD"] = zpath
    kraken = "".join(
        f"{t},{p},{v},{i % 9 + 1}\n"
        for t, p, v, i in zip(
            epoch(bars["timestamp"], "s"), ohlcv(bars), bars["volume"], range(30), strict=True
        )
    )
    out["XBTUSD"] = write(tmp / "XBTUSD_1.csv", kraken)
    duka = "Gmt time,Open,High,Low,Close,Volume\n" + "".join(
        f"{t},{p},{v}\n"
        for t, p, v in zip(
            bars["timestamp"].dt.strftime("%d.%m.%Y %H:%M:%S.000"), ohlcv(bars), bars["volume"], strict=True
        )
    )
    out["USDJPY"] = write(tmp / "USDJPY_Candlestick_1_M_BID_01.01.2020-31.12.2020.csv", duka)
    return out


@pytest.mark.parametrize(
    ("name", "symbol"),
    [
        ("BTCUSDT-1m-2024-03.zip", "BTCUSDT"),
        ("DAT_ASCII_EURUSD_M1_2019.csv", "EURUSD"),
        ("HISTDATA_COM_ASCII_GBPUSD_M1_201901.zip", "GBPUSD"),
        ("XBTUSD_1.csv", "XBTUSD"),
        ("USDJPY_Candlestick_1_M_BID_01.01.2020-31.12.2020.csv", "USDJPY"),
    ],
)
def test_every_row_of_the_issue_table_maps_to_its_symbol(tmp_path, name, symbol):
    files = issue_files(tmp_path)
    path = tmp_path / name
    assert files[symbol] == path
    res = read_file(path)
    assert only_symbols(res) == {symbol}
    assert len(res.frame) == 30 and res.frame["raw"].isna().all()
    [info] = scan(path)
    assert info.symbols == [symbol] and info.applied["symbol"] == symbol


def test_the_issue_table_symbols_by_name_as_the_issue_writes_them(tmp_path):
    """The file names exactly as in the issue (EURUSD for both HistData names, the Dukascopy EURUSD)."""
    bars = minutes("2019-01-01", 5)
    wall = bars["timestamp"].dt.tz_convert(FIXED_EST).dt.tz_localize(None)
    hist = histdata_ascii(bars, wall)
    zpath = tmp_path / "HISTDATA_COM_ASCII_EURUSD_M1_201901.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("DAT_ASCII_EURUSD_M1_201901.csv", hist)
    duka = write(
        tmp_path / "EURUSD_Candlestick_1_M_BID_01.01.2020-31.12.2020.csv",
        "Gmt time,Open,High,Low,Close,Volume\n01.01.2020 00:00:00.000,1.1,1.2,1.0,1.1,5\n"
        "01.01.2020 00:01:00.000,1.1,1.2,1.0,1.1,5\n",
    )
    assert only_symbols(read_file(zpath)) == {"EURUSD"}
    assert only_symbols(read_file(duka)) == {"EURUSD"}


# ------------------------------------------------------------------------------------------------------------
# Each profile: its time zone and bar label
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("folder", "name", "unit", "header"),
    [
        ("data/spot/monthly/klines/BTCUSDT/1m", "BTCUSDT-1m-2024-03", "ms", False),
        ("data/spot/daily/klines/BTCUSDT/1m", "BTCUSDT-1m-2025-02-03", "us", False),  # spot us since 2025
        ("data/futures/um/daily/klines/ETHUSDT/1m", "ETHUSDT-1m-2024-03-15", "ms", True),
        ("data/futures/cm/monthly/klines/BTCUSD_PERP/1m", "BTCUSD_PERP-1m-2024-03", "ms", True),
    ],
)
def test_binance_klines_are_utc_open_time_in_ms_or_us_with_or_without_header(
    tmp_path, folder, name, unit, header
):
    start = name.split("-1m-")[1]
    start = start + "-01" if len(start) == 7 else start
    bars = minutes(start, 90)
    path = write_binance_zip(tmp_path / folder, name, bars, unit=unit, header=header)
    res = read_file(path, tz=NY, bar_label="close")  # the defaults do not apply: the profile says UTC, open
    f = res.frame
    assert only_symbols(res) == {name.split("-1m-")[0]}
    assert (f["timestamp"].to_numpy() == bars["timestamp"].to_numpy()).all()
    np.testing.assert_array_equal(f["close"].to_numpy(), bars["close"].to_numpy())
    np.testing.assert_array_equal(f["volume"].to_numpy(), bars["volume"].to_numpy())
    [info] = scan(path, tz=NY, bar_label="close")
    assert info.applied["profile"] == "binance-klines"
    assert (info.applied["tz"], info.applied["bar_label"]) == ("UTC", "open")
    assert info.applied["origin"] == {"tz": "profile", "bar_label": "profile", "symbol": "profile"}


def test_histdata_is_fixed_est_without_daylight_saving(tmp_path):
    path = write(
        tmp_path / "DAT_ASCII_EURUSD_M1_2019.csv",
        "20190101 170000;1.146020;1.146160;1.145950;1.146060;0\n"
        "20190101 170100;1.146060;1.146160;1.145950;1.146100;0\n"
        "20190701 120000;1.136020;1.136160;1.135950;1.136060;0\n"  # July: New York would be UTC-4
        "20190701 120100;1.136060;1.136160;1.135950;1.136100;0\n",
    )
    res = read_file(path, tz="Europe/Berlin", bar_label="close")
    assert list(res.frame["timestamp"]) == [
        utc("2019-01-01 22:00"),
        utc("2019-01-01 22:01"),
        utc("2019-07-01 17:00"),
        utc("2019-07-01 17:01"),
    ]
    [info] = scan(path)
    assert (info.applied["tz"], info.applied["bar_label"]) == ("Etc/GMT+5", "open")


def test_histdata_zip_reads_the_csv_not_the_status_report_and_metatrader_rows_too(tmp_path):
    bars = minutes("2019-01-02 05:00", 10)
    wall = bars["timestamp"].dt.tz_convert(FIXED_EST).dt.tz_localize(None)
    zpath = tmp_path / "HISTDATA_COM_ASCII_EURUSD_M1_201901.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("DAT_ASCII_EURUSD_M1_201901.csv", histdata_ascii(bars, wall))
        zf.writestr("DAT_ASCII_EURUSD_M1_201901.txt", "HistData.com status report\nGap of 120s\n")
    res = read_file(zpath)
    assert len(res.frame) == 10 and res.frame["raw"].isna().all()
    assert (res.frame["timestamp"].to_numpy() == bars["timestamp"].to_numpy()).all()
    assert any("not bars, not read: DAT_ASCII_EURUSD_M1_201901.txt" in n for n in res.notes)
    mt = "".join(f"{t},{p},0\n" for t, p in zip(wall.dt.strftime("%Y.%m.%d,%H:%M"), ohlcv(bars), strict=True))
    mt_path = write(tmp_path / "DAT_MT_EURUSD_M1_201901.csv", mt)
    res = read_file(mt_path)
    assert only_symbols(res) == {"EURUSD"}
    assert (res.frame["timestamp"].to_numpy() == bars["timestamp"].to_numpy()).all()


def test_dukascopy_gmt_time_is_utc_and_local_time_carries_its_offset(tmp_path):
    gmt = write(
        tmp_path / "EURUSD_Candlestick_1_M_BID_01.07.2020-31.07.2020.csv",
        "Gmt time,Open,High,Low,Close,Volume\n01.07.2020 00:00:00.000,1.1,1.2,1.0,1.1,5\n"
        "01.07.2020 00:01:00.000,1.1,1.2,1.0,1.1,5\n",
    )
    local = write(
        tmp_path / "EURUSD_Candlestick_1_M_ASK_01.07.2020-31.07.2020.csv",
        "Local time,Open,High,Low,Close,Volume\n01.07.2020 02:00:00.000 GMT+0200,1.1,1.2,1.0,1.1,5\n"
        "01.07.2020 02:01:00.000 GMT+0200,1.1,1.2,1.0,1.1,5\n",
    )
    for path in (gmt, local):
        res = read_file(path, tz=NY)
        assert list(res.frame["timestamp"]) == [utc("2020-07-01 00:00"), utc("2020-07-01 00:01")]
        assert only_symbols(res) == {"EURUSD"}
    [info] = scan(gmt, tz=NY)
    assert (info.applied["profile"], info.applied["tz"], info.applied["bar_label"]) == (
        "dukascopy",
        "UTC",
        "open",
    )
    hourly = write(
        tmp_path / "EURUSD_Candlestick_1_Hour_BID_01.07.2020-31.07.2020.csv",
        "Gmt time,Open,High,Low,Close,Volume\n01.07.2020 00:00:00.000,1.1,1.2,1.0,1.1,5\n"
        "01.07.2020 01:00:00.000,1.1,1.2,1.0,1.1,5\n",
    )
    assert read_file(hourly).skipped and len(read_file(hourly).frame) == 0


def test_kraken_is_utc_open_epoch_seconds_and_other_intervals_are_refused(tmp_path):
    bars = minutes("2024-03-15", 6)
    secs = epoch(bars["timestamp"], "s")
    keep = np.array([0, 2, 4, 5])  # minutes without trades are absent: the median step is 2 minutes
    one = write(
        tmp_path / "XBTUSD_1.csv",
        "".join(f"{secs[i]},{ohlcv(bars)[i]},1.5,3\n" for i in keep),
    )
    res = read_file(one, tz=NY, bar_label="close")
    assert only_symbols(res) == {"XBTUSD"} and not res.skipped
    assert list(res.frame["timestamp"]) == list(bars["timestamp"].iloc[keep])
    [info] = scan(one)
    assert (info.interval_seconds, info.applied["tz"], info.applied["bar_label"]) == (60, "UTC", "open")
    five = write(
        tmp_path / "XBTUSD_5.csv", "".join(f"{secs[0] + 300 * i},1,2,0.5,1.5,1.0,2\n" for i in range(5))
    )
    res = read_file(five)
    assert len(res.frame) == 0 and "interval 5m, not 1-minute" in res.skipped[0][1]
    [info] = scan(five)
    assert info.interval_seconds == 300 and any("5m interval" in w for w in info.applied["warnings"])


def test_polygon_day_file_takes_tickers_and_window_start_in_ns(tmp_path):
    a, b = minutes("2024-03-15 13:30", 3, seed=1), minutes("2024-03-15 13:30", 3, seed=2)
    lines = ["ticker,volume,open,close,high,low,window_start,transactions"]
    for ticker, bars in (("AAPL", a), ("MSFT", b)):
        for row, ns in zip(bars.itertuples(index=False), epoch(bars["timestamp"], "ns"), strict=True):
            lines.append(
                f"{ticker},{int(row.volume * 100)},{row.open},{row.close},{row.high},{row.low},{ns},7"
            )
    path = tmp_path / "us_stocks_sip" / "minute_aggs_v1" / "2024" / "03" / "2024-03-15.csv.gz"
    path.parent.mkdir(parents=True)
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    res = read_file(path, tz=NY, bar_label="close")
    f = res.frame.sort_values(["symbol", "timestamp"])
    assert list(f["symbol"]) == ["AAPL"] * 3 + ["MSFT"] * 3
    assert list(f["timestamp"].iloc[:3]) == list(a["timestamp"])
    np.testing.assert_array_equal(f["close"].to_numpy()[3:], b["close"].to_numpy())
    [info] = scan(path)
    assert (info.applied["profile"], info.applied["tz"], info.applied["bar_label"]) == (
        "polygon-flat-files",
        "UTC",
        "open",
    )
    assert info.interval_seconds == 60 and info.symbols == ["AAPL", "MSFT"]


def test_databento_ts_event_is_the_open_and_fixed_point_prices_are_scaled(tmp_path):
    bars = minutes("2024-03-15", 3)
    header = "ts_event,rtype,publisher_id,instrument_id,open,high,low,close,volume,symbol"
    raw = [header] + [
        f"{ns},33,1,4916,{round(r.open * 1e9)},{round(r.high * 1e9)},{round(r.low * 1e9)},"
        f"{round(r.close * 1e9)},{int(r.volume)},ESM4"
        for r, ns in zip(bars.itertuples(index=False), epoch(bars["timestamp"], "ns"), strict=True)
    ]
    path = write(tmp_path / "glbx-mdp3-20240315.ohlcv-1m.csv", "\n".join(raw) + "\n")
    res = read_file(path, tz=NY, bar_label="close")
    assert only_symbols(res) == {"ESM4"}
    assert list(res.frame["timestamp"]) == list(bars["timestamp"])
    np.testing.assert_allclose(res.frame["close"].to_numpy(), bars["close"].to_numpy(), rtol=0, atol=1e-9)
    pretty = [header] + [
        f"{t},33,1,4916,{r.open},{r.high},{r.low},{r.close},{int(r.volume)},ESM4"
        for r, t in zip(
            bars.itertuples(index=False),
            bars["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S.000000000Z"),
            strict=True,
        )
    ]
    path2 = write(tmp_path / "glbx-mdp3-20240316.ohlcv-1m.csv", "\n".join(pretty) + "\n")
    res2 = read_file(path2)
    np.testing.assert_array_equal(res2.frame["close"].to_numpy(), bars["close"].to_numpy())
    [info] = scan(path)
    assert (info.applied["profile"], info.applied["tz"], info.applied["bar_label"]) == (
        "databento-ohlcv",
        "UTC",
        "open",
    )


def test_ninjatrader_bars_are_labelled_by_close_and_the_zone_is_the_default_flagged(tmp_path):
    path = write(
        tmp_path / "ES 06-24.Last.txt",
        "20240315 093100;5200.25;5201;5199.75;5200.5;120\n"
        "20240315 093200;5200.5;5201;5199.75;5200.75;80\n"
        "20240315 093300;5200.75;5201.25;5200.5;5201;95\n",
    )
    res = read_file(path, tz=NY)
    assert only_symbols(res) == {"ES_06-24"}
    # 09:31 closes the 09:30 bar (New York, daylight time: UTC-4)
    assert list(res.frame["timestamp"]) == [
        utc("2024-03-15 13:30"),
        utc("2024-03-15 13:31"),
        utc("2024-03-15 13:32"),
    ]
    [info] = scan(path, tz=NY)
    assert (info.applied["tz"], info.applied["bar_label"]) == (NY, "close")
    assert info.applied["origin"]["tz"] == "default"
    assert any("time zone not stated" in w for w in info.applied["warnings"])


def test_metatrader_exports_are_open_labelled_in_the_default_zone_with_tick_volume(tmp_path):
    mt5 = write(
        tmp_path / "EURUSD_M1_201901020000_201912312359.csv",
        "<DATE>\t<TIME>\t<OPEN>\t<HIGH>\t<LOW>\t<CLOSE>\t<TICKVOL>\t<VOL>\t<SPREAD>\n"
        "2019.01.02\t00:00:00\t1.14598\t1.14607\t1.14581\t1.14581\t36\t0\t9\n"
        "2019.01.02\t00:01:00\t1.14581\t1.14600\t1.14570\t1.14590\t21\t0\t9\n",
    )
    mt4 = write(
        tmp_path / "GBPUSD1.csv",
        "2019.01.02,00:00,1.27,1.28,1.26,1.275,36\n2019.01.02,00:01,1.275,1.28,1.27,1.276,12\n",
    )
    res = read_file(mt5, tz="Europe/Athens")
    assert only_symbols(res) == {"EURUSD"}
    assert list(res.frame["timestamp"]) == [utc("2019-01-01 22:00"), utc("2019-01-01 22:01")]  # EET, UTC+2
    assert list(res.frame["volume"]) == [36.0, 21.0]
    res4 = read_file(mt4, tz="UTC")
    assert only_symbols(res4) == {"GBPUSD"}
    assert list(res4.frame["timestamp"]) == [utc("2019-01-02 00:00"), utc("2019-01-02 00:01")]
    for path in (mt5, mt4):
        [info] = scan(path, tz="Europe/Athens")
        assert (info.applied["profile"], info.applied["bar_label"]) == ("metatrader", "open")
        assert info.applied["tz"] == "Europe/Athens" and info.applied["warnings"]


def test_lean_files_keep_their_layout_zone(shared_market_dir):
    ibm = shared_market_dir / "lean/Data/equity/usa/minute/ibm/20131004_trade.zip"
    btc = shared_market_dir / "lean/Data/crypto/coinbase/minute/btcusd/20161007_trade.zip"
    [i] = scan(ibm)
    [b] = scan(btc)
    assert (i.applied["profile"], i.symbols, i.applied["tz"], i.applied["bar_label"]) == (
        "lean",
        ["IBM"],
        NY,
        "open",
    )
    assert (b.applied["profile"], b.symbols, b.applied["tz"]) == ("lean", ["BTCUSD"], "UTC")
    assert i.first == utc("2013-10-04 12:28") and i.rows == 411


def test_a_name_without_its_layout_gets_no_profile(tmp_path):
    """A profile applies only when the file matches it: a kline name over another layout is read as before."""
    path = write(
        tmp_path / "BTCUSDT-1m-2024-03.csv",
        "timestamp,open,high,low,close,volume\n2024-03-01 00:00:00,1,2,0.5,1.5,3\n"
        "2024-03-01 00:01:00,1,2,0.5,1.5,3\n",
    )
    [info] = scan(path, tz=NY)
    assert info.applied["profile"] is None
    assert info.applied["tz"] == NY and info.first == utc("2024-03-01 05:00")
    head = Head(path, path.name, ("not,a,kline",))
    assert match(head) is None


def test_profiles_built_from_the_shared_real_bars(shared_market_dir, tmp_path):
    """Real minutes (nautilus_trader's BTC perpetual) rewritten as Binance daily klines and as HistData."""
    real = read_file(shared_market_dir / "nautilus_trader/btc-perp-20211231-20220201_1m.csv").frame
    day = real[
        (real["timestamp"] >= utc("2022-01-05")) & (real["timestamp"] < utc("2022-01-06"))
    ].reset_index(drop=True)
    assert len(day) == 1440
    kl = write_binance_zip(tmp_path / "k", "BTCUSDT-1m-2022-01-05", day)
    wall = day["timestamp"].dt.tz_convert(FIXED_EST).dt.tz_localize(None)
    hd = write(tmp_path / "h" / "DAT_ASCII_BTCUSD_M1_202201.csv", histdata_ascii(day, wall))
    for path, symbol in ((kl, "BTCUSDT"), (hd, "BTCUSD")):
        res = read_file(path)
        assert only_symbols(res) == {symbol}
        assert (res.frame["timestamp"].to_numpy() == day["timestamp"].to_numpy()).all()
        np.testing.assert_allclose(res.frame["close"].to_numpy(), day["close"].to_numpy(), rtol=1e-12)


# ------------------------------------------------------------------------------------------------------------
# The override file
# ------------------------------------------------------------------------------------------------------------


def test_the_override_file_wins_over_every_inference(tmp_path):
    root = tmp_path / "data"
    issue_files(root)
    write(
        root / "ninja" / "ES 06-24.Last.txt",
        "20240315 093100;1;2;0.5;1.5;10\n20240315 093200;1;2;0.5;1.5;10\n",
    )
    write(root / "misc" / "prices_export.csv", "timestamp,open,high,low,close\n2024-03-15 09:30,1,2,0.5,1.5\n"
          "2024-03-15 09:31,1,2,0.5,1.5\n")  # fmt: skip
    write(
        root / "tis-sources.toml",
        """
[symbols]
XBTUSD = "BTCUSD"

[paths."ninja"]
tz = "America/Chicago"
bar_label = "open"

[paths."DAT_ASCII_EURUSD_M1_2019.csv"]
tz = "UTC"
symbol = "EURUSD_EST"

[paths."misc/prices_export.csv"]
symbol = "SPX"
tz = "America/New_York"
""",
    )
    infos = {Path(i.path).name: i for i in scan(root)}
    kraken = infos["XBTUSD_1.csv"]
    assert kraken.symbols == ["BTCUSD"] and kraken.applied["origin"]["symbol"] == "override (symbols map)"
    ninja = infos["ES 06-24.Last.txt"]
    assert ninja.first == utc("2024-03-15 14:31")  # Chicago (CDT, UTC-5), open label: not shifted
    assert (ninja.applied["tz"], ninja.applied["bar_label"]) == ("America/Chicago", "open")
    assert ninja.applied["origin"]["tz"] == "override" and not ninja.applied["warnings"]
    hist = infos["DAT_ASCII_EURUSD_M1_2019.csv"]
    assert hist.symbols == ["EURUSD_EST"] and hist.applied["tz"] == "UTC"
    assert hist.first == utc("2024-02-29 19:00")  # the EST wall times written are now read as UTC
    misc = infos["prices_export.csv"]
    assert misc.symbols == ["SPX"] and misc.first == utc("2024-03-15 13:30")
    others = {n: i.symbols for n, i in infos.items() if n in ("BTCUSDT-1m-2024-03.zip", "XBTUSD_1.csv")}
    assert others == {"BTCUSDT-1m-2024-03.zip": ["BTCUSDT"], "XBTUSD_1.csv": ["BTCUSD"]}
    window = read_bar_files(root, utc("2013-01-01"), utc("2025-01-01"))
    assert {"BTCUSD", "EURUSD_EST", "SPX", "ES_06-24", "BTCUSDT"} <= set(window.frame["symbol"])
    assert "XBTUSD" not in set(window.frame["symbol"])
    assert {a["file"] for a in window.applied} >= {str(root / "XBTUSD_1.csv")}


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[paths."x"]\ntz = "Mars/Olympus"\n', 'paths."x".tz'),
        ('[paths."x"]\nbar_label = "middle"\n', 'paths."x".bar_label'),
        ('[paths."x"]\nzone = "UTC"\n', 'paths."x".zone'),
        ('[symbols]\nXBTUSD = "BTC USD"\n', "symbols.XBTUSD"),
        ("[aliases]\nA = 'B'\n", "aliases"),
        ("[symbols\nA = 1\n", "not valid TOML"),
    ],
)
def test_a_malformed_override_file_names_the_file_and_the_key(tmp_path, text, key):
    write(tmp_path / "tis-sources.toml", text)
    with pytest.raises(SourceRulesError) as raised:
        load_rules(tmp_path)
    assert str(tmp_path / "tis-sources.toml") in str(raised.value) and key in str(raised.value)
    with pytest.raises(SourceRulesError):
        scan(tmp_path)


def test_a_changed_override_file_relearns_and_the_manifest_records_what_was_applied(tmp_path):
    root = tmp_path / "data"
    issue_files(root)
    manifest = tmp_path / "m.json"
    scan(root, manifest_path=manifest)
    doc = json.loads(manifest.read_text())
    entry = doc["files"][str(root / "XBTUSD_1.csv")]
    assert entry["applied"]["profile"] == "kraken-ohlcvt" and entry["applied"]["symbol"] == "XBTUSD"
    assert entry["applied"]["tz"] == "UTC" and entry["applied"]["bar_label"] == "open"
    assert doc["files"][str(root / "DAT_ASCII_EURUSD_M1_2019.csv")]["applied"]["tz"] == "Etc/GMT+5"
    write(root / "tis-sources.toml", '[symbols]\nXBTUSD = "BTCUSD"\n')
    again = {Path(i.path).name: i for i in scan(root, manifest_path=manifest)}
    assert again["XBTUSD_1.csv"].symbols == ["BTCUSD"]
    assert json.loads(manifest.read_text())["files"][str(root / "XBTUSD_1.csv")]["symbols"] == ["BTCUSD"]


# ------------------------------------------------------------------------------------------------------------
# The dry run: findings and `tis files`
# ------------------------------------------------------------------------------------------------------------


def suspicious_dir(root: Path) -> Path:
    """Two generic-named files of one instrument whose names differ by an interval-like token."""
    bars = minutes("2024-03-15", 20)
    body = "timestamp,open,high,low,close,volume\n" + "".join(
        f"{t},{p},{v}\n"
        for t, p, v in zip(
            bars["timestamp"].dt.strftime("%Y-%m-%d %H:%M:%S"), ohlcv(bars), bars["volume"], strict=True
        )
    )
    write(root / "XBTEUR_1.csv", body)
    write(root / "XBTEUR.csv", body)
    return root


def test_symbol_key_drops_date_and_interval_tokens():
    assert {symbol_key(s) for s in ("BTCUSDT-03", "BTCUSDT-04", "BTCUSDT")} == {"BTCUSDT"}
    assert symbol_key("XBTUSD_1") == symbol_key("XBTUSD") == "XBTUSD"
    assert symbol_key("ETH_BTC") != symbol_key("XRP_ETH")


def test_survey_flags_look_alike_symbols_overlaps_and_unknown_names(tmp_path):
    root = suspicious_dir(tmp_path / "d")
    issue_files(root)
    bid = root / "USDJPY_Candlestick_1_M_BID_01.01.2020-31.12.2020.csv"
    ask = write(root / bid.name.replace("_BID_", "_ASK_"), bid.read_text())  # both sides: one symbol twice
    result = survey(probe_dir(root), root)
    table = result.table.set_index("file")
    assert table.loc["XBTEUR_1.csv", "symbols"] == "XBTEUR_1"
    assert "look-alike symbol" in table.loc["XBTEUR_1.csv", "flags"]
    assert (
        "overlapping days" in table.loc[ask.name, "flags"]
        and "overlapping days" in table.loc[bid.name, "flags"]
    )
    assert "unknown naming" in table.loc["XBTEUR.csv", "flags"]
    assert (
        table.loc["XBTUSD_1.csv", "flags"] == "" and table.loc["XBTUSD_1.csv", "profile"] == "kraken-ohlcvt"
    )
    assert table.loc["DAT_ASCII_EURUSD_M1_2019.csv", "tz"] == "Etc/GMT+5"
    assert table.loc["BTCUSDT-1m-2024-03.zip", "rows"] == 30
    assert table.loc["XBTEUR.csv", "rows"] == 20
    joined = "\n".join(result.findings)
    assert "symbols XBTEUR, XBTEUR_1 differ only by a date-like or interval-like token" in joined
    assert f"symbol USDJPY: 2 files with overlapping days (2024-03-01 to 2024-03-01): {ask.name}" in joined


def test_a_year_of_monthly_kline_zips_dry_run_is_one_symbol_without_findings(tmp_path):
    root = tmp_path / "data/spot/monthly/klines/BTCUSDT/1m"
    for month in range(1, 13):
        start = pd.Timestamp(2023, month, 1)
        write_binance_zip(root, f"BTCUSDT-1m-2023-{month:02d}", minutes(str(start), 120, seed=month))
    result = survey(probe_dir(tmp_path / "data"), tmp_path / "data")
    assert set(result.table["symbols"]) == {"BTCUSDT"} and len(result.table) == 12
    assert result.findings == []


def run_tis(args: list[str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TIS_MARKET_DATA_DIR"}
    return subprocess.run(
        [sys.executable, "-m", "tis_pipeline.cli", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_tis_files_prints_the_table_and_flags_the_suspicious_pair(tmp_path):
    root = suspicious_dir(tmp_path / "d")
    write(
        root / "DAT_ASCII_EURUSD_M1_2019.csv",
        "20190101 170000;1.1;1.2;1.0;1.1;0\n20190101 170100;1.1;1.2;1.0;1.1;0\n",
    )
    proc = run_tis(["files", str(root)])
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "XBTEUR_1.csv" in out and "XBTEUR.csv" in out
    assert "symbols XBTEUR, XBTEUR_1 differ only by a date-like or interval-like token" in out
    assert "histdata" in out and "Etc/GMT+5" in out and "2019-01-01" in out
    write(root / "tis-sources.toml", '[paths."x"]\ntz = "Nowhere/Land"\n')
    bad = run_tis(["files", str(root)])
    assert bad.returncode == 1 and "tis-sources.toml" in bad.stderr and 'paths."x".tz' in bad.stderr


def test_tis_files_on_the_shared_data(shared_market_dir):
    proc = run_tis(["files", str(shared_market_dir)])
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.count("lean/Data/") == 15 and "America/New_York" in out
    assert "25 file(s)" in out and "unknown naming" in out


# ------------------------------------------------------------------------------------------------------------
# Real Dagster runs: a year of monthly klines is one symbol; the warning check
# ------------------------------------------------------------------------------------------------------------


def stored(url: str) -> pd.DataFrame:
    with engine(url).connect() as conn:
        return pd.read_sql(
            sa.text(
                'SELECT symbol, "timestamp", close::float8 FROM market_data_1m ORDER BY symbol, "timestamp"'
            ),
            conn,
        )


@pytest.mark.pg
@pytest.mark.slow
def test_a_year_of_monthly_kline_zips_loads_as_one_symbol_with_continuous_bars(
    migrated_database_url, tmp_path
):
    root = tmp_path / "market"
    folder = root / "data/spot/monthly/klines/BTCUSDT/1m"
    year = minutes("2023-01-01", 365 * 1440, seed=3)
    month = year["timestamp"].dt.month
    for m in range(1, 13):
        write_binance_zip(folder, f"BTCUSDT-1m-2023-{m:02d}", year[month == m].reset_index(drop=True))
    source = BarSource(source="csv", data_dir=str(root), tz="UTC", manifest_path=str(tmp_path / "m.json"))
    result = dg.materialize(
        [market_data_1m, source_files_recognised],
        resources={"db": PostgresResource(url=migrated_database_url), "bars": source},
        tags=range_tags("2023-01-01", "2023-12-31"),
    )
    assert result.success
    got = stored(migrated_database_url)
    assert set(got["symbol"]) == {"BTCUSDT"}
    assert len(got) == len(year) == 525_600
    steps = np.diff(got["timestamp"].dt.as_unit("ns").astype("int64").to_numpy())
    assert (steps == 60 * 10**9).all()  # continuous across every month boundary
    np.testing.assert_array_equal(got["close"].to_numpy(), year["close"].to_numpy())
    meta = result.asset_materializations_for_node("market_data_1m")[0].metadata
    profiles = meta["source_profiles"].value
    assert profiles.count("binance-klines") == 12 and "BTCUSDT-1m-2023-12.zip" in profiles
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["source_files_recognised"].passed
    assert checks["source_files_recognised"].metadata["files"].value == 12


@pytest.mark.pg
def test_the_source_files_check_warns_on_a_suspicious_pair(migrated_database_url, tmp_path):
    root = suspicious_dir(tmp_path / "d")
    source = BarSource(source="csv", data_dir=str(root), tz="UTC", manifest_path=str(tmp_path / "m.json"))
    result = dg.materialize(
        [market_data_1m, source_files_recognised],
        partition_key="2024-03-15",
        resources={"db": PostgresResource(url=migrated_database_url), "bars": source},
    )
    assert result.success
    check = {c.check_name: c for c in result.get_asset_check_evaluations()}["source_files_recognised"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    findings = check.metadata["findings_list"].value
    assert "XBTEUR, XBTEUR_1" in findings and "no source profile knows this naming" in findings
    assert check.metadata["findings"].value == 3  # the look-alike pair, two unknown names


# what DSI made of the bars: every scored column of market_data_1m, and the per-symbol state it carries on
DSI_DIGEST = (
    "SELECT md5(string_agg(concat_ws(',', symbol, \"timestamp\", mx_evidence, mx_confirm, "
    "mx_expert_contributions::text), '|' ORDER BY symbol, \"timestamp\")) FROM market_data_1m"
)


@pytest.mark.pg
@pytest.mark.slow
def test_monthly_kline_zips_give_one_symbol_with_one_continuous_dsi_state(migrated_database_url, tmp_path):
    """Two monthly kline zips across a month boundary are one symbol whose DSI state runs on across the
    boundary: the scores equal those of the same bars in one file of the generic layout."""
    from tis_pipeline.dsi.assets import dsi
    from tis_pipeline.market_data.assets import market_data_1h, market_data_15m

    bars = minutes("2023-01-30", 3 * 1440, seed=11)
    month = bars["timestamp"].dt.month
    zips = tmp_path / "zips" / "data/spot/monthly/klines/BTCUSDT/1m"
    write_binance_zip(zips, "BTCUSDT-1m-2023-01", bars[month == 1].reset_index(drop=True))
    write_binance_zip(zips, "BTCUSDT-1m-2023-02", bars[month == 2].reset_index(drop=True))
    one_file = tmp_path / "one" / "BTCUSDT.csv"
    one_file.parent.mkdir(parents=True)
    generic = bars.assign(timestamp=bars["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    generic.to_csv(one_file, index=False)

    def scored(root: Path, manifest: str) -> tuple[str, pd.DataFrame]:
        source = BarSource(source="csv", data_dir=str(root), tz="UTC", manifest_path=str(tmp_path / manifest))
        result = dg.materialize(
            [market_data_1m, market_data_15m, market_data_1h, dsi],
            resources={"db": PostgresResource(url=migrated_database_url), "bars": source},
            tags=range_tags("2023-01-30", "2023-02-01"),
        )
        assert result.success
        with engine(migrated_database_url).connect() as conn:
            digest = conn.execute(sa.text(DSI_DIGEST)).scalar_one()
            query = 'SELECT symbol, "timestamp", mx_evidence FROM market_data_1m ORDER BY "timestamp"'
            frame = pd.read_sql(sa.text(query), conn)
        return digest, frame

    from_zips, frame = scored(tmp_path / "zips", "zips.json")
    assert set(frame["symbol"]) == {"BTCUSDT"} and len(frame) == len(bars)
    assert frame["mx_evidence"].notna().all()  # scored on both sides of the boundary
    from_one_file, _ = scored(tmp_path / "one", "one.json")
    assert from_zips == from_one_file
