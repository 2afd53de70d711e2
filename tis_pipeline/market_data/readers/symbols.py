"""The symbol a file stands for when it has no symbol column.

* **Symbol**: a symbol column when there is one (upper-cased), else the path: the file name without its
  suffixes; if it is or starts with a date (``20131004_trade``, ``2006-01-02-...``), the parent folder's
  name instead (the Lean symbol folder). From the name, dates (``20211231``, ``2006-01-02``, years,
  ``NOV2019``), bar-interval tokens (``1m``, ``m1``, ``5min``, ``h1``, ``daily``, ``minute``...), data-kind
  tokens (``bid``, ``ask``, ``trade``, ``quote``, ``ohlcv``, ``candles``, ``iday``...) and data-vendor tokens
  (``yahoofinance``, ``binance``, ``fxcm``...) are dropped; the rest keeps its separators and is upper-cased
  (``UNITTEST_BTC-1m.json`` -> ``UNITTEST_BTC``, ``btc-perp-20211231-20220201_1m.csv`` -> ``BTC-PERP``,
  ``gbpusd-m1-bid-2012.csv`` -> ``GBPUSD``, ``lean/.../ibm/20131004_trade.zip`` -> ``IBM``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from tis_pipeline.market_data.readers.paths import DATE8, DATE_ISO, strip_suffixes

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
    "kibot", "firstratedata", "tiingo", "quantconnect", "metatrader", "mt4", "mt5", "tradingview", "ib",
    "ibkr", "algoseek", "cryptotick",
}  # fmt: skip
_MONTH_YEAR = re.compile(
    r"^(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*[-_]?(?:\d{2}|\d{4})$", re.IGNORECASE
)
_YEAR_TOKEN = re.compile(r"^(?:19|20)\d{2}$")
_YEAR_MONTH_TOKEN = re.compile(r"^(?:19|20)\d{2}(?:0[1-9]|1[0-2])$")
INTERVAL_TOKEN, MONTH_YEAR = _INTERVAL_TOKEN, _MONTH_YEAR  # what tells look-alike symbols apart (survey)
_DATE_PREFIX = re.compile(r"^(?:\d{8}|\d{4}-\d{2}-\d{2})(?!\d)")


def _clean_symbol_name(name: str) -> str:
    s = DATE_ISO.sub("-", name)
    s = DATE8.sub("-", s)
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
    stem = strip_suffixes(p.name)
    parent = p.parent.name
    if _DATE_PREFIX.match(stem) and parent:
        return (_clean_symbol_name(parent) or parent).upper()
    sym = _clean_symbol_name(stem)
    if not sym and parent:
        sym = _clean_symbol_name(parent) or parent
    return (sym or stem).upper()
