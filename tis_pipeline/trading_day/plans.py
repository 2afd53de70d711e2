"""Trading plans of one UTC day: generate, approve, simulate execution, score the modules. Pure pandas/numpy.

Public API (the contract is ``docs/ecosystem.md``, section "plans/logic.py")
------------------------------------------------------------------------------
``generate_plans(day, events, bars, population) -> plans``
``approve_plans(day, plans, population) -> (plans, approvals)``
``simulate_execution(day, plans, bars, population) -> plans``
``score_modules(day, plans, approvals, population, history, bars) -> performance``

No dagster, no SQL, no wall clock, no random state: the same inputs give the same frames, bit for bit. Ids are
UUIDv5 (``NAMESPACE``) of natural keys; timestamps are data time. Numbers are rounded to their column's scale
and kept inside the bounds of ``tis_pipeline.quality.rules`` (JSON payloads hold no NaN: missing is ``None``).

Time and look-ahead
-------------------
A bar stamped t is known at t + 1 min. The plan of the event on bar t is stamped t + 1 min and reads bars <= t
only. Execution enters at the open of the first bar with timestamp >= the plan's timestamp and < valid_until,
then walks later bars (timestamp < valid_until <= day end) only. Bars of the window: ``[plan ts, valid_until)``.
Rolling figures are fixed-length sums over a window ending at the event bar, so they do not depend on where the
``bars`` frame starts (a range run and day-by-day runs agree).

Dealing and plan fields (``generate_plans``)
--------------------------------------------
Active modules: ``status == 'active'`` and ``lifecycle_stage in ('experimental', 'active')``. An event goes to
the alpha module, among the active ones whose ``anomaly_types`` hold its type, with the smallest
``uuid5(NAMESPACE, f"{event_id}|{module_id}")`` (rendezvous hashing: uniform shares, and a newcomer only takes
events, it never reshuffles the others'); that uuid is the ``plan_id``.

* edge ``= |mx_evidence - 0.5|`` (rounded to 1e-10 before the comparison with ``min_edge``).
* direction ``d`` (+1 long, -1 short): momentum ``sign(mx_evidence - 0.5)``; reversal ``-sign(close/open - 1)``
  of the event bar; divergence ``sign(htf_1h_ret)``. No plan when ``d`` is 0/NaN, edge < ``min_edge``, the
  event bar or ATR is missing, the plan would be stamped at/after the day end, or a long stop would be <= 0.
* ``ATR = mean(TR of the 14 bars <= t)``, ``TR = max(high, prev close) - min(low, prev close)`` (NaN with fewer
  than 14 bars).
* ``entry_price`` = close of the event bar; stop distance ``sd = stop_atr * ATR``; target distance
  ``td = clip(target_atr, 0.01 stop_atr, 10 stop_atr) * ATR`` (so the ratio fits DECIMAL(5,2) in (0, 10]);
  ``stop_loss = entry - d sd``, ``take_profit = entry + d td``.
* ``risk_reward_ratio = td / sd``.
* ``position_size = clip(risk_pct / (sd / entry), 0.01, 100)`` (% of capital; risk_pct is % of capital risked).
* ``signal_strength = 0.5 anomaly_score + 0.5 min(1, 2 edge)`` (how strong the event is, either way).
* ``confidence_score = 0.35 a 2 edge + 0.25 side_rate + 0.15 a mx_confirm + 0.10 agree_15m + 0.15 (1 - w)``
  with ``a`` = 1 when the evidence is on the plan's side (mx_evidence > 0.5 for a long, < 0.5 for a short),
  ``side_rate`` = mx_confirm_rate when a else 1 - mx_confirm_rate (share of experts voting the plan's side),
  ``agree_15m`` = 1 / 0.5 / 0 when sign(htf_15m_ret) is d / 0-or-NaN / -d, ``w = clip(ci_high - ci_low, 0, 1)``
  (1 when missing). Weights sum to 1, so both scores lie in [0, 1].
* ``time_horizon`` from ``horizon_minutes`` (snapped to the nearest of 1, 5, 15, 60, 240, 1440 minutes);
  ``valid_until = min(timestamp + horizon, day end)``.
* regime (plan's ``regime_context`` and the day's ``market_regime``): with ``s`` the sum of 1-bar log returns
  and ``v`` their standard deviation (ddof 1) over the window (the 60 bars <= t; the day's bars for the day),
  ``z = s / (v sqrt(n))`` (0 when v = 0): ``high_volatility`` if v > 0.002, else ``trending_up`` if z > 1, ``trending_down``
  if z < -1, else ``ranging`` (the day: medians of v and z over symbols; ``unknown`` without data).

Approval (``approve_plans``)
----------------------------
The decision maker is the active ``decision_maker`` with the best last ``performance_history`` score (no history
ranks last; ties by module_id). In (timestamp, plan_id) order: rejected if confidence < ``min_confidence`` or
R:R < ``min_risk_reward``; of the remaining plans of a symbol, the ones ranked beyond ``max_plans_per_symbol``
are rejected; then ``modified`` if position_size > ``max_position_pct`` (cut to it), else ``approved``.
``decision_confidence``: approved/modified ``0.5 + 0.5 clip(min((c - min_c) / (1 - min_c),
(rr - min_rr) / (10 - min_rr)), 0, 1)`` (margin to the nearest threshold); rejected on a threshold
``0.5 + 0.5 clip(max(shortfall), 0, 1)`` with ``shortfall = (threshold - value) / threshold``; rejected on the
symbol limit 1.0 (a rule, not a judgement). Without an active decision maker plans stay ``pending`` and get no
approval row (execution then cancels them).

Execution (``simulate_execution``)
----------------------------------
The trader is chosen like the decision maker. Genome: ``capital``, ``slippage_bps``, ``fee_bps`` and
``range_factor`` (default 0.1). With ``d`` the direction, entry bar e, ``o_e`` its open:
``entry slippage (bps) = slippage_bps + range_factor * 0.5 (high_e - low_e) / o_e * 1e4``,
``executed_price = o_e (1 + d slip / 1e4)``. A later bar hits the stop when its low (long) / high (short)
crosses it and the target when its high / low does; both in one bar: the stop. Stop fill: the stop, or the
bar's open when it gapped through, less ``slippage_bps`` (market order); target fill: the target (resting limit,
no slippage); no hit: the close of the last bar of the window less ``slippage_bps``, status ``executed`` when
that bar closes at valid_until, ``partial`` when the window's data ends earlier (the missing minutes at its end
are never looked for beyond valid_until). ``executed_quantity = capital * position_size / 100 /
executed_price``; ``fees = fee_bps / 1e4 * qty (entry fill + exit fill)``; ``pnl = d (exit fill - entry fill) qty
- fees`` (= gross move ``d (exit ref - o_e) qty`` - slippage cost - fees); ``execution_cost = fees + slippage
cost``; ``slippage`` = entry + exit slippage in bps. MAE/MFE: worst/best excursion of low/high against the entry
fill over the bars held (entry bar through exit bar), as fractions of the entry fill.

Module scores (``score_modules``)
---------------------------------
One row per active module, timestamp ``day + 23:59``. ``R`` = the day's return on capital (the acting trader's
``capital``); ``M(R) = 0.5 + 0.5 tanh(R / 0.005)``. Counts: *traded* = executed or partial, *win* = pnl > 0.

* alpha (its own plans): ``performance = 0.4 M(R) + 0.3 H + 0.3 A`` with H = wins / traded (0.5 without
  trades) and A = validated / plans (0 without plans: proposing nothing earns no credit);
  ``trading_plan_success_rate`` = wins / traded; ``execution_quality`` = traded / validated;
  ``collaboration`` = A (0.5 without plans); ``intelligence_sharing_effectiveness`` = wins / plans.
* decision maker: every active one applies its genome to the day's plans (sizes as proposed); the acting one's
  decisions are the real ones. Outcomes come from a shadow execution of every plan with the acting trader.
  R = its approved plans' pnl at the approved size / capital; ``Acc`` = share of filled plans where it approved
  a winner or rejected a non-winner (0.5 without any); ``performance = 0.4 M(R) + 0.6 Acc``;
  ``trading_plan_success_rate`` = wins / filled approved; ``execution_quality`` = filled approved / approved;
  ``collaboration`` = approved / plans (0.5 without plans); ``intelligence_sharing_effectiveness`` = wins /
  approved.
* trader: every active one executes the day's validated plans with its genome (the acting one's fills are the
  real ones). ``fill`` = filled / validated, ``q = 1 / (1 + mean slippage bps / 10)``;
  ``execution_quality = performance = 0.5 fill + 0.5 q`` (0.5 without validated plans);
  ``trading_plan_success_rate`` = ``intelligence_sharing_effectiveness`` = wins / filled; ``collaboration`` =
  fill (0.5 without validated plans).
* all: ``risk_adjusted_returns`` = R in basis points (the history carries the daily return series this way);
  series = the history's ``risk_adjusted_returns / 1e4`` over the 29 days before plus today's (30 days);
  ``sharpe_ratio = empyrical.sharpe_ratio(series)`` (daily, annualised by sqrt(252); None when not finite),
  ``max_drawdown = empyrical.max_drawdown(series)`` (<= 0), both clipped into DECIMAL(8,4);
  ``consistency = 1 - 2 std`` (ddof 0) of the performance scores of those 30 days (0.5 with one day);
  ``learning_effectiveness = 0.5 + 0.5 tanh((performance - mean past performance) / 0.1)`` (0.5 without past);
  ``adaptation_speed = 0.5 + 0.5 tanh(slope / 0.05)``, slope = least-squares slope per day of the last 5
  performance scores (0.5 with one); ``innovation = min(1, mean |g - m| / max(|m|, 1e-9))`` over the numeric
  genome values g against the median m of the active modules of the same type and style;
  ``specialization`` = Herfindahl index of the anomaly types of the plans it handled (1 / number of its
  anomaly types, or 1/5 for the other roles, without plans).
* ``market_regime`` = the day's regime; ``asset_class`` of the symbols it handled (forex: six letters of two
  ISO currencies; crypto: a known coin, alone or quoted in USD/USDT/USDC/EUR/BTC/ETH, or a USDT/PERP symbol;
  else equity; ``multi_asset`` when mixed; None
  without plans); ``time_horizon``: an alpha's genome horizon, otherwise the most common of the plans handled.
"""

from __future__ import annotations

import copy
import math
import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

NAMESPACE = uuid.UUID("2f6b8c1e-4d7a-5e93-b0c4-9a1f3e7d5c28")

MINUTE = pd.Timedelta(minutes=1)
DAY = pd.Timedelta(days=1)
ATR_WINDOW = 14
REGIME_WINDOW = 60
REGIME_MIN_RETURNS = 10
HIGH_VOLATILITY = 0.002  # per-minute log-return std; the synthetic market runs at ~0.0005-0.001
TREND_Z = 1.0
HORIZONS: Mapping[int, str] = {1: "1m", 5: "5m", 15: "15m", 60: "1h", 240: "4h", 1440: "1d"}
TRAILING_DAYS = 30
SLOPE_DAYS = 5
MONEY_SCALE = 0.005  # a 0.5% day on capital moves M(R) by tanh(1) ~ 0.38 of its half-range
DEFAULT_CAPITAL = 1_000_000.0
DEFAULT_RANGE_FACTOR = 0.1
ACTIVE_STAGES = ("experimental", "active")
ANOMALY_TYPES = ("volume_spike", "price_jump", "range_expansion", "divergence", "pattern")
DECIMAL_8_4_MAX = 9999.9999
DECIMAL_20_8_MAX = 999_999_999_999.99999999

PLAN_COLUMNS: tuple[str, ...] = (
    "plan_id", "module_id", "symbol", "timestamp", "signal_strength", "direction", "entry_conditions",
    "entry_price", "position_size", "stop_loss", "take_profit", "time_horizon", "risk_reward_ratio",
    "confidence_score", "microstructure_evidence", "regime_context", "module_intelligence", "execution_notes",
    "valid_until", "validation_status", "risk_assessment", "portfolio_impact", "execution_status",
    "executed_price", "executed_quantity", "execution_cost", "slippage", "pnl", "performance_metrics",
    "attribution_analysis",
)
PLAN_FRAME_COLUMNS: tuple[str, ...] = (*PLAN_COLUMNS, "event_id", "dsi_evidence_id")
APPROVAL_COLUMNS: tuple[str, ...] = (
    "approval_id", "plan_id", "decision_maker_module_id", "timestamp", "approval_status", "approval_reason",
    "modifications", "risk_assessment", "risk_controls", "portfolio_impact", "decision_confidence",
    "decision_factors", "alternative_plans",
)
PERFORMANCE_COLUMNS: tuple[str, ...] = (
    "performance_id", "module_id", "timestamp", "performance_score", "consistency_score", "innovation_score",
    "specialization_score", "collaboration_score", "trading_plan_success_rate", "execution_quality",
    "risk_adjusted_returns", "sharpe_ratio", "max_drawdown", "learning_effectiveness", "adaptation_speed",
    "intelligence_sharing_effectiveness", "market_regime", "asset_class", "time_horizon",
)

_TS, _NUM, _TXT, _JSON = "ts", "num", "txt", "json"
_PLAN_SCHEMA: Mapping[str, str] = {
    "plan_id": _TXT, "module_id": _TXT, "symbol": _TXT, "timestamp": _TS, "signal_strength": _NUM,
    "direction": _TXT, "entry_conditions": _JSON, "entry_price": _NUM, "position_size": _NUM,
    "stop_loss": _NUM, "take_profit": _NUM, "time_horizon": _TXT, "risk_reward_ratio": _NUM,
    "confidence_score": _NUM, "microstructure_evidence": _JSON, "regime_context": _JSON,
    "module_intelligence": _JSON, "execution_notes": _TXT, "valid_until": _TS, "validation_status": _TXT,
    "risk_assessment": _JSON, "portfolio_impact": _JSON, "execution_status": _TXT, "executed_price": _NUM,
    "executed_quantity": _NUM, "execution_cost": _NUM, "slippage": _NUM, "pnl": _NUM,
    "performance_metrics": _JSON, "attribution_analysis": _JSON, "event_id": _TXT, "dsi_evidence_id": _TXT,
}
_APPROVAL_SCHEMA: Mapping[str, str] = {
    "approval_id": _TXT, "plan_id": _TXT, "decision_maker_module_id": _TXT, "timestamp": _TS,
    "approval_status": _TXT, "approval_reason": _TXT, "modifications": _JSON, "risk_assessment": _JSON,
    "risk_controls": _JSON, "portfolio_impact": _JSON, "decision_confidence": _NUM, "decision_factors": _JSON,
    "alternative_plans": _JSON,
}
_PERFORMANCE_SCHEMA: Mapping[str, str] = {
    c: (_TXT if c in ("performance_id", "module_id", "market_regime", "asset_class", "time_horizon")
        else _TS if c == "timestamp" else _NUM)
    for c in PERFORMANCE_COLUMNS
}
# the columns holding Python dicts/lists, per table (the store writes them as canonical JSON text)
JSON_COLUMNS: Mapping[str, tuple[str, ...]] = {
    table: tuple(c for c, kind in schema.items() if kind == _JSON)
    for table, schema in (("trading_plans", _PLAN_SCHEMA), ("trading_plan_approvals", _APPROVAL_SCHEMA),
                          ("module_performance", _PERFORMANCE_SCHEMA))
}
_CURRENCIES = frozenset({"USD", "EUR", "JPY", "GBP", "CHF", "AUD", "CAD", "NZD", "SEK", "NOK", "CNH", "HKD",
                         "SGD", "MXN", "ZAR", "TRY"})
_COINS = frozenset({"BTC", "ETH", "SOL", "XRP", "ADA", "DOGE", "LTC", "BNB", "DOT", "AVAX", "LINK", "XBT", "BCH"})
_COIN_QUOTES = frozenset({"", "USD", "USDT", "USDC", "EUR", "BTC", "ETH"})


# ------------------------------------------------------------------------------------------------ helpers


def _uuid(*parts: object) -> str:
    return str(uuid.uuid5(NAMESPACE, "|".join(str(p) for p in parts)))


def _day(day: pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(day)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.normalize().as_unit("ns")


def _utc(values: Any) -> pd.Series:
    return pd.Series(pd.to_datetime(values, utc=True)).dt.as_unit("ns").reset_index(drop=True)


def _np_ts(values: Any) -> np.ndarray:
    """UTC times as naive ``datetime64[ns]`` (a tz-aware Series' ``to_numpy()`` would give Timestamp objects)."""
    return _utc(values).dt.tz_localize(None).to_numpy()


def _num(x: Any, places: int) -> float | None:
    """A JSON-safe rounded float (None for NaN/inf/None): PostgreSQL's jsonb has no NaN."""
    if x is None:
        return None
    v = float(x)
    return round(v, places) if math.isfinite(v) else None


def _iso(ts: Any) -> str | None:
    return None if ts is None or pd.isna(ts) else pd.Timestamp(ts).isoformat()


def _conform(frame: pd.DataFrame, schema: Mapping[str, str]) -> pd.DataFrame:
    """Columns in table order with one dtype per kind, so empty and full frames look alike."""
    n = len(frame)
    out: dict[str, pd.Series] = {}
    for column, kind in schema.items():
        s = frame[column].reset_index(drop=True) if column in frame else pd.Series([None] * n, dtype=object)
        if kind == _TS:
            s = pd.Series(pd.to_datetime(s, utc=True)).dt.as_unit("ns")
        elif kind == _NUM:
            s = pd.to_numeric(s.astype(object).where(s.notna(), np.nan)).astype("float64")
        elif kind == _TXT:
            s = s.astype(object).where(s.notna(), None).astype("str")
        else:
            s = s.astype(object).where(s.notna(), None)
        out[column] = s
    return pd.DataFrame(out, index=pd.RangeIndex(n))


def _empty(schema: Mapping[str, str]) -> pd.DataFrame:
    return _conform(pd.DataFrame(), schema)


def _genome(value: Any) -> dict:
    return dict(value) if isinstance(value, Mapping) else {}


def _last_score(history: Any) -> float:
    if isinstance(history, (list, tuple)) and history and isinstance(history[-1], Mapping):
        score = history[-1].get("score")
        if score is not None and math.isfinite(float(score)):
            return float(score)
    return float("nan")


def _active(population: pd.DataFrame, module_type: str | None = None) -> pd.DataFrame:
    if population is None or population.empty:
        return pd.DataFrame(columns=["module_id", "module_type", "name", "genome"])
    mask = (population["status"] == "active") & population["lifecycle_stage"].isin(ACTIVE_STAGES)
    if module_type is not None:
        mask &= population["module_type"] == module_type
    return population[mask].sort_values("module_id", kind="stable").reset_index(drop=True)


def _pick(population: pd.DataFrame, module_type: str) -> pd.Series | None:
    """The acting module of a role: best last score, modules without a score last, ties by module_id."""
    active = _active(population, module_type)
    if active.empty:
        return None
    scores = np.array([_last_score(h) for h in active.get("performance_history", [None] * len(active))])
    order = sorted(range(len(active)),
                   key=lambda i: (math.isnan(scores[i]), -np.nan_to_num(scores[i]), str(active["module_id"].iat[i])))
    return active.iloc[order[0]]


def _horizon(minutes: Any) -> tuple[int, str]:
    m = float(minutes)
    best = min(HORIZONS, key=lambda k: (abs(k - m), k))
    return best, HORIZONS[best]


def _z(total: np.ndarray, vol: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Trend strength s / (v sqrt(n)); a market that did not move at all has z = 0, not 0/0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.asarray(total, dtype="float64") / (np.asarray(vol, dtype="float64") * np.sqrt(count))
    return np.where(np.asarray(vol) == 0, 0.0, z)


def _regime_label(z: float, vol: float) -> str:
    if not (math.isfinite(z) and math.isfinite(vol)):
        return "unknown"
    if vol > HIGH_VOLATILITY:
        return "high_volatility"
    if z > TREND_Z:
        return "trending_up"
    if z < -TREND_Z:
        return "trending_down"
    return "ranging"


def _asset_class(symbol: str) -> str:
    s = str(symbol).upper()
    if len(s) == 6 and s[:3] in _CURRENCIES and s[3:] in _CURRENCIES:
        return "forex"
    tokens = re.split(r"[-_/.]", s)
    if s.endswith(("USDT", "PERP")) or any(
            t[: len(c)] == c and t[len(c):] in _COIN_QUOTES for t in tokens for c in _COINS):
        return "crypto"
    return "equity"


def _asset_classes(symbols: Iterable[str]) -> str | None:
    classes = {_asset_class(s) for s in symbols}
    if not classes:
        return None
    return classes.pop() if len(classes) == 1 else "multi_asset"


def _unit(x: float) -> float:
    """A 0-1 score at DECIMAL(3,2)."""
    return float(np.clip(round(float(x), 2), 0.0, 1.0))


def _d84(x: Any) -> float:
    v = float(x) if x is not None else float("nan")
    return round(float(np.clip(v, -DECIMAL_8_4_MAX, DECIMAL_8_4_MAX)), 4) if math.isfinite(v) else float("nan")


def _d208(values: np.ndarray) -> np.ndarray:
    return np.round(np.clip(np.asarray(values, dtype="float64"), -DECIMAL_20_8_MAX, DECIMAL_20_8_MAX), 8)


def _ratio(num: float, den: float) -> float:
    return num / den if den else float("nan")


# ------------------------------------------------------------------------------------------------- bars


def _prepare_bars(bars: pd.DataFrame) -> pd.DataFrame:
    if bars is None or len(bars) == 0:
        return pd.DataFrame({"symbol": pd.Series([], dtype="str"), "timestamp": _utc([]),
                             **{c: pd.Series([], dtype="float64") for c in ("open", "high", "low", "close")}})
    b = pd.DataFrame({
        "symbol": bars["symbol"].astype("str").to_numpy(),
        "timestamp": _np_ts(bars["timestamp"]),
        **{c: bars[c].to_numpy(dtype="float64") for c in ("open", "high", "low", "close")},
    })
    b = b.sort_values(["symbol", "timestamp"], kind="stable").reset_index(drop=True)
    b["timestamp"] = _utc(b["timestamp"])
    return b


def _trailing(values: np.ndarray, pos: np.ndarray, rows: np.ndarray, window: int) -> np.ndarray:
    """(len(rows), window) matrix of values at rows, rows-1, ... of the same symbol (NaN before its first bar).

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


def _features_at(b: pd.DataFrame, rows: np.ndarray) -> dict[str, np.ndarray]:
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
    return {"atr": atr, "sum60": total, "vol60": vol, "n60": count.astype("float64"),
            "bar_ret": closes / opens - 1.0, "close": closes}


def _day_regime(day: pd.Timestamp, bars: pd.DataFrame) -> str:
    """The regime of the day's bars (only ``[day, day + 1 day)``): medians over symbols of z and volatility."""
    day = _day(day)
    b = _prepare_bars(bars)
    b = b[(b["timestamp"] >= day) & (b["timestamp"] < day + DAY)].reset_index(drop=True)
    if b.empty:
        return "unknown"
    pos = b.groupby("symbol", sort=False).cumcount().to_numpy()
    close = b["close"].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        lr = np.where(pos > 0, np.log(close / np.roll(close, 1)), np.nan)
    stats = pd.DataFrame({"symbol": b["symbol"], "lr": lr}).groupby("symbol", sort=True)["lr"].agg(
        ["sum", "std", "count"])
    stats = stats[stats["count"] >= REGIME_MIN_RETURNS]
    if stats.empty:
        return "unknown"
    z = _z(stats["sum"].to_numpy(), stats["std"].to_numpy(), stats["count"].to_numpy())
    return _regime_label(float(np.median(z)), float(stats["std"].median()))


# --------------------------------------------------------------------------------------------- generation


def generate_plans(day: pd.Timestamp, events: pd.DataFrame, bars: pd.DataFrame,
                   population: pd.DataFrame) -> pd.DataFrame:
    """The day's trading plans: each event dealt to one alpha module, which plans it when its genome agrees.

    Input ``events``: event_id, symbol, timestamp, anomaly_type, anomaly_score, dsi_evidence_id, mx_evidence,
    mx_confirm, mx_confirm_rate, mx_evidence_boost, ci_low, ci_high, htf_15m_ret, htf_1h_ret (events outside
    the day are ignored). ``bars``: symbol, timestamp, open, high, low, close, volume (the day and 2 h before).
    ``population``: module_id, module_type, status, lifecycle_stage, name, genome, module_version, ...

    Output, one row per plan sorted by (timestamp, plan_id): the ``trading_plans`` columns
    (``PLAN_COLUMNS``: plan_id, module_id, symbol, timestamp, signal_strength, direction, entry_conditions,
    entry_price, position_size, stop_loss, take_profit, time_horizon, risk_reward_ratio, confidence_score,
    microstructure_evidence, regime_context, module_intelligence, execution_notes, valid_until,
    validation_status='pending', risk_assessment, portfolio_impact, and the execution columns left None/NaN)
    plus event_id and dsi_evidence_id.
    """
    day = _day(day)
    end = day + DAY
    alphas = _active(population, "alpha_detector")
    if events is None or events.empty or alphas.empty:
        return _empty(_PLAN_SCHEMA)

    ev = events.reset_index(drop=True).copy()
    ev["timestamp"] = _utc(ev["timestamp"])
    ev["event_id"] = ev["event_id"].astype("str")
    ev["symbol"] = ev["symbol"].astype("str")
    ev["plan_ts"] = ev["timestamp"] + MINUTE
    # a plan stamped at the day end would belong to the next day's window of rows (and could not trade today)
    ev = ev[(ev["timestamp"] >= day) & (ev["plan_ts"] < end)].reset_index(drop=True)

    modules = {str(r.module_id): r for r in alphas.itertuples(index=False)}
    specialty = pd.DataFrame(
        [(mid, t) for mid, r in modules.items() for t in _genome(r.genome).get("anomaly_types", [])],
        columns=["module_id", "anomaly_type"],
    )
    cand = ev[["event_id", "anomaly_type"]].merge(specialty, on="anomaly_type", how="inner")
    if cand.empty:
        return _empty(_PLAN_SCHEMA)
    cand["plan_id"] = [_uuid(e, m) for e, m in zip(cand["event_id"], cand["module_id"], strict=True)]
    dealt = cand.sort_values(["event_id", "plan_id"], kind="stable").drop_duplicates("event_id")
    ev = ev.merge(dealt[["event_id", "module_id", "plan_id"]], on="event_id", how="inner")

    b = _prepare_bars(bars)
    keys = b[["symbol", "timestamp"]].assign(row=np.arange(len(b)))
    ev = ev.merge(keys, on=["symbol", "timestamp"], how="inner")
    if ev.empty:
        return _empty(_PLAN_SCHEMA)
    ev = ev.sort_values(["plan_ts", "plan_id"], kind="stable").reset_index(drop=True)
    f = _features_at(b, ev["row"].to_numpy())

    genomes = [copy.deepcopy(_genome(modules[m].genome)) for m in ev["module_id"]]
    style = np.array([str(g.get("style")) for g in genomes])
    unknown = sorted(set(style) - {"momentum", "reversal", "divergence"})
    if unknown:
        raise ValueError(f"alpha genome style(s) {unknown} are not momentum, reversal or divergence")
    param = {k: np.array([float(g[k]) for g in genomes]) for k in
             ("min_edge", "stop_atr", "target_atr", "risk_pct", "horizon_minutes")}

    e = ev["mx_evidence"].to_numpy(dtype="float64")
    edge = np.round(np.abs(e - 0.5), 10)
    direction = np.select(
        [style == "momentum", style == "reversal", style == "divergence"],
        [np.sign(e - 0.5), -np.sign(f["bar_ret"]), np.sign(ev["htf_1h_ret"].to_numpy(dtype="float64"))],
        default=np.nan,
    )
    entry = np.round(f["close"], 8)
    atr = f["atr"]
    sd = param["stop_atr"] * atr
    td = np.clip(param["target_atr"], 0.01 * param["stop_atr"], 10.0 * param["stop_atr"]) * atr
    stop = np.round(entry - direction * sd, 8)
    target = np.round(entry + direction * td, 8)
    horizon = [_horizon(m) for m in param["horizon_minutes"]]
    horizon_end = _np_ts(ev["plan_ts"] + pd.to_timedelta([h for h, _ in horizon], unit="min"))
    valid_until = np.minimum(horizon_end, end.tz_localize(None).to_datetime64())
    with np.errstate(invalid="ignore"):
        keep = ((np.abs(direction) == 1) & (edge >= param["min_edge"]) & np.isfinite(atr) & (atr > 0)
                & (entry > 0) & (stop > 0) & (target > 0) & (param["stop_atr"] > 0))
    if not keep.any():
        return _empty(_PLAN_SCHEMA)
    idx = np.flatnonzero(keep)
    ev = ev.iloc[idx].reset_index(drop=True)
    direction, edge, entry, atr, sd, td, stop, target = (a[idx] for a in
                                                         (direction, edge, entry, atr, sd, td, stop, target))
    style, valid_until = style[idx], valid_until[idx]
    genomes, horizon = [genomes[i] for i in idx], [horizon[i] for i in idx]
    param = {k: v[idx] for k, v in param.items()}
    f = {k: v[idx] for k, v in f.items()}

    score = np.nan_to_num(ev["anomaly_score"].to_numpy(dtype="float64"), nan=0.0)
    signal = np.clip(np.round(0.5 * np.clip(score, 0, 1) + 0.5 * np.minimum(1.0, 2 * edge), 2), 0, 1)
    e = ev["mx_evidence"].to_numpy(dtype="float64")
    aligned = np.where(direction > 0, e > 0.5, e < 0.5)
    rate = np.clip(np.nan_to_num(ev["mx_confirm_rate"].to_numpy(dtype="float64"), nan=0.5), 0, 1)
    side_rate = np.where(aligned, rate, 1.0 - rate)
    confirm = ev["mx_confirm"].astype(bool).to_numpy()
    h15 = np.sign(ev["htf_15m_ret"].to_numpy(dtype="float64"))
    agree = np.where(h15 == direction, 1.0, np.where(h15 == -direction, 0.0, 0.5))
    width = ev["ci_high"].to_numpy(dtype="float64") - ev["ci_low"].to_numpy(dtype="float64")
    width = np.clip(np.nan_to_num(width, nan=1.0), 0, 1)
    confidence = (0.35 * aligned * 2 * edge + 0.25 * side_rate + 0.15 * (aligned & confirm) + 0.10 * agree
                  + 0.15 * (1.0 - width))
    confidence = np.clip(np.round(confidence, 2), 0, 1)
    rr = np.clip(np.round(td / sd, 2), 0.01, 10.0)
    raw_size = param["risk_pct"] / (sd / entry)
    size = np.clip(np.round(raw_size, 2), 0.01, 100.0)
    n = len(ev)
    side = np.where(direction > 0, "long", "short")
    z60 = _z(f["sum60"], f["vol60"], f["n60"])

    source_name = {"momentum": "mx_evidence", "reversal": "event_bar_return", "divergence": "htf_1h_ret"}
    source_value = {"momentum": e, "reversal": f["bar_ret"], "divergence": ev["htf_1h_ret"].to_numpy(dtype="float64")}
    entry_conditions, micro, regime, intel, notes, risk, impact = [], [], [], [], [], [], []
    for i in range(n):
        row = ev.iloc[i]
        st = str(style[i])
        vu = pd.Timestamp(valid_until[i]).tz_localize("UTC")
        entry_conditions.append({
            "trigger": "market order at the open of the first bar at or after the plan timestamp",
            "event_id": str(row["event_id"]), "event_timestamp": _iso(row["timestamp"]),
            "anomaly_type": str(row["anomaly_type"]), "anomaly_score": _num(row["anomaly_score"], 4),
            "style": st, "edge": _num(edge[i], 4), "min_edge": _num(param["min_edge"][i], 4),
            "direction_source": source_name[st], "direction_source_value": _num(source_value[st][i], 8),
        })
        micro.append({
            "dsi_evidence_id": None if pd.isna(row.get("dsi_evidence_id")) else str(row["dsi_evidence_id"]),
            "mx_evidence": _num(row["mx_evidence"], 4), "mx_confirm": bool(row["mx_confirm"]),
            "mx_confirm_rate": _num(row["mx_confirm_rate"], 4),
            "mx_evidence_boost": _num(row["mx_evidence_boost"], 4),
            "confidence_interval": {"low": _num(row["ci_low"], 4), "high": _num(row["ci_high"], 4)},
            "evidence_on_plan_side": bool(aligned[i]),
        })
        regime.append({
            "window_bars": REGIME_WINDOW, "returns_used": int(f["n60"][i]),
            "trailing_return": _num(np.expm1(f["sum60"][i]), 8), "volatility": _num(f["vol60"][i], 8),
            "z": _num(z60[i], 4), "regime": _regime_label(float(z60[i]), float(f["vol60"][i])),
            "htf_15m_ret": _num(row["htf_15m_ret"], 8), "htf_1h_ret": _num(row["htf_1h_ret"], 8),
        })
        module = modules[row["module_id"]]
        intel.append({"module_name": str(module.name), "module_version": str(getattr(module, "module_version", "")),
                      "genome": genomes[i]})
        notes.append(
            f"{module.name} {side[i]} {row['symbol']} on {row['anomaly_type']}: enter at the next open after "
            f"{_iso(row['plan_ts'])}, stop {param['stop_atr'][i]:g} ATR, target "
            f"{td[i] / atr[i]:g} ATR, exit by {_iso(vu)}"
        )
        risk.append({
            "atr": _num(atr[i], 8), "atr_window": ATR_WINDOW, "stop_distance": _num(sd[i], 8),
            "stop_distance_pct": _num(sd[i] / entry[i] * 100, 6), "target_distance": _num(td[i], 8),
            "risk_pct": _num(param["risk_pct"][i], 4), "requested_position_pct": _num(raw_size[i], 4),
            "capital_at_risk_pct": _num(size[i] * sd[i] / entry[i], 6),
        })
        impact.append({"position_pct": _num(size[i], 2), "side": str(side[i]), "symbol": str(row["symbol"])})

    plans = pd.DataFrame({
        "plan_id": ev["plan_id"], "module_id": ev["module_id"], "symbol": ev["symbol"],
        "timestamp": ev["plan_ts"], "signal_strength": signal, "direction": side,
        "entry_conditions": entry_conditions, "entry_price": entry, "position_size": size, "stop_loss": stop,
        "take_profit": target, "time_horizon": [h for _, h in horizon], "risk_reward_ratio": rr,
        "confidence_score": confidence, "microstructure_evidence": micro, "regime_context": regime,
        "module_intelligence": intel, "execution_notes": notes, "valid_until": valid_until,
        "validation_status": "pending", "risk_assessment": risk, "portfolio_impact": impact,
        "event_id": ev["event_id"],
        "dsi_evidence_id": ev["dsi_evidence_id"] if "dsi_evidence_id" in ev else None,
    })
    return _conform(plans, _PLAN_SCHEMA)


# ----------------------------------------------------------------------------------------------- approval


def _decide(plans: pd.DataFrame, sizes: np.ndarray, genome: Mapping) -> pd.DataFrame:
    """One decision maker's verdict on plans already in (timestamp, plan_id) order, at the proposed sizes."""
    min_c = float(genome["min_confidence"])
    min_rr = float(genome["min_risk_reward"])
    max_pos = float(genome["max_position_pct"])
    max_n = int(genome["max_plans_per_symbol"])
    conf = plans["confidence_score"].to_numpy(dtype="float64")
    rr = plans["risk_reward_ratio"].to_numpy(dtype="float64")
    conf_ok, rr_ok = conf >= min_c, rr >= min_rr
    passing = conf_ok & rr_ok
    rank = pd.Series(passing.astype(int)).groupby(plans["symbol"].to_numpy()).cumsum().to_numpy()
    over = passing & (rank > max_n)
    rejected = ~passing | over
    capped = ~rejected & (sizes > max_pos)
    final = np.where(capped, float(np.clip(round(max_pos, 2), 0.01, 100.0)), sizes)
    status = np.where(rejected, "rejected", np.where(capped, "modified", "approved"))
    margin = np.minimum((conf - min_c) / max(1.0 - min_c, 1e-9), (rr - min_rr) / max(10.0 - min_rr, 1e-9))
    shortfall = np.maximum(np.where(conf_ok, 0.0, (min_c - conf) / max(min_c, 1e-9)),
                           np.where(rr_ok, 0.0, (min_rr - rr) / max(min_rr, 1e-9)))
    confidence = np.where(~passing, 0.5 + 0.5 * np.clip(shortfall, 0, 1),
                          np.where(over, 1.0, 0.5 + 0.5 * np.clip(margin, 0, 1)))
    return pd.DataFrame({
        "status": status, "final_size": final, "conf_ok": conf_ok, "rr_ok": rr_ok, "over": over,
        "rank": np.where(passing, rank, 0), "capped": capped, "decision_confidence": np.round(confidence, 2),
    })


def _proposed_sizes(plans: pd.DataFrame, approvals: pd.DataFrame | None) -> np.ndarray:
    """The alpha's own sizes: a modified plan's size before the decision maker cut it."""
    sizes = plans["position_size"].to_numpy(dtype="float64").copy()
    if approvals is None or approvals.empty:
        return sizes
    before = {}
    for pid, mods in zip(approvals["plan_id"], approvals["modifications"], strict=True):
        if isinstance(mods, Mapping) and isinstance(mods.get("position_size"), Mapping):
            before[str(pid)] = float(mods["position_size"]["from"])
    return np.array([before.get(str(p), s) for p, s in zip(plans["plan_id"], sizes, strict=True)])


def approve_plans(day: pd.Timestamp, plans: pd.DataFrame,
                  population: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The acting decision maker approves, modifies (caps the size) or rejects each plan of the day.

    Input ``plans``: ``generate_plans``' frame (``PLAN_FRAME_COLUMNS``); ``population`` as there (the decision
    maker's genome: min_confidence, min_risk_reward, max_position_pct, max_plans_per_symbol).

    Output ``(plans, approvals)``: plans with the same columns, in (timestamp, plan_id) order, with
    ``validation_status`` 'validated' (approved/modified) or 'failed' (rejected), ``position_size`` cut where
    modified and ``portfolio_impact`` the desk's view; approvals with the ``trading_plan_approvals`` columns
    (``APPROVAL_COLUMNS``: approval_id, plan_id, decision_maker_module_id, timestamp, approval_status,
    approval_reason, modifications, risk_assessment, risk_controls, portfolio_impact, decision_confidence,
    decision_factors, alternative_plans), one row per plan.
    """
    _day(day)
    desk = _pick(population, "decision_maker")
    if plans is None or plans.empty:
        return _empty(_PLAN_SCHEMA), _empty(_APPROVAL_SCHEMA)
    plans = _conform(plans, _PLAN_SCHEMA).sort_values(["timestamp", "plan_id"], kind="stable").reset_index(drop=True)
    if desk is None:
        return plans, _empty(_APPROVAL_SCHEMA)
    genome = _genome(desk["genome"])
    sizes = plans["position_size"].to_numpy(dtype="float64")
    v = _decide(plans, sizes, genome)
    accepted = v["status"].to_numpy() != "rejected"
    held = np.where(accepted, v["final_size"].to_numpy(), 0.0)
    symbol_exposure = pd.Series(held).groupby(plans["symbol"].to_numpy()).cumsum().to_numpy()
    day_exposure = np.cumsum(held)
    controls = {"min_confidence": float(genome["min_confidence"]), "min_risk_reward": float(genome["min_risk_reward"]),
                "max_position_pct": float(genome["max_position_pct"]),
                "max_plans_per_symbol": int(genome["max_plans_per_symbol"])}

    reasons, mods, risks, ctrls, impacts, factors, alternatives = [], [], [], [], [], [], []
    for i, p in enumerate(plans.itertuples(index=False)):
        status, conf, rr = v["status"].iat[i], float(p.confidence_score), float(p.risk_reward_ratio)
        size, final = float(sizes[i]), float(v["final_size"].iat[i])
        applied = []
        if status == "rejected":
            why = []
            if not v["conf_ok"].iat[i]:
                why.append(f"confidence {conf:.2f} below {float(genome['min_confidence']):.2f}")
                applied.append("min_confidence")
            if not v["rr_ok"].iat[i]:
                why.append(f"risk/reward {rr:.2f} below {float(genome['min_risk_reward']):.2f}")
                applied.append("min_risk_reward")
            if v["over"].iat[i]:
                why.append(f"symbol limit: plan {int(v['rank'].iat[i])} of {p.symbol} today exceeds "
                           f"{int(genome['max_plans_per_symbol'])}")
                applied.append("max_plans_per_symbol")
            reasons.append("rejected: " + "; ".join(why))
            mods.append(None)
            alternatives.append([{"action": "approve", "position_size": _num(min(size, final), 2)}])
        elif status == "modified":
            reasons.append(f"modified: position size {size:.2f}% cut to {final:.2f}%")
            applied.append("max_position_pct")
            mods.append({"position_size": {"from": _num(size, 2), "to": _num(final, 2)}})
            alternatives.append([{"action": "approve_as_proposed", "position_size": _num(size, 2)}])
        else:
            reasons.append(f"approved: confidence {conf:.2f}, risk/reward {rr:.2f}, size {size:.2f}% within limits")
            mods.append(None)
            alternatives.append([])
        risks.append({"confidence_score": _num(conf, 2), "risk_reward_ratio": _num(rr, 2),
                      "proposed_position_pct": _num(size, 2),
                      "capital_at_risk_pct": _num(final * abs(p.entry_price - p.stop_loss) / p.entry_price, 6)})
        ctrls.append({**controls, "applied": applied})
        impacts.append({"position_pct": _num(held[i], 2), "symbol": p.symbol,
                        "symbol_exposure_pct": _num(symbol_exposure[i], 2),
                        "day_gross_exposure_pct": _num(day_exposure[i], 2)})
        factors.append({"decision_maker": str(desk.get("name")), "confidence_ok": bool(v["conf_ok"].iat[i]),
                        "risk_reward_ok": bool(v["rr_ok"].iat[i]), "symbol_rank": int(v["rank"].iat[i]),
                        "size_capped": bool(v["capped"].iat[i])})

    approvals = pd.DataFrame({
        "approval_id": [_uuid(pid, "approval") for pid in plans["plan_id"]],
        "plan_id": plans["plan_id"], "decision_maker_module_id": str(desk["module_id"]),
        "timestamp": plans["timestamp"], "approval_status": v["status"], "approval_reason": reasons,
        "modifications": mods, "risk_assessment": risks, "risk_controls": ctrls, "portfolio_impact": impacts,
        "decision_confidence": v["decision_confidence"], "decision_factors": factors,
        "alternative_plans": alternatives,
    })
    out = plans.copy()
    out["position_size"] = v["final_size"].to_numpy()
    out["validation_status"] = np.where(accepted, "validated", "failed")
    out["portfolio_impact"] = pd.Series(impacts, dtype=object)
    return _conform(out, _PLAN_SCHEMA), _conform(approvals, _APPROVAL_SCHEMA)


# ---------------------------------------------------------------------------------------------- execution


def _fills(plans: pd.DataFrame, bars: pd.DataFrame, genome: Mapping) -> pd.DataFrame:
    """Entry and exit of each plan (row order kept): one vectorised pass over the bars of the plans' windows.

    Columns: filled, status, entry_ts, entry_ref, entry_fill, entry_slip_bps, exit_ts, exit_time, exit_ref,
    exit_fill, exit_slip_bps, exit_reason, mae, mfe, bars_held, net_return.
    """
    n = len(plans)
    b = _prepare_bars(bars)
    slip_bps = float(genome.get("slippage_bps", 0.0))
    fee = float(genome.get("fee_bps", 0.0)) / 1e4
    range_factor = float(genome.get("range_factor", DEFAULT_RANGE_FACTOR))

    start = np.zeros(n, dtype=np.int64)
    stop_at = np.zeros(n, dtype=np.int64)
    sym = plans["symbol"].astype("str").to_numpy()
    p_ts = _np_ts(plans["timestamp"])
    p_vu = _np_ts(plans["valid_until"])
    b_sym = b["symbol"].to_numpy()
    b_ts = _np_ts(b["timestamp"])
    bounds = np.searchsorted(b_sym, np.unique(b_sym)) if len(b) else np.array([], dtype=np.int64)
    blocks = dict(zip(np.unique(b_sym), zip(bounds, np.append(bounds[1:], len(b)), strict=True), strict=True))
    for s in np.unique(sym):
        k = np.flatnonzero(sym == s)
        lo, hi = blocks.get(s, (0, 0))
        start[k] = lo + np.searchsorted(b_ts[lo:hi], p_ts[k], side="left")
        stop_at[k] = lo + np.searchsorted(b_ts[lo:hi], p_vu[k], side="left")
    length = np.maximum(stop_at - start, 0)

    # the plans x window-bars join, as row indices: plan k owns rows start[k] .. stop_at[k] - 1
    plan_of = np.repeat(np.arange(n), length)
    offset = np.arange(len(plan_of)) - np.repeat(np.cumsum(length) - length, length)
    row = np.repeat(start, length) + offset
    d = np.where(plans["direction"].to_numpy() == "long", 1.0, -1.0)
    dd = d[plan_of]
    o, h, lo_, c = (b[col].to_numpy()[row] for col in ("open", "high", "low", "close"))
    stop = plans["stop_loss"].to_numpy(dtype="float64")
    target = plans["take_profit"].to_numpy(dtype="float64")
    later = offset > 0
    stop_hit = later & np.where(dd > 0, lo_ <= stop[plan_of], h >= stop[plan_of])
    target_hit = later & np.where(dd > 0, h >= target[plan_of], lo_ <= target[plan_of])

    filled = length > 0
    first = np.cumsum(length) - length
    last = first + length - 1
    hits = np.flatnonzero(stop_hit | target_hit)
    hit_plans, first_hit = np.unique(plan_of[hits], return_index=True)
    exit_row = last.copy()
    exit_row[hit_plans] = hits[first_hit]
    has_hit = np.zeros(n, dtype=bool)
    has_hit[hit_plans] = True

    out = pd.DataFrame(index=pd.RangeIndex(n))
    safe_first, safe_exit = np.where(filled, first, 0), np.where(filled, exit_row, 0)
    nan = np.full(n, np.nan)

    def at(values: np.ndarray, pos: np.ndarray) -> np.ndarray:
        return np.where(filled, values[pos] if len(values) else nan, np.nan)

    entry_ref = at(o, safe_first)
    entry_slip = slip_bps + range_factor * 0.5 * (at(h, safe_first) - at(lo_, safe_first)) / entry_ref * 1e4
    entry_fill = np.round(entry_ref * (1 + d * entry_slip / 1e4), 8)
    by_stop = has_hit & np.where(filled, stop_hit[safe_exit] if len(stop_hit) else False, False)
    by_target = has_hit & ~by_stop
    exit_open, exit_close = at(o, safe_exit), at(c, safe_exit)
    stop_ref = np.where(d > 0, np.minimum(exit_open, stop), np.maximum(exit_open, stop))
    exit_ref = np.where(by_stop, stop_ref, np.where(by_target, target, exit_close))
    exit_slip = np.where(by_target, 0.0, slip_bps)
    exit_fill = np.round(exit_ref * (1 - d * exit_slip / 1e4), 8)
    exit_bar_ts = np.where(filled, b_ts[row[safe_exit]] if len(row) else p_ts, np.datetime64("NaT"))
    entry_ts = np.where(filled, b_ts[row[safe_first]] if len(row) else p_ts, np.datetime64("NaT"))
    closes_at_end = (exit_bar_ts + np.timedelta64(1, "m")) >= p_vu
    reason = np.where(~filled, None, np.where(by_stop, "stop", np.where(by_target, "target",
                                                                         np.where(closes_at_end, "horizon",
                                                                                  "data_end"))))
    status = np.where(~filled, "failed", np.where(reason == "data_end", "partial", "executed"))
    exit_time = np.where(has_hit, exit_bar_ts, exit_bar_ts + np.timedelta64(1, "m"))

    held = offset <= (exit_row - first)[plan_of]
    low_held = pd.Series(np.where(held, lo_, np.inf)).groupby(plan_of).min().reindex(range(n)).to_numpy()
    high_held = pd.Series(np.where(held, h, -np.inf)).groupby(plan_of).max().reindex(range(n)).to_numpy()
    worst, best = np.where(d > 0, low_held, high_held), np.where(d > 0, high_held, low_held)
    mae = np.maximum(0.0, d * (entry_fill - worst) / entry_fill)
    mfe = np.maximum(0.0, d * (best - entry_fill) / entry_fill)
    net_return = d * (exit_fill - entry_fill) / entry_fill - fee * (entry_fill + exit_fill) / entry_fill

    out["filled"] = filled
    out["status"] = status
    out["entry_ts"] = _utc(entry_ts)
    out["entry_ref"], out["entry_fill"], out["entry_slip_bps"] = entry_ref, entry_fill, np.where(filled, entry_slip, nan)
    out["exit_ts"] = _utc(exit_bar_ts)
    out["exit_time"] = _utc(exit_time)
    out["exit_ref"], out["exit_fill"] = np.where(filled, exit_ref, nan), np.where(filled, exit_fill, nan)
    out["exit_slip_bps"] = np.where(filled, exit_slip, nan)
    out["exit_reason"] = reason
    out["mae"], out["mfe"] = np.where(filled, mae, nan), np.where(filled, mfe, nan)
    out["bars_held"] = np.where(filled, exit_row - first + 1, 0)
    out["net_return"] = np.where(filled, net_return, nan)
    return out


def _money(fills: pd.DataFrame, direction: np.ndarray, sizes: np.ndarray, genome: Mapping) -> pd.DataFrame:
    """Quantity, costs and pnl of filled plans (NaN for the others), from the rounded fills and quantity."""
    capital = float(genome.get("capital", DEFAULT_CAPITAL))
    fee = float(genome.get("fee_bps", 0.0)) / 1e4
    d = np.where(direction == "long", 1.0, -1.0)
    entry, exit_ = fills["entry_fill"].to_numpy(), fills["exit_fill"].to_numpy()
    qty = _d208(capital * sizes / 100.0 / entry)
    fees = fee * qty * (entry + exit_)
    slip_cost = qty * (np.abs(entry - fills["entry_ref"].to_numpy()) + np.abs(fills["exit_ref"].to_numpy() - exit_))
    gross = d * (fills["exit_ref"].to_numpy() - fills["entry_ref"].to_numpy()) * qty
    pnl = d * (exit_ - entry) * qty - fees
    return pd.DataFrame({"qty": qty, "fees": _d208(fees), "slip_cost": _d208(slip_cost), "gross": _d208(gross),
                         "pnl": _d208(pnl), "cost": _d208(fees + slip_cost),
                         "slippage": [_d84(x) for x in fills["entry_slip_bps"] + fills["exit_slip_bps"]]})


def simulate_execution(day: pd.Timestamp, plans: pd.DataFrame, bars: pd.DataFrame,
                       population: pd.DataFrame) -> pd.DataFrame:
    """Validated plans are traded by the acting trader on the bars of their window; the others are cancelled.

    Input ``plans``: ``approve_plans``' plans (``PLAN_FRAME_COLUMNS``); ``bars``: symbol, timestamp, open,
    high, low, close (the day); ``population``: the trader's genome (capital, slippage_bps, fee_bps,
    range_factor).

    Output: the same plans and columns (``PLAN_FRAME_COLUMNS``, same order) with the execution columns filled:
    execution_status ('executed', 'partial', 'failed', 'cancelled'), executed_price, executed_quantity,
    execution_cost, slippage, pnl, performance_metrics {entry_time, entry_reference_price, exit_price,
    exit_reference_price, exit_time, exit_reason, return, gross_return, mae, mfe, minutes_held, bars_held},
    attribution_analysis {gross_pnl, slippage_cost, fees, net_pnl, entry_slippage_bps, exit_slippage_bps}.
    """
    _day(day)
    if plans is None or plans.empty:
        return _empty(_PLAN_SCHEMA)
    out = _conform(plans, _PLAN_SCHEMA)
    n = len(out)
    trader = _pick(population, "trader")
    validated = (out["validation_status"] == "validated").to_numpy()
    status = np.where(validated, "failed", "cancelled").astype(object)
    numbers = {c: np.full(n, np.nan) for c in ("executed_price", "executed_quantity", "execution_cost",
                                               "slippage", "pnl")}
    metrics: list[Any] = [
        {"reason": "rejected by the decision maker" if s == "failed" else "not validated by a decision maker"}
        for s in out["validation_status"]
    ]
    attribution: list[Any] = [None] * n
    idx = np.flatnonzero(validated)
    if trader is None:
        for i in idx:
            metrics[i] = {"reason": "no active trader"}
    elif len(idx):
        genome = _genome(trader["genome"])
        sub = out.iloc[idx].reset_index(drop=True)
        f = _fills(sub, bars, genome)
        m = _money(f, sub["direction"].to_numpy(), sub["position_size"].to_numpy(dtype="float64"), genome)
        for j, i in enumerate(idx):
            status[i] = f["status"].iat[j]
            if not f["filled"].iat[j]:
                metrics[i] = {"reason": "no bar between the plan timestamp and valid_until"}
                continue
            numbers["executed_price"][i] = f["entry_fill"].iat[j]
            numbers["executed_quantity"][i] = m["qty"].iat[j]
            numbers["execution_cost"][i] = m["cost"].iat[j]
            numbers["slippage"][i] = m["slippage"].iat[j]
            numbers["pnl"][i] = m["pnl"].iat[j]
            notional = m["qty"].iat[j] * f["entry_fill"].iat[j]
            metrics[i] = {
                "entry_time": _iso(f["entry_ts"].iat[j]), "entry_reference_price": _num(f["entry_ref"].iat[j], 8),
                "exit_price": _num(f["exit_fill"].iat[j], 8), "exit_reference_price": _num(f["exit_ref"].iat[j], 8),
                "exit_time": _iso(f["exit_time"].iat[j]), "exit_reason": str(f["exit_reason"].iat[j]),
                "return": _num(_ratio(m["pnl"].iat[j], notional), 8),
                "gross_return": _num(_ratio(m["gross"].iat[j], notional), 8),
                "mae": _num(f["mae"].iat[j], 8), "mfe": _num(f["mfe"].iat[j], 8),
                "minutes_held": _num((f["exit_time"].iat[j] - f["entry_ts"].iat[j]) / MINUTE, 2),
                "bars_held": int(f["bars_held"].iat[j]),
            }
            attribution[i] = {
                "gross_pnl": _num(m["gross"].iat[j], 8), "slippage_cost": _num(m["slip_cost"].iat[j], 8),
                "fees": _num(m["fees"].iat[j], 8), "net_pnl": _num(m["pnl"].iat[j], 8),
                "entry_slippage_bps": _num(f["entry_slip_bps"].iat[j], 4),
                "exit_slippage_bps": _num(f["exit_slip_bps"].iat[j], 4),
            }
    out["execution_status"] = status
    for column, values in numbers.items():
        out[column] = values
    out["performance_metrics"] = pd.Series(metrics, dtype=object)
    out["attribution_analysis"] = pd.Series(attribution, dtype=object)
    return _conform(out, _PLAN_SCHEMA)


# ------------------------------------------------------------------------------------------------ scoring


def _money_scale(r: float) -> float:
    return 0.5 + 0.5 * math.tanh(r / MONEY_SCALE)


def _or(x: float, default: float) -> float:
    return default if x is None or not math.isfinite(x) else x


def _hhi(values: Iterable[str]) -> float:
    counts = pd.Series(list(values)).value_counts()
    if counts.empty:
        return float("nan")
    shares = counts.to_numpy() / counts.sum()
    return float((shares**2).sum())


def _mode_horizon(values: Iterable[str]) -> str | None:
    counts = pd.Series(list(values)).value_counts()
    if counts.empty:
        return None
    order = list(HORIZONS.values())
    return min(counts.index, key=lambda h: (-counts[h], order.index(h) if h in order else len(order)))


def _innovation(active: pd.DataFrame) -> dict[str, float]:
    out: dict[str, float] = {}
    groups: dict[tuple[str, str], list[tuple[str, dict]]] = {}
    for r in active.itertuples(index=False):
        g = _genome(r.genome)
        groups.setdefault((str(r.module_type), str(g.get("style"))), []).append((str(r.module_id), g))
    for members in groups.values():
        keys = sorted({k for _, g in members for k, v in g.items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool)})
        median = {k: float(np.median([float(g[k]) for _, g in members if k in g])) for k in keys}
        for mid, g in members:
            dist = [abs(float(g[k]) - median[k]) / max(abs(median[k]), 1e-9) for k in keys if k in g]
            out[mid] = min(1.0, float(np.mean(dist))) if dist else 0.0
    return out


def score_modules(day: pd.Timestamp, plans: pd.DataFrame, approvals: pd.DataFrame, population: pd.DataFrame,
                  history: pd.DataFrame, bars: pd.DataFrame) -> pd.DataFrame:
    """One ``module_performance`` row per module active on the day (formulas in the module docstring).

    Input ``plans``: ``simulate_execution``'s plans of the day (``PLAN_FRAME_COLUMNS``); ``approvals``:
    ``approve_plans``' approvals; ``population`` as for ``generate_plans``; ``history``: module_performance
    rows (``PERFORMANCE_COLUMNS``) of the 30 days before ``day`` (may be empty); ``bars``: symbol, timestamp,
    open, high, low, close (the day, plus any context before it, which is ignored for the regime).

    Output, sorted by module_id: ``PERFORMANCE_COLUMNS`` (performance_id, module_id, timestamp,
    performance_score, consistency_score, innovation_score, specialization_score, collaboration_score,
    trading_plan_success_rate, execution_quality, risk_adjusted_returns, sharpe_ratio, max_drawdown,
    learning_effectiveness, adaptation_speed, intelligence_sharing_effectiveness, market_regime, asset_class,
    time_horizon).
    """
    import empyrical

    day = _day(day)
    stamp = day + DAY - MINUTE
    active = _active(population)
    if active.empty:
        return _empty(_PERFORMANCE_SCHEMA)
    plans = _empty(_PLAN_SCHEMA) if plans is None or plans.empty else _conform(plans, _PLAN_SCHEMA)
    plans = plans.sort_values(["timestamp", "plan_id"], kind="stable").reset_index(drop=True)
    trader = _pick(population, "trader")
    acting_trader = _genome(trader["genome"]) if trader is not None else {}
    capital = float(acting_trader.get("capital", DEFAULT_CAPITAL))
    regime = _day_regime(day, bars)
    direction = plans["direction"].to_numpy()
    pnl = plans["pnl"].to_numpy(dtype="float64")
    traded = plans["execution_status"].isin(["executed", "partial"]).to_numpy()
    validated = (plans["validation_status"] == "validated").to_numpy()
    proposed = _proposed_sizes(plans, approvals)
    if trader is not None and len(plans):
        shadow = _fills(plans, bars, acting_trader)
        shadow_filled = shadow["filled"].to_numpy()
        shadow_win = shadow_filled & (shadow["net_return"].to_numpy() > 0)
    else:
        shadow, shadow_filled, shadow_win = None, np.zeros(len(plans), bool), np.zeros(len(plans), bool)

    base: dict[str, dict[str, Any]] = {}
    for r in active.itertuples(index=False):
        mid, kind, g = str(r.module_id), str(r.module_type), _genome(r.genome)
        s: dict[str, Any] = {"handled": np.zeros(len(plans), dtype=bool)}
        if kind == "alpha_detector":
            mine = (plans["module_id"] == mid).to_numpy()
            n_plans, n_valid, n_traded = int(mine.sum()), int((mine & validated).sum()), int((mine & traded).sum())
            wins = int((mine & traded & (pnl > 0)).sum())
            day_return = float(np.nansum(pnl[mine & traded])) / capital
            h, a = _ratio(wins, n_traded), _ratio(n_valid, n_plans)
            s.update(handled=mine, day_return=day_return, success=h, quality=_ratio(n_traded, n_valid),
                     performance=0.4 * _money_scale(day_return) + 0.3 * _or(h, 0.5) + 0.3 * _or(a, 0.0),
                     collaboration=_or(a, 0.5), sharing=_ratio(wins, n_plans),
                     horizon=_horizon(g["horizon_minutes"])[1] if "horizon_minutes" in g else None,
                     specialty_size=len(g.get("anomaly_types", [])) or len(ANOMALY_TYPES))
        elif kind == "decision_maker":
            n = len(plans)
            if n and {"min_confidence", "min_risk_reward", "max_position_pct", "max_plans_per_symbol"} <= set(g):
                v = _decide(plans, proposed, g)
                approved = v["status"].to_numpy() != "rejected"
                final = v["final_size"].to_numpy()
            else:
                approved, final = np.zeros(n, dtype=bool), proposed
            if shadow is not None and approved.any():
                money = _money(shadow, direction, final, acting_trader)["pnl"].to_numpy()
                day_return = float(np.nansum(np.where(approved & shadow_filled, money, 0.0))) / capital
            else:
                day_return = 0.0
            judged = int(shadow_filled.sum())
            correct = int((shadow_filled & (approved == shadow_win)).sum())
            acc = _ratio(correct, judged)
            n_appr, n_fill = int(approved.sum()), int((approved & shadow_filled).sum())
            wins = int((approved & shadow_win).sum())
            s.update(handled=np.ones(n, dtype=bool), day_return=day_return, success=_ratio(wins, n_fill),
                     quality=_ratio(n_fill, n_appr),
                     performance=0.4 * _money_scale(day_return) + 0.6 * _or(acc, 0.5),
                     collaboration=_or(_ratio(n_appr, n), 0.5), sharing=_ratio(wins, n_appr),
                     specialty_size=len(ANOMALY_TYPES))
        else:
            n_valid = int(validated.sum())
            day_return, fill, slip, wins, n_fill = 0.0, float("nan"), float("nan"), 0, 0
            if n_valid:
                sub = plans[validated].reset_index(drop=True)
                f = _fills(sub, bars, g)
                ok = f["filled"].to_numpy()
                m = _money(f, sub["direction"].to_numpy(), sub["position_size"].to_numpy(dtype="float64"), g)
                n_fill = int(ok.sum())
                wins = int((ok & (m["pnl"].to_numpy() > 0)).sum())
                day_return = float(np.nansum(m["pnl"].to_numpy()[ok])) / float(g.get("capital", DEFAULT_CAPITAL))
                fill = n_fill / n_valid
                slip = float(np.mean(m["slippage"].to_numpy()[ok])) if n_fill else float("nan")
            quality = (0.5 * fill + 0.5 / (1.0 + _or(slip, 0.0) / 10.0)) if n_valid else float("nan")
            s.update(handled=validated, day_return=day_return, success=_ratio(wins, n_fill), quality=quality,
                     performance=_or(quality, 0.5), collaboration=_or(fill, 0.5), sharing=_ratio(wins, n_fill),
                     specialty_size=len(ANOMALY_TYPES))
        base[mid] = s

    hist = history if history is not None and len(history) else pd.DataFrame(columns=list(PERFORMANCE_COLUMNS))
    hist = hist[[c for c in ("module_id", "timestamp", "performance_score", "risk_adjusted_returns")
                 if c in hist.columns]].copy()
    if len(hist):
        hist = hist.reset_index(drop=True)
        hist["module_id"] = hist["module_id"].astype("str")
        hist["timestamp"] = _utc(hist["timestamp"])
        hist = hist[(hist["timestamp"] >= day - (TRAILING_DAYS - 1) * DAY) & (hist["timestamp"] < day)]
        hist = hist.sort_values(["module_id", "timestamp"], kind="stable")
    past = {mid: frame for mid, frame in hist.groupby("module_id", sort=False)} if len(hist) else {}
    innovation = _innovation(active)

    rows = []
    for r in active.itertuples(index=False):
        mid = str(r.module_id)
        s = base[mid]
        performance = _unit(s["performance"])
        bps = _d84(s["day_return"] * 1e4)
        prior = past.get(mid)
        prior_ret = prior["risk_adjusted_returns"].to_numpy(dtype="float64") if prior is not None and \
            "risk_adjusted_returns" in prior else np.array([])
        prior_perf = prior["performance_score"].to_numpy(dtype="float64") if prior is not None and \
            "performance_score" in prior else np.array([])
        prior_days = np.floor(((prior["timestamp"] - day) / DAY).to_numpy(dtype="float64")) \
            if prior is not None else np.array([])
        returns = np.append(prior_ret[np.isfinite(prior_ret)], bps) / 1e4
        sharpe = float(empyrical.sharpe_ratio(returns)) if len(returns) > 1 else float("nan")
        drawdown = float(empyrical.max_drawdown(returns))
        ok = np.isfinite(prior_perf)
        perfs, days = np.append(prior_perf[ok], performance), np.append(prior_days[ok], 0.0)
        consistency = 1.0 - 2.0 * float(np.std(perfs)) if len(perfs) > 1 else 0.5
        learning = 0.5 + 0.5 * math.tanh((performance - float(np.mean(perfs[:-1]))) / 0.1) if len(perfs) > 1 \
            else 0.5
        recent, recent_days = perfs[-SLOPE_DAYS:], days[-SLOPE_DAYS:]
        slope = float(np.polyfit(recent_days, recent, 1)[0]) if len(recent) > 1 else 0.0
        handled = s["handled"]
        types = plans["anomaly_type"] if "anomaly_type" in plans else [
            (ec or {}).get("anomaly_type") for ec in plans["entry_conditions"]]
        types = [t for t, keep in zip(types, handled, strict=True) if keep]
        hhi = _hhi(types)
        rows.append({
            "performance_id": _uuid(mid, day.isoformat()), "module_id": mid, "timestamp": stamp,
            "performance_score": performance, "consistency_score": _unit(consistency),
            "innovation_score": _unit(innovation.get(mid, 0.0)),
            "specialization_score": _unit(_or(hhi, 1.0 / s["specialty_size"])),
            "collaboration_score": _unit(s["collaboration"]),
            "trading_plan_success_rate": _unit(s["success"]) if math.isfinite(s["success"]) else np.nan,
            "execution_quality": _unit(s["quality"]) if math.isfinite(s["quality"]) else np.nan,
            "risk_adjusted_returns": bps, "sharpe_ratio": _d84(sharpe), "max_drawdown": _d84(drawdown),
            "learning_effectiveness": _unit(learning), "adaptation_speed": _unit(0.5 + 0.5 * math.tanh(slope / 0.05)),
            "intelligence_sharing_effectiveness": _unit(s["sharing"]) if math.isfinite(s["sharing"]) else np.nan,
            "market_regime": regime, "asset_class": _asset_classes(plans["symbol"][handled]),
            "time_horizon": s.get("horizon") or _mode_horizon(plans["time_horizon"][handled]),
        })
    return _conform(pd.DataFrame(rows), _PERFORMANCE_SCHEMA)
