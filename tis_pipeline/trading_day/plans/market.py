"""Bar features of the plans: ATR, trailing log-return sums and volatility at an event bar, the trend z and
the regime label. Rolling figures are fixed-length sums over a window ending at the event bar, so they do not
depend on where the ``bars`` frame starts (a range run and day-by-day runs agree).

``DayBars`` holds a day's bars prepared once (sorted by symbol and timestamp, with their symbol blocks, and
their per-bar columns and cost inputs computed on first use) and is what every stage of the day reads; a stage
given a plain frame wraps it itself.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from concurrent.futures import Future

import numpy as np
import pandas as pd

from tis_pipeline.trading_day.closes import DayCloses, reduce_closes
from tis_pipeline.trading_day.plans.common import (
    ATR_WINDOW,
    HIGH_VOLATILITY,
    REGIME_MIN_RETURNS,
    REGIME_WINDOW,
    TREND_Z,
    naive_ns,
    utc_day,
    utc_series,
)
from tis_pipeline.trading_day.plans.costs import BarCosts, CostConfig


def trend_z(total: np.ndarray, vol: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Trend strength s / (v sqrt(n)); a market that did not move at all has z = 0, not 0/0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.asarray(total, dtype="float64") / (np.asarray(vol, dtype="float64") * np.sqrt(count))
    return np.where(np.asarray(vol) == 0, 0.0, z)


def regime_label(z: float, vol: float) -> str:
    if not (math.isfinite(z) and math.isfinite(vol)):
        return "unknown"
    if vol > HIGH_VOLATILITY:
        return "high_volatility"
    if z > TREND_Z:
        return "trending_up"
    if z < -TREND_Z:
        return "trending_down"
    return "ranging"


def prepare_bars(bars: pd.DataFrame | DayBars | None) -> pd.DataFrame:
    """symbol, timestamp (UTC, ns), open, high, low, close, volume (float64), by (symbol, timestamp)."""
    if isinstance(bars, DayBars):
        return bars.bars
    return _sorted_bars(bars)[0]


def _sorted_bars(bars: pd.DataFrame | None) -> tuple[pd.DataFrame, dict[str, tuple[int, int]]]:
    """``prepare_bars``' frame and its symbol blocks (``DayBars.blocks``), from one factorization of the
    symbols."""
    if bars is None or len(bars) == 0:
        empty = pd.DataFrame(
            {
                "symbol": pd.Series([], dtype="str"),
                "timestamp": utc_series([]),
                **{c: pd.Series([], dtype="float64") for c in ("open", "high", "low", "close", "volume")},
            }
        )
        return empty, {}
    # by (symbol, timestamp): one stable sort of the keys (the order of ``sort_values(["symbol", "timestamp"],
    # kind="stable")``; symbols as their ranks, no Python string per bar), then each column taken once in that
    # order (not a copy of the frame, then a sorted copy of the copy: a day of thousands of symbols has
    # millions of bars)
    symbol = bars["symbol"].astype("str")
    ranks, names = pd.factorize(symbol, sort=True)
    ts = naive_ns(bars["timestamp"])
    order = np.lexsort((ts.view("int64"), ranks))
    b = pd.DataFrame(
        {
            "symbol": symbol.array.take(order),
            "timestamp": ts[order],
            **{c: bars[c].to_numpy(dtype="float64")[order] for c in ("open", "high", "low", "close")},
            # no volume column (quote-only FX): NaN, which the cost model reads as "volume unknown"
            "volume": bars["volume"].to_numpy(dtype="float64")[order] if "volume" in bars else np.nan,
        },
        copy=False,
    )
    b["timestamp"] = utc_series(b["timestamp"])
    # the sorted frame holds each symbol's rows in one block, the blocks in rank order: rank k's block runs
    # from the count of bars of lower ranks to that of ranks up to k (a missing symbol, rank -1, sorts first
    # and has no block)
    ends = np.cumsum(np.bincount(ranks + 1, minlength=len(names) + 1))
    blocks = {str(name): (int(ends[k]), int(ends[k + 1])) for k, name in enumerate(names)}
    return b, blocks


def _trailing(values: np.ndarray, pos: np.ndarray, rows: np.ndarray, window: int) -> np.ndarray:
    """(len(rows), window) matrix of values at rows, rows-1, ... of the same symbol (NaN before its first
    bar).

    Each row is summed on its own later, so the figures do not depend on where the bars frame starts.
    """
    lags = np.arange(window)
    idx = rows[:, None] - lags[None, :]
    ok = pos[rows][:, None] >= lags[None, :]
    return np.where(ok, values[np.clip(idx, 0, None)], np.nan)


def _bar_columns(b: pd.DataFrame) -> dict[str, np.ndarray]:
    pos = b.groupby("symbol", sort=False).cumcount().to_numpy()
    close = b["close"].to_numpy()
    prev_close = np.where(pos > 0, np.roll(close, 1), np.nan)
    tr = np.fmax(b["high"].to_numpy(), prev_close) - np.fmin(b["low"].to_numpy(), prev_close)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_ret = np.log(close / prev_close)
    return {"pos": pos, "tr": tr, "log_ret": log_ret}


def features_at(
    b: pd.DataFrame, rows: np.ndarray, cols: dict[str, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """ATR(14), 60-bar log-return sum / std / count and the bar's own return at the given bar rows (``cols``:
    ``b``'s per-bar columns when already computed, e.g. ``DayBars.columns``)."""
    cols = _bar_columns(b) if cols is None else cols
    tr = _trailing(cols["tr"], cols["pos"], rows, ATR_WINDOW)
    atr = np.where(np.isnan(tr).any(axis=1), np.nan, tr.sum(axis=1) / ATR_WINDOW)
    lr = _trailing(cols["log_ret"], cols["pos"], rows, REGIME_WINDOW)
    count = (~np.isnan(lr)).sum(axis=1)
    total = np.nansum(lr, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
        var = np.nansum((lr - mean[:, None]) ** 2, axis=1) / (count - 1)
    enough = count >= REGIME_MIN_RETURNS
    vol = np.where(enough, np.sqrt(var), np.nan)
    total = np.where(enough, total, np.nan)
    opens, closes = b["open"].to_numpy()[rows], b["close"].to_numpy()[rows]
    return {
        "atr": atr,
        "sum60": total,
        "vol60": vol,
        "n60": count.astype("float64"),
        "bar_ret": closes / opens - 1.0,
        "close": closes,
    }


class DayBars:
    """A day's bars, prepared once and shared by every stage of the day (plans, approvals, execution, scores,
    triggers, notes).

    ``bars``: the OHLCV bars the plans need (``prepare_bars``' frame; the whole day and its context, or only
    the symbols and stretches of the day's events: the figures of a bar depend only on the fixed number of
    bars of its symbol before it, ``ATR_WINDOW``/``REGIME_WINDOW``/``costs.COST_WINDOW``, so a stretch that
    holds those gives the same numbers). ``closes``: what the day's regime, the replication triggers' market
    regime and the bar notes read of every symbol of the day and its context: symbol, timestamp, close of
    every bar, as read, or their figures per symbol (``closes.DayCloses``: what the asset reads, a piece of
    symbols at a time), or a ``Future`` of either (waited for on first use); None: the ``bars`` given.
    The symbol blocks are found as the bars are sorted; whatever else is derived (per-bar columns, timestamps
    as ns, cost inputs per configuration, the closes' figures) is computed on first use and kept.
    """

    def __init__(
        self,
        bars: pd.DataFrame | DayBars | None,
        closes: pd.DataFrame | DayCloses | Future[pd.DataFrame] | Future[DayCloses] | None = None,
    ) -> None:
        if isinstance(bars, DayBars):
            self.bars, self._blocks = bars.bars, bars.blocks
        else:
            self.bars, self._blocks = _sorted_bars(bars)
        if closes is None:
            closes = bars._closes if isinstance(bars, DayBars) else bars
        self._closes: pd.DataFrame | DayCloses | Future[pd.DataFrame] | Future[DayCloses] = (
            closes if closes is not None else self.bars
        )
        self._bar_costs: dict[str, BarCosts] = {}
        self._day_closes: dict[pd.Timestamp, DayCloses] = {}

    @property
    def closes(self) -> pd.DataFrame | DayCloses:
        """The closes of every symbol (as given; a ``Future`` given is waited for here, on first use: the
        caller may read them while the plans are made, which need only ``bars``)."""
        if isinstance(self._closes, Future):
            self._closes = self._closes.result()
        return self._closes

    def day_closes(self, day: pd.Timestamp) -> DayCloses:
        """The figures of every symbol's closes for ``day`` (``closes.DayCloses``): as given, or reduced from
        the closes' frame (once per day)."""
        closes = self.closes
        if isinstance(closes, DayCloses):
            if closes.day != utc_day(day):
                raise ValueError(f"closes of {closes.day.date()}, not of {pd.Timestamp(day).date()}")
            return closes
        key = utc_day(day)
        if key not in self._day_closes:
            self._day_closes[key] = reduce_closes(day, closes)
        return self._day_closes[key]

    @functools.cached_property
    def columns(self) -> dict[str, np.ndarray]:
        """pos (row within its symbol), true range and 1-bar log return of every bar (``_bar_columns``)."""
        return _bar_columns(self.bars)

    @functools.cached_property
    def ts(self) -> np.ndarray:
        """The bars' timestamps as naive UTC ``datetime64[ns]``."""
        return naive_ns(self.bars["timestamp"])

    @property
    def blocks(self) -> dict[str, tuple[int, int]]:
        """symbol -> its rows [first, end) (the frame is sorted by symbol; found as the bars were sorted, from
        the one factorization of their symbols)."""
        return self._blocks

    def rows_at(self, symbols: pd.Series, timestamps: pd.Series) -> np.ndarray:
        """The row of the bar of each (symbol, timestamp), -1 where there is none: the join of events to
        their bars, by a binary search in each symbol's block (not a merge with a frame of every bar's keys:
        millions of them on a day of thousands of symbols, hashed again for every join)."""
        ts = naive_ns(timestamps)
        out = np.full(len(ts), -1, dtype="int64")
        if len(ts) == 0:
            return out
        keyed = self._keys
        if keyed is not None and not np.isnat(ts).any():
            # one binary search of the (block, time) keys of every bar: the first bar of the symbol's block
            # at the time, as the search in the block finds it (a time outside every bar's span matches none)
            keys, first, span, block_of = keyed
            block = np.array([block_of.get(s, -1) for s in symbols.astype("str").tolist()], dtype="int64")
            t = ts.view("int64") - first
            ok = (block >= 0) & (t >= 0) & (t < span)
            query = block[ok] * span + t[ok]
            at = np.searchsorted(keys, query, side="left")
            hit = at < len(keys)
            hit[hit] = keys[at[hit]] == query[hit]
            rows = np.flatnonzero(ok)
            out[rows[hit]] = at[hit]
            return out
        codes, names = pd.factorize(symbols.astype("str"))
        # the rows of each symbol, found by one sort (not one scan of every row per symbol)
        by_symbol = np.split(np.argsort(codes, kind="stable"), np.cumsum(np.bincount(codes))[:-1])
        for name, k in zip(names, by_symbol, strict=True):
            lo, hi = self.blocks.get(str(name), (0, 0))
            at = lo + np.searchsorted(self.ts[lo:hi], ts[k], side="left")
            found = at < hi
            found[found] = self.ts[at[found]] == ts[k[found]]
            out[k[found]] = at[found]
        return out

    def block_search(
        self, symbols: np.ndarray, times: Sequence[np.ndarray]
    ) -> tuple[list[np.ndarray], np.ndarray] | None:
        """For each array of ``times`` (naive UTC ``datetime64[ns]``, a time per symbol of ``symbols``):
        ``lo + searchsorted(ts[lo:hi], t, side="left")`` in the symbol's block ``[lo, hi)`` ((0, 0) for a
        symbol without bars), and each symbol's ``hi``; by one binary search of the (block, time) keys of
        every bar, a time clipped into the bars' span (before it: the block's first row; after it: its end,
        the next block's first key). None when the keys are not there (``_keys``) or a time is NaT: the
        caller searches block by block."""
        keyed = self._keys
        if keyed is None or any(np.isnat(t).any() for t in times):
            return None
        keys, first, span, block_of = keyed
        block = np.array([block_of.get(str(x), -1) for x in symbols.tolist()], dtype="int64")
        known = block >= 0
        bounds = list(self.blocks.values())
        hi = np.array([bounds[b][1] if b >= 0 else 0 for b in block.tolist()], dtype="int64")
        found = []
        for t in times:
            query = block * span + np.clip(t.view("int64") - first, 0, span)
            found.append(np.where(known, np.searchsorted(keys, query, side="left"), 0).astype("int64"))
        return found, hi

    @functools.cached_property
    def _keys(self) -> tuple[np.ndarray, int, int, dict[str, int]] | None:
        """(each bar's key ``block * span + (time - first)``, first, span, symbol -> its block's number) for
        ``rows_at``: the bars are sorted by (block, time), so the keys are too (the rows before the first
        block, of no symbol, get block -1: below every key of a block). None when a time is NaT or the keys
        would not fit in int64 (bars over a long span)."""
        ts = self.ts.view("int64")
        if len(ts) == 0 or np.isnat(self.ts).any():
            return None
        first = int(ts.min())
        span = int(ts.max()) - first + 1
        if span * (len(self.blocks) + 1) >= np.iinfo(np.int64).max // 2:
            return None
        block = np.full(len(ts), -1, dtype="int64")
        block_of = {}
        for k, (name, (lo, hi)) in enumerate(self.blocks.items()):
            block[lo:hi] = k
            block_of[name] = k
        keys = block * span + (ts - first)
        if not bool(np.all(keys[1:] >= keys[:-1])):  # not in (block, time) order: the search per block
            return None
        return keys, first, span, block_of

    def bar_costs(self, config: CostConfig) -> BarCosts:
        """The figures of ``costs.bar_cost_inputs``, computed at the bars asked for (``costs.BarCosts``: what
        the fills read) and kept per configuration, so every stage of the day shares them."""
        key = json.dumps(config.as_dict(), sort_keys=True)
        if key not in self._bar_costs:
            self._bar_costs[key] = BarCosts(self.bars, config, self.columns["pos"])
        return self._bar_costs[key]


def day_bars(bars: pd.DataFrame | DayBars | None) -> DayBars:
    """``bars`` prepared once (a ``DayBars`` is returned as it is)."""
    return bars if isinstance(bars, DayBars) else DayBars(bars)
