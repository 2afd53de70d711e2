"""Bar features of the plans: ATR, trailing log-return sums and volatility at an event bar, the trend z and
the regime label. Rolling figures are fixed-length sums over a window ending at the event bar, so they do not
depend on where the ``bars`` frame starts (a range run and day-by-day runs agree)."""

from __future__ import annotations

import math

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


def prepare_bars(bars: pd.DataFrame) -> pd.DataFrame:
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


def features_at(b: pd.DataFrame, rows: np.ndarray) -> dict[str, np.ndarray]:
    """ATR(14), 60-bar log-return sum / std / count and the bar's own return at the given bar rows."""
    cols = _bar_columns(b)
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
