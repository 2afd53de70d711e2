"""A deterministic synthetic source of 1-minute bars, for demos, tests and benchmarks.

Each (seed, symbol, UTC day) has its own random stream, so any day can be generated on its own and a range
equals the concatenation of its days, bit for bit. The series is built to look like real minute data:

* log-returns are Student-t (ν = 4: heavy tails), scaled by a stochastic volatility whose log follows an
  AR(1) within the day (volatility clustering) and by a U-shaped intraday profile;
* volume follows the same U-shape times a log-normal that co-moves with volatility;
* about 0.5 % of minutes are missing (gaps) and about 1 in 2,000 minutes carries a jump (±0.5–2 %);
* the day's opening price continues a daily random walk, so consecutive days join up.
Markets trade 24 hours (crypto-like); no minute is invented outside the day asked for.
"""

from __future__ import annotations

import zlib
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy.signal import lfilter

MINUTES_PER_DAY = 1440
_EPOCH_DAY = pd.Timestamp("2015-01-01", tz="UTC")


def _stream(seed: int, symbol: str, day_index: int, purpose: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(symbol.encode()), day_index, purpose])


_MAX_DAYS = 60 * 366


@lru_cache(maxsize=4096)
def _daily_walk(seed: int, symbol: str) -> tuple[float, np.ndarray]:
    """A symbol's base price and the cumulative log steps of its daily random walk (day d uses steps < d)."""
    base = float(np.exp(_stream(seed, symbol, 0, 0).uniform(np.log(5.0), np.log(5_000.0))))
    steps = _stream(seed, symbol, 0, 1).standard_t(5, size=_MAX_DAYS) * 0.012
    return base, np.concatenate([[0.0], np.cumsum(steps)])


def _opening_price(seed: int, symbol: str, day_index: int) -> float:
    base, walk = _daily_walk(seed, symbol)
    return round(base * float(np.exp(walk[min(max(day_index, 0), _MAX_DAYS)])), 4)


def day_bars(day: pd.Timestamp, symbols: list[str] | tuple[str, ...], seed: int = 42) -> pd.DataFrame:
    """The bars of one UTC day. Columns: symbol, timestamp, open, high, low, close, volume."""
    day = pd.Timestamp(day).tz_convert("UTC") if pd.Timestamp(day).tzinfo else pd.Timestamp(day, tz="UTC")
    day = day.normalize()
    day_index = (day - _EPOCH_DAY).days
    minutes = np.arange(MINUTES_PER_DAY)
    profile = 1.0 + 0.8 * np.cos(2 * np.pi * (minutes - 14 * 60) / MINUTES_PER_DAY) ** 2
    parts: dict[str, list] = {k: [] for k in ("symbol", "minute", "open", "high", "low", "close", "volume")}
    for symbol in symbols:
        rng = _stream(seed, symbol, day_index, 2)
        shocks = rng.standard_normal(MINUTES_PER_DAY) * 0.15
        log_vol = lfilter([1.0], [1.0, -0.97], shocks)
        sigma = 0.0006 * np.exp(log_vol) * profile
        returns = rng.standard_t(4, MINUTES_PER_DAY) * sigma / np.sqrt(2.0)
        jumps = rng.random(MINUTES_PER_DAY) < 1 / 2000
        returns[jumps] += rng.choice([-1, 1], jumps.sum()) * rng.uniform(0.005, 0.02, jumps.sum())
        open_price = _opening_price(seed, symbol, day_index)
        close = open_price * np.exp(np.cumsum(returns))
        open_ = np.concatenate([[open_price], close[:-1]])
        wick = np.abs(rng.standard_normal((2, MINUTES_PER_DAY))) * sigma * 0.6
        high = np.maximum(open_, close) * (1 + wick[0])
        low = np.minimum(open_, close) * (1 - wick[1])
        volume = np.round(profile * np.exp(rng.normal(3.0, 0.6, MINUTES_PER_DAY) + 40 * np.abs(returns)), 2)
        keep = rng.random(MINUTES_PER_DAY) >= 0.005
        parts["symbol"].append(np.full(int(keep.sum()), symbol, dtype=object))
        parts["minute"].append(minutes[keep])
        for name, values in (("open", open_), ("high", high), ("low", low), ("close", close)):
            parts[name].append(np.round(values[keep], 8))
        parts["volume"].append(volume[keep])
    if not symbols:
        return pd.DataFrame(columns=["symbol", "timestamp", "open", "high", "low", "close", "volume"])
    joined = {k: np.concatenate(v) for k, v in parts.items()}
    timestamps = (np.datetime64(day.tz_localize(None), "us")
                  + joined.pop("minute").astype("timedelta64[m]").astype("timedelta64[us]"))
    return pd.DataFrame({
        "symbol": pd.array(joined.pop("symbol"), dtype="str"),
        "timestamp": pd.DatetimeIndex(timestamps).tz_localize("UTC"),
        **joined,
    })


def bars(start: pd.Timestamp, end: pd.Timestamp, symbols, seed: int = 42) -> pd.DataFrame:
    """Bars with start <= timestamp < end (whole UTC days)."""
    days = pd.date_range(pd.Timestamp(start).normalize(), pd.Timestamp(end), freq="D", inclusive="left")
    if len(days) == 0:
        return pd.DataFrame(columns=["symbol", "timestamp", "open", "high", "low", "close", "volume"])
    return pd.concat([day_bars(d, symbols, seed) for d in days], ignore_index=True)
