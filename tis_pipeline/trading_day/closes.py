"""What the trading day needs from every symbol's closes, reduced per symbol (``DayCloses``). Pure
pandas/numpy.

Three stages read every symbol of ``[day - 2 h, day + 1 day)``, not only the plans' own: the day's regime
(``plans/score.py``: medians over symbols of each symbol's trend z and volatility of the day), the market
regime of the replication triggers (``ecosystem/triggers.py``: the mean of each symbol's trend t over the 120
bars before ``day`` and before ``day + 1 day``) and the bar notes (``ecosystem/notes.py``: each symbol's last
bar of the day). Each needs one small figure per symbol, and each symbol's figure depends on its bars only:

* ``day_figures``: per symbol with a bar of the day, ``sum``, ``std`` (ddof 1) and ``count`` of its 1-minute
  log returns of the day (the first bar of the day has none), by a pandas groupby as the regime took them,
  and the timestamp of its last bar of the day (the notes'), both from one pass over the day's rows;
* ``symbol_trends``: per symbol with >= ``REGIME_MIN_BARS`` bars in ``[end - 120 min, end)``, all closes > 0,
  ``t = sum(r) / (std(r, ddof 1) sqrt(n))`` of its log returns ``r`` (0 when flat).

So the closes can be read a piece of symbols at a time (every bar of a symbol in the same piece) and each
piece reduced to its symbols' figures (``reduce_closes``) and dropped: ``combine`` puts the pieces' figures
together in symbol order, and every stage computes from them what it computed from the whole frame, bit for
bit (a median does not depend on the order; the mean of the trends is taken in symbol order, as the groupby
gave). Memory: a piece of bars, not the millions of bars of a day of thousands of symbols.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import pandas as pd

from tis_pipeline.trading_day.ecosystem.common import REGIME_BARS, REGIME_MIN_BARS, as_utc
from tis_pipeline.trading_day.plans.common import naive_ns, utc_day, utc_series

DAY = pd.Timedelta(days=1)
STAT_COLUMNS = ("sum", "std", "count")
_UTC_NS = pd.DatetimeTZDtype("ns", "UTC")
Figures = TypeVar("Figures", pd.DataFrame, pd.Series)


def sorted_closes(frame: pd.DataFrame | None) -> pd.DataFrame:
    """symbol, timestamp (UTC, ns), close as float64, sorted by (symbol, timestamp) like ``prepare_bars`` (a
    frame already in that order, as ``read_bars`` gives it under a byte-order collation, is not sorted
    again)."""
    if frame is None or len(frame) == 0:
        return pd.DataFrame(
            {
                "symbol": pd.Series([], dtype="str"),
                "timestamp": utc_series([]),
                "close": pd.Series([], dtype="float64"),
            }
        )
    # symbols as Python strings in an object column: the order is the same as the str dtype's, without
    # converting millions of them
    sym = np.asarray(frame["symbol"].to_numpy(dtype=object), dtype=object)
    c = pd.DataFrame(
        {
            "symbol": pd.Series(sym, dtype=object),
            "timestamp": naive_ns(frame["timestamp"]),
            "close": frame["close"].to_numpy(dtype="float64"),
        }
    )
    ts = c["timestamp"].to_numpy()
    same = sym[1:] == sym[:-1]  # the same str objects mostly: equal by identity, no text compared
    change = np.flatnonzero(~same)
    # ordered: the symbol grows where it changes (compared there only), the time grows within a symbol
    ordered = bool(np.all(sym[change + 1] > sym[change]) and np.all(ts[1:][same] > ts[:-1][same]))
    if not ordered:
        c = c.sort_values(["symbol", "timestamp"], kind="stable").reset_index(drop=True)
    c["timestamp"] = utc_series(c["timestamp"])
    return c


def _empty_last_bars(time_dtype: pd.DatetimeTZDtype) -> pd.Series:
    return pd.Series([], index=pd.Index([], dtype=object, name="symbol"), dtype=time_dtype)


def _empty_stats() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sum": pd.Series(dtype="float64"),
            "std": pd.Series(dtype="float64"),
            "count": pd.Series(dtype="int64"),
        },
        index=pd.Index([], dtype=object, name="symbol"),
    )


def day_figures(
    day: pd.Timestamp, closes: pd.DataFrame, time_dtype: pd.DatetimeTZDtype
) -> tuple[pd.DataFrame, pd.Series]:
    """Per symbol with a bar of ``[day, day + 1 day)``, indexed by symbol in order (``closes``:
    ``sorted_closes``' frame): sum, std (ddof 1) and count of its log returns of the day, and the timestamp of
    its last bar of the day as ``time_dtype`` (the unit of time of the closes as given)."""
    day = utc_day(day)
    # numpy over the day's rows (not a filtered copy of the frame and a groupby per step): the same arrays
    ts = naive_ns(closes["timestamp"])
    today = (ts >= day.tz_localize(None).to_datetime64()) & (
        ts < (day + DAY).tz_localize(None).to_datetime64()
    )
    sym = closes["symbol"].to_numpy(dtype=object)[today]
    close = closes["close"].to_numpy(dtype="float64")[today]
    ts = ts[today]
    if len(sym) == 0:
        return _empty_stats(), _empty_last_bars(time_dtype)
    # the frame is sorted by symbol: each symbol's rows are one run, numbered in symbol order (grouping by
    # the number gives the groups of the symbols, in the same order, without hashing millions of strings);
    # pos = the row's place in its run
    first = np.r_[True, sym[1:] != sym[:-1]]
    run = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    pos = np.arange(len(sym)) - starts[run]
    with np.errstate(divide="ignore", invalid="ignore"):
        lr = np.where(pos > 0, np.log(close / np.roll(close, 1)), np.nan)
    # each group's sum (compensated) and variance (Welford) are accumulated over that group's rows alone:
    # the same figures whichever other symbols the frame holds
    stats = pd.DataFrame({"run": run, "lr": lr}).groupby("run", sort=True)["lr"].agg(list(STAT_COLUMNS))
    symbols = pd.Index(sym[starts], dtype=object, name="symbol")
    stats.index = symbols
    # a symbol's bars are in time order within its run: its last row is its last bar of the day
    last = np.append(starts[1:], len(sym)) - 1
    last_bars = pd.Series(ts[last], index=symbols).dt.tz_localize("UTC").astype(time_dtype)
    return stats, last_bars


def symbol_trends(closes: pd.DataFrame, end: pd.Timestamp) -> pd.Series:
    """Per symbol with >= ``REGIME_MIN_BARS`` bars in the ``REGIME_BARS`` minutes before ``end``, all closes
    > 0: its trend t (module docstring), indexed by symbol in order (``closes``: ``sorted_closes``' frame)."""
    end = as_utc(pd.Timestamp(end))
    ts = naive_ns(closes["timestamp"])
    lo = (end - pd.Timedelta(minutes=REGIME_BARS)).tz_localize(None).to_datetime64()
    rows = np.flatnonzero((ts >= lo) & (ts < end.tz_localize(None).to_datetime64()))
    sym = closes["symbol"].to_numpy(dtype=object)[rows]
    close = closes["close"].to_numpy(dtype="float64")[rows]
    names, trends = [], []
    if len(sym):
        starts = np.flatnonzero(np.r_[True, sym[1:] != sym[:-1]])
        for a, b in zip(starts, np.append(starts[1:], len(sym)), strict=True):
            c = close[a:b]
            if len(c) < REGIME_MIN_BARS or not np.all(c > 0):
                continue
            r = np.diff(np.log(c))
            sd = float(r.std(ddof=1)) if len(r) > 1 else 0.0
            names.append(sym[a])
            trends.append(float(r.sum() / (sd * math.sqrt(len(r)))) if sd > 0 else 0.0)
    return pd.Series(trends, index=pd.Index(names, dtype=object, name="symbol"), dtype="float64")


def _by_symbol(figures: Figures) -> Figures:
    """``figures`` with their index as Python strings (object dtype), named symbol, whatever the frame's
    symbol column or a concatenation made of it."""
    return figures.set_axis(pd.Index(figures.index.to_numpy(dtype=object), dtype=object, name="symbol"))


@dataclass(frozen=True)
class DayCloses:
    """A day's figures of every symbol's closes (module docstring), each indexed by symbol in order: what the
    day's regime, the triggers' market regime and the bar notes read."""

    day: pd.Timestamp
    stats: pd.DataFrame  # day_figures' sum, std, count
    trends_before: pd.Series  # symbol_trends before ``day``: the regime at the previous day's close
    trends_after: pd.Series  # symbol_trends before ``day + 1 day``
    last_bars: pd.Series  # day_figures' last bar of the day, in the closes' unit of time

    def trends(self, end: pd.Timestamp) -> pd.Series:
        """The trends of the 120 bars before ``end``: ``day`` or ``day + 1 day``."""
        end = as_utc(pd.Timestamp(end))
        if end == self.day:
            return self.trends_before
        if end == self.day + DAY:
            return self.trends_after
        raise ValueError(f"trends of {self.day.date()} end at its start or its end, not at {end}")


def reduce_closes(day: pd.Timestamp, closes: pd.DataFrame | None) -> DayCloses:
    """The figures of ``closes`` (symbol, timestamp, close of ``[day - 2 h, day + 1 day)``, in any order):
    every symbol's, or a piece's whose every bar is in it."""
    day = utc_day(day)
    c = sorted_closes(closes)
    # the notes are written on the last bars as the closes hold them: in their unit of time (microseconds,
    # as read from the database), not the nanoseconds of the sorted copy
    given = closes is not None and len(closes) > 0
    time_dtype = pd.to_datetime(closes["timestamp"], utc=True).dtype if given else _UTC_NS
    stats, last_bars = day_figures(day, c, time_dtype)
    return DayCloses(
        day=day,
        stats=stats,
        trends_before=symbol_trends(c, day),
        trends_after=symbol_trends(c, day + DAY),
        last_bars=last_bars,
    )


def combine(day: pd.Timestamp, pieces: Iterable[DayCloses]) -> DayCloses:
    """The figures of pieces of distinct symbols as one, in symbol order (as one frame of them all gives)."""
    day = utc_day(day)
    parts = list(pieces)
    if any(p.day != day for p in parts):
        raise ValueError(f"pieces of another day than {day.date()}")

    def joined(frames: list[Figures], empty: Figures) -> Figures:
        frames = [f for f in frames if len(f)]
        if not frames:
            return empty
        out = _by_symbol(pd.concat(frames) if len(frames) > 1 else frames[0])
        if not out.index.is_unique:
            raise ValueError("a symbol in more than one piece")
        return out.sort_index(kind="stable")

    empty = reduce_closes(day, None)
    return DayCloses(
        day=day,
        stats=joined([p.stats for p in parts], empty.stats),
        trends_before=joined([p.trends_before for p in parts], empty.trends_before),
        trends_after=joined([p.trends_after for p in parts], empty.trends_after),
        last_bars=joined([p.last_bars for p in parts], empty.last_bars),
    )


def reduce_pieces(day: pd.Timestamp, pieces: Iterable[pd.DataFrame]) -> DayCloses:
    """``combine`` of ``reduce_closes`` of each piece (each symbol's bars all in one piece), one piece in
    memory at a time."""
    return combine(day, (reduce_closes(day, piece) for piece in pieces))
