"""Synthetic 1-minute bars and a micro-benchmark of the DSI batch path.

``python -m bench.dsi_logic [n_bars] [n_symbols]`` prints bars/s of ``score_bars`` (best/median of 5).
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from tis_pipeline.dsi.logic.config import DsiConfig
from tis_pipeline.dsi.logic.events import detect_events
from tis_pipeline.dsi.logic.score import measure_streaming_latency, score_bars


def make_bars(
    n_bars: int = 1_000_000,
    n_symbols: int = 50,
    seed: int = 0,
    start: str = "2024-01-02",
    gap_prob: float = 0.002,
) -> pd.DataFrame:
    """Bars sorted by (symbol, timestamp): Student-t(3) returns, clustered volatility and volume, rare
    gaps."""
    rng = np.random.default_rng(seed)
    m = -(-n_bars // n_symbols)
    extra = int(m * (1 + 3 * gap_prob)) + 8
    shape = (n_symbols, extra)
    regime = lfilter([0.1], [1, -0.995], rng.standard_normal(shape), axis=1)  # slow log-vol regime
    sigma = 0.0008 * np.exp(0.8 * regime)
    z = rng.standard_t(3, shape) / np.sqrt(3)
    close = rng.uniform(20, 500, (n_symbols, 1)) * np.exp(np.cumsum(sigma * z, axis=1))
    open_ = np.concatenate([close[:, :1], close[:, :-1]], axis=1) * (1 + 0.0001 * rng.standard_normal(shape))
    wick = np.abs(rng.standard_normal(shape)) * sigma * 0.5
    high = np.maximum(open_, close) * (1 + wick)
    low = np.minimum(open_, close) * (1 - wick * rng.uniform(0.5, 1.5, shape))
    lvol = lfilter([0.2], [1, -0.98], rng.standard_normal(shape), axis=1) + 0.6 * np.abs(z)
    volume = np.round(np.exp(6.5 + lvol + 0.5 * rng.standard_normal(shape)))
    t0 = pd.Timestamp(start, tz="UTC").value
    ts = t0 + np.arange(extra, dtype=np.int64) * 60_000_000_000
    keep = rng.random(shape) >= gap_prob
    keep[:, 0] = True
    frames = []
    for j in range(n_symbols):
        sel = np.flatnonzero(keep[j])[:m]
        frames.append(
            pd.DataFrame(
                {
                    "symbol": f"SYM{j:03d}",
                    "timestamp": pd.DatetimeIndex(ts[sel].view("M8[ns]")).tz_localize("UTC"),
                    "open": open_[j, sel],
                    "high": high[j, sel],
                    "low": low[j, sel],
                    "close": close[j, sel],
                    "volume": volume[j, sel],
                }
            )
        )
    return pd.concat(frames, ignore_index=True).head(n_bars)


def main(n_bars: int = 1_000_000, n_symbols: int = 50) -> None:
    bars = make_bars(n_bars, n_symbols)
    cfg = DsiConfig()
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        scores, _state = score_bars(bars, None, cfg)
        runs.append(time.perf_counter() - t0)
    best, median = min(runs), float(np.median(runs))
    events = detect_events(scores, cfg)
    print(
        f"score_bars: {len(bars):,} bars, {n_symbols} symbols, "
        f"best {best:.3f} s -> {len(bars) / best:,.0f} bars/s "
        f"(median {median:.3f} s -> {len(bars) / median:,.0f} bars/s)"
    )
    print(f"events: {len(events)} ({events['anomaly_type'].value_counts().to_dict() if len(events) else {}})")
    print(
        f"confirm share {scores['mx_confirm'].mean():.4f}, mean survival {scores['survival_rate'].mean():.3f}"
    )
    day = bars[bars["timestamp"] < bars["timestamp"].min() + pd.Timedelta(days=1)]
    _, st = score_bars(day, None, cfg)
    rest = bars[bars["timestamp"] >= bars["timestamp"].min() + pd.Timedelta(days=1)]
    print("streaming:", measure_streaming_latency(rest, st, cfg, n=500))


if __name__ == "__main__":
    main(*(int(x) for x in sys.argv[1:3]))
