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

import threading
import zlib
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

MINUTES_PER_DAY = 1440
_EPOCH_DAY = pd.Timestamp("2015-01-01", tz="UTC")


def _stream(seed: int, symbol: str, day_index: int, purpose: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(symbol.encode()), day_index, purpose])


_MAX_DAYS = 60 * 366


# (seed, symbol) -> where its daily walk was last asked for: (base price, the walk's generator state after
# ``day`` steps, walk[day]); a later day goes on from there. A few hundred bytes a symbol, where the whole
# walk (``_MAX_DAYS`` steps) took 176 kB: 700 MB of 4,096 symbols, and a day of more symbols than the cache
# held drew every walk again (9 s a day of 5,000)
_WALKS: OrderedDict[tuple[int, str], tuple[float, Mapping[str, Any], int, float]] = OrderedDict()
_WALKS_KEPT = 16_384
_WALKS_LOCK = threading.Lock()


def _daily_walk(seed: int, symbol: str, day: int) -> tuple[float, float]:
    """A symbol's base price and ``walk[day]`` of its daily random walk: the sum of its first ``day`` log
    steps (Student-t, ν = 5, x 0.012), summed one after the other as ``np.cumsum`` does, so the value is the
    one of the walk drawn whole."""
    key = (seed, symbol)
    with _WALKS_LOCK:
        kept = _WALKS.get(key)
    if kept is not None and kept[2] <= day:
        base, state, done, walk = kept
        bits = np.random.PCG64()
        bits.state = state  # type: ignore[assignment]  # a PCG64 state, as saved below
        steps = np.random.Generator(bits)
    else:
        base = float(np.exp(_stream(seed, symbol, 0, 0).uniform(np.log(5.0), np.log(5_000.0))))
        steps, done, walk = _stream(seed, symbol, 0, 1), 0, 0.0
    if day > done:
        drawn = steps.standard_t(5, size=day - done) * 0.012
        # np.cumsum adds one step at a time: going on from walk[done] adds the same numbers in the same order
        walk = float(np.cumsum(drawn)[-1] if done == 0 else np.cumsum(np.r_[walk, drawn])[-1])
    with _WALKS_LOCK:
        _WALKS[key] = (base, steps.bit_generator.state, day, walk)
        _WALKS.move_to_end(key)
        while len(_WALKS) > _WALKS_KEPT:
            _WALKS.popitem(last=False)
    return base, walk


def _opening_price(seed: int, symbol: str, day_index: int) -> float:
    base, walk = _daily_walk(seed, symbol, min(max(day_index, 0), _MAX_DAYS))
    return round(base * float(np.exp(walk)), 4)


_COLUMNS = ["symbol", "timestamp", "open", "high", "low", "close", "volume"]


def day_bars(day: pd.Timestamp, symbols: list[str] | tuple[str, ...], seed: int = 42) -> pd.DataFrame:
    """The bars of one UTC day. Columns: symbol, timestamp, open, high, low, close, volume."""
    if not symbols:
        return pd.DataFrame(columns=_COLUMNS)
    return _frame([_day_columns(day, symbols, seed)], symbols)


def bars(
    start: pd.Timestamp, end: pd.Timestamp, symbols: list[str] | tuple[str, ...], seed: int = 42
) -> pd.DataFrame:
    """Bars with start <= timestamp < end (whole UTC days)."""
    days = pd.date_range(pd.Timestamp(start).normalize(), pd.Timestamp(end), freq="D", inclusive="left")
    if len(days) == 0:
        return pd.DataFrame(columns=_COLUMNS)
    if not symbols:
        return pd.concat([day_bars(d, symbols, seed) for d in days], ignore_index=True)
    # the rows of concatenating day_bars day by day, assembled once
    return _frame([_day_columns(d, symbols, seed) for d in days], symbols)


# symbols drawn and worked on at once: the day's ~20 (symbol, minute) arrays of float64 then take 64 x 1,440
# x 8 bytes (0.7 MB) each instead of the whole day's (500 symbols: 5.8 MB each, a peak of ~260 MB a day;
# 2,000 symbols: ~1 GB), while numpy still works on arrays long enough to be fast
SYMBOLS_PER_DRAW = 64


def _day_columns(day: pd.Timestamp, symbols: list[str] | tuple[str, ...], seed: int) -> dict[str, np.ndarray]:
    """One day's bars, rows by symbol then minute: ``symbol`` (positions in ``symbols``), ``timestamp`` and
    ``values`` (open, high, low, close, volume as rows of one 2-D array); made ``SYMBOLS_PER_DRAW`` symbols at
    a time (``_symbols_columns``) and joined. Every operation works row by row (a symbol's minutes), so the
    chunks change no bit of the bars."""
    day = pd.Timestamp(day).tz_convert("UTC") if pd.Timestamp(day).tzinfo else pd.Timestamp(day, tz="UTC")
    day = day.normalize()
    chunks = [
        _symbols_columns(day, symbols[first : first + SYMBOLS_PER_DRAW], seed)
        for first in range(0, len(symbols), SYMBOLS_PER_DRAW)
    ]
    if len(chunks) == 1:
        return chunks[0]
    return {
        "symbol": np.concatenate(
            [c["symbol"] + i * SYMBOLS_PER_DRAW for i, c in enumerate(chunks)]  # positions in ``symbols``
        ),
        "timestamp": np.concatenate([c["timestamp"] for c in chunks]),
        "values": np.concatenate([c["values"] for c in chunks], axis=1),
    }


def _symbols_columns(
    day: pd.Timestamp, symbols: list[str] | tuple[str, ...], seed: int
) -> dict[str, np.ndarray]:
    """``_day_columns`` of a few symbols (``day``: a UTC midnight).

    Each symbol draws from its own stream, in the same order as ever; the arithmetic then runs once on
    (symbol, minute) arrays instead of once per symbol. Every value goes through the same operations in the
    same order as in a per-symbol loop, so the bars stay bit for bit the same for a seed.
    """
    day_index = (day - _EPOCH_DAY).days
    n = len(symbols)
    minutes = np.arange(MINUTES_PER_DAY)
    profile = 1.0 + 0.8 * np.cos(2 * np.pi * (minutes - 14 * 60) / MINUTES_PER_DAY) ** 2
    shocks, t_draws, jump_draws, normal_draws, keep_draws = (np.empty((n, MINUTES_PER_DAY)) for _ in range(5))
    wick_draws = np.empty((n, 2, MINUTES_PER_DAY))
    jump_sizes, open_price = [], np.empty((n, 1))
    for i, symbol in enumerate(symbols):
        rng = _stream(seed, symbol, day_index, 2)
        shocks[i] = rng.standard_normal(MINUTES_PER_DAY)
        t_draws[i] = rng.standard_t(4, MINUTES_PER_DAY)
        jump_draws[i] = rng.random(MINUTES_PER_DAY)
        jumps = int((jump_draws[i] < 1 / 2000).sum())
        jump_sizes.append(rng.choice([-1, 1], jumps) * rng.uniform(0.005, 0.02, jumps))
        wick_draws[i] = rng.standard_normal((2, MINUTES_PER_DAY))
        normal_draws[i] = rng.normal(3.0, 0.6, MINUTES_PER_DAY)
        keep_draws[i] = rng.random(MINUTES_PER_DAY)
        open_price[i] = _opening_price(seed, symbol, day_index)
    log_vol = ar1(shocks * 0.15, 0.97)
    sigma = 0.0006 * np.exp(log_vol) * profile
    returns = t_draws * sigma / np.sqrt(2.0)
    returns[jump_draws < 1 / 2000] += np.concatenate(jump_sizes)
    close = open_price * np.exp(np.cumsum(returns, axis=1))
    open_ = np.concatenate([open_price, close[:, :-1]], axis=1)
    wick = np.abs(wick_draws) * sigma[:, None, :] * 0.6
    high = np.maximum(open_, close) * (1 + wick[:, 0])
    low = np.minimum(open_, close) * (1 - wick[:, 1])
    volume = np.round(profile * np.exp(normal_draws + 40 * np.abs(returns)), 2)
    keep = keep_draws >= 0.005
    prices = np.round(np.stack([open_, high, low, close]), 8)
    return {
        "symbol": np.repeat(np.arange(n), keep.sum(axis=1)),
        "timestamp": (
            np.datetime64(day.tz_localize(None), "us")
            + np.broadcast_to(minutes, keep.shape)[keep].astype("timedelta64[m]").astype("timedelta64[us]")
        ),
        "values": np.concatenate([prices[:, keep], volume[keep][np.newaxis]]),
    }


def ar1(x: np.ndarray, phi: float) -> np.ndarray:
    """``y[:, t] = x[:, t] + phi * y[:, t - 1]`` along each row of ``x`` (``y[:, 0] = x[:, 0]``): the AR(1)
    filter ``scipy.signal.lfilter([1.0], [1.0, -phi], x, axis=1)``, bit for bit.

    Why not lfilter: importing ``scipy.signal`` costs ~1 s of CPU (it imports ``scipy.stats``), in every run
    that draws synthetic bars, for a loop of 1,440 steps. lfilter's direct form II transposed computes
    ``y = z + 1.0 * x`` and ``z = 0.0 * x - (-phi) * y``: the same products and sums as here, each rounded
    once (a test holds the two equal on many series). The loop runs over the minutes, each step on every row
    at once (~2 ms for 64 rows of a day)."""
    columns = np.ascontiguousarray(x.T)  # (minute, row): each step reads and writes one contiguous row
    out = np.empty_like(columns)
    if len(columns):
        out[0] = columns[0]
    carried = np.empty(columns.shape[1:])
    for t in range(1, len(columns)):
        np.multiply(out[t - 1], phi, out=carried)
        np.add(columns[t], carried, out=out[t])
    return np.ascontiguousarray(out.T)  # rows again, laid out as lfilter's


def _frame(days: list[dict[str, np.ndarray]], symbols: list[str] | tuple[str, ...]) -> pd.DataFrame:
    # the float columns go in as the one 2-D block pandas keeps them in: a dict of columns would be copied
    # twice
    values = np.concatenate([d["values"] for d in days], axis=1)
    frame = pd.DataFrame(values.T, columns=["open", "high", "low", "close", "volume"], copy=False)
    timestamps = np.concatenate([d["timestamp"] for d in days])
    frame.insert(0, "timestamp", pd.DatetimeIndex(timestamps).tz_localize("UTC"))
    names = pd.array(np.asarray(list(symbols), dtype=object), dtype="str")
    frame.insert(0, "symbol", names.take(np.concatenate([d["symbol"] for d in days])))
    return frame
