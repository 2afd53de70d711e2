"""The cost model of every fill: spread and market impact estimated from the bars, fees per asset class from
configuration. No genome enters it: a trader evolves tactics (when to enter), never the price it pays for a
fill. Pure pandas/numpy.

Per bar (``bar_cost_inputs``), from the ``COST_WINDOW`` bars of the same symbol *before* it (never the bar
itself: a fill made in bar e is charged with what was known at its open):

* spread ``s`` (fraction of price): the Abdi–Ranaldo (2017) close/high/low estimator. With ``c`` the log
  close and ``eta = (log high + log low) / 2`` the log mid-range, each consecutive pair (t, t+1) inside the
  window gives ``4 (c_t - eta_t)(c_t - eta_{t+1})``; ``s = sqrt(max(mean, 0))``, and never below
  ``spread_floor_bps`` (a negative or zero estimate, or fewer than ``MIN_PAIRS`` pairs, gives the floor).
* volatility ``sigma`` (per bar): Parkinson's ``sqrt(mean(log(high / low)^2) / (4 log 2))`` over the window
  (NaN with no bar).
* volume ``v``: the mean volume of the window's bars that report a positive volume (NaN without one).

Per fill of ``q`` units at reference price ``p`` (the bar's open for an entry, the stop or the last close for
an exit): ``cost_bps = s / 2 * 1e4 + impact_bps``, where the square-root law gives
``impact_bps = impact_coef * sigma * sqrt(min(q / v, MAX_PARTICIPATION)) * 1e4``; without a volume (an index,
quote-only FX) ``impact_bps = unknown_volume_impact_bps``. A market order pays ``cost_bps`` against it
(buy above, sell below ``p``); the resting target (a limit order) pays neither spread nor impact. Fees:
``fee_bps`` of the filled notional on each side, by the symbol's asset class.

Volumes are taken as units of the traded quantity: a file whose volume is in quote currency (e.g. USD for a
BTC perpetual) understates the participation and so the impact.

Configuration (environment variables read when a day runs, defaults documented here and in the README):

========================================  =======  ==========================================================
variable                                  default  meaning
========================================  =======  ==========================================================
``TIS_COST_SPREAD_FLOOR_BPS``             0.5      lowest spread charged (bps of price)
``TIS_COST_IMPACT_COEF``                  1.0      ``Y`` of the square-root law
``TIS_COST_UNKNOWN_VOLUME_IMPACT_BPS``    1.0      impact when the bars carry no volume
``TIS_COST_FEE_BPS_CRYPTO``               7.5      fee per side, crypto (a retail taker fee)
``TIS_COST_FEE_BPS_EQUITY``               0.5      fee per side, equities and indices
``TIS_COST_FEE_BPS_FOREX``                0.2      fee per side, spot FX
``TIS_COST_FEE_BPS_FUTURES``              0.3      fee per side, futures
========================================  =======  ==========================================================

Asset class of a symbol (``asset_class``): forex = six letters of two ISO currencies; crypto = a known coin,
alone or quoted in USD/USDT/USDC/EUR/BTC/ETH, or a USDT/PERP symbol; else equity (an unlabelled future is
charged as an equity).
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

COST_WINDOW = 30  # bars before the fill that estimate its spread, volatility and volume
MIN_PAIRS = 5  # consecutive bar pairs the spread estimator needs; fewer -> the floor
MAX_PARTICIPATION = (
    10.0  # an order of more than 10 bars' volume is charged as 10 (the law is not tested there)
)
ASSET_CLASSES = ("crypto", "equity", "forex", "futures")

_CURRENCIES = frozenset(
    {
        "USD",
        "EUR",
        "JPY",
        "GBP",
        "CHF",
        "AUD",
        "CAD",
        "NZD",
        "SEK",
        "NOK",
        "CNH",
        "HKD",
        "SGD",
        "MXN",
        "ZAR",
        "TRY",
    }
)
_COINS = frozenset(
    {"BTC", "ETH", "SOL", "XRP", "ADA", "DOGE", "LTC", "BNB", "DOT", "AVAX", "LINK", "XBT", "BCH"}
)
_COIN_QUOTES = frozenset({"", "USD", "USDT", "USDC", "EUR", "BTC", "ETH"})


@functools.lru_cache(maxsize=4096)  # a day asks for the same few symbols on every fill
def asset_class(symbol: str) -> str:
    """forex, crypto or equity (see the module docstring)."""
    s = str(symbol).upper()
    if len(s) == 6 and s[:3] in _CURRENCIES and s[3:] in _CURRENCIES:
        return "forex"
    tokens = re.split(r"[-_/.]", s)
    if s.endswith(("USDT", "PERP")) or any(
        t[: len(c)] == c and t[len(c) :] in _COIN_QUOTES for t in tokens for c in _COINS
    ):
        return "crypto"
    return "equity"


def asset_classes(symbols: Iterable[str]) -> str | None:
    """The one asset class of the symbols, ``multi_asset`` when mixed, None without symbols."""
    classes = {asset_class(s) for s in set(symbols)}  # a symbol's class once, however many plans it has
    if not classes:
        return None
    return classes.pop() if len(classes) == 1 else "multi_asset"


@dataclass(frozen=True)
class CostConfig:
    """The cost model's configuration (defaults in the module docstring)."""

    spread_floor_bps: float = 0.5
    impact_coef: float = 1.0
    unknown_volume_impact_bps: float = 1.0
    fee_bps: Mapping[str, float] = field(
        default_factory=lambda: {"crypto": 7.5, "equity": 0.5, "forex": 0.2, "futures": 0.3}
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CostConfig:
        env = os.environ if environ is None else environ
        base = cls()

        def get(name: str, default: float) -> float:
            value = env.get(name)
            return default if value is None or value == "" else float(value)

        return cls(
            spread_floor_bps=get("TIS_COST_SPREAD_FLOOR_BPS", base.spread_floor_bps),
            impact_coef=get("TIS_COST_IMPACT_COEF", base.impact_coef),
            unknown_volume_impact_bps=get(
                "TIS_COST_UNKNOWN_VOLUME_IMPACT_BPS", base.unknown_volume_impact_bps
            ),
            fee_bps={k: get(f"TIS_COST_FEE_BPS_{k.upper()}", v) for k, v in base.fee_bps.items()},
        )

    def fee_for(self, symbols: np.ndarray) -> np.ndarray:
        """Fee per side as a fraction of notional, per symbol."""
        return np.array([self.fee_bps.get(asset_class(s), self.fee_bps["equity"]) / 1e4 for s in symbols])

    def as_dict(self) -> dict:
        return {
            "spread_floor_bps": self.spread_floor_bps,
            "impact_coef": self.impact_coef,
            "unknown_volume_impact_bps": self.unknown_volume_impact_bps,
            "fee_bps": dict(sorted(self.fee_bps.items())),
            "window_bars": COST_WINDOW,
            "spread_estimator": "Abdi-Ranaldo",
            "impact": "square-root law",
        }


def cost_config() -> CostConfig:
    """The configuration of this run (the ``TIS_COST_*`` environment variables over the defaults)."""
    return CostConfig.from_env()


def _lagged(values: np.ndarray, pos: np.ndarray, lag: int) -> np.ndarray:
    """values[i - lag] of the same symbol (NaN before the symbol's first bar)."""
    out = np.full(len(values), np.nan)
    if lag < len(values):
        out[lag:] = values[: len(values) - lag]
    return np.where(pos >= lag, out, np.nan)


def bar_cost_inputs(b: pd.DataFrame, config: CostConfig) -> pd.DataFrame:
    """Spread (fraction), per-bar volatility and mean volume of the ``COST_WINDOW`` bars before each bar.

    ``b``: bars sorted by (symbol, timestamp) with open, high, low, close and optionally volume (as
    ``market.prepare_bars`` gives them). Row order kept. The reference form of every bar's figures; a day's
    fills compute them only at the bars they read (``BarCosts``, the same figures bit for bit).
    """
    n = len(b)
    if n == 0:
        return pd.DataFrame({"spread": [], "sigma": [], "volume": []}, dtype="float64")
    pos = b.groupby("symbol", sort=False).cumcount().to_numpy()
    high, low = b["high"].to_numpy(dtype="float64"), b["low"].to_numpy(dtype="float64")
    close = b["close"].to_numpy(dtype="float64")
    volume = b["volume"].to_numpy(dtype="float64") if "volume" in b else np.full(n, np.nan, dtype="float64")
    spread, sigma, mean_volume = _cost_inputs(pos, high, low, close, volume, config)
    return pd.DataFrame({"spread": spread, "sigma": sigma, "volume": mean_volume})


def _cost_inputs(
    pos: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    config: CostConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(spread, sigma, mean volume) of each bar of the arrays (``bar_cost_inputs``)."""
    n = len(pos)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.log(close)
        eta = 0.5 * (np.log(high) + np.log(low))
        # the pair (t, t+1) is stamped at t + 1: it is known once bar t + 1 closed
        pair = np.where(
            pos >= 1, 4.0 * (_lagged(c, pos, 1) - _lagged(eta, pos, 1)) * (_lagged(c, pos, 1) - eta), np.nan
        )
        park = np.log(high / low) ** 2
    vol_ok = np.where(volume > 0, volume, np.nan)
    pair_sum, pair_n = np.zeros(n), np.zeros(n)
    park_sum, park_n = np.zeros(n), np.zeros(n)
    vol_sum, vol_n = np.zeros(n), np.zeros(n)
    # bars b-1 .. b-W; a pair needs both its bars inside, so pairs stamped b-1 .. b-W+1
    for lag in range(1, COST_WINDOW + 1):
        p = _lagged(park, pos, lag)
        park_sum += np.nan_to_num(p)
        park_n += np.isfinite(p)
        v = _lagged(vol_ok, pos, lag)
        vol_sum += np.nan_to_num(v)
        vol_n += np.isfinite(v)
        if lag < COST_WINDOW:
            q = _lagged(pair, pos, lag)
            pair_sum += np.nan_to_num(q)
            pair_n += np.isfinite(q)
    return _window_figures(pair_sum, pair_n, park_sum, park_n, vol_sum, vol_n, config)


def _window_figures(
    pair_sum: np.ndarray,
    pair_n: np.ndarray,
    park_sum: np.ndarray,
    park_n: np.ndarray,
    vol_sum: np.ndarray,
    vol_n: np.ndarray,
    config: CostConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(spread, sigma, mean volume) from the window sums and counts of the pairs, Parkinson terms and volumes
    (module docstring)."""
    floor = config.spread_floor_bps / 1e4
    with np.errstate(divide="ignore", invalid="ignore"):
        est = np.sqrt(np.maximum(pair_sum / pair_n, 0.0))
        sigma = np.sqrt(park_sum / park_n / (4.0 * math.log(2.0)))
        mean_volume = vol_sum / vol_n
    spread = np.where((pair_n >= MIN_PAIRS) & np.isfinite(est), np.maximum(est, floor), floor)
    return (
        spread,
        np.where(park_n > 0, sigma, np.nan),
        np.where(vol_n > 0, mean_volume, np.nan),
    )


class BarCosts:
    """``bar_cost_inputs``' figures of the bars ``b``, computed only at the rows asked for (``at``) and kept:
    a day's fills read the cost inputs of a few bars per plan (its entry and exit bars, the bar a desk sizes
    against), not of the hundreds of thousands of bars their windows hold.

    The same operations on the same values as ``_cost_inputs`` for every bar asked for (per-bar log terms
    over every bar, then the window sums taken lag 1 .. ``COST_WINDOW`` in that order): the same figures, bit
    for bit."""

    def __init__(self, b: pd.DataFrame, config: CostConfig, pos: np.ndarray | None = None) -> None:
        """``pos``: each bar's row within its symbol when the caller has it (``market.DayBars.columns``)."""
        n = len(b)
        self.config = config
        self.n = n
        if pos is None:
            pos = b.groupby("symbol", sort=False).cumcount().to_numpy() if n else np.zeros(0, dtype="int64")
        self.pos = pos
        high, low = b["high"].to_numpy(dtype="float64"), b["low"].to_numpy(dtype="float64")
        close = b["close"].to_numpy(dtype="float64")
        volume = b["volume"].to_numpy(dtype="float64") if "volume" in b else np.full(n, np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            c = np.log(close)
            eta = 0.5 * (np.log(high) + np.log(low))
            c1, eta1 = _lagged(c, self.pos, 1), _lagged(eta, self.pos, 1)
            # the pair (t, t+1) is stamped at t + 1 (``_cost_inputs``)
            self.pair = np.where(self.pos >= 1, 4.0 * (c1 - eta1) * (c1 - eta), np.nan)
            self.park = np.log(high / low) ** 2
        self.vol_ok = np.where(volume > 0, volume, np.nan)
        self._spread = np.full(n, np.nan)
        self._sigma = np.full(n, np.nan)
        self._volume = np.full(n, np.nan)
        self._done = np.zeros(n, dtype=bool)

    def _compute(self, rows: np.ndarray) -> None:
        k = len(rows)
        pos = self.pos[rows]
        pair_sum, pair_n = np.zeros(k), np.zeros(k)
        park_sum, park_n = np.zeros(k), np.zeros(k)
        vol_sum, vol_n = np.zeros(k), np.zeros(k)
        for lag in range(1, COST_WINDOW + 1):
            ok = pos >= lag
            at = np.where(ok, rows - lag, 0)
            p = np.where(ok, self.park[at], np.nan)
            park_sum += np.nan_to_num(p)
            park_n += np.isfinite(p)
            v = np.where(ok, self.vol_ok[at], np.nan)
            vol_sum += np.nan_to_num(v)
            vol_n += np.isfinite(v)
            if lag < COST_WINDOW:
                q = np.where(ok, self.pair[at], np.nan)
                pair_sum += np.nan_to_num(q)
                pair_n += np.isfinite(q)
        figures = _window_figures(pair_sum, pair_n, park_sum, park_n, vol_sum, vol_n, self.config)
        self._spread[rows], self._sigma[rows], self._volume[rows] = figures
        self._done[rows] = True

    def at(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(spread, sigma, mean volume) of the bars at ``rows`` (row numbers of ``b``; NaN for all three when
        ``b`` has no bar)."""
        rows = np.asarray(rows, dtype=np.int64)
        if self.n == 0:
            nan = np.full(len(rows), np.nan)
            return nan, nan.copy(), nan.copy()
        todo = rows[~self._done[rows]]
        if len(todo):
            self._compute(np.unique(todo))
        return self._spread[rows], self._sigma[rows], self._volume[rows]


def market_cost_bps(
    spread: np.ndarray, sigma: np.ndarray, volume: np.ndarray, qty: np.ndarray, config: CostConfig
) -> tuple[np.ndarray, np.ndarray]:
    """(half-spread bps, impact bps) of market orders of ``qty`` units (see the module docstring)."""
    half = 0.5 * np.asarray(spread, dtype="float64") * 1e4
    with np.errstate(divide="ignore", invalid="ignore"):
        participation = np.minimum(np.asarray(qty, dtype="float64") / volume, MAX_PARTICIPATION)
        impact = config.impact_coef * np.nan_to_num(sigma, nan=0.0) * np.sqrt(participation) * 1e4
    known = np.isfinite(volume) & (np.asarray(volume) > 0)
    return half, np.where(known, impact, config.unknown_volume_impact_bps)
