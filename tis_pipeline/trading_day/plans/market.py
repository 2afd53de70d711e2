"""Bar features of the plans: ATR, trailing log-return sums and volatility at an event bar, the trend z and
the regime label. Rolling figures are fixed-length sums over a window ending at the event bar, so they do not
depend on where the ``bars`` frame starts (a range run and day-by-day runs agree).

``DayBars`` holds a day's bars prepared once (sorted by symbol and timestamp, with their per-bar columns,
cost inputs and symbol blocks computed on first use) and is what every stage of the day reads; a stage given
a plain frame wraps it itself.
"""

from __future__ import annotations

import functools
import json
import math
from concurrent.futures import Future

import numpy as np
import pandas as pd

from tis_pipeline.trading_day.plans.common import (
    ATR_WINDOW,
    HIGH_VOLATILITY,
    REGIME_MIN_RETURNS,
    REGIME_WINDOW,
    TREND_Z,
    naive_ns,
    utc_series,
)
from tis_pipeline.trading_day.plans.costs import CostConfig, bar_cost_inputs


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
    if bars is None or len(bars) == 0:
        return pd.DataFrame(
            {
                "symbol": pd.Series([], dtype="str"),
                "timestamp": utc_series([]),
                **{c: pd.Series([], dtype="float64") for c in ("open", "high", "low", "close", "volume")},
            }
        )
    b = pd.DataFrame(
        {
            "symbol": bars["symbol"].astype("str").to_numpy(),
            "timestamp": naive_ns(bars["timestamp"]),
            **{c: bars[c].to_numpy(dtype="float64") for c in ("open", "high", "low", "close")},
            # no volume column (quote-only FX): NaN, which the cost model reads as "volume unknown"
            "volume": bars["volume"].to_numpy(dtype="float64") if "volume" in bars else np.nan,
        }
    )
    b = b.sort_values(["symbol", "timestamp"], kind="stable").reset_index(drop=True)
    b["timestamp"] = utc_series(b["timestamp"])
    return b


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


def _closes(frame: pd.DataFrame | None) -> pd.DataFrame:
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


class DayBars:
    """A day's bars, prepared once and shared by every stage of the day (plans, approvals, execution, scores,
    triggers, notes).

    ``bars``: the OHLCV bars the plans need (``prepare_bars``' frame; the whole day and its context, or only
    the symbols and stretches of the day's events: the figures of a bar depend only on the fixed number of
    bars of its symbol before it, ``ATR_WINDOW``/``REGIME_WINDOW``/``costs.COST_WINDOW``, so a stretch that
    holds those gives the same numbers). ``closes``: symbol, timestamp, close of every symbol of the day and
    its context, as read (what the day's regime, the replication triggers' market regime and the bar notes
    read), or a ``Future`` of them (waited for on first use); None: the ``bars`` given. Whatever is derived
    (per-bar columns, timestamps as ns, symbol blocks, cost inputs per configuration) is computed on first
    use and kept.
    """

    def __init__(
        self, bars: pd.DataFrame | DayBars | None, closes: pd.DataFrame | Future[pd.DataFrame] | None = None
    ) -> None:
        self.bars = prepare_bars(bars)
        if closes is None:
            closes = bars._closes if isinstance(bars, DayBars) else bars
        self._closes: pd.DataFrame | Future[pd.DataFrame] = closes if closes is not None else self.bars
        self._costs: dict[str, pd.DataFrame] = {}

    @property
    def closes(self) -> pd.DataFrame:
        """symbol, timestamp, close of every symbol (as given; a ``Future`` given is waited for here, on first
        use: the caller may read them while the plans are made, which need only ``bars``)."""
        if isinstance(self._closes, Future):
            self._closes = self._closes.result()
        return self._closes

    @functools.cached_property
    def sorted_closes(self) -> pd.DataFrame:
        """``closes`` as symbol, timestamp (UTC, ns), close, sorted by (symbol, timestamp)."""
        return _closes(self.closes)

    @functools.cached_property
    def columns(self) -> dict[str, np.ndarray]:
        """pos (row within its symbol), true range and 1-bar log return of every bar (``_bar_columns``)."""
        return _bar_columns(self.bars)

    @functools.cached_property
    def ts(self) -> np.ndarray:
        """The bars' timestamps as naive UTC ``datetime64[ns]``."""
        return naive_ns(self.bars["timestamp"])

    @functools.cached_property
    def symbols(self) -> np.ndarray:
        return self.bars["symbol"].to_numpy()

    @functools.cached_property
    def blocks(self) -> dict[str, tuple[int, int]]:
        """symbol -> its rows [first, end) (the frame is sorted by symbol)."""
        sym = self.symbols
        if len(sym) == 0:
            return {}
        starts = np.flatnonzero(np.r_[True, sym[1:] != sym[:-1]])
        ends = np.append(starts[1:], len(sym))
        return {str(sym[a]): (int(a), int(b)) for a, b in zip(starts, ends, strict=True)}

    @functools.cached_property
    def keys(self) -> pd.DataFrame:
        """symbol, timestamp, row: the frame's (symbol, timestamp) -> row index, to join events to bars."""
        return self.bars[["symbol", "timestamp"]].assign(row=np.arange(len(self.bars)))

    def costs(self, config: CostConfig) -> pd.DataFrame:
        """``costs.bar_cost_inputs`` of every bar under ``config`` (kept per configuration)."""
        key = json.dumps(config.as_dict(), sort_keys=True)
        if key not in self._costs:
            self._costs[key] = bar_cost_inputs(self.bars, config)
        return self._costs[key]


def day_bars(bars: pd.DataFrame | DayBars | None) -> DayBars:
    """``bars`` prepared once (a ``DayBars`` is returned as it is)."""
    return bars if isinstance(bars, DayBars) else DayBars(bars)
