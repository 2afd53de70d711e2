"""Readers for 1-minute OHLCV bar files of many shapes (pure pandas/pyarrow: no Dagster, no database).

Everything is detected from the file itself, never from a list of known file names:

* **Container**: by magic bytes first, then by suffix: ``.zip`` (every data member is read), ``.gz``/``.bz2``/
  ``.xz`` (the inner name without the suffix says what is inside), Parquet (``PAR1``), Feather/Arrow IPC
  (``ARROW1``/``FEA1``), JSON (``.json``; ``.jsonl``/``.ndjson`` as one record per line) and delimited text
  (anything else: ``.csv``, ``.txt``, ``.tsv``...). A UTF-8 BOM, UTF-16 with BOM, CRLF and lone-CR line ends
  are handled; text that is not UTF-8 but looks like text is read as Latin-1 (with a note); bytes that do not
  look like text raise :class:`BarFileError`.
* **Delimited text**: the separator is sniffed on the first lines (tab, ``;``, ``|``, ``,`` and, last,
  runs of whitespace; the first one that gives the same field count, at least 5, on 80% of the lines wins).
  The first non-blank line is a header when none of its fields is a number. When the header has as many
  names as the rows have fields, the names are used; when it has one name fewer and the content shows a date
  column followed by a time column (backtrader's ``Date,Open,...`` over ``date,time,open,...`` rows), a
  ``time`` name is inserted after the date; otherwise the header is ignored and the columns are inferred from
  their content (with a note). Quoted fields (``"1,234.50"``) are split with a vectorised regular
  expression; commas inside numbers are thousands separators (or the decimal mark in ``;``/tab files whose
  numbers have commas and no dots).
* **Column roles** by name (case and punctuation ignored): the timestamp is ``timestamp``, ``datetime``,
  ``date``, ``time``, ``open_time``, ``ts``... or a ``date`` plus a ``time`` column; ``open``/``o``,
  ``high``/``h``, ``low``/``l``, ``close``/``c``/``last`` (``adj close`` is not ``close``; ``mid``/``bid``/
  ``ask`` prefixed names are used, in that order, when there is no plain one), ``volume``/``vol``/``v``/
  ``tick_volume``/``qty``..., ``symbol``/``ticker``/``instrument``/``pair``.... Column order does not matter
  (mplfinance's ``Date,Open,Close,High,Low,Volume``). Without usable names the roles come from the content:
  the first date-time column (or a date column followed by a time column, or a first column of epoch
  numbers or of milliseconds since midnight), then the numeric columns in order as open, high, low, close
  and volume; if that order is not consistent with the values (the high column is not the highest of the
  four), the column that is always highest is high, the always-lowest one low, the other two open, close.
* **Timestamps**: date-time strings are parsed with one explicit format detected on a sample from the whole
  column (ISO 8601 with or without ``T``/microseconds/offset/``Z``, ``M/D/YYYY H:MM`` (D/M when the values
  say so), ``YYYYMMDD HHMMSS``, ``YYYY.MM.DD``, ``DD.MM.YYYY``, ``DD-Mon-YYYY``...). Values with an offset are
  converted to UTC per row (mixed offsets are fine); naive values are local time in the ``tz`` argument
  (default ``UTC``, the pipeline passes ``TIS_MARKET_TZ``), which is recorded in ``notes``. Around DST
  changes, a wall time that does not exist (spring forward) is NaT, never moved onto the next hour's bars;
  the hour repeated in autumn is split into its daylight and standard pass by the order of each symbol's
  rows (forward or newest first), and is NaT where that order does not tell (the hour appears once). Integer
  timestamps are ``YYYYMMDD`` (dates), ``YYYYMMDDHHMM[SS]`` or epoch seconds/milliseconds/microseconds/
  nanoseconds, decided per value by magnitude (< 1e11 s, < 1e14 ms, < 1e17 us, else ns). Integers below
  86,400,000 are milliseconds since midnight when the file name (or the zip member name) carries a
  ``YYYYMMDD`` date (QuantConnect Lean minute files); without such a date the file is refused.
* **Lean layout**: a path ``.../<security type>/<market>/<resolution>/<symbol>/...`` (e.g.
  ``equity/usa/minute/ibm/20131004_trade.zip``). ``equity/usa`` times are New York local time; ``crypto``
  times are UTC; other Lean security types use ``tz``. Equity and option prices that are all whole numbers
  are deci-cents (USD x 10,000) and are divided by 10,000. Lean ``_quote`` and ``_openinterest`` files are
  reported in ``skipped`` (they are not trade bars).
* **Symbol**: a symbol column when there is one (upper-cased), else the path: the file name without its
  suffixes; if it is or starts with a date (``20131004_trade``, ``2006-01-02-...``), the parent folder's
  name instead (the Lean symbol folder). From the name, dates (``20211231``, ``2006-01-02``, years,
  ``NOV2019``), bar-interval tokens (``1m``, ``m1``, ``5min``, ``h1``, ``daily``, ``minute``...), data-kind
  tokens (``bid``, ``ask``, ``trade``, ``quote``, ``ohlcv``, ``candles``, ``iday``...) and data-vendor tokens
  (``yahoofinance``, ``binance``, ``fxcm``...) are dropped; the rest keeps its separators and is upper-cased
  (``UNITTEST_BTC-1m.json`` -> ``UNITTEST_BTC``, ``btc-perp-20211231-20220201_1m.csv`` -> ``BTC-PERP``,
  ``gbpusd-m1-bid-2012.csv`` -> ``GBPUSD``, ``lean/.../ibm/20131004_trade.zip`` -> ``IBM``).
* **Interval**: per symbol, the median of the positive differences of the sorted unique timestamps. Only
  1-minute symbols are returned; coarser (or finer) ones are listed in ``skipped`` with their interval. With
  ``bar_label="close"`` timestamps are moved back by that interval so that ``timestamp`` is the bar's open.
* **Bad rows are kept**: a row with an empty/NaN/non-numeric price or volume, an unparseable (or, in a local
  zone, non-existent or ambiguous) timestamp or an empty symbol cell is returned with NaN/NaT/missing in the
  bad fields and its original text in ``raw`` (the line for text files, a JSON rendering of the record for
  JSON/Parquet/Feather); ``raw`` is None for clean rows. A row with the wrong number of fields (an extra
  field, a truncated last line) has NaN prices and volume, because their positions cannot be trusted, and
  keeps its timestamp if that parses. So every row with ``raw`` set has at least one NaN/NaT/missing value,
  and a validator that quarantines missing values catches all of them. OHLC logic (high < low...) is not
  checked here.
  A file that cannot be read at all raises :class:`BarFileError` naming the file (and the line when known).

``source_line`` is the 1-based physical line in the file (or in the zip/gz member) for delimited text and
JSON-lines, and the record index + 1 for JSON arrays, Parquet and Feather. ``source_file`` is the file's path;
for a zip with several data members it is ``<zip path>!<member name>``.
"""

from __future__ import annotations

import bz2
import csv
import datetime as dt
import gzip
import io
import json
import lzma
import os
import re
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "BarFileError",
    "FileInfo",
    "ReadResult",
    "FRAME_COLUMNS",
    "read_file",
    "scan",
    "read_bars",
    "symbol_from_path",
    "interval_label",
]

FRAME_COLUMNS = [
    "symbol",
    "timestamp",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "volume_missing",
    "source_file",
    "source_line",
    "raw",
]
ONE_MINUTE = 60
_NAT = np.iinfo(np.int64).min
_NS = 1_000_000_000
_MS_PER_DAY = 86_400_000
_SNIFF_LINES = 60
_SAMPLE = 200
# Bump when the parsing rules change, so that manifests written by an older reader are re-learned.
_READER_VERSION = "2"

_TEXT_SUFFIXES = {".csv", ".txt", ".tsv", ".psv", ".dat", ".prn"}
_JSON_SUFFIXES = {".json", ".jsonl", ".ndjson"}
_PARQUET_SUFFIXES = {".parquet", ".pq", ".parq"}
_FEATHER_SUFFIXES = {".feather", ".ftr", ".arrow", ".ipc"}
_COMPRESSED_SUFFIXES = {".zip", ".gz", ".bz2", ".xz"}
_DATA_SUFFIXES = (
    _TEXT_SUFFIXES | _JSON_SUFFIXES | _PARQUET_SUFFIXES | _FEATHER_SUFFIXES | _COMPRESSED_SUFFIXES
)
# Documentation files that may sit in a data directory; everything else with a data suffix must be bars.
_NOT_DATA_STEMS = ("readme", "license", "licence", "notice", "changelog", "copying", "sources")


# --------------------------------------------------------------------------------------------------------------
# Public types
# --------------------------------------------------------------------------------------------------------------


class BarFileError(Exception):
    """A bar file that cannot be read at all. The message names the file, the reason and the line if known."""

    def __init__(self, path: str | os.PathLike[str], reason: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        self.reason = reason
        where = self.path if line is None else f"{self.path}, line {line}"
        super().__init__(f"{where}: {reason}")

    def __reduce__(self):  # keep it picklable (Dagster/multiprocessing)
        return (BarFileError, (self.path, self.reason, self.line))


@dataclass
class FileInfo:
    """What the manifest learns about one file, once."""

    path: str
    size: int
    mtime_ns: int
    fmt: str
    symbols: list[str]
    first: pd.Timestamp | None
    last: pd.Timestamp | None
    interval_seconds: int | None
    rows: int
    error: str | None = None

    @property
    def holds_minute_bars(self) -> bool:
        """Read without error, of 1-minute bars, with at least one usable timestamp: a file the ingest loads from."""
        return self.error is None and self.interval_seconds == ONE_MINUTE and self.first is not None

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "fmt": self.fmt,
            "symbols": list(self.symbols),
            "first": None if self.first is None else self.first.isoformat(),
            "last": None if self.last is None else self.last.isoformat(),
            "interval_seconds": self.interval_seconds,
            "rows": self.rows,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, d: dict) -> FileInfo:
        def ts(v):
            return None if v is None else pd.Timestamp(v).tz_convert("UTC").as_unit("ns")

        return cls(
            path=d["path"],
            size=int(d["size"]),
            mtime_ns=int(d["mtime_ns"]),
            fmt=d["fmt"],
            symbols=list(d["symbols"]),
            first=ts(d["first"]),
            last=ts(d["last"]),
            interval_seconds=d["interval_seconds"],
            rows=int(d["rows"]),
            error=d.get("error"),
        )


@dataclass
class ReadResult:
    frame: pd.DataFrame
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------------------


def interval_label(seconds: int | None) -> str:
    """60 -> '1m', 300 -> '5m', 3600 -> '1h', 86400 -> '1d', 90 -> '90s'."""
    if seconds is None:
        return "unknown"
    for unit, n in (("w", 604_800), ("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= n and seconds % n == 0:
            return f"{seconds // n}{unit}"
    return f"{seconds}s"


def _empty_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "symbol": pd.Series([], dtype="str"),
            "timestamp": pd.Series([], dtype="datetime64[ns, UTC]"),
            "open": pd.Series([], dtype="float64"),
            "high": pd.Series([], dtype="float64"),
            "low": pd.Series([], dtype="float64"),
            "close": pd.Series([], dtype="float64"),
            "volume": pd.Series([], dtype="float64"),
            "volume_missing": pd.Series([], dtype="bool"),
            "source_file": pd.Series([], dtype="str"),
            "source_line": pd.Series([], dtype="int64"),
            "raw": pd.Series([], dtype="object"),
        }
    )


def _norm(name: object) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def _strip_suffixes(name: str) -> str:
    """``x.csv.gz`` -> ``x``; only known data suffixes are removed (``BRK.B.csv`` -> ``BRK.B``)."""
    while True:
        base, ext = os.path.splitext(name)
        if ext.lower() in _DATA_SUFFIXES and base:
            name = base
        else:
            return name


_DATE8 = re.compile(r"(?<!\d)((?:19|20|21)\d{2})(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])(?!\d)")
_DATE_ISO = re.compile(r"(?<!\d)((?:19|20|21)\d{2})-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])(?!\d)")


def _date_in_name(name: str) -> dt.date | None:
    for rx in (_DATE8, _DATE_ISO):
        m = rx.search(name)
        if m:
            try:
                return dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
            except ValueError:
                continue
    return None


_INTERVAL_TOKEN = re.compile(
    r"^(?:\d+(?:s|sec|secs|seconds?|m|mn|min|mins|minutes?|t|h|hr|hrs|hours?|d|days?|w|wk|weeks?|mo|mon|months?)"
    r"|(?:s|m|mn|min|h|d|w)\d+|secs?|seconds?|mins?|minutes?|minutely|hours?|hourly|days?|daily|weeks?|weekly"
    r"|months?|monthly|ticks?|intraday|iday|eod)$",
    re.IGNORECASE,
)
_KIND_TOKENS = {
    "bid", "ask", "mid", "trade", "trades", "quote", "quotes", "ohlc", "ohlcv", "bar", "bars", "candle",
    "candles", "candlestick", "candlesticks", "kline", "klines", "data", "prices", "price", "history", "hist",
    "historical", "export", "sample", "test", "testdata", "spot", "agg", "aggs", "aggregates",
}  # fmt: skip
_VENDOR_TOKENS = {
    "yahoofinance", "yahoo", "yf", "finam", "dukascopy", "histdata", "fxcm", "oanda", "binance", "kraken",
    "bitfinex", "bitstamp", "coinbase", "gdax", "kucoin", "okx", "bybit", "polygon", "alpaca", "iex", "stooq",
    "kibot", "firstratedata", "tiingo", "quantconnect", "metatrader", "mt4", "mt5", "tradingview", "ib", "ibkr",
    "algoseek", "cryptotick",
}  # fmt: skip
_MONTH_YEAR = re.compile(
    r"^(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*[-_]?(?:\d{2}|\d{4})$", re.IGNORECASE
)
_YEAR_TOKEN = re.compile(r"^(?:19|20)\d{2}$")
_YEAR_MONTH_TOKEN = re.compile(r"^(?:19|20)\d{2}(?:0[1-9]|1[0-2])$")
_DATE_PREFIX = re.compile(r"^(?:\d{8}|\d{4}-\d{2}-\d{2})(?!\d)")


def _clean_symbol_name(name: str) -> str:
    s = _DATE_ISO.sub("-", name)
    s = _DATE8.sub("-", s)
    parts = re.split(r"([-_.\s]+)", s)
    kept: list[tuple[str, str]] = []  # (separator before, token)
    sep = ""
    for i, tok in enumerate(parts):
        if i % 2 == 1:
            sep += tok
            continue
        if not tok:
            continue
        low = tok.lower()
        drop = (
            _INTERVAL_TOKEN.match(tok) is not None
            or low in _KIND_TOKENS
            or low in _VENDOR_TOKENS
            or _MONTH_YEAR.match(tok) is not None
            or (_YEAR_TOKEN.match(tok) is not None and len(parts) > 1)
            or _YEAR_MONTH_TOKEN.match(tok) is not None
        )
        if not drop:
            kept.append((sep if kept else "", tok))
        sep = ""
    return "".join(s + t for s, t in kept)


def symbol_from_path(path: str | os.PathLike[str]) -> str:
    """The symbol a file without a symbol column stands for (see the module docstring for the rule)."""
    p = Path(path)
    stem = _strip_suffixes(p.name)
    parent = p.parent.name
    if _DATE_PREFIX.match(stem) and parent:
        return (_clean_symbol_name(parent) or parent).upper()
    sym = _clean_symbol_name(stem)
    if not sym and parent:
        sym = _clean_symbol_name(parent) or parent
    return (sym or stem).upper()


_LEAN_TYPES = {
    "equity", "crypto", "forex", "cfd", "future", "futures", "option", "index", "indexoption",
    "futureoption", "cryptofuture",
}  # fmt: skip
_LEAN_RESOLUTIONS = {"tick", "second", "minute", "hour", "daily"}


@dataclass(frozen=True)
class _Lean:
    security_type: str
    market: str
    resolution: str

    @property
    def zone(self) -> str | None:
        if self.security_type == "equity" and self.market == "usa":
            return "America/New_York"
        if self.security_type in ("crypto", "cryptofuture"):
            return "UTC"
        return None

    @property
    def scaled(self) -> bool:
        return self.security_type in ("equity", "option")


def _lean_layout(path: Path) -> _Lean | None:
    parts = [x.lower() for x in path.parts]
    for i in range(len(parts) - 3):
        if parts[i] in _LEAN_TYPES and parts[i + 2] in _LEAN_RESOLUTIONS:
            return _Lean(parts[i], parts[i + 1], parts[i + 2])
    return None


@dataclass
class _Ctx:
    path: Path  # the file on disk
    display: str  # source_file value
    inner_name: str  # member name (zip/gz) or file name
    tz: str
    bar_label: str
    lean: _Lean | None
    notes: list[str]
    symbol_path: Path | None = None  # what the symbol is taken from when there is no symbol column

    @property
    def file_date(self) -> dt.date | None:
        return _date_in_name(self.inner_name) or _date_in_name(self.path.name)

    def note(self, text: str) -> None:
        self.notes.append(f"{self.display}: {text}")

    def error(self, reason: str, line: int | None = None) -> BarFileError:
        return BarFileError(self.display, reason, line)


# --------------------------------------------------------------------------------------------------------------
# Raw tables: every format is turned into positional columns (pyarrow arrays) + bookkeeping per row
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _Raw:
    columns: list[pa.Array]
    names: list[str] | None
    line: np.ndarray  # int64, source_line per row
    pre_bad: np.ndarray  # bool, rows already known to be malformed (wrong field count)
    raw_text: Callable[[np.ndarray], list[str]]
    fmt: str
    delimiter: str | None = None
    header_mismatch: str | None = None
    decimal_comma: bool = False  # ';'/tab files whose numbers use ',' as the decimal mark ('.' = thousands)

    @property
    def nrows(self) -> int:
        return len(self.line)

    @staticmethod
    def empty(fmt: str) -> _Raw:
        return _Raw([], None, np.zeros(0, np.int64), np.zeros(0, bool), lambda idx: [], fmt)


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def _decode(data: bytes, ctx: _Ctx) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    elif data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise ctx.error(f"not readable as UTF-16 text: {exc.reason}") from exc
    head = data[:8192]
    if b"\x00" in head:
        raise ctx.error(
            "binary content (NUL bytes), not a text bar file", line=_line_of(head, head.index(b"\x00"))
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        sample = data[:65536]
        arr = np.frombuffer(sample, dtype=np.uint8)
        control = int(((arr < 9) | ((arr > 13) & (arr < 32)) | (arr == 127)).sum())
        if control > max(2, len(sample) // 200):
            raise ctx.error(
                f"binary content, not a text bar file (invalid UTF-8 at byte {exc.start})",
                line=_line_of(data, exc.start),
            ) from exc
        ctx.note(f"not valid UTF-8 (first bad byte on line {_line_of(data, exc.start)}); decoded as Latin-1")
        return data.decode("latin-1")


_DECIMAL_COMMA = re.compile(r"^[+-]?(?:\d{1,3}(?:\.\d{3})+|\d+),\d+$")
_NUMLIKE = re.compile(r"^[+-]?(?:\d[\d,]*(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")


def _split_one(line: str, delim: str) -> list[str]:
    if delim == " ":
        return line.split()
    if '"' in line:
        try:
            return [f.strip() for f in next(csv.reader([line], delimiter=delim))]
        except (csv.Error, StopIteration):
            pass
    return [f.strip().strip('"') for f in line.split(delim)]


def _mode(values: list[int]) -> tuple[int, float]:
    if not values:
        return 0, 0.0
    counts: dict[int, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    best = max(counts, key=lambda k: (counts[k], k))
    return best, counts[best] / len(values)


def _sniff_delimiter(sample: list[str], ctx: _Ctx) -> str:
    """Tab, ';', '|', ',' (in that preference) when it gives the same field count (>= 5) on most lines; runs of
    whitespace only when none of them does. Bad lines in the sample lower a delimiter's share, not rule it out."""
    body = sample[1:] if len(sample) > 1 else sample
    stats = {d: _mode([len(_split_one(s, d)) for s in body]) for d in ("\t", ";", "|", ",", " ")}
    for minimum, share_needed in ((5, 0.8), (5, 0.5), (2, 0.8), (2, 0.5)):
        for d in ("\t", ";", "|", ","):
            n, share = stats[d]
            if n >= minimum and share >= share_needed:
                return d
        n, share = stats[" "]
        if n >= minimum and share >= share_needed:
            return " "
    raise ctx.error(
        "cannot tell the field separator (tried tab, ';', '|', ',' and whitespace on the first lines)", line=1
    )


def _split_lines(text: str) -> pa.Array:
    sep = "\n" if "\n" in text else "\r"
    lines = pc.list_flatten(pc.split_pattern(pa.array([text], type=pa.large_string()), sep))
    if sep == "\n":
        lines = pc.utf8_rtrim(lines, characters="\r")
    return lines


def _field_regex(n: int, delim: str) -> str:
    d = re.escape(delim)
    fields = [rf'\s*(?:"(?P<q{j}>(?:[^"]|"")*)"|(?P<u{j}>[^"{d}]*?))\s*' for j in range(n)]
    return "^" + d.join(fields) + "$"


def _columns_from_lists(lists: pa.Array, counts: np.ndarray, n: int) -> list[pa.Array]:
    offsets = lists.offsets.to_numpy()[:-1].astype(np.int64)
    values = lists.values  # not trimmed here: numbers are trimmed only if a plain cast fails
    cols = []
    for j in range(n):
        has = counts > j
        idx = pa.array(np.where(has, offsets + j, 0), mask=~has)
        cols.append(values.take(idx))
    return cols


def _raw_from_text(text: str, ctx: _Ctx, fmt: str) -> _Raw:
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = _split_lines(text)
    # blank (or whitespace-only) lines are not rows
    length = pc.utf8_length(pc.ascii_trim_whitespace(lines)).to_numpy(zero_copy_only=False)
    nonblank = np.flatnonzero(length > 0)
    if len(nonblank) == 0:
        ctx.note("empty file: no rows")
        return _Raw.empty(fmt)
    sample = lines.take(pa.array(nonblank[:_SNIFF_LINES])).to_pylist()
    delim = _sniff_delimiter(sample, ctx)
    first = _split_one(sample[0], delim)
    has_header = not any(_NUMLIKE.match(f) for f in first) and any(re.search(r"[A-Za-z]", f) for f in first)
    data_idx = nonblank[1:] if has_header else nonblank
    if len(data_idx) == 0:
        ctx.note("header only: no rows")
        return _Raw.empty(fmt)
    data_lines = lines.take(pa.array(data_idx))
    quoted = '"' in text and (pc.any(pc.match_substring(data_lines, '"')).as_py() or False)

    if not quoted:
        if delim == " ":
            lists = pc.split_pattern_regex(pc.ascii_trim_whitespace(data_lines), r"\s+")
        else:
            lists = pc.split_pattern(data_lines, delim)
        counts = pc.list_value_length(lists).to_numpy(zero_copy_only=False).astype(np.int64)
        n = int(np.bincount(counts).argmax())
        columns = _columns_from_lists(lists, counts, n)
    else:
        body = sample[1:] if has_header else sample
        n, _ = _mode([len(_split_one(s, delim)) for s in body] or [len(first)])
        # quoted fields: split by a vectorised regex; lines it does not fit go through the csv module below
        struct = pc.extract_regex(data_lines, _field_regex(n, delim))
        matched = ~struct.is_null().to_numpy(zero_copy_only=False)
        columns = []
        for j in range(n):
            q = struct.field(f"q{j}")
            u = struct.field(f"u{j}")
            col = pc.binary_join_element_wise(q, u, pa.scalar("", q.type))
            col = pc.replace_substring(col, '""', '"')
            columns.append(col)
        counts = np.full(len(data_idx), n, dtype=np.int64)
        bad_idx = np.flatnonzero(~matched)
        if len(bad_idx):
            # Only the malformed lines go through the csv module (to keep what can be kept, positionally).
            texts = data_lines.take(pa.array(bad_idx)).to_pylist()
            per_col = [np.full(len(data_idx), None, dtype=object) for _ in range(n)]
            for k, t in zip(bad_idx, texts, strict=True):
                fields = _split_one(t, delim)
                counts[k] = len(fields)
                for j in range(min(n, len(fields))):
                    per_col[j][k] = fields[j]
            mask = pa.array(matched)
            columns = [
                pc.if_else(mask, col, pa.array(per_col[j], type=pa.large_string()))
                for j, col in enumerate(columns)
            ]
    names: list[str] | None = None
    mismatch = None
    if has_header:
        if len(first) == n:
            names = first
        else:
            mismatch = f"header has {len(first)} names but rows have {n} fields"
            if len(first) == n - 1:
                names = _insert_time_name(first, columns, counts == n)
    pre_bad = counts != n
    line = (data_idx + 1).astype(np.int64)

    def raw_text(idx: np.ndarray) -> list[str]:
        return data_lines.take(pa.array(idx, type=pa.int64())).to_pylist()

    raw = _Raw(columns, names, line, pre_bad, raw_text, fmt, delimiter=delim, header_mismatch=mismatch)
    if delim != ",":
        body = sample[1:] if has_header else sample
        raw.decimal_comma = any(
            _DECIMAL_COMMA.match(f) for line_text in body for f in _split_one(line_text, delim)
        )
        if raw.decimal_comma:
            ctx.note("numbers use ',' as the decimal mark ('.' as thousands separator)")
    if mismatch:
        if names is not None:
            ctx.note(f"{mismatch}; a separate time column follows the date column, so 'time' was inserted")
        else:
            ctx.note(f"{mismatch}; the header was ignored and the columns were inferred from their content")
    return raw


def _insert_time_name(header: list[str], columns: list[pa.Array], good: np.ndarray) -> list[str] | None:
    """backtrader: a header with one name fewer than fields, because date and time are two fields."""
    idx = _sample_idx(good)
    for k in range(len(header)):
        if k + 1 >= len(columns):
            break
        if _classify(columns[k], idx) == "date" and _is_time_column(columns[k + 1], idx):
            return [*header[: k + 1], "time", *header[k + 1 :]]
    return None


def _raw_from_table(table: pa.Table, fmt: str, line_start: int = 1) -> _Raw:
    columns = []
    for col in table.columns:
        arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        if pa.types.is_dictionary(arr.type):
            arr = arr.dictionary_decode()
        columns.append(arr)
    n = table.num_rows

    def raw_text(idx: np.ndarray) -> list[str]:
        rows = table.take(pa.array(idx, type=pa.int64())).to_pylist()
        return [json.dumps(r, default=str) for r in rows]

    return _Raw(
        columns,
        [str(c) for c in table.column_names],
        np.arange(line_start, line_start + n, dtype=np.int64),
        np.zeros(n, bool),
        raw_text,
        fmt,
    )


def _arrow_from_series(s: pd.Series) -> pa.Array:
    try:
        return pa.array(s, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
        isna = pd.isna(s).to_numpy()
        out = np.where(isna, None, s.astype(str).to_numpy(dtype=object))
        return pa.array(out, type=pa.large_string())


_KNOWN_NAMES: set[str] = set()  # filled after the role tables below


def _raw_from_json(text: str, ctx: _Ctx, fmt: str) -> _Raw:
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        ctx.note("empty file: no rows")
        return _Raw.empty(fmt)
    lines_mode = ctx.inner_name.lower().endswith((".jsonl", ".ndjson"))
    obj = None
    if not lines_mode:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            if exc.msg.startswith("Extra data") and exc.lineno > 1:
                lines_mode = True
            else:
                raise ctx.error(f"invalid JSON: {exc.msg} (column {exc.colno})", line=exc.lineno) from exc
    if lines_mode:
        import pyarrow.json as pajson

        try:
            table = pajson.read_json(io.BytesIO(text.encode("utf-8")))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise ctx.error(f"invalid JSON lines: {exc}") from exc
        return _raw_from_table(table, "ndjson")
    return _raw_from_json_obj(obj, ctx, fmt)


def _find_bar_list(obj, depth: int = 0):
    if isinstance(obj, list):
        if depth == 0 or (obj and isinstance(obj[0], list | dict)):
            return obj
        return None
    if not isinstance(obj, dict) or depth > 3:
        return None
    if "columns" in obj and "data" in obj and isinstance(obj["data"], list):
        return obj
    keys = list(obj)
    if (
        keys
        and any(_norm(k) in _KNOWN_NAMES for k in keys)
        and all(isinstance(v, list | dict) for v in obj.values())
    ):
        return obj  # columnar: {"timestamp": [...], "open": [...]} or pandas' orient="columns"
    if keys and all(isinstance(v, dict) for v in obj.values()):
        inner = next(iter(obj.values()))
        if any(_norm(k) in _KNOWN_NAMES for k in inner):
            return ("index", obj)  # pandas' orient="index"
    for v in obj.values():
        if isinstance(v, list) and v and isinstance(v[0], list | dict):
            return v
    for v in obj.values():
        found = _find_bar_list(v, depth + 1)
        if found is not None:
            return found
    return None


def _raw_from_json_obj(obj, ctx: _Ctx, fmt: str) -> _Raw:
    found = _find_bar_list(obj)
    if found is None:
        raise ctx.error("JSON holds no list of bars (expected an array of arrays, of records, or columns)")
    if isinstance(found, tuple):
        df = pd.DataFrame.from_dict(found[1], orient="index")
        records = None
    elif isinstance(found, dict) and "columns" in found and "data" in found:
        df = pd.DataFrame(found["data"], columns=found["columns"])
        records = found["data"]
    elif isinstance(found, dict):
        try:
            df = pd.DataFrame(found)
        except ValueError as exc:
            raise ctx.error(f"JSON columns of different lengths: {exc}") from exc
        records = None
    else:
        records = found
        if not records:
            ctx.note("empty JSON array: no rows")
            return _Raw.empty(fmt)
        df = None
    pre_bad = None
    names: list[str] | None
    if df is None:
        first = next((r for r in records if r is not None), None)
        if isinstance(first, dict):
            try:
                df = pd.DataFrame.from_records(records)
                pre_bad = np.zeros(len(records), bool)
            except (TypeError, ValueError, AttributeError):
                ok = [isinstance(r, dict) for r in records]  # only on malformed input
                df = pd.DataFrame.from_records([r if isinstance(r, dict) else {} for r in records])
                pre_bad = ~np.array(ok, dtype=bool)
            names = [str(c) for c in df.columns]
        else:
            try:
                lens = np.fromiter(map(len, records), dtype=np.int64, count=len(records))
                n = int(np.bincount(lens).argmax())
                df = pd.DataFrame(records)
            except (TypeError, ValueError):
                fixed = [r if isinstance(r, list | tuple) else [] for r in records]  # only on malformed input
                lens = np.array([len(r) for r in fixed], dtype=np.int64)
                n = int(np.bincount(lens).argmax())
                df = pd.DataFrame(fixed)
            pre_bad = lens != n
            df = df.iloc[:, :n]
            names = None
    else:
        names = [str(c) for c in df.columns]
    if pre_bad is None:
        pre_bad = np.zeros(len(df), bool)
    columns = [_arrow_from_series(df.iloc[:, j]) for j in range(df.shape[1])]
    if names is not None:
        names = [str(c) for c in df.columns]

    def raw_text(idx: np.ndarray) -> list[str]:
        if records is not None:
            return [json.dumps(records[int(i)], default=str) for i in idx]
        return [json.dumps(df.iloc[int(i)].to_dict(), default=str) for i in idx]

    return _Raw(columns, names, np.arange(1, len(df) + 1, dtype=np.int64), pre_bad, raw_text, fmt)


# --------------------------------------------------------------------------------------------------------------
# Column classification and role assignment
# --------------------------------------------------------------------------------------------------------------

_TS_NAMES = [
    "timestamp", "datetime", "opentime", "timeopen", "datetimeutc", "timestamputc", "utctimestamp", "bartime",
    "starttime", "begintime", "candletime", "candlebegin", "gmttime", "utctime", "localtime", "time", "date",
    "ts", "dt", "t", "utc", "period", "index", "unnamed0", "indexlevel0", "",
]  # fmt: skip
_PRICE_NAMES = {
    "open": ["open", "o", "openprice", "priceopen", "first"],
    "high": ["high", "h", "highprice", "pricehigh", "max"],
    "low": ["low", "l", "lowprice", "pricelow", "min"],
    "close": ["close", "c", "closeprice", "priceclose", "last"],
}
_SIDE_PREFIXES = ("mid", "bid", "ask")
_VOLUME_NAMES = [
    "volume", "vol", "v", "basevolume", "volumebase", "totalvolume", "tickvolume", "tickvol", "realvolume",
    "qty", "quantity", "size", "volumefrom", "quotevolume", "volumeto", "amount",
]  # fmt: skip
_SYMBOL_NAMES = [
    "symbol", "ticker", "instrument", "instrumentid", "pair", "sym", "asset", "code", "secid", "contract",
    "product", "coin", "securityid",
]  # fmt: skip
_KNOWN_NAMES.update(n for n in _TS_NAMES if n)
_KNOWN_NAMES.update(n for names in _PRICE_NAMES.values() for n in names)
_KNOWN_NAMES.update(_VOLUME_NAMES)
_KNOWN_NAMES.update(_SYMBOL_NAMES)

_INT_RE = re.compile(r"^[+-]?\d+$")
_FLOAT_RE = re.compile(
    r"^[+-]?(?:\d[\d,]*(?:\.\d*)?|\.\d+|\d+(?:\.\d{3})*,\d+)(?:[eE][+-]?\d+)?$|^[+-]?(?:nan|inf)$"
)
_TIME_RE = re.compile(r"^\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:\s?[AaPp]\.?[Mm]\.?)?$")
_DIGITS_RE = re.compile(r"^[+-]?\d+(?:\.\d+)?$")


def _sample_idx(good: np.ndarray, k: int = _SAMPLE) -> np.ndarray:
    idx = np.flatnonzero(good)
    if len(idx) <= k:
        return idx
    head = idx[: k // 2]
    spread = idx[np.linspace(0, len(idx) - 1, k - k // 2).astype(np.int64)]
    return np.unique(np.concatenate([head, spread]))


def _sample_values(col: pa.Array, idx: np.ndarray) -> list:
    if len(idx) == 0:
        return []
    return [v for v in col.take(pa.array(idx, type=pa.int64())).to_pylist() if v is not None]


def _sample_strings(col: pa.Array, idx: np.ndarray) -> list[str]:
    out = []
    for v in _sample_values(col, idx):
        s = str(v).strip()
        if s:
            out.append(s)
    return out


def _mostly(pred: Callable[[str], bool], values: list[str], share: float = 0.9) -> bool:
    return bool(values) and sum(1 for v in values if pred(v)) >= share * len(values)


def _numeric_kind(values: np.ndarray, file_date: dt.date | None) -> str | None:
    """What integer/float timestamps are: yyyymmdd, compact14, compact12, ms_midnight, epoch, or None."""
    v = values[np.isfinite(values)]
    if len(v) == 0:
        return None
    integral = bool(np.all(v == np.floor(v)))
    if integral and np.all((v >= 19000101) & (v <= 21991231)):
        s = pd.Series(v.astype(np.int64).astype(str))
        if pd.to_datetime(s, format="%Y%m%d", errors="coerce").notna().all():
            return "yyyymmdd"
    if integral and np.all((v >= 1.9e13) & (v < 2.2e13)):
        s = pd.Series(v.astype(np.int64).astype(str))
        if pd.to_datetime(s, format="%Y%m%d%H%M%S", errors="coerce").notna().all():
            return "compact14"
    if integral and np.all((v >= 1.9e11) & (v < 2.2e11)):
        s = pd.Series(v.astype(np.int64).astype(str))
        if pd.to_datetime(s, format="%Y%m%d%H%M", errors="coerce").notna().all():
            return "compact12"
    if integral and np.all((v >= 0) & (v < _MS_PER_DAY)):
        return "ms_midnight"
    if np.all(np.abs(v) >= 1e8):
        return "epoch"
    return None


def _classify(col: pa.Array, idx: np.ndarray) -> str:
    """datetime, date, time, int, float, text, empty or other (on a sample of rows)."""
    t = col.type
    if pa.types.is_timestamp(t):
        return "datetime"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_time(t):
        return "time"
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        vals = np.array([float(x) for x in _sample_values(col, idx)], dtype=np.float64)
        if len(vals) and _numeric_kind(vals, None) == "yyyymmdd":
            return "date"
        return "int" if pa.types.is_integer(t) else "float"
    if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)):
        return "other"
    vals = _sample_strings(col, idx)
    if not vals:
        return "empty"
    if _mostly(_INT_RE.match, vals):
        if _mostly(lambda s: len(s) == 8, vals) and _detect_format(vals, ["%Y%m%d"]):
            return "date"
        return "int"
    if _mostly(lambda s: _FLOAT_RE.match(s.lower()) is not None, vals):
        return "float"
    if _mostly(_TIME_RE.match, vals):
        return "time"
    fmt = _detect_format(vals)
    if fmt is not None:
        return "datetime" if _format_has_time(fmt, vals) else "date"
    return "text"


def _is_time_column(col: pa.Array, idx: np.ndarray) -> bool:
    cls = _classify(col, idx)
    if cls == "time":
        return True
    if cls == "int":
        vals = _sample_strings(col, idx)

        def ok(s: str) -> bool:
            if not (3 <= len(s) <= 6 and s.isdigit()):
                return False
            s = s.zfill(6) if len(s) >= 5 else s.zfill(4) + "00"
            return int(s[:2]) < 24 and int(s[2:4]) < 60 and int(s[4:6]) < 60

        return _mostly(ok, vals)
    return False


@dataclass
class _Roles:
    ts: int | None = None
    date: int | None = None
    time: int | None = None
    open: int | None = None
    high: int | None = None
    low: int | None = None
    close: int | None = None
    volume: int | None = None
    symbol: int | None = None
    content: bool = False

    def used(self) -> set[int]:
        return {
            i
            for i in (
                self.ts,
                self.date,
                self.time,
                self.open,
                self.high,
                self.low,
                self.close,
                self.volume,
                self.symbol,
            )
            if i is not None
        }


def _assign_roles(raw: _Raw, ctx: _Ctx) -> _Roles:
    good = ~raw.pre_bad
    idx = _sample_idx(good)
    cache: dict[int, str] = {}

    def cls(i: int) -> str:
        if i not in cache:
            cache[i] = _classify(raw.columns[i], idx)
        return cache[i]

    roles = _Roles()
    if raw.names is not None:
        norm = [_norm(n) for n in raw.names]
        pos = {}
        for i, n in enumerate(norm):
            pos.setdefault(n, i)
        # prices
        for role, keys in _PRICE_NAMES.items():
            i = next((pos[k] for k in keys if k in pos), None)
            if i is None:
                for side in _SIDE_PREFIXES:
                    word = keys[0]
                    i = pos.get(side + word, pos.get(word + side))
                    if i is not None:
                        ctx.note(f"{role} taken from column {raw.names[i]!r}")
                        break
            setattr(roles, role, i)
        found = [r for r in _PRICE_NAMES if getattr(roles, r) is not None]
        if 0 < len(found) < 4:
            missing = [r for r in _PRICE_NAMES if getattr(roles, r) is None]
            raise ctx.error(f"no {', '.join(missing)} column among {raw.names}")
        roles.volume = next((pos[k] for k in _VOLUME_NAMES if k in pos), None)
        roles.symbol = next((pos[k] for k in _SYMBOL_NAMES if k in pos), None)
        taken = roles.used()
        # timestamp
        if "date" in pos and "time" in pos and "timestamp" not in pos and "datetime" not in pos:
            di, ti = pos["date"], pos["time"]
            if cls(di) == "date":
                if not _is_time_column(raw.columns[ti], idx) and cls(ti) not in ("datetime", "int", "float"):
                    shown = ", ".join(repr(v) for v in _sample_strings(raw.columns[ti], idx)[:3])
                    raise ctx.error(
                        f"column {raw.names[ti]!r} is not a recognisable time of day (e.g. {shown})"
                    )
                if _is_time_column(raw.columns[ti], idx):
                    roles.date, roles.time = di, ti
        named_text: int | None = None  # a time-named column in no known format: tried last
        if roles.date is None:
            for key in _TS_NAMES:
                i = pos.get(key)
                if i is None or i in taken:
                    continue
                c = cls(i)
                if c in ("datetime", "date"):
                    roles.ts = i
                    break
                if c in ("int", "float"):
                    vals = _numeric_sample(raw.columns[i], idx)
                    if _numeric_kind(vals, ctx.file_date) is not None:
                        roles.ts = i
                        break
                if c == "text" and key and named_text is None:
                    named_text = i
        if roles.ts is None and roles.date is None:
            try:
                _content_timestamp(raw, roles, cls, idx, ctx, exclude=taken)
            except BarFileError:
                if named_text is None:
                    raise
                roles.ts = (
                    named_text  # its parser says what is wrong with the values (or reads them one by one)
                )
        if len(found) == 0:
            ctx.note(f"no open/high/low/close names in {raw.names}; columns inferred from their content")
            _content_prices(raw, roles, cls, idx, ctx)
        return roles
    roles.content = True
    _content_timestamp(raw, roles, cls, idx, ctx, exclude=set())
    _content_prices(raw, roles, cls, idx, ctx)
    used = roles.used()
    for i in range(len(raw.columns)):
        if i not in used and cls(i) == "text":
            vals = _sample_strings(raw.columns[i], idx)
            if _mostly(lambda s: re.match(r"^[A-Za-z][A-Za-z0-9._/:^=-]{0,29}$", s) is not None, vals, 1.0):
                roles.symbol = i
            break
    return roles


def _numeric_sample(col: pa.Array, idx: np.ndarray) -> np.ndarray:
    out = []
    for v in _sample_values(col, idx):
        try:
            out.append(float(str(v).replace(",", "")))
        except ValueError:
            continue
    return np.array(out, dtype=np.float64)


def _content_timestamp(raw: _Raw, roles: _Roles, cls, idx, ctx: _Ctx, exclude: set[int]) -> None:
    ncols = len(raw.columns)
    cand = [i for i in range(ncols) if i not in exclude]
    for i in cand:
        if cls(i) == "datetime":
            roles.ts = i
            return
    for i in cand:
        if (
            cls(i) == "date"
            and i + 1 < ncols
            and (i + 1) not in exclude
            and _is_time_column(raw.columns[i + 1], idx)
        ):
            roles.date, roles.time = i, i + 1
            return
    first_numeric = next((i for i in cand if cls(i) in ("int", "float")), None)
    if first_numeric is not None:
        kind = _numeric_kind(_numeric_sample(raw.columns[first_numeric], idx), ctx.file_date)
        if kind is not None:
            roles.ts = first_numeric
            return
    for i in cand:
        if cls(i) == "date":
            roles.ts = i
            return
    raise ctx.error("no timestamp column found (no date/time names and no column that looks like date-times)")


def _content_prices(raw: _Raw, roles: _Roles, cls, idx, ctx: _Ctx) -> None:
    used = roles.used()
    numeric = [i for i in range(len(raw.columns)) if i not in used and cls(i) in ("int", "float")]
    if len(numeric) < 4:
        raise ctx.error(f"fewer than four numeric columns for open/high/low/close (found {len(numeric)})")
    four = numeric[:4]
    roles.open, roles.high, roles.low, roles.close = four
    roles.volume = numeric[4] if len(numeric) > 4 else None
    # Check the conventional order against the values; reorder when another column is clearly the high/low.
    sample = (
        np.vstack([_float_column(raw.columns[i], raw.decimal_comma)[idx] for i in four]) if len(idx) else None
    )
    if sample is None:
        return
    ok = np.all(np.isfinite(sample), axis=0)
    sample = sample[:, ok]
    if sample.shape[1] == 0:
        return
    top, bottom = sample.max(axis=0), sample.min(axis=0)
    is_top = (sample >= top).mean(axis=1)
    is_bottom = (sample <= bottom).mean(axis=1)
    if is_top[1] >= 0.98 and is_bottom[2] >= 0.98:
        return
    hi, lo = int(np.argmax(is_top)), int(np.argmax(is_bottom))
    if hi != lo and is_top[hi] >= 0.98 and is_bottom[lo] >= 0.98:
        rest = [four[k] for k in range(4) if k not in (hi, lo)]
        roles.open, roles.high, roles.low, roles.close = rest[0], four[hi], four[lo], rest[1]
        ctx.note(
            "price columns are not in open,high,low,close order: the column that is always highest was taken "
            "as high and the always-lowest as low"
        )


# --------------------------------------------------------------------------------------------------------------
# Value parsing
# --------------------------------------------------------------------------------------------------------------


def _is_stringy(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _clean_numeric_strings(col: pa.Array, decimal_comma: bool) -> pa.Array:
    if decimal_comma:
        return pc.replace_substring(pc.replace_substring(col, ".", ""), ",", ".")
    if not (pc.any(pc.match_substring(col, ",")).as_py() or False):
        return col
    return pc.replace_substring(col, ",", "")  # "1,234.50": thousands separators


def _float_column(col: pa.Array, decimal_comma: bool = False) -> np.ndarray:
    t = col.type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_boolean(t):
        return np.asarray(pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    if pa.types.is_null(t):
        return np.full(len(col), np.nan)
    if not _is_stringy(t):
        col = pc.cast(col, pa.large_string())
    if not decimal_comma:
        try:  # clean columns need nothing more than a cast
            return np.asarray(pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
    col = _clean_numeric_strings(pc.utf8_trim_whitespace(col), decimal_comma)
    try:
        return np.asarray(pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        obj = col.to_numpy(zero_copy_only=False)
        return pd.to_numeric(pd.Series(obj, dtype=object), errors="coerce").to_numpy(
            dtype=np.float64, na_value=np.nan
        )


_FORMAT_FAMILIES: list[tuple[re.Pattern[str], list[str]]] = [
    (
        re.compile(r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?$"),
        ["ISO8601"],
    ),
    (
        re.compile(r"^\d{4}-\d{1,2}-\d{1,2}"),
        ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d"],
    ),
    (
        re.compile(r"^\d{8}(?:[ T]?\d{2}:?\d{2}|$)"),
        [
            "%Y%m%d %H%M%S",
            "%Y%m%d %H%M",
            "%Y%m%d %H:%M:%S",
            "%Y%m%d %H:%M",
            "%Y%m%dT%H%M%S",
            "%Y%m%d%H%M%S",
            "%Y%m%d %H:%M:%S.%f",
            "%Y%m%d",
        ],
    ),  # fmt: skip
    (
        re.compile(r"^\d{1,2}/\d{1,2}/\d{4}"),
        [
            "%m/%d/%Y %H:%M:%S",
            "%m/%d/%Y %H:%M",
            "%m/%d/%Y %I:%M:%S %p",
            "%m/%d/%Y %I:%M %p",
            "%m/%d/%Y %H:%M:%S.%f",
            "%m/%d/%Y",
            "%d/%m/%Y %H:%M:%S",
            "%d/%m/%Y %H:%M",
            "%d/%m/%Y %H:%M:%S.%f",
            "%d/%m/%Y",
        ],
    ),  # fmt: skip
    (re.compile(r"^\d{1,2}/\d{1,2}/\d{2}\b"), ["%m/%d/%y %H:%M:%S", "%m/%d/%y %H:%M", "%m/%d/%y"]),
    (
        re.compile(r"^\d{4}/\d{1,2}/\d{1,2}"),
        ["%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M", "%Y/%m/%d %H:%M:%S.%f", "%Y/%m/%d"],
    ),
    (
        re.compile(r"^\d{4}\.\d{1,2}\.\d{1,2}"),
        ["%Y.%m.%d %H:%M:%S", "%Y.%m.%d %H:%M", "%Y.%m.%d"],
    ),
    (
        re.compile(r"^\d{1,2}\.\d{1,2}\.\d{4}"),
        ["%d.%m.%Y %H:%M:%S.%f", "%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M", "%d.%m.%Y"],
    ),
    (
        re.compile(r"^\d{1,2}-\d{1,2}-\d{4}"),
        [
            "%m-%d-%Y %H:%M:%S",
            "%m-%d-%Y %H:%M",
            "%m-%d-%Y",
            "%d-%m-%Y %H:%M:%S",
            "%d-%m-%Y %H:%M",
            "%d-%m-%Y",
        ],
    ),
    (
        re.compile(r"^\d{1,2}[- ][A-Za-z]{3}[- ]\d{2,4}"),
        [
            "%d-%b-%Y %H:%M:%S",
            "%d-%b-%Y %H:%M",
            "%d-%b-%Y",
            "%d-%b-%y %H:%M:%S",
            "%d-%b-%y %H:%M",
            "%d-%b-%y",
            "%d %b %Y %H:%M:%S",
            "%d %b %Y %H:%M",
            "%d %b %Y",
        ],
    ),  # fmt: skip
]
_OFFSET_RE = r"[+-]\d{2}:?\d{2}$"
_AWARE_RE = r"\d:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:\s?[AaPp][Mm])?[+-]\d{2}:?\d{2}$"


def _swap_dm(fmt: str) -> str | None:
    if fmt.startswith("%m/%d"):
        return "%d/%m" + fmt[5:]
    if fmt.startswith("%d/%m"):
        return "%m/%d" + fmt[5:]
    if fmt.startswith("%m-%d"):
        return "%d-%m" + fmt[5:]
    if fmt.startswith("%d-%m"):
        return "%m-%d" + fmt[5:]
    return None


def _format_has_time(fmt: str, sample: list[str]) -> bool:
    if fmt == "ISO8601":
        return any(re.search(r"\d[T ]\d{1,2}:\d{2}", s) for s in sample)
    if fmt == "mixed":
        return any(":" in s for s in sample)
    return "%H" in fmt or "%I" in fmt


def _parse_with(values, fmt: str, utc: bool) -> pd.Series:
    s = values if isinstance(values, pd.Series) else pd.Series(values, dtype=object)
    return pd.to_datetime(s, format=fmt, errors="coerce", utc=utc)


def _detect_format(sample: list[str], candidates: list[str] | None = None) -> str | None:
    """The first explicit format that parses the whole sample (or the one that parses most of it)."""
    if not sample:
        return None
    sample = [_normalise_tz_text(s) for s in sample]
    stripped = [re.sub(r"\s*" + _OFFSET_RE, "", s) for s in sample]
    if candidates is None:
        candidates = []
        for rx, fmts in _FORMAT_FAMILIES:
            if _mostly(rx.match, stripped, 0.5):
                candidates.extend(f for f in fmts if f not in candidates)
    aware = _mostly(lambda s: re.search(_AWARE_RE, s) is not None, sample, 0.5)
    best, best_ok = None, 0
    for fmt in candidates:
        use = fmt if (fmt == "ISO8601" or not aware) else fmt + "%z"
        ok = int(_parse_with(sample, use, utc=True).notna().sum())
        if ok > best_ok:
            best, best_ok = fmt, ok
        if ok == len(sample):
            break
    if best is not None and best_ok >= max(1, len(sample) // 2):
        return best
    return None


_ZONE_WORD_RE = r"(?:UTC|GMT|Z)(?:[+-]\d{2}:?\d{2})?$"
_SPACED_OFFSET_RE = r"(\d|[AaPp][Mm])\s+([+-]\d{2}:?\d{2})$"


def _normalise_tz_text(v: str) -> str:
    """The same normalisation as _normalise_tz_suffix, for one sample string."""
    v = re.sub(r"\s*(?:UTC|GMT)\s*([+-]\d{2}:?\d{2})$", r"\1", v)
    v = re.sub(r"(\d)\s*(?:UTC|GMT|Z)$", r"\1+00:00", v)
    return re.sub(_SPACED_OFFSET_RE, r"\1\2", v)


def _normalise_tz_suffix(col: pa.Array, sample: list[str]) -> pa.Array:
    """``...Z``/``... UTC``/``... GMT+01:00`` -> ``...+00:00``/``...+01:00``; ``9:30 -05:00`` -> ``9:30-05:00``.

    Applied to the column only when the sample shows such values (a stray one elsewhere fails to parse and is
    kept as a bad row, not lost)."""
    if any(re.search(_ZONE_WORD_RE, v) for v in sample):
        col = pc.replace_substring_regex(col, r"\s*(?:UTC|GMT)\s*([+-]\d{2}:?\d{2})$", r"\1")
        col = pc.replace_substring_regex(col, r"(\d)\s*(?:UTC|GMT|Z)$", r"\1+00:00")
    if any(re.search(_SPACED_OFFSET_RE, v) for v in sample):
        col = pc.replace_substring_regex(col, _SPACED_OFFSET_RE, r"\1\2")
    return col


def _to_ns(series: pd.Series) -> np.ndarray:
    """datetime Series (naive or UTC) -> int64 ns with _NAT for NaT."""
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
    return series.astype("datetime64[ns]").to_numpy().view(np.int64).copy()


def _parse_datetime_strings(col: pa.Array, good: np.ndarray, ctx: _Ctx) -> tuple[np.ndarray, np.ndarray]:
    """-> (int64 ns: UTC where aware, local wall time where naive; aware mask)."""
    col = pc.ascii_trim_whitespace(col)
    idx = _sample_idx(good & ~pc.is_null(col).to_numpy(zero_copy_only=False))
    col = _normalise_tz_suffix(col, _sample_strings(col, idx))
    sample = _sample_strings(col, idx)
    fmt = _detect_format(sample)
    if fmt is None:
        if (
            sample
            and pd.to_datetime(pd.Series(sample), format="mixed", errors="coerce", utc=True).notna().mean()
            >= 0.9
        ):
            fmt = "mixed"
            ctx.note("timestamps in no single known format; parsed value by value (slow path)")
        else:
            shown = ", ".join(repr(s) for s in sample[:3])
            raise ctx.error(f"cannot recognise the timestamp format (e.g. {shown})")
    aware = pc.match_substring_regex(col, _AWARE_RE).to_numpy(zero_copy_only=False)
    aware = np.asarray(aware, dtype=object)
    aware = np.where(pd.isna(aware), False, aware).astype(bool)
    values = _LazyObjects(col)
    out = np.full(len(col), _NAT, dtype=np.int64)

    def parse(mask: np.ndarray, f: str, is_aware: bool) -> np.ndarray:
        if f == "ISO8601":  # fast path: Arrow's ISO 8601 cast; any odd value -> pandas below
            try:
                sub = col if mask.all() else col.filter(pa.array(mask))
                target = pa.timestamp("ns", tz="UTC") if is_aware else pa.timestamp("ns")
                return (
                    pc.cast(pc.cast(sub, target), pa.int64()).fill_null(_NAT).to_numpy(zero_copy_only=False)
                )
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass
        use = f if (f in ("ISO8601", "mixed") or not is_aware) else f + "%z"
        return _to_ns(_parse_with(values[mask], use, utc=is_aware))

    for is_aware in (False, True):
        mask = aware if is_aware else ~aware
        if not mask.any():
            continue
        ns = parse(mask, fmt, is_aware)
        alt = _swap_dm(fmt)
        if alt is not None:
            nonempty = values[mask].notna().to_numpy() & (values[mask].astype(str).str.len() > 0).to_numpy()
            bad = int(((ns == _NAT) & nonempty).sum())
            ns_alt = parse(mask, alt, is_aware)
            bad_alt = int(((ns_alt == _NAT) & nonempty).sum())
            if bad_alt < bad or (bad_alt == bad and _monotone_share(ns_alt) > _monotone_share(ns)):
                ns = ns_alt
                fmt = alt
        out[mask] = ns
    if aware.any() and (~aware & (out != _NAT)).any():
        ctx.note(
            "some timestamps carry a UTC offset and some do not; the naive ones are local time (see tz note)"
        )
    return out, aware


class _LazyObjects:
    """The column as a pandas object Series, built only if a pandas parse is needed."""

    def __init__(self, col: pa.Array):
        self._col = col
        self._series: pd.Series | None = None

    def __getitem__(self, mask: np.ndarray) -> pd.Series:
        if self._series is None:
            self._series = pd.Series(self._col.to_numpy(zero_copy_only=False), dtype=object)
        return self._series[mask]


def _monotone_share(ns: np.ndarray) -> float:
    v = ns[ns != _NAT]
    if len(v) < 2:
        return 0.0
    return float((np.diff(v) > 0).mean())


def _numeric_values(col: pa.Array) -> tuple[np.ndarray, np.ndarray | None]:
    """-> (float64 values with NaN, exact int64 values or None)."""
    t = col.type
    if pa.types.is_integer(t):
        ints = pc.cast(col, pa.int64())
        valid = ~ints.is_null().to_numpy(zero_copy_only=False)
        i64 = ints.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        f = i64.astype(np.float64)
        f[~valid] = np.nan
        return f, np.where(valid, i64, _NAT)
    if _is_stringy(t):
        s = pc.utf8_trim_whitespace(col)
        try:
            ints = pc.cast(s, pa.int64())
            return _numeric_values(ints)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
    return _float_column(col), None


def _numeric_timestamps(
    col: pa.Array, good: np.ndarray, ctx: _Ctx, name: str
) -> tuple[np.ndarray, np.ndarray]:
    f, i64 = _numeric_values(col)
    idx = _sample_idx(good & np.isfinite(f))
    kind = _numeric_kind(f[idx], ctx.file_date)
    n = len(f)
    valid = np.isfinite(f)
    if kind in ("yyyymmdd", "compact14", "compact12"):
        fmt = {"yyyymmdd": "%Y%m%d", "compact14": "%Y%m%d%H%M%S", "compact12": "%Y%m%d%H%M"}[kind]
        strings = pd.Series(np.where(valid, np.nan_to_num(f).astype(np.int64).astype(str), ""), dtype=object)
        return _to_ns(pd.to_datetime(strings, format=fmt, errors="coerce")), np.zeros(n, bool)
    if kind == "ms_midnight":
        day = ctx.file_date
        if day is None:
            raise ctx.error(
                f"column {name!r} holds milliseconds since midnight, but the file name has no YYYYMMDD date"
            )
        base = int(pd.Timestamp(day).value)
        ms = i64 if i64 is not None else np.round(np.nan_to_num(f)).astype(np.int64)
        out = np.where(valid, base + ms * 1_000_000, _NAT)
        ctx.note(f"times are milliseconds since midnight of {day.isoformat()} (date from the file name)")
        return out.astype(np.int64), np.zeros(n, bool)
    if kind != "epoch":
        shown = ", ".join(str(v) for v in f[idx][:3])
        raise ctx.error(f"cannot tell what the numbers in column {name!r} mean as timestamps (e.g. {shown})")
    a = np.abs(np.nan_to_num(f))
    factor = np.select([a < 1e11, a < 1e14, a < 1e17], [_NS, 1_000_000, 1_000], 1).astype(np.int64)
    valid &= a * factor < 9.2e18  # beyond datetime64[ns] (year 2262): NaT, kept as a bad row
    if i64 is not None:
        out = np.where(valid, i64 * factor, _NAT)
    else:
        whole = np.floor(np.nan_to_num(f))
        frac = np.nan_to_num(f) - whole
        out = np.where(
            valid, whole.astype(np.int64) * factor + np.round(frac * factor).astype(np.int64), _NAT
        )
    units = sorted(
        {
            "s" if x == _NS else "ms" if x == 1_000_000 else "us" if x == 1_000 else "ns"
            for x in np.unique(factor[valid])
        }
    )
    if len(units) > 1:
        ctx.note(f"epoch timestamps in mixed units ({', '.join(units)}), told apart by magnitude per value")
    return out.astype(np.int64), np.ones(n, bool)


def _as_string(col: pa.Array) -> pa.Array:
    if _is_stringy(col.type):
        return col
    if pa.types.is_floating(col.type):
        f = col.to_numpy(zero_copy_only=False)
        if np.all(np.isnan(f) | (f == np.floor(f))):
            col = pc.cast(col, pa.int64(), safe=False)
    return pc.cast(col, pa.large_string())


def _timestamps(raw: _Raw, roles: _Roles, ctx: _Ctx) -> tuple[np.ndarray, np.ndarray]:
    good = ~raw.pre_bad
    if roles.date is not None and roles.time is not None:
        d = pc.cast(pc.utf8_trim_whitespace(_as_string(raw.columns[roles.date])), pa.large_string())
        t = pc.cast(pc.utf8_trim_whitespace(_as_string(raw.columns[roles.time])), pa.large_string())
        space, zeros = pa.scalar(" ", pa.large_string()), pa.scalar("00", pa.large_string())
        empty = pa.scalar("", pa.large_string())
        # digits-only dates and times (20110301 / 93100) -> ISO-like pieces
        d = pc.replace_substring_regex(d, r"^(\d{4})(\d{2})(\d{2})$", r"\1-\2-\3")
        t = pc.if_else(
            pc.match_substring_regex(t, r"^\d{5,6}$"), pc.utf8_lpad(t, 6, "0"), pc.if_else(
                pc.match_substring_regex(t, r"^\d{3,4}$"), pc.binary_join_element_wise(pc.utf8_lpad(t, 4, "0"), zeros, empty), t
            )
        )  # fmt: skip
        t = pc.replace_substring_regex(t, r"^(\d{2})(\d{2})(\d{2})$", r"\1:\2:\3")
        combined = pc.binary_join_element_wise(d, t, space)
        return _parse_datetime_strings(combined, good, ctx)
    col = raw.columns[roles.ts]
    name = raw.names[roles.ts] if raw.names else f"#{roles.ts + 1}"
    t = col.type
    if pa.types.is_timestamp(t):
        aware = t.tz is not None
        ns = pc.cast(col, pa.timestamp("ns", tz=t.tz))
        vals = pc.cast(ns, pa.int64()).fill_null(_NAT).to_numpy(zero_copy_only=False).astype(np.int64)
        return vals, np.full(len(vals), aware)
    if pa.types.is_date(t):
        ns = pc.cast(pc.cast(col, pa.timestamp("ns")), pa.int64())
        return ns.fill_null(_NAT).to_numpy(zero_copy_only=False).astype(np.int64), np.zeros(len(col), bool)
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return _numeric_timestamps(col, good, ctx, name)
    if not _is_stringy(t):
        col = pc.cast(col, pa.large_string())
    sample = _sample_strings(col, _sample_idx(good))
    if _mostly(_DIGITS_RE.match, sample):
        return _numeric_timestamps(col, good, ctx, name)
    return _parse_datetime_strings(col, good, ctx)


def _localize(ns: np.ndarray, zone: str, ctx: _Ctx, groups: np.ndarray | None = None) -> np.ndarray:
    """Naive local wall times (int64 ns) in ``zone`` -> UTC ns.

    A wall time that does not exist (the hour skipped when clocks go forward) is NaT: moving it to the next
    valid hour would collide with the real bars of that hour. A wall time of the repeated hour when clocks go
    back is told apart by its order in the file, per symbol (``groups``): in a file running forward in time
    (or backward, newest first), the rows of that hour before the wall clock steps back are the first pass
    (daylight time), the rows from there on the second (standard time). When a symbol's rows do not show
    exactly one such step back (the hour appears once, or the rows are shuffled), there is no telling which
    of the two instants a row means, and its timestamp is NaT.
    """
    if zone == "UTC":
        return ns
    n = len(ns)
    idx = pd.DatetimeIndex(ns.view("M8[ns]"))

    def utc(ambiguous: bool) -> np.ndarray:
        loc = idx.tz_localize(zone, ambiguous=np.full(n, ambiguous), nonexistent="NaT")
        return loc.tz_convert("UTC").as_unit("ns").asi8.copy()

    first, second = utc(True), utc(False)  # the daylight-time and the standard-time reading
    valid = ns != _NAT
    missing = valid & (first == _NAT)
    ambiguous = valid & ~missing & (first != second)
    out = first
    if ambiguous.any():
        choice = _order_of_repeated_hour(ns, ambiguous, groups)
        out[ambiguous & (choice == 0)] = second[ambiguous & (choice == 0)]
        unresolved = ambiguous & (choice < 0)
        out[unresolved] = _NAT
        resolved = int(ambiguous.sum() - unresolved.sum())
        if resolved:
            ctx.note(
                f"{resolved} local time(s) fall in the hour repeated when {zone} left daylight time; "
                "first and second pass told apart by their order in the file"
            )
        if unresolved.any():
            ctx.note(
                f"{int(unresolved.sum())} local time(s) fall in the hour repeated when {zone} left daylight "
                "time and their order does not say which pass they belong to; left as NaT"
            )
    if missing.any():
        ctx.note(
            f"{int(missing.sum())} local time(s) do not exist in {zone} (DST change) and were left as NaT"
        )
    return out


def _order_of_repeated_hour(ns: np.ndarray, ambiguous: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """Per row: 1 = first pass (daylight time), 0 = second pass (standard time), -1 = cannot tell."""
    choice = np.full(len(ns), -1, dtype=np.int8)
    if groups is None:
        codes = np.zeros(len(ns), dtype=np.int64)
    else:
        codes, _ = pd.factorize(pd.Series(groups, dtype=object), use_na_sentinel=False)
    for g in np.unique(codes[ambiguous]):
        pos = np.flatnonzero(codes == g)  # this symbol's rows, in file order
        v = ns[pos]
        step = np.diff(v[v != _NAT])
        newest_first = int((step < 0).sum()) > int((step > 0).sum())
        amb = pos[ambiguous[pos]]
        day = ns[amb] // (86_400 * _NS)  # one repeated hour per local day
        for d in np.unique(day):
            rows = amb[day == d]
            if newest_first:
                rows = rows[::-1]
            back = np.flatnonzero(np.diff(ns[rows]) < 0)
            if len(back) != 1:
                continue
            k = int(back[0]) + 1
            choice[rows[:k]] = 1
            choice[rows[k:]] = 0
    return choice


# --------------------------------------------------------------------------------------------------------------
# From raw columns to the bar frame
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _Part:
    frame: pd.DataFrame  # all rows of the file, all symbols
    intervals: dict[str, int | None]
    key_ns: np.ndarray  # window key per row (timestamp, or the nearest earlier/later one for NaT rows)


def _median_interval(ts: np.ndarray) -> int | None:
    """Median of the positive differences of the sorted unique timestamps, in whole seconds."""
    v = ts[ts != _NAT]
    if len(v) < 2:
        return None
    if not bool(np.all(v[1:] >= v[:-1])):  # files are nearly always in order: sort only when needed
        v = np.sort(v)
    d = np.diff(v)
    d = d[d > 0]  # duplicates are not an interval
    if len(d) == 0:
        return None
    return int(round(float(np.median(d)) / _NS))


def _interpret(raw: _Raw, ctx: _Ctx) -> _Part:
    n = raw.nrows
    path_symbol = symbol_from_path(ctx.symbol_path or ctx.path)
    if n == 0:
        return _Part(_empty_frame(), {}, np.zeros(0, np.int64))
    roles = _assign_roles(raw, ctx)
    ts, aware = _timestamps(raw, roles, ctx)

    prices = {
        r: _float_column(raw.columns[getattr(roles, r)], raw.decimal_comma)
        for r in ("open", "high", "low", "close")
    }
    if ctx.lean is not None and ctx.lean.scaled:
        stacked = np.concatenate(list(prices.values()))
        finite = stacked[np.isfinite(stacked)]
        if len(finite) and np.all(finite == np.floor(finite)):
            prices = {k: v / 10_000.0 for k, v in prices.items()}
            ctx.note(
                "Lean equity layout with whole-number prices: prices are USD x 10,000, divided by 10,000"
            )
        else:
            ctx.note(
                "Lean equity layout but prices are not whole numbers: taken as plain prices (not scaled)"
            )
    if roles.volume is not None:
        volume = _float_column(raw.columns[roles.volume], raw.decimal_comma)
        volume_missing = False
    else:
        volume = np.zeros(n, dtype=np.float64)
        volume_missing = True
        ctx.note("no volume column: volume set to 0 and volume_missing=True")

    # A row with the wrong number of fields: its prices and volume cannot be trusted (positions may have
    # shifted), so they are NaN and the validator quarantines the row; its timestamp is kept if it parses.
    if raw.pre_bad.any():
        prices = {k: np.where(raw.pre_bad, np.nan, v) for k, v in prices.items()}
        volume = np.where(raw.pre_bad, np.nan, volume)

    if roles.symbol is not None:
        scol = pc.cast(
            pc.utf8_upper(pc.utf8_trim_whitespace(_as_string(raw.columns[roles.symbol]))), pa.large_string()
        )
        sym_bad = pc.fill_null(pc.equal(pc.utf8_length(scol), 0), True).to_numpy(zero_copy_only=False)
        sym_arr = pc.if_else(pa.array(sym_bad), pa.scalar(None, pa.large_string()), scol)  # empty -> missing
        sym_obj = sym_arr.to_numpy(zero_copy_only=False)
        symbols = [x for x in pd.unique(sym_obj) if isinstance(x, str)]
    else:
        sym_arr = pa.repeat(pa.scalar(path_symbol, pa.large_string()), n)
        sym_obj = None
        sym_bad = np.zeros(n, bool)

    naive = ~aware & (ts != _NAT)
    if naive.any():
        if ctx.lean is not None and ctx.lean.zone is not None:
            zone = ctx.lean.zone
            ctx.note(f"Lean {ctx.lean.security_type}/{ctx.lean.market} layout: times are read as {zone}")
        else:
            zone = ctx.tz
            ctx.note(f"naive timestamps read as {zone} (TIS_MARKET_TZ)")
        ts = ts.copy()
        ts[~aware] = _localize(ts[~aware], zone, ctx, None if sym_obj is None else sym_obj[~aware])

    bad = raw.pre_bad | (ts == _NAT) | sym_bad | np.isnan(volume)
    for v in prices.values():
        bad |= np.isnan(v)
    raw_col = np.full(n, None, dtype=object)
    bad_idx = np.flatnonzero(bad)
    if len(bad_idx):
        texts = raw.raw_text(bad_idx)
        for k, t in zip(bad_idx, texts, strict=True):
            raw_col[k] = t
        ctx.note(
            f"{len(bad_idx)} row(s) could not be parsed and are kept with their raw text "
            f"(first at line {int(raw.line[bad_idx[0]])})"
        )

    # per-symbol interval, bar_label shift
    intervals: dict[str, int | None] = {}
    masks: dict[str, np.ndarray | None]
    if sym_obj is None:  # one symbol, from the path
        intervals[path_symbol] = _median_interval(ts)
        masks = {path_symbol: None}
    else:
        masks = {}
        for s in symbols:
            m = sym_obj == s
            masks[str(s)] = m
            intervals[str(s)] = _median_interval(ts[m])
    if ctx.bar_label == "close":
        ts = ts.copy()
        for s, iv in intervals.items():
            if iv is None:
                ctx.note(f"bar_label=close but the interval of {s} is unknown: timestamps not shifted")
                continue
            m = (ts != _NAT) if masks[s] is None else (masks[s] & (ts != _NAT))
            ts[m] -= iv * _NS
        ctx.note("bar_label=close: timestamps shifted back by one bar interval to the bar's open")

    key = pd.Series(np.where(ts == _NAT, np.nan, ts.astype(np.float64)))
    if len(bad_idx):
        key_ns = key.ffill().bfill().fillna(0).to_numpy()
        key_ns = np.where(ts == _NAT, key_ns.astype(np.int64), ts)
    else:
        key_ns = ts

    frame = pd.DataFrame(
        {
            "symbol": pd.Series(sym_arr, dtype="str"),
            "timestamp": pd.DatetimeIndex(ts.view("M8[ns]")).tz_localize("UTC"),
            "open": prices["open"],
            "high": prices["high"],
            "low": prices["low"],
            "close": prices["close"],
            "volume": volume,
            "volume_missing": np.full(n, volume_missing, dtype=bool),
            "source_file": pd.Series(pa.repeat(pa.scalar(ctx.display, pa.large_string()), n), dtype="str"),
            "source_line": raw.line.astype(np.int64),
            "raw": pd.Series(raw_col, dtype=object),
        }
    )
    return _Part(frame, intervals, np.asarray(key_ns, dtype=np.int64))


# --------------------------------------------------------------------------------------------------------------
# Files and containers
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _Loaded:
    path: str
    fmt: str
    parts: list[_Part]
    notes: list[str]
    skipped: list[tuple[str, str]]

    @property
    def frame(self) -> pd.DataFrame:
        frames = [p.frame for p in self.parts if len(p.frame)]
        if not frames:
            return _empty_frame()
        return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)

    @property
    def key_ns(self) -> np.ndarray:
        keys = [p.key_ns for p in self.parts if len(p.frame)]
        return np.concatenate(keys) if keys else np.zeros(0, np.int64)

    def intervals(self) -> dict[str, int | None]:
        out: dict[str, int | None] = {}
        for p in self.parts:
            for s, iv in p.intervals.items():
                if s not in out or out[s] is None:
                    out[s] = iv
                elif iv is not None:
                    out[s] = min(out[s], iv)
        return out


def _kind(name: str, head: bytes) -> str:
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith((b"ARROW1", b"FEA1")):
        return "feather"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "gz"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    ext = os.path.splitext(name)[1].lower()
    if ext == ".bz2" and head.startswith(b"BZh"):
        return "bz2"
    if ext in _PARQUET_SUFFIXES:
        return "parquet"
    if ext in _FEATHER_SUFFIXES:
        return "feather"
    if ext in (".zip", ".gz", ".bz2", ".xz"):
        return ext[1:]
    if ext in _JSON_SUFFIXES:
        return "json"
    return "csv"


def _read_arrow(kind: str, source, ctx: _Ctx) -> pa.Table:
    import pyarrow.feather as feather
    import pyarrow.parquet as pq

    try:
        if kind == "parquet":
            return pq.read_table(source)
        return feather.read_table(source)
    except (pa.ArrowException, OSError, ValueError, IndexError, KeyError) as exc:
        what = "Parquet" if kind == "parquet" else "Feather/Arrow"
        raise ctx.error(f"corrupt or incomplete {what} file: {exc}") from exc


def _load_bytes(data: bytes, kind: str, ctx: _Ctx, prefix: str = "") -> tuple[str, _Raw]:
    if kind in ("parquet", "feather"):
        return prefix + kind, _raw_from_table(_read_arrow(kind, pa.BufferReader(data), ctx), kind)
    if kind == "json":
        return prefix + "json", _raw_from_json(_decode(data, ctx), ctx, prefix + "json")
    text = _decode(data, ctx)
    stripped = text.lstrip("\ufeff \t\r\n")
    if stripped[:1] in ("[", "{") and os.path.splitext(ctx.inner_name)[1].lower() not in _TEXT_SUFFIXES:
        return prefix + "json", _raw_from_json(text, ctx, prefix + "json")
    return prefix + "csv", _raw_from_text(text, ctx, prefix + "csv")


def _decompress(kind: str, data: bytes, ctx: _Ctx) -> bytes:
    try:
        if kind == "gz":
            return gzip.decompress(data)
        if kind == "bz2":
            return bz2.decompress(data)
        return lzma.decompress(data)
    except (OSError, EOFError, zlib.error, lzma.LZMAError, ValueError) as exc:
        raise ctx.error(f"corrupt or incomplete {kind} archive: {exc}") from exc


def _path_skip_reason(p: Path) -> str | None:
    """Files that the path alone says are not trade bars (Lean quote / open-interest files)."""
    if _lean_layout(p.resolve()) is None:
        return None
    stem = _strip_suffixes(p.name).lower()
    if stem.endswith("_quote"):
        return "Lean quote file, not trade bars: skipped"
    if stem.endswith("_openinterest"):
        return "Lean open-interest file, not trade bars: skipped"
    return None


def _load(path: str | os.PathLike[str], tz: str, bar_label: str) -> _Loaded:
    """Parse one file completely (all symbols, all intervals). Raises BarFileError."""
    p = Path(path)
    display = str(p)
    notes: list[str] = []
    skipped: list[tuple[str, str]] = []
    lean = _lean_layout(p.resolve()) if p.exists() else _lean_layout(p)
    ctx = _Ctx(p, display, p.name, tz, bar_label, lean, notes)
    try:
        with open(p, "rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise BarFileError(display, f"cannot open: {exc.strerror or exc}") from exc
    kind = _kind(p.name, head)
    reason = _path_skip_reason(p)
    if reason is not None:
        skipped.append((display, reason))
        return _Loaded(display, kind, [], notes, skipped)

    parts: list[_Part] = []
    fmt = kind
    try:
        if kind in ("parquet", "feather"):
            if len(head) == 0:
                raise ctx.error(f"empty file, not a {kind} file")
            raws = [(kind, _raw_from_table(_read_arrow(kind, str(p), ctx), kind))]
        else:
            data = p.read_bytes()
            if kind == "zip":
                raws = _load_zip(data, ctx)
                fmt = raws[0][0] if raws else "zip"
            elif kind in ("gz", "bz2", "xz"):
                inner = _decompress(kind, data, ctx)
                inner_name = p.name[: -len(p.suffix)] if p.suffix.lower() == "." + kind else p.stem
                ctx.inner_name = inner_name
                raws = [_load_bytes(inner, _kind(inner_name, inner[:16]), ctx, prefix=f"{kind}-")]
            else:
                if len(data) == 0:
                    ctx.note("empty file: no rows")
                    return _Loaded(display, kind, [], notes, skipped)
                raws = [_load_bytes(data, kind, ctx)]
            fmt = raws[0][0] if raws else fmt
        for item in raws:
            parts.append(_interpret(item[1], item[2] if len(item) > 2 else ctx))
    except BarFileError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # anything unexpected still names the file
        raise BarFileError(display, f"unexpected {type(exc).__name__}: {exc}") from exc
    return _Loaded(display, fmt, parts, notes, skipped)


def _load_zip(data: bytes, ctx: _Ctx) -> list:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        members = [
            m
            for m in zf.infolist()
            if not m.is_dir()
            and not m.filename.startswith("__MACOSX/")
            and not Path(m.filename).name.startswith(".")
        ]
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ctx.error(f"unreadable zip archive: {exc}") from exc
    if not members:
        ctx.note("zip archive holds no files: no rows")
        return []
    known = [m for m in members if os.path.splitext(m.filename)[1].lower() in _DATA_SUFFIXES - {".zip"}]
    members = known or members
    out = []
    for m in members:
        sub = _Ctx(
            ctx.path,
            ctx.display if len(members) == 1 else f"{ctx.display}!{m.filename}",
            Path(m.filename).name,
            ctx.tz,
            ctx.bar_label,
            ctx.lean,
            ctx.notes,
            symbol_path=None if len(members) == 1 else ctx.path / m.filename,
        )
        try:
            inner = zf.read(m)
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error, ValueError, NotImplementedError) as exc:
            raise ctx.error(f"cannot read {m.filename!r} from the zip archive: {exc}") from exc
        fmt, raw = _load_bytes(inner, _kind(m.filename, inner[:16]), sub, prefix="zip-")
        out.append((fmt, raw, sub))
    return out


def _check_args(tz: str, bar_label: str) -> None:
    if bar_label not in ("open", "close"):
        raise ValueError(f"bar_label must be 'open' or 'close', not {bar_label!r}")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {tz!r}") from exc


def _split_by_interval(loaded: _Loaded) -> tuple[pd.DataFrame, np.ndarray, list[tuple[str, str]], list[str]]:
    frame = loaded.frame
    key = loaded.key_ns
    skipped = list(loaded.skipped)
    notes = list(loaded.notes)
    intervals = loaded.intervals()
    coarse = {s: iv for s, iv in intervals.items() if iv is not None and iv != ONE_MINUTE}
    unknown = [s for s, iv in intervals.items() if iv is None]
    for s in unknown:
        n = int((frame["symbol"] == s).sum()) if len(intervals) > 1 else len(frame)
        notes.append(f"{loaded.path}: interval of {s} could not be detected ({n} row(s)); taken as 1-minute")
    if coarse:
        single = len(intervals) == 1
        for s, iv in coarse.items():
            reason = f"interval {interval_label(iv)}, not 1-minute: skipped"
            skipped.append((loaded.path, reason if single else f"symbol {s}: {reason}"))
        keep = ~frame["symbol"].isin(list(coarse)).to_numpy()
        frame = frame.loc[keep].reset_index(drop=True)
        key = key[keep]
    return frame, key, skipped, notes


def read_file(path: str | os.PathLike[str], *, tz: str = "UTC", bar_label: str = "open") -> ReadResult:
    """Read one bar file: its 1-minute rows (coarser symbols go to ``skipped``). Raises BarFileError."""
    _check_args(tz, bar_label)
    loaded = _load(path, tz, bar_label)
    frame, _, skipped, notes = _split_by_interval(loaded)
    return ReadResult(frame, skipped, notes)


# --------------------------------------------------------------------------------------------------------------
# Manifest, scan, read_bars
# --------------------------------------------------------------------------------------------------------------


def _candidate_files(root: Path, exclude: Path | None) -> list[Path]:
    if root.is_file():
        return [root]
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__MACOSX")
        for fn in sorted(filenames):
            if fn.startswith("."):
                continue
            p = Path(dirpath) / fn
            if exclude is not None and p.resolve() == exclude:
                continue
            ext = os.path.splitext(fn)[1].lower()
            if ext not in _DATA_SUFFIXES:
                continue
            if fn.lower().startswith(_NOT_DATA_STEMS) and ext in (".txt", ".md", ".json"):
                continue
            out.append(p)
    return out


def _learn(p: Path, st: os.stat_result, tz: str, bar_label: str) -> FileInfo:
    try:
        loaded = _load(p, tz, bar_label)
    except BarFileError as exc:
        return FileInfo(
            str(p), st.st_size, st.st_mtime_ns, _kind(p.name, b""), [], None, None, None, 0, str(exc)
        )
    frame = loaded.frame
    intervals = loaded.intervals()
    ts = frame["timestamp"]
    valid = ts.notna()
    known = [iv for iv in intervals.values() if iv is not None]
    if ONE_MINUTE in known:
        interval = ONE_MINUTE
    elif known:
        interval = min(known)
    else:
        interval = None
    return FileInfo(
        path=str(p),
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        fmt=loaded.fmt,
        symbols=sorted(str(s) for s in pd.unique(frame["symbol"].dropna())) if len(frame) else [],
        first=ts[valid].min() if valid.any() else None,
        last=ts[valid].max() if valid.any() else None,
        interval_seconds=interval,
        rows=len(frame),
    )


def _read_manifest(path: Path | None) -> dict:
    if path is None or not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("version") != _READER_VERSION:
            return {}
        return dict(doc.get("files", {}))
    except (OSError, ValueError, AttributeError):
        return {}  # a damaged manifest is only a cache: everything is re-learned


def _write_manifest(path: Path, files: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(
        json.dumps({"version": _READER_VERSION, "files": files}, indent=1, sort_keys=True), encoding="utf-8"
    )
    os.replace(tmp, path)


def scan(
    root: str | os.PathLike[str],
    *,
    manifest_path: str | os.PathLike[str] | None = None,
    tz: str = "UTC",
    bar_label: str = "open",
) -> list[FileInfo]:
    """Learn every bar file under ``root`` (recursively) once.

    The manifest (JSON at ``manifest_path``) is keyed by path and remembers size, mtime_ns, tz and bar_label:
    unchanged files are not read again; new or changed files are (re)learned; vanished files are dropped.
    Files that fail are recorded with ``error`` set (and retried only once they change). Without a
    ``manifest_path`` every file is read.
    """
    _check_args(tz, bar_label)
    root_p = Path(root).absolute()
    if not root_p.exists():
        raise FileNotFoundError(f"market data path does not exist: {root_p}")
    mpath = Path(manifest_path).resolve() if manifest_path is not None else None
    old = _read_manifest(mpath)
    new: dict[str, dict] = {}
    infos: list[FileInfo] = []
    for p in _candidate_files(root_p, mpath):
        try:
            st = p.stat()
        except OSError:
            continue
        key = str(p)
        entry = old.get(key)
        if (
            entry is not None
            and entry.get("size") == st.st_size
            and entry.get("mtime_ns") == st.st_mtime_ns
            and entry.get("tz") == tz
            and entry.get("bar_label") == bar_label
        ):
            info = FileInfo.from_json(entry)
        else:
            info = _learn(p, st, tz, bar_label)
        infos.append(info)
        new[key] = {**info.to_json(), "tz": tz, "bar_label": bar_label}
    if mpath is not None and (new != old or not mpath.exists()):
        # keep entries of other roots that share the manifest
        merged = {k: v for k, v in old.items() if not _under(k, root_p)}
        merged.update(new)
        _write_manifest(mpath, merged)
    return infos


def _under(path: str, root: Path) -> bool:
    try:
        Path(path).relative_to(root)
        return True
    except ValueError:
        return str(path) == str(root)


def _utc(ts) -> pd.Timestamp:
    t = pd.Timestamp(ts)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def _beyond_now(
    frame: pd.DataFrame, key: np.ndarray, now_ns: int, lo: int, hi: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rows stamped in the future are in no window that can be run yet (a partition exists only once its day
    is over). -> (keys where an unparseable row next to such a row goes with its nearest present-day row
    instead, mask of the future rows whose nearest present-day row is in [lo, hi): the run to report them)."""
    far = key > now_ns
    if not far.any():
        return key, far
    nat = frame["timestamp"].isna().to_numpy()
    anchor = pd.Series(np.where(far | nat, np.nan, key.astype(np.float64)))
    home = anchor.ffill().bfill().to_numpy()
    if np.isnan(home).all():  # nothing in the file is of today or earlier: no run to report them in
        return key, np.zeros(len(key), bool)
    home = home.astype(np.int64)
    return np.where(nat & far, home, key), far & ~nat & (home >= lo) & (home < hi)


def read_bars(
    root: str | os.PathLike[str],
    start: pd.Timestamp,
    end: pd.Timestamp,
    *,
    manifest_path: str | os.PathLike[str] | None = None,
    tz: str = "UTC",
    bar_label: str = "open",
) -> ReadResult:
    """1-minute rows with ``start <= timestamp < end`` (UTC; naive bounds are UTC) from every file under root.

    Only files whose [first, last] range (from the manifest) overlaps the window are read. Files with a
    coarser interval are listed in ``skipped``. A file that failed raises BarFileError (a run must fail naming
    the file rather than load partial data). Rows that could not be parsed (NaT timestamp) go with the window
    of the nearest parseable row before them in the file (after them if there is none), so that they reach
    the validator's quarantine exactly once. Rows stamped later than now (+1 minute) belong to no partition
    that exists yet: they are not returned, and a note names them in the window of their nearest earlier row.
    Files that give no row to any window (no bars, no usable timestamp, only future rows) are listed in
    ``skipped`` with the reason, in every window, like files of a coarser interval.
    """
    start_t, end_t = _utc(start), _utc(end)
    now_ns = pd.Timestamp.now(tz="UTC").as_unit("ns").value + ONE_MINUTE * _NS  # the validator's tolerance
    infos = scan(root, manifest_path=manifest_path, tz=tz, bar_label=bar_label)
    frames: list[pd.DataFrame] = []
    skipped: list[tuple[str, str]] = []
    notes: list[str] = []
    lo, hi = start_t.as_unit("ns").value, end_t.as_unit("ns").value
    for info in infos:
        if info.error is not None:
            raise BarFileError(info.path, f"failed to read: {info.error}")
        if info.interval_seconds is not None and info.interval_seconds != ONE_MINUTE:
            skipped.append(
                (info.path, f"interval {interval_label(info.interval_seconds)}, not 1-minute: skipped")
            )
            continue
        if info.rows == 0 or info.first is None or info.last is None:
            reason = _path_skip_reason(Path(info.path))
            if reason is None and info.rows == 0:
                reason = "holds no bars (empty, or a header only): nothing to load"
            elif reason is None:
                reason = f"none of its {info.rows} row(s) has a usable timestamp: they fit no partition"
            skipped.append((info.path, reason))
            continue
        if info.first.as_unit("ns").value > now_ns:
            skipped.append(
                (info.path, f"all its rows are stamped later than now (from {info.first.isoformat()})")
            )
            continue
        if not (info.first < end_t and info.last >= start_t):
            continue
        loaded = _load(info.path, tz, bar_label)
        frame, key, file_skipped, file_notes = _split_by_interval(loaded)
        skipped.extend(file_skipped)
        notes.extend(file_notes)
        key, beyond = _beyond_now(frame, key, now_ns, lo, hi)
        if beyond.any():
            first = int(np.flatnonzero(beyond)[0])
            notes.append(
                f"{info.path}: {int(beyond.sum())} row(s) stamped later than now (first at line "
                f"{int(frame['source_line'].iloc[first])}: {frame['timestamp'].iloc[first].isoformat()}) "
                "belong to no partition that exists yet: not loaded, not quarantined"
            )
        keep = (key >= lo) & (key < hi)
        if keep.any():
            frames.append(frame.loc[keep].reset_index(drop=True))
    if not frames:
        out = _empty_frame()
    elif len(frames) == 1:
        out = frames[0]
    else:
        out = pd.concat(frames, ignore_index=True)
    return ReadResult(out, skipped, notes)
