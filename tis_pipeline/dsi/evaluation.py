"""Out-of-sample quality of the DSI evidence against forward returns, and a naive baseline.

The scores are walk-forward by construction (every expert, count and weight at t uses bars <= t and labels
elapsed before t), so every scored bar is out of sample.  Signal = ``2 mx_evidence - 1`` (P(up) mapped to
[-1, 1]); forward return = ``close_{t+h} / close_t - 1`` within the symbol; baseline = sign of the last 1-bar
return. Where the scores carry ``mx_confirm``, the same figures on the confirmed bars alone show what
confirmation adds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import spearmanr


def _aligned(scores: pd.DataFrame, bars: pd.DataFrame, horizon: int, warmup: int) -> pd.DataFrame:
    b = bars[["symbol", "timestamp", "close"]].sort_values(["symbol", "timestamp"], kind="stable")
    b = b.assign(timestamp=pd.DatetimeIndex(b["timestamp"]).as_unit("ns").asi8).reset_index(drop=True)
    g = b.groupby("symbol", sort=False)["close"]
    b["fwd"] = g.shift(-horizon) / b["close"] - 1.0
    b["last_ret"] = b["close"] / g.shift(1) - 1.0
    b = b[g.cumcount() >= warmup]
    s = scores[["symbol", "timestamp", "mx_evidence", *(["mx_confirm"] if "mx_confirm" in scores else [])]]
    s = s.assign(timestamp=pd.DatetimeIndex(s["timestamp"]).as_unit("ns").asi8)
    m = s.merge(b, on=["symbol", "timestamp"], how="inner")
    m["signal"] = 2.0 * m["mx_evidence"] - 1.0
    m["naive"] = np.sign(m["last_ret"])
    return m[np.isfinite(m["fwd"]) & np.isfinite(m["naive"])]


def _ic(signal: pd.Series, fwd: pd.Series) -> float:
    if len(signal) < 3 or signal.nunique() < 2 or fwd.nunique() < 2:
        return float("nan")
    return float(spearmanr(signal, fwd).statistic)


def _hit(signal: pd.Series, fwd: pd.Series) -> float:
    m = (signal != 0) & (fwd != 0)
    return float((np.sign(signal[m]) == np.sign(fwd[m])).mean()) if m.any() else float("nan")


def information_coefficient(
    scores: pd.DataFrame, bars: pd.DataFrame, horizon: int = 5, warmup: int = 0
) -> float:
    """Spearman rank correlation between 2 mx_evidence - 1 and the forward h-bar return."""
    m = _aligned(scores, bars, horizon, warmup)
    return _ic(m["signal"], m["fwd"])


def hit_rate(scores: pd.DataFrame, bars: pd.DataFrame, horizon: int = 5, warmup: int = 0) -> float:
    """Share of bars with a non-neutral signal and a non-zero forward return where the signs agree."""
    m = _aligned(scores, bars, horizon, warmup)
    return _hit(m["signal"], m["fwd"])


def naive_information_coefficient(bars: pd.DataFrame, horizon: int = 5, warmup: int = 0) -> float:
    m = _aligned(_neutral(bars), bars, horizon, warmup)
    return _ic(m["naive"], m["fwd"])


def naive_hit_rate(bars: pd.DataFrame, horizon: int = 5, warmup: int = 0) -> float:
    m = _aligned(_neutral(bars), bars, horizon, warmup)
    return _hit(m["naive"], m["fwd"])


def _neutral(bars: pd.DataFrame) -> pd.DataFrame:
    return bars[["symbol", "timestamp"]].assign(mx_evidence=0.5)


def evaluate(scores: pd.DataFrame, bars: pd.DataFrame, horizon: int = 5, warmup: int = 0) -> dict:
    """IC and hit rate of the evidence and of the naive baseline (for asset metadata)."""
    m = _aligned(scores, bars, horizon, warmup)
    out = {
        "horizon": horizon,
        "n": len(m),
        "ic": _ic(m["signal"], m["fwd"]),
        "hit_rate": _hit(m["signal"], m["fwd"]),
        "naive_ic": _ic(m["naive"], m["fwd"]),
        "naive_hit_rate": _hit(m["naive"], m["fwd"]),
    }
    if "mx_confirm" in m:
        # mx_confirm as a filter: does the evidence's sign call the forward return better on confirmed bars?
        confirmed = m["mx_confirm"].fillna(False).astype(bool)
        out |= {
            "confirmed_n": int(confirmed.sum()),
            "confirmed_ic": _ic(m.loc[confirmed, "signal"], m.loc[confirmed, "fwd"]),
            "confirmed_hit_rate": _hit(m.loc[confirmed, "signal"], m.loc[confirmed, "fwd"]),
            "unconfirmed_hit_rate": _hit(m.loc[~confirmed, "signal"], m.loc[~confirmed, "fwd"]),
        }
    return out
