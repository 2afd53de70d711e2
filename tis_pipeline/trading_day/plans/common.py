"""What the plans modules share: the tables' columns and dtypes, the constants of the formulas, and small
helpers (UTC days, JSON-safe numbers, column scales). Pure pandas/numpy.

The formulas are in each module's docstring: ``generate`` (dealing and plan fields), ``approve``,
``execute``, ``score``; the contract is ``docs/ecosystem.md``.

No dagster, no SQL, no wall clock, no random state: the same inputs give the same frames, bit for bit. Ids are
UUIDv5 (``population.PLANS_NAMESPACE``) of natural keys; timestamps are data time. Numbers are rounded to
their column's scale and kept inside the bounds of ``tis_pipeline.quality.rules`` (JSON payloads hold no NaN:
missing is ``None``).

Time and look-ahead
-------------------
A bar stamped t is known at t + 1 min. The plan of the event on bar t is stamped t + 1 min and reads bars <= t
only. Execution enters at the open of the first bar with timestamp >= the plan's timestamp and < valid_until,
then walks later bars (timestamp < valid_until <= day end) only. Bars of the window:
``[plan ts, valid_until)``. Rolling figures are fixed-length sums over a window ending at the event bar, so
they do not depend on where the ``bars`` frame starts (a range run and day-by-day runs agree).

"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

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
ANOMALY_TYPES = ("volume_spike", "price_jump", "range_expansion", "divergence", "pattern")
DECIMAL_8_4_MAX = 9999.9999
DECIMAL_20_8_MAX = 999_999_999_999.99999999

PLAN_COLUMNS: tuple[str, ...] = (
    "plan_id",
    "module_id",
    "symbol",
    "timestamp",
    "signal_strength",
    "direction",
    "entry_conditions",
    "entry_price",
    "position_size",
    "stop_loss",
    "take_profit",
    "time_horizon",
    "risk_reward_ratio",
    "confidence_score",
    "microstructure_evidence",
    "regime_context",
    "module_intelligence",
    "execution_notes",
    "valid_until",
    "validation_status",
    "risk_assessment",
    "portfolio_impact",
    "execution_status",
    "executed_price",
    "executed_quantity",
    "execution_cost",
    "slippage",
    "pnl",
    "performance_metrics",
    "attribution_analysis",
)
PLAN_FRAME_COLUMNS: tuple[str, ...] = (*PLAN_COLUMNS, "event_id", "dsi_evidence_id")
APPROVAL_COLUMNS: tuple[str, ...] = (
    "approval_id",
    "plan_id",
    "decision_maker_module_id",
    "timestamp",
    "approval_status",
    "approval_reason",
    "modifications",
    "risk_assessment",
    "risk_controls",
    "portfolio_impact",
    "decision_confidence",
    "decision_factors",
    "alternative_plans",
)
PERFORMANCE_COLUMNS: tuple[str, ...] = (
    "performance_id",
    "module_id",
    "timestamp",
    "performance_score",
    "consistency_score",
    "innovation_score",
    "specialization_score",
    "collaboration_score",
    "trading_plan_success_rate",
    "execution_quality",
    "risk_adjusted_returns",
    "sharpe_ratio",
    "max_drawdown",
    "learning_effectiveness",
    "adaptation_speed",
    "intelligence_sharing_effectiveness",
    "market_regime",
    "asset_class",
    "time_horizon",
)

_TS, _NUM, _TXT, _JSON = "ts", "num", "txt", "json"
PLAN_SCHEMA: Mapping[str, str] = {
    "plan_id": _TXT,
    "module_id": _TXT,
    "symbol": _TXT,
    "timestamp": _TS,
    "signal_strength": _NUM,
    "direction": _TXT,
    "entry_conditions": _JSON,
    "entry_price": _NUM,
    "position_size": _NUM,
    "stop_loss": _NUM,
    "take_profit": _NUM,
    "time_horizon": _TXT,
    "risk_reward_ratio": _NUM,
    "confidence_score": _NUM,
    "microstructure_evidence": _JSON,
    "regime_context": _JSON,
    "module_intelligence": _JSON,
    "execution_notes": _TXT,
    "valid_until": _TS,
    "validation_status": _TXT,
    "risk_assessment": _JSON,
    "portfolio_impact": _JSON,
    "execution_status": _TXT,
    "executed_price": _NUM,
    "executed_quantity": _NUM,
    "execution_cost": _NUM,
    "slippage": _NUM,
    "pnl": _NUM,
    "performance_metrics": _JSON,
    "attribution_analysis": _JSON,
    "event_id": _TXT,
    "dsi_evidence_id": _TXT,
}
APPROVAL_SCHEMA: Mapping[str, str] = {
    "approval_id": _TXT,
    "plan_id": _TXT,
    "decision_maker_module_id": _TXT,
    "timestamp": _TS,
    "approval_status": _TXT,
    "approval_reason": _TXT,
    "modifications": _JSON,
    "risk_assessment": _JSON,
    "risk_controls": _JSON,
    "portfolio_impact": _JSON,
    "decision_confidence": _NUM,
    "decision_factors": _JSON,
    "alternative_plans": _JSON,
}
PERFORMANCE_SCHEMA: Mapping[str, str] = {
    c: (
        _TXT
        if c in ("performance_id", "module_id", "market_regime", "asset_class", "time_horizon")
        else _TS
        if c == "timestamp"
        else _NUM
    )
    for c in PERFORMANCE_COLUMNS
}
# the columns holding Python dicts/lists, per table (the store writes them as canonical JSON text)
JSON_COLUMNS: Mapping[str, tuple[str, ...]] = {
    table: tuple(c for c, kind in schema.items() if kind == _JSON)
    for table, schema in (
        ("trading_plans", PLAN_SCHEMA),
        ("trading_plan_approvals", APPROVAL_SCHEMA),
        ("module_performance", PERFORMANCE_SCHEMA),
    )
}


# ------------------------------------------------------------------------------------------------ helpers


def utc_day(day: pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(day)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.normalize().as_unit("ns")


def utc_series(values: Any) -> pd.Series:
    return pd.Series(pd.to_datetime(values, utc=True)).dt.as_unit("ns").reset_index(drop=True)


def naive_ns(values: Any) -> np.ndarray:
    """UTC times as naive ``datetime64[ns]`` (a tz-aware Series' ``to_numpy()`` would give Timestamp
    objects)."""
    return utc_series(values).dt.tz_localize(None).to_numpy()


def json_number(x: Any, places: int) -> float | None:
    """A JSON-safe rounded float (None for NaN/inf/None): PostgreSQL's jsonb has no NaN."""
    if x is None:
        return None
    v = float(x)
    return round(v, places) if math.isfinite(v) else None


def iso(ts: Any) -> str | None:
    return None if ts is None or pd.isna(ts) else pd.Timestamp(ts).isoformat()


def json_numbers(values: Any, places: int) -> list[float | None]:
    """``json_number(x, places)`` of each value, a column at a time (a numpy column's values taken as Python
    scalars at once: what ``float`` of each of its numpy scalars gives)."""
    return [json_number(x, places) for x in np.asarray(values).tolist()]


_SECOND_NS = 1_000_000_000


def iso_utc(values: Any) -> list[str | None]:
    """``iso(x)`` of each time of ``values`` (UTC times: tz-aware UTC, or naive UTC ``datetime64``; NaT ->
    None), a column at a time. ``Timestamp.isoformat`` of a UTC time on a whole second is
    ``YYYY-MM-DDTHH:MM:SS+00:00`` (numpy's ``datetime_as_string`` at seconds, the offset appended); a column
    with any finer time goes through ``iso`` one value at a time."""
    s = pd.Series(values, copy=False) if not isinstance(values, pd.Series) else values
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        if str(s.dtype.tz) != "UTC":
            return [iso(x) for x in s]
        naive = s.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
        aware = True
    elif s.dtype.kind == "M":
        naive = s.to_numpy(dtype="datetime64[ns]")
        aware = False
    else:
        return [iso(x) for x in s.tolist()]
    missing = np.isnat(naive)
    if (naive.view("int64")[~missing] % _SECOND_NS).any():
        stamps = pd.Series(naive).dt.tz_localize("UTC") if aware else pd.Series(naive)
        return [iso(x) for x in stamps]
    text = np.char.add(np.datetime_as_string(naive, unit="s"), "+00:00" if aware else "").tolist()
    return [None if m else t for t, m in zip(text, missing.tolist(), strict=True)]


_UTC_NS = pd.DatetimeTZDtype("ns", "UTC")
_TEXT = pd.Series([], dtype="str").dtype


def conform(frame: pd.DataFrame, schema: Mapping[str, str]) -> pd.DataFrame:
    """Columns in table order with one dtype per kind, so empty and full frames look alike.

    A column that already has its kind's dtype (UTC ns times, float64 numbers, text) is taken as it is (its
    numbers' NaN made the one NaN the conversion gives): what the conversion would give, without it (a day
    conforms its plans a dozen times)."""
    n = len(frame)
    out: dict[str, pd.Series] = {}
    for column, kind in schema.items():
        s = frame[column].reset_index(drop=True) if column in frame else pd.Series([None] * n, dtype=object)
        if kind == _TS and s.dtype == _UTC_NS:
            pass
        elif kind == _NUM and s.dtype == np.float64:
            values = s.to_numpy()
            s = pd.Series(np.where(np.isnan(values), np.nan, values))
        elif kind == _TXT and s.dtype == _TEXT:
            pass
        elif kind == _TS:
            s = pd.Series(pd.to_datetime(s, utc=True)).dt.as_unit("ns")
        elif kind == _NUM:
            s = pd.to_numeric(s.astype(object).where(s.notna(), np.nan)).astype("float64")
        elif kind == _TXT:
            s = s.astype(object).where(s.notna(), None).astype("str")
        else:
            s = s.astype(object).where(s.notna(), None)
        out[column] = s
    return pd.DataFrame(out, index=pd.RangeIndex(n))


def empty_frame(schema: Mapping[str, str]) -> pd.DataFrame:
    return conform(pd.DataFrame(), schema)


def snap_horizon(minutes: Any) -> tuple[int, str]:
    m = float(minutes)
    best = min(HORIZONS, key=lambda k: (abs(k - m), k))
    return best, HORIZONS[best]


def unit_score(x: float) -> float:
    """A 0-1 score at DECIMAL(3,2)."""
    return float(np.clip(round(float(x), 2), 0.0, 1.0))


def decimal_8_4(x: Any) -> float:
    v = float(x) if x is not None else float("nan")
    return (
        round(float(np.clip(v, -DECIMAL_8_4_MAX, DECIMAL_8_4_MAX)), 4) if math.isfinite(v) else float("nan")
    )


def decimal_8_4_values(values: np.ndarray) -> list[float]:
    """``decimal_8_4`` of each value of a float64 array, a column at a time (``np.clip`` of a finite float is
    ``min(max(v, lo), hi)``: the same float, the sign of a zero kept)."""
    lo, hi = -DECIMAL_8_4_MAX, DECIMAL_8_4_MAX
    return [
        round(min(max(v, lo), hi), 4) if math.isfinite(v) else float("nan")
        for v in np.asarray(values, dtype="float64").tolist()
    ]


def decimal_20_8(values: np.ndarray) -> np.ndarray:
    return np.round(np.clip(np.asarray(values, dtype="float64"), -DECIMAL_20_8_MAX, DECIMAL_20_8_MAX), 8)


def ratio(num: float, den: float) -> float:
    return num / den if den else float("nan")
