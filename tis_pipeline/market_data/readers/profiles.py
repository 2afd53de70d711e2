"""Source profiles: the files people download from the common public sources, recognised by their name AND
their layout, each with its symbol rule, bar interval, time zone and bar label.

A profile's convention is applied only to a file that matches both its name pattern and its layout (the first
lines of the file, or of the first data member of a zip/gz); any other file is read as before (symbol from a
column or ``symbols.symbol_from_path``, naive times in ``TIS_MARKET_TZ``, ``TIS_MARKET_BAR_LABEL``). The
explicit override file (``overrides.py``, ``tis-sources.toml`` in the data directory) wins over every profile.

The table stores every bar at its open time (UTC). A source that labels bars by their close time
(NinjaTrader) has its timestamps moved back by one bar interval; the interval is the profile's (from the
name) when it has one, else the one measured from the file.

* ``binance-klines``: ``BTCUSDT-1m-2024-03.zip`` / ``BTCUSDT-1m-2024-03-15.zip``, 12 fields, epoch ms or
  us, with or without header; symbol and interval from the name; UTC; open.
* ``histdata``: ``DAT_ASCII_EURUSD_M1_2019.csv``, ``HISTDATA_COM_ASCII_EURUSD_M1_201901.zip`` (and ``MT``);
  ``20190101 170000;o;h;l;c;v``; symbol from the name; 1m; fixed EST (UTC-5, no DST); open.
* ``dukascopy``: ``EURUSD_Candlestick_1_M_BID_01.01.2020-31.12.2020.csv``, ``Gmt time``/``Local time``
  header; symbol and interval from the name; UTC (or the values' offsets); open.
* ``kraken-ohlcvt``: ``XBTUSD_1.csv`` (``_<minutes>``), 7 fields, epoch seconds; UTC; open.
* ``polygon-flat-files``: ``2024-03-15.csv.gz``, ``ticker,volume,open,close,high,low,window_start,...``;
  symbol from ``ticker``, interval from the path (``minute_aggs``); UTC (ns); open.
* ``databento-ohlcv``: ``*.ohlcv-1m.csv``, ``ts_event,rtype,publisher_id,instrument_id,...,symbol``; symbol
  column; interval from the name; UTC (ns or ISO); open; fixed-point prices scaled.
* ``ninjatrader``: ``ES 06-24.Last.txt``, ``yyyyMMdd HHmmss;o;h;l;c;v``; symbol from the name; 1m; the
  export's zone (not stated); close.
* ``metatrader``: ``EURUSD_M1_<from>_<to>.csv`` (``<DATE>`` header, tabs) or ``EURUSD1.csv``
  (``2019.01.02,00:00,...``); symbol and timeframe from the name; the broker's server time (not stated); open.
* ``lean``: ``<type>/<market>/<resolution>/<symbol>/<yyyymmdd>_trade.zip``; symbol from the folder; the
  layout's zone (New York for equity/usa, UTC for crypto); open.

"export's" and "server" are zones the file does not state: ``TIS_MARKET_TZ`` is used and ``tis files`` flags
the file until ``tis-sources.toml`` names the zone.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePath

from tis_pipeline.market_data.readers.contract import interval_label
from tis_pipeline.market_data.readers.overrides import SourceRules
from tis_pipeline.market_data.readers.paths import lean_layout

# HistData's "EST without daylight saving" is a fixed UTC-5 (the IANA name's sign is inverted by POSIX).
FIXED_EST = "Etc/GMT+5"

_BINANCE_INTERVALS = {
    "1s": 1, "1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600, "2h": 7200, "4h": 14400,
    "6h": 21600, "8h": 28800, "12h": 43200, "1d": 86400, "3d": 259200, "1w": 604800, "1mo": 2_592_000,
}  # fmt: skip
_MT_TIMEFRAMES = {
    "M1": 60, "M2": 120, "M3": 180, "M4": 240, "M5": 300, "M6": 360, "M10": 600, "M12": 720, "M15": 900,
    "M20": 1200, "M30": 1800, "H1": 3600, "H2": 7200, "H3": 10800, "H4": 14400, "H6": 21600, "H8": 28800,
    "H12": 43200, "D1": 86400, "W1": 604800, "MN1": 2_592_000, "MN": 2_592_000,
}  # fmt: skip
_UNIT_SECONDS = {
    "s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600, "d": 86400,
    "day": 86400, "w": 604800, "week": 604800, "mn": 2_592_000, "month": 2_592_000,
}  # fmt: skip


@dataclass(frozen=True)
class Head:
    """What a profile looks at: the path, the name of the data member read (the file's own name when it is
    not an archive) and the first lines of its text (empty for Parquet/Feather/JSON)."""

    path: PurePath
    member: str
    lines: tuple[str, ...]

    @property
    def first(self) -> str:
        return self.lines[0] if self.lines else ""

    def data_lines(self, skip_header: bool = False) -> tuple[str, ...]:
        return self.lines[1:] if skip_header else self.lines


@dataclass(frozen=True)
class Profile:
    """One source's conventions. ``name`` is matched against the file name (full match) and must give a
    ``symbol`` group unless ``symbol_column`` is True; ``layout`` judges the first lines."""

    key: str
    title: str
    source: str  # where the convention is documented
    name: re.Pattern[str]
    layout: Callable[[Head], bool]
    tz: str | None  # None: the file does not say (export's local or server time): TIS_MARKET_TZ, flagged
    bar_label: str
    interval: Callable[[re.Match[str], Head], int | None]
    symbol_column: bool = False
    members: str | None = None  # zip members to read (regex on the member name); others are not bars
    roles: tuple[tuple[str, str], ...] = ()  # (role, normalised column name) taken before any inference
    fixed_point: float | None = None  # prices that are whole numbers >= 1e6 are scaled by this
    zone_note: str | None = None
    symbol_rule: Callable[[re.Match[str], Head], str] = field(default=lambda m, _h: m.group("symbol").upper())
    path_check: Callable[[Head], bool] = field(default=lambda _h: True)


def _interval_fixed(seconds: int | None) -> Callable[[re.Match[str], Head], int | None]:
    return lambda _m, _h: seconds


def _fields(line: str, sep: str) -> list[str]:
    return [f.strip() for f in line.split(sep)]


_NUM = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")


def _numbers(values: list[str]) -> bool:
    return bool(values) and all(_NUM.match(v) for v in values)


def _all_rows(head: Head, ok: Callable[[str], bool], skip_header: bool = False) -> bool:
    rows = [x for x in head.data_lines(skip_header) if x.strip()][:20]
    return bool(rows) and all(ok(x) for x in rows)


# ---- Binance public data -----------------------------------------------------------------------------------
# https://github.com/binance/binance-public-data (README, "Klines"): Open time, Open, High, Low, Close,
# Volume,
# Close time, Quote asset volume, Number of trades, Taker buy base/quote asset volume, Ignore; files
# <SYMBOL>-<interval>-<YYYY-MM>.zip (monthly) and <SYMBOL>-<interval>-<YYYY-MM-DD>.zip (daily) under
# data/spot/..., data/futures/um/..., data/futures/cm/...; spot timestamps are microseconds from 2025-01-01,
# futures files carry a header. Klines are identified by their open time (api/v3/klines docs), in UTC.
_BINANCE_HEADER = re.compile(r"^open_time,open,high,low,close,volume,close_time", re.IGNORECASE)


def _binance_row(line: str) -> bool:
    f = _fields(line, ",")
    return (
        len(f) == 12
        and re.fullmatch(r"\d{13}|\d{16}", f[0]) is not None
        and re.fullmatch(r"\d{13}|\d{16}", f[6]) is not None
        and _numbers(f[1:6])
    )


def _binance_layout(head: Head) -> bool:
    header = _BINANCE_HEADER.match(head.first) is not None
    return _all_rows(head, _binance_row, skip_header=header)


def _binance_market(head: Head) -> str:
    parts = [p.lower() for p in head.path.parts]
    if "futures" in parts:
        i = parts.index("futures")
        return f"futures-{parts[i + 1]}" if i + 1 < len(parts) and parts[i + 1] in ("um", "cm") else "futures"
    return "spot" if "spot" in parts else "unknown"


BINANCE = Profile(
    key="binance-klines",
    title="Binance public data klines (spot, USD-M and COIN-M futures)",
    source="https://github.com/binance/binance-public-data (README: Klines)",
    name=re.compile(
        r"(?P<symbol>[A-Z0-9]+(?:_[A-Z0-9]+)?)-(?P<interval>"
        + "|".join(sorted(_BINANCE_INTERVALS, key=len, reverse=True))
        + r")-(?P<date>\d{4}-\d{2}(?:-\d{2})?)\.(?:zip|csv)"
    ),
    layout=_binance_layout,
    tz="UTC",
    bar_label="open",
    interval=lambda m, _h: _BINANCE_INTERVALS[m.group("interval")],
)


# ---- HistData.com ------------------------------------------------------------------------------------------
# histdata.com "Data files format" (mirrored in github.com/dmidlo/histdata.com-tools,
# histdata.com_data_specs.md):
# ASCII M1 rows "20120201 000000;o;h;l;c;v" (DateTime Stamp YYYYMMDD HHMMSS), MetaTrader rows
# "2012.02.01,00:00,o,h,l,c,v"; "TimeZone: Eastern Standard Time (EST) time-zone WITHOUT Day Light Savings
# adjustments", i.e. UTC-5 all year. The stamp is the bar's own minute (open). Archives are
# HISTDATA_COM_<PLATFORM>_<PAIR>_M1<period>.zip holding DAT_<PLATFORM>_<PAIR>_M1_<period>.csv and a .txt
# status report that is not bars.
def _histdata_layout(head: Head) -> bool:
    member = head.member.upper()
    if "_MT_" in member or member.startswith("DAT_MT"):
        return _all_rows(head, _mt4_row)
    return _all_rows(head, _histdata_ascii_row)


def _stamped_row(sep: str, fields: int, stamp: str) -> Callable[[str], bool]:
    """A line of ``fields`` fields split by ``sep``: a timestamp matching ``stamp``, then numbers."""
    pattern = re.compile(stamp)

    def row(line: str) -> bool:
        f = _fields(line, sep)
        return len(f) == fields and pattern.fullmatch(f[0]) is not None and _numbers(f[1:])

    return row


# "yyyyMMdd HHmmss;o;h;l;c;v": HistData's ASCII M1 lines, and NinjaTrader's export lines too
_histdata_ascii_row = _stamped_row(";", 6, r"\d{8} \d{6}")


HISTDATA = Profile(
    key="histdata",
    title="HistData.com M1 (ASCII and MetaTrader)",
    source="http://www.histdata.com/f-a-q/data-files-detailed-specification/ "
    "(github.com/dmidlo/histdata.com-tools histdata.com_data_specs.md)",
    name=re.compile(
        r"(?:DAT_(?:ASCII|MT)_(?P<s1>[A-Z0-9]+)_M1_(?P<p1>\d{4}(?:\d{2})?)\.(?:csv|txt)"
        r"|HISTDATA_COM_(?:ASCII|MT)_(?P<s2>[A-Z0-9]+)_M1_?(?P<p2>\d{4}(?:\d{2})?)\.zip)",
        re.IGNORECASE,
    ),
    layout=_histdata_layout,
    tz=FIXED_EST,
    bar_label="open",
    interval=_interval_fixed(60),
    members=r"(?i)^(?:.*/)?DAT_[A-Z]+_[A-Z0-9]+_M1_\d+\.csv$",
    symbol_rule=lambda m, _h: (m.group("s1") or m.group("s2")).upper(),
)


# ---- Dukascopy ---------------------------------------------------------------------------------------------
# Dukascopy historical data feed export (https://www.dukascopy.com/swiss/english/marketwatch/historical/):
# <INSTRUMENT>_Candlestick_<n>_<unit>_<BID|ASK>_<dd.mm.yyyy>-<dd.mm.yyyy>.csv, header "Gmt time,Open,High,
# Low,Close,Volume" (or "Local time" whose values end in "GMT+0100"), values "01.01.2020 00:00:00.000";
# candles are stamped at their start, history in GMT (github.com/rosasurfer/mt4-php-tools,
# app/lib/dukascopy/README.md).
def _dukascopy_layout(head: Head) -> bool:
    header = _fields(head.first.lower(), ",")
    if len(header) < 5 or header[0] not in ("gmt time", "local time", "time (utc)", "time (eet)"):
        return False
    return _all_rows(
        head, lambda x: re.match(r"^\d{2}\.\d{2}\.\d{4} \d{2}:\d{2}", x) is not None, skip_header=True
    )


def _dukascopy_interval(m: re.Match[str], _h: Head) -> int | None:
    unit = _UNIT_SECONDS.get(m.group("unit").lower().rstrip("s") or "s")
    return None if unit is None else int(m.group("n")) * unit


DUKASCOPY = Profile(
    key="dukascopy",
    title="Dukascopy historical data export (bid or ask candles)",
    source="https://www.dukascopy.com/swiss/english/marketwatch/historical/",
    name=re.compile(
        r"(?P<symbol>[A-Za-z0-9.]+)_Candlestick_(?P<n>\d+)_(?P<unit>[A-Za-z]+)_(?P<side>BID|ASK)"
        r"_(?P<from>\d{2}\.\d{2}\.\d{4})-(?P<to>\d{2}\.\d{2}\.\d{4})\.csv",
        re.IGNORECASE,
    ),
    layout=_dukascopy_layout,
    tz="UTC",
    bar_label="open",
    interval=_dukascopy_interval,
    zone_note="'Gmt time' is UTC; 'Local time' values carry their GMT offset",
)


# ---- Kraken ------------------------------------------------------------------------------------------------
# Kraken "Downloadable historical OHLCVT data" (https://support.kraken.com/hc/en-us/articles/360047124832):
# one CSV per pair and interval, <PAIR>_<minutes>.csv for 1, 5, 15, 30, 60, 240, 720 and 1440 minutes,
# headerless "time,open,high,low,close,volume,trades" in epoch seconds (UTC); time is the interval's start
# (REST OHLC, https://docs.kraken.com/api-reference/market-data/get-ohlc-data). Intervals without trades
# are absent, so a measured median can exceed the name's interval: the name's is used.
_kraken_row = _stamped_row(",", 7, r"\d{10}")


KRAKEN = Profile(
    key="kraken-ohlcvt",
    title="Kraken downloadable OHLCVT",
    source="https://support.kraken.com/hc/en-us/articles/360047124832",
    name=re.compile(r"(?P<symbol>[A-Z0-9]+)_(?P<minutes>1|5|15|30|60|240|720|1440)\.csv"),
    layout=lambda h: _all_rows(h, _kraken_row),
    tz="UTC",
    bar_label="open",
    interval=lambda m, _h: int(m.group("minutes")) * 60,
)


# ---- Polygon.io / Massive flat files -----------------------------------------------------------------------
# Flat files (https://polygon.io/docs/flat-files/stocks/minute-aggregates, now massive.com): one gzip CSV per
# day, us_stocks_sip/minute_aggs_v1/YYYY/MM/YYYY-MM-DD.csv.gz, header
# "ticker,volume,open,close,high,low,window_start,transactions", window_start in nanoseconds since the epoch
# (UTC), the start of the aggregate window. day_aggs_v1 files are daily bars.
def _polygon_interval(_m: re.Match[str], head: Head) -> int | None:
    parts = [p.lower() for p in head.path.parts]
    if any(p.startswith("minute_aggs") for p in parts):
        return 60
    if any(p.startswith("day_aggs") for p in parts):
        return 86400
    return None


POLYGON = Profile(
    key="polygon-flat-files",
    title="Polygon.io (Massive) flat files: aggregates, one day of every ticker",
    source="https://polygon.io/docs/flat-files/stocks/minute-aggregates",
    name=re.compile(r"\d{4}-\d{2}-\d{2}\.csv(?:\.gz)?"),
    layout=lambda h: (
        re.match(r"^ticker,volume,open,close,high,low,window_start(?:,|$)", h.first.strip(), re.IGNORECASE)
        is not None
    ),
    tz="UTC",
    bar_label="open",
    interval=_polygon_interval,
    symbol_column=True,
    roles=(("ts", "windowstart"), ("symbol", "ticker")),
)


# ---- Databento ---------------------------------------------------------------------------------------------
# Databento OHLCV schema (https://databento.com/docs/schemas/ohlcv): "The ts_event timestamp marks the start
# of each interval", nanoseconds since the epoch (or ISO 8601 with pretty_ts); prices are fixed-point
# integers of 1e-9 unless pretty_px; the interval is the schema's suffix (-1s, -1m, -1h, -1d). Batch files
# are named <dataset>-<date(s)>.ohlcv-1m.csv; the symbol column is the requested symbol (map_symbols).
_DATABENTO_HEADER = re.compile(
    r"^ts_event,rtype,publisher_id,instrument_id,open,high,low,close,volume(?:,|$)", re.IGNORECASE
)
DATABENTO = Profile(
    key="databento-ohlcv",
    title="Databento OHLCV CSV",
    source="https://databento.com/docs/schemas/ohlcv",
    name=re.compile(r".*\.ohlcv-(?P<interval>1s|1m|1h|1d)\.csv(?:\.gz|\.zip)?", re.IGNORECASE),
    layout=lambda h: _DATABENTO_HEADER.match(h.first.strip()) is not None,
    tz="UTC",
    bar_label="open",
    interval=lambda m, _h: {"1s": 1, "1m": 60, "1h": 3600, "1d": 86400}[m.group("interval").lower()],
    symbol_column=True,
    roles=(("ts", "tsevent"),),
    fixed_point=1e-9,
)


# ---- NinjaTrader -------------------------------------------------------------------------------------------
# NinjaTrader import/export text format (https://ninjatrader.com/support/helpGuides/nt8/en-us/importing.htm;
# NT6 help "Import": "The name of the file must be the instrument name", minute bars
# "yyyyMMdd HHmmss;open;high;low;close;volume", exported as "<instrument>.Last.txt" / ".Bid.txt" /
# ".Ask.txt").
# "NinjaTrader stamps a bar with the closing time of the bar" (nt8 how_bars_are_built.htm). The zone is the
# export's: NT8's import help says its exports are UTC, older versions wrote the PC's local time; the file
# does not say which, so TIS_MARKET_TZ is used and the file is flagged.
NINJATRADER = Profile(
    key="ninjatrader",
    title="NinjaTrader minute-bar export",
    source="https://ninjatrader.com/support/helpGuides/nt8/en-us/importing.htm",
    name=re.compile(r"(?P<symbol>[A-Za-z0-9 ._#-]+?)\.(?P<side>Last|Bid|Ask)\.txt", re.IGNORECASE),
    layout=lambda h: _all_rows(h, _histdata_ascii_row),  # the same line layout
    tz=None,
    bar_label="close",
    interval=_interval_fixed(60),
    symbol_rule=lambda m, _h: re.sub(r"\s+", "_", m.group("symbol").strip()).upper(),
    zone_note="the export's time zone (NT8 exports UTC, older versions the PC's local time)",
)


# ---- MetaTrader --------------------------------------------------------------------------------------------
# MetaTrader 5 "Bars" export (https://www.metatrader5.com/en/terminal/help/trading_advanced/history_export):
# tab-separated, header "<DATE> <TIME> <OPEN> <HIGH> <LOW> <CLOSE> <TICKVOL> <VOL> <SPREAD>", dates
# "2019.01.02", file <SYMBOL>_<TF>_<from>_<to>.csv; MetaTrader 4 History Center export <SYMBOL><minutes>.csv
# with rows "2019.01.02,00:00,o,h,l,c,v". Bar time is the bar's opening time (MQL5 docs, CopyTime: "the bar
# opening time") in the broker's server time, which the file does not state: TIS_MARKET_TZ, flagged. FX
# brokers fill <VOL> with zeros: <TICKVOL> is taken as the volume.
def _mt4_row(line: str) -> bool:
    f = _fields(line, ",")
    return (
        len(f) in (6, 7)
        and re.fullmatch(r"\d{4}\.\d{2}\.\d{2}", f[0]) is not None
        and re.fullmatch(r"\d{2}:\d{2}(?::\d{2})?", f[1]) is not None
        and _numbers(f[2:])
    )


def _mt_layout(head: Head) -> bool:
    if head.first.strip().upper().startswith("<DATE>"):
        return _all_rows(
            head, lambda x: re.match(r"^\d{4}\.\d{2}\.\d{2}[\t,;]", x) is not None, skip_header=True
        )
    return _all_rows(head, _mt4_row)


def _mt_interval(m: re.Match[str], _h: Head) -> int | None:
    if m.group("tf"):
        return _MT_TIMEFRAMES.get(m.group("tf").upper())
    return int(m.group("minutes")) * 60


METATRADER = Profile(
    key="metatrader",
    title="MetaTrader 4/5 bar export",
    source="https://www.metatrader5.com/en/terminal/help/trading_advanced/history_export",
    name=re.compile(
        r"(?:(?P<s1>[A-Za-z0-9.#]+?)_(?P<tf>M\d+|H\d+|D1|W1|MN1?)(?:_\d{12}_\d{12})?"
        r"|(?P<s2>[A-Za-z][A-Za-z0-9.#]*?[A-Za-z.#])(?P<minutes>1|5|15|30|60|240|1440|10080|43200))"
        r"\.(?:csv|txt)"
    ),
    layout=_mt_layout,
    tz=None,
    bar_label="open",
    interval=_mt_interval,
    roles=(("volume", "tickvol"),),
    symbol_rule=lambda m, _h: (m.group("s1") or m.group("s2")).upper(),
    zone_note="the broker's server time",
)


# ---- QuantConnect Lean -------------------------------------------------------------------------------------
# Lean data layout (github.com/QuantConnect/Lean, Data/readme.md and Data/equity/readme.md): <type>/<market>/
# <resolution>/<symbol>/<yyyymmdd>_<trade|quote|openinterest>.zip, times in ms since midnight; equity/usa in
# New York time with deci-cent prices, crypto in UTC (paths.LeanLayout, bar_frame). Bars are stamped at open.
def _lean_interval(_m: re.Match[str], head: Head) -> int | None:
    parts = [p.lower() for p in head.path.parts]
    return {"minute": 60, "second": 1, "hour": 3600, "daily": 86400}.get(
        next((p for p in parts if p in ("minute", "second", "hour", "daily")), "")
    )


def _lean_path(head: Head) -> bool:
    return lean_layout(Path(head.path)) is not None


LEAN = Profile(
    key="lean",
    title="QuantConnect Lean data folder",
    source="https://github.com/QuantConnect/Lean/blob/master/Data/readme.md",
    name=re.compile(r"\d{8}_(?:trade|quote|openinterest)(?:_[a-z]+)?\.(?:zip|csv)", re.IGNORECASE),
    layout=lambda h: (
        _all_rows(h, lambda x: re.match(r"^\d+(?:,[-\d.]+){4,}", x.strip()) is not None) or not h.lines
    ),
    tz=None,  # decided by the Lean layout (paths.LeanLayout.zone) in bar_frame, else TIS_MARKET_TZ
    bar_label="open",
    interval=_lean_interval,
    symbol_rule=lambda _m, h: h.path.parent.name.upper(),
    path_check=_lean_path,
)

PROFILES: tuple[Profile, ...] = (
    LEAN,
    BINANCE,
    HISTDATA,
    DUKASCOPY,
    KRAKEN,
    POLYGON,
    DATABENTO,
    NINJATRADER,
    METATRADER,
)
BY_KEY = {p.key: p for p in PROFILES}


# ------------------------------------------------------------------------------------------------------------
# What was applied to one file
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Applied:
    """The conventions a file is read with, and where each came from (``profile``, ``override`` or
    ``default``: TIS_MARKET_TZ / TIS_MARKET_BAR_LABEL / the generic symbol rule)."""

    profile: str | None
    symbol: str | None  # None: from a symbol column, or the generic rule on the path
    tz: str
    bar_label: str
    interval_seconds: int | None  # the interval the profile reads from the name/path; None: measured
    origin: dict[str, str]
    warnings: tuple[str, ...] = ()
    roles: tuple[tuple[str, str], ...] = ()
    members: str | None = None
    fixed_point: float | None = None
    symbol_map: dict[str, str] = field(default_factory=dict)
    tz_forced: bool = False  # the override names the zone: it wins over the Lean layout's zone too

    def to_json(self) -> dict:
        return {
            "profile": self.profile,
            "symbol": self.symbol,
            "tz": self.tz,
            "bar_label": self.bar_label,
            "interval_seconds": self.interval_seconds,
            "origin": dict(self.origin),
            "warnings": list(self.warnings),
        }


def match(head: Head) -> tuple[Profile, re.Match[str]] | None:
    """The first profile whose name pattern (on the file name, or the archive member's) and layout both match
    the file."""
    for profile in PROFILES:
        m = profile.name.fullmatch(head.path.name) or (
            profile.name.fullmatch(head.member) if head.member and head.member != head.path.name else None
        )
        if m is None or not profile.path_check(head):
            continue
        if profile.layout(head):
            return profile, m
    return None


def resolve(
    head: Head,
    default_tz: str,
    default_bar_label: str,
    rules: SourceRules | None = None,
    rel: str | None = None,
) -> Applied:
    """The conventions for one file: the override file's settings for its path (``rel``, relative to the data
    directory), else the matching profile's, else the defaults."""
    found = match(head)
    origin: dict[str, str] = {}
    warnings: list[str] = []
    profile: Profile | None = None
    symbol: str | None = None
    interval: int | None = None
    tz, bar_label = default_tz, default_bar_label
    origin["tz"] = origin["bar_label"] = "default"
    origin["symbol"] = "column or file name"
    if found is not None:
        profile, m = found
        interval = profile.interval(m, head)
        if not profile.symbol_column:
            symbol = profile.symbol_rule(m, head)
            origin["symbol"] = "profile"
        else:
            origin["symbol"] = "column"
        zone = profile.tz
        if profile is LEAN:
            layout = lean_layout(Path(head.path))
            zone = None if layout is None else layout.zone
        if zone is not None:
            tz, origin["tz"] = zone, "profile"
        elif profile.zone_note:
            warnings.append(
                f"time zone not stated by the file ({profile.zone_note}): {default_tz} (TIS_MARKET_TZ) "
                "used; name it in tis-sources.toml"
            )
        bar_label, origin["bar_label"] = profile.bar_label, "profile"
        if interval is not None and interval != 60:
            warnings.append(f"{profile.title}: the name says a {_label(interval)} interval, not 1-minute")
        if profile is BINANCE and any(
            p.lower() in ("markpriceklines", "indexpriceklines", "premiumindexklines")
            for p in head.path.parts
        ):
            warnings.append("index/mark/premium price klines, not traded prices")
    tz_forced = False
    symbol_map: dict[str, str] = {}
    if rules is not None:
        symbol_map = dict(rules.symbols)
        if rel is not None:
            setting = rules.for_path(rel)
            if setting.tz is not None:
                tz, origin["tz"], tz_forced = setting.tz, "override", True
            if setting.bar_label is not None:
                bar_label, origin["bar_label"] = setting.bar_label, "override"
            if setting.symbol is not None:
                symbol, origin["symbol"] = setting.symbol, "override"
            if setting.tz is not None:
                warnings = [w for w in warnings if not w.startswith("time zone not stated")]
    if symbol is not None and symbol in symbol_map:
        symbol, origin["symbol"] = symbol_map[symbol], "override (symbols map)"
    return Applied(
        profile=None if profile is None else profile.key,
        symbol=symbol,
        tz=tz,
        bar_label=bar_label,
        interval_seconds=interval,
        origin=origin,
        warnings=tuple(warnings),
        roles=() if profile is None else profile.roles,
        members=None if profile is None else profile.members,
        fixed_point=None if profile is None else profile.fixed_point,
        symbol_map=symbol_map,
        tz_forced=tz_forced,
    )


def _label(seconds: int) -> str:
    return interval_label(seconds)
