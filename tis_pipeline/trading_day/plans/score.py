"""The day's ``module_performance`` rows
(``score_modules(day, plans, approvals, population, history, bars) -> performance``). Pure pandas/numpy.

Module scores (``score_modules``)
---------------------------------
One row per active module, timestamp ``day + 23:59``. ``R`` = the day's return on capital (the acting trader's
``capital``); ``M(R) = 0.5 + 0.5 tanh(R / 0.005)``. Counts: *traded* = executed or partial, *win* = pnl > 0.

* alpha (its own plans): ``performance = 0.4 M(R) + 0.3 H + 0.3 A`` with H = wins / traded (0.5 without
  trades) and A = validated / plans (0 without plans: proposing nothing earns no credit);
  ``trading_plan_success_rate`` = wins / traded; ``execution_quality`` = traded / validated;
  ``collaboration`` = A (0.5 without plans); ``intelligence_sharing_effectiveness`` = wins / plans.
* decision maker: every active one reviews the day's plans (sizes as proposed) against its own portfolio
  (``approve.review``: each plan it approves is executed by the acting trader before the next is decided); the
  acting one's decisions are the real ones. R = its approved plans' pnl at the approved size / capital;
  ``Acc`` = share of filled plans where it approved a winner or rejected a non-winner, a winner being a plan
  whose shadow execution at the proposed size made money (0.5 without any); ``performance = 0.4 M(R) + 0.6
  Acc``; ``trading_plan_success_rate`` = wins / filled approved; ``execution_quality`` = filled approved /
  approved; ``collaboration`` = approved / plans (0.5 without plans); ``intelligence_sharing_effectiveness`` =
  wins / approved.
* trader: every active one executes the day's validated plans with its tactics (the acting one's fills are the
  real ones), every fill charged by the cost model (``costs``), which no genome enters. ``fill`` = filled /
  validated; ``IS`` = mean implementation shortfall in bps of the filled plans, ``d (entry fill - plan
  entry_price) / plan entry_price * 1e4`` (the model's spread and impact plus the drift its timing caught);
  ``q = 1 / (1 + max(0, IS) / 10)``; ``execution_quality = performance = 0.5 fill + 0.5 q`` (0.5 without
  validated plans); ``trading_plan_success_rate`` = ``intelligence_sharing_effectiveness`` = wins / filled;
  ``collaboration`` = fill (0.5 without validated plans).
* all: ``risk_adjusted_returns = R / u``, the day's return in units of the module's risk budget ``u``
  (``risk_unit``: an alpha's ``risk_pct`` / 100, the capital one of its trades may lose at its stop, so the
  figure is the day's R-multiple; a decision maker's and a trader's daily loss limit, ``max_daily_loss_pct``
  / 100, so -1 is a day that spent the whole loss budget). The history carries the daily return series this
  way: series = the history's ``risk_adjusted_returns * u`` over the 29 days before plus today's (at most 30
  days); ``sharpe_ratio = empyrical.sharpe_ratio(series, annualization=A)`` with ``A`` = 365 for a module
  that traded crypto today, else 252 (equities, futures, FX, mixed or none: ``trading_days``), and NULL
  with fewer than ``MIN_SHARPE_DAYS`` = 20 daily returns or when not finite (a series of zeros);
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

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from tis_pipeline.trading_day.plans.approve import PORTFOLIO_LIMITS, proposed_sizes, review
from tis_pipeline.trading_day.plans.common import (
    ANOMALY_TYPES,
    DAY,
    DEFAULT_CAPITAL,
    HORIZONS,
    MINUTE,
    MONEY_SCALE,
    PERFORMANCE_COLUMNS,
    PERFORMANCE_SCHEMA,
    PLAN_SCHEMA,
    REGIME_MIN_RETURNS,
    SLOPE_DAYS,
    TRAILING_DAYS,
    conform,
    decimal_8_4,
    empty_frame,
    ratio,
    snap_horizon,
    unit_score,
    utc_day,
    utc_series,
)
from tis_pipeline.trading_day.plans.costs import asset_classes
from tis_pipeline.trading_day.plans.execute import as_planned, open_book, simulate_fills
from tis_pipeline.trading_day.plans.market import DayBars, day_bars, regime_label, trend_z
from tis_pipeline.trading_day.population import (
    acting_module,
    genome_of,
    innovation_vs_peers,
    live_modules,
    plan_uuid,
)

MIN_SHARPE_DAYS = 20  # daily returns a Sharpe ratio needs before it is stored (fewer: NULL)
TRADING_DAYS: dict[str | None, int] = {"crypto": 365}  # a year's daily returns; every other class: 252
DEFAULT_TRADING_DAYS = 252  # equities, futures, FX (five days a week) and mixed or unknown classes


def trading_days(asset_class: str | None) -> int:
    """Daily returns in a year for the annualisation: 365 for crypto (trades every day), else 252."""
    return TRADING_DAYS.get(asset_class, DEFAULT_TRADING_DAYS)


def risk_unit(module_type: str, genome: dict) -> float:
    """The module's risk budget as a fraction of capital, the unit of ``risk_adjusted_returns``: an alpha's
    ``risk_pct`` per trade, a decision maker's daily loss limit, a trader's the default daily loss limit."""
    if module_type == "alpha_detector" and float(genome.get("risk_pct", 0) or 0) > 0:
        return float(genome["risk_pct"]) / 100.0
    if module_type == "decision_maker":
        return float(genome.get("max_daily_loss_pct", PORTFOLIO_LIMITS["max_daily_loss_pct"])) / 100.0
    return PORTFOLIO_LIMITS["max_daily_loss_pct"] / 100.0


def _day_regime(day: pd.Timestamp, bars: pd.DataFrame | DayBars) -> str:
    """The regime of the day's bars (only ``[day, day + 1 day)``, every symbol: ``DayBars.closes``): medians
    over symbols of z and volatility (each symbol's figures: ``closes.day_figures``)."""
    stats = day_bars(bars).day_closes(utc_day(day)).stats
    stats = stats[stats["count"] >= REGIME_MIN_RETURNS]
    if stats.empty:
        return "unknown"
    z = trend_z(stats["sum"].to_numpy(), stats["std"].to_numpy(), stats["count"].to_numpy())
    return regime_label(float(np.median(z)), float(stats["std"].median()))


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


def score_modules(
    day: pd.Timestamp,
    plans: pd.DataFrame,
    approvals: pd.DataFrame,
    population: pd.DataFrame,
    history: pd.DataFrame,
    bars: pd.DataFrame | DayBars,
) -> pd.DataFrame:
    """One ``module_performance`` row per module active on the day (formulas in the module docstring).

    Input ``plans``: ``simulate_execution``'s plans of the day (``PLAN_FRAME_COLUMNS``); ``approvals``:
    ``approve_plans``' approvals; ``population`` as for ``generate_plans``; ``history``: module_performance
    rows (``PERFORMANCE_COLUMNS``) of the 30 days before ``day`` (may be empty); ``bars``: symbol, timestamp,
    open, high, low, close (the day, plus any context before it, which is ignored for the regime), or a
    ``DayBars`` (its ``closes`` for the regime, its ``bars`` for the shadow fills).

    Output, sorted by module_id: ``PERFORMANCE_COLUMNS`` (performance_id, module_id, timestamp,
    performance_score, consistency_score, innovation_score, specialization_score, collaboration_score,
    trading_plan_success_rate, execution_quality, risk_adjusted_returns, sharpe_ratio, max_drawdown,
    learning_effectiveness, adaptation_speed, intelligence_sharing_effectiveness, market_regime, asset_class,
    time_horizon).
    """
    import empyrical

    day = utc_day(day)
    stamp = day + DAY - MINUTE
    active = live_modules(population)
    if active.empty:
        return empty_frame(PERFORMANCE_SCHEMA)
    plans = empty_frame(PLAN_SCHEMA) if plans is None or plans.empty else conform(plans, PLAN_SCHEMA)
    plans = plans.sort_values(["timestamp", "plan_id"], kind="stable").reset_index(drop=True)
    trader = acting_module(population, "trader", last_entry_only=True)
    acting_trader = genome_of(trader["genome"]) if trader is not None else {}
    capital = float(acting_trader.get("capital", DEFAULT_CAPITAL))
    bars = day_bars(bars)  # prepared once for the regime, the shadow fills and every module's fills
    regime = _day_regime(day, bars)
    direction = plans["direction"].to_numpy()
    pnl = plans["pnl"].to_numpy(dtype="float64")
    traded = plans["execution_status"].isin(["executed", "partial"]).to_numpy()
    validated = (plans["validation_status"] == "validated").to_numpy()
    proposed = proposed_sizes(plans, approvals)
    book = open_book(as_planned(plans), bars) if len(plans) else None
    if trader is not None and book is not None:
        shadow = simulate_fills(book, np.arange(len(plans)), proposed, acting_trader)
        shadow_filled = shadow["filled"].to_numpy()
        shadow_win = shadow_filled & (shadow["pnl"].to_numpy() > 0)
    else:
        shadow, shadow_filled, shadow_win = None, np.zeros(len(plans), bool), np.zeros(len(plans), bool)

    base: dict[str, dict[str, Any]] = {}
    for r in active.itertuples(index=False):
        mid, kind, g = str(r.module_id), str(r.module_type), genome_of(r.genome)
        s: dict[str, Any] = {"handled": np.zeros(len(plans), dtype=bool)}
        if kind == "alpha_detector":
            mine = (plans["module_id"] == mid).to_numpy()
            n_plans, n_valid, n_traded = (
                int(mine.sum()),
                int((mine & validated).sum()),
                int((mine & traded).sum()),
            )
            wins = int((mine & traded & (pnl > 0)).sum())
            day_return = float(np.nansum(pnl[mine & traded])) / capital
            h, a = ratio(wins, n_traded), ratio(n_valid, n_plans)
            s.update(
                handled=mine,
                day_return=day_return,
                success=h,
                quality=ratio(n_traded, n_valid),
                performance=0.4 * _money_scale(day_return) + 0.3 * _or(h, 0.5) + 0.3 * _or(a, 0.0),
                collaboration=_or(a, 0.5),
                sharing=ratio(wins, n_plans),
                horizon=snap_horizon(g["horizon_minutes"])[1] if "horizon_minutes" in g else None,
                specialty_size=len(g.get("anomaly_types", [])) or len(ANOMALY_TYPES),
            )
        elif kind == "decision_maker":
            n = len(plans)
            if n and {"min_confidence", "min_risk_reward", "max_position_pct", "max_plans_per_symbol"} <= set(
                g
            ):
                # the shadow fills are this review's fills at the proposed sizes (same book, sizes, trader)
                v, _ = review(
                    plans,
                    proposed,
                    g,
                    acting_trader if trader is not None else None,
                    book,
                    fills=shadow,
                    describe=False,
                )
                approved = v["status"].to_numpy() != "rejected"
                day_return = float(np.nansum(v["pnl"].to_numpy()[approved])) / capital
            else:
                approved, day_return = np.zeros(n, dtype=bool), 0.0
            judged = int(shadow_filled.sum())
            correct = int((shadow_filled & (approved == shadow_win)).sum())
            acc = ratio(correct, judged)
            n_appr, n_fill = int(approved.sum()), int((approved & shadow_filled).sum())
            wins = int((approved & shadow_win).sum())
            s.update(
                handled=np.ones(n, dtype=bool),
                day_return=day_return,
                success=ratio(wins, n_fill),
                quality=ratio(n_fill, n_appr),
                performance=0.4 * _money_scale(day_return) + 0.6 * _or(acc, 0.5),
                collaboration=_or(ratio(n_appr, n), 0.5),
                sharing=ratio(wins, n_appr),
                specialty_size=len(ANOMALY_TYPES),
            )
        else:
            n_valid = int(validated.sum())
            day_return, fill, shortfall, wins, n_fill = 0.0, float("nan"), float("nan"), 0, 0
            if n_valid and book is not None:
                idx = np.flatnonzero(validated)
                f = simulate_fills(book, idx, plans["position_size"].to_numpy(dtype="float64")[idx], g)
                ok = f["filled"].to_numpy()
                pnl_f = f["pnl"].to_numpy()
                n_fill = int(ok.sum())
                wins = int((ok & (pnl_f > 0)).sum())
                day_return = float(np.nansum(pnl_f[ok])) / float(g.get("capital", DEFAULT_CAPITAL))
                fill = n_fill / n_valid
                # implementation shortfall against the plan's price: the model's costs plus the drift its
                # timing caught; it has no cost of its own to assume
                d = np.where(direction[idx] == "long", 1.0, -1.0)
                planned = plans["entry_price"].to_numpy(dtype="float64")[idx]
                gap = d * (f["entry_fill"].to_numpy() - planned) / planned * 1e4
                shortfall = float(np.mean(gap[ok])) if n_fill else float("nan")
            quality = (
                (0.5 * fill + 0.5 / (1.0 + max(0.0, _or(shortfall, 0.0)) / 10.0)) if n_valid else float("nan")
            )
            s.update(
                handled=validated,
                day_return=day_return,
                success=ratio(wins, n_fill),
                quality=quality,
                performance=_or(quality, 0.5),
                collaboration=_or(fill, 0.5),
                sharing=ratio(wins, n_fill),
                specialty_size=len(ANOMALY_TYPES),
            )
        base[mid] = s

    hist = (
        history if history is not None and len(history) else pd.DataFrame(columns=list(PERFORMANCE_COLUMNS))
    )
    hist = hist[
        [
            c
            for c in ("module_id", "timestamp", "performance_score", "risk_adjusted_returns")
            if c in hist.columns
        ]
    ].copy()
    if len(hist):
        hist = hist.reset_index(drop=True)
        hist["module_id"] = hist["module_id"].astype("str")
        hist["timestamp"] = utc_series(hist["timestamp"])
        hist = hist[(hist["timestamp"] >= day - (TRAILING_DAYS - 1) * DAY) & (hist["timestamp"] < day)]
        hist = hist.sort_values(["module_id", "timestamp"], kind="stable")
    # dict(groupby) would call GroupBy.keys, which is not a mapping's keys()
    past = {mid: frame for mid, frame in hist.groupby("module_id", sort=False)} if len(hist) else {}  # noqa: C416
    innovation = innovation_vs_peers(active)

    rows = []
    for r in active.itertuples(index=False):
        mid = str(r.module_id)
        s = base[mid]
        performance = unit_score(s["performance"])
        unit = risk_unit(str(r.module_type), genome_of(r.genome))
        rar = decimal_8_4(s["day_return"] / unit)
        prior = past.get(mid)
        prior_ret = (
            prior["risk_adjusted_returns"].to_numpy(dtype="float64")
            if prior is not None and "risk_adjusted_returns" in prior
            else np.array([])
        )
        prior_perf = (
            prior["performance_score"].to_numpy(dtype="float64")
            if prior is not None and "performance_score" in prior
            else np.array([])
        )
        prior_days = (
            np.floor(((prior["timestamp"] - day) / DAY).to_numpy(dtype="float64"))
            if prior is not None
            else np.array([])
        )
        # the stored (rounded) figures, today's too: the series is the same whichever day reads it
        returns = np.append(prior_ret[np.isfinite(prior_ret)], rar) * unit
        handled = s["handled"]
        asset_class = asset_classes(plans["symbol"][handled].tolist())
        sharpe = (
            float(empyrical.sharpe_ratio(returns, annualization=trading_days(asset_class)))
            if len(returns) >= MIN_SHARPE_DAYS
            else float("nan")
        )
        drawdown = float(empyrical.max_drawdown(returns))
        ok = np.isfinite(prior_perf)
        perfs, days = np.append(prior_perf[ok], performance), np.append(prior_days[ok], 0.0)
        consistency = 1.0 - 2.0 * float(np.std(perfs)) if len(perfs) > 1 else 0.5
        learning = (
            0.5 + 0.5 * math.tanh((performance - float(np.mean(perfs[:-1]))) / 0.1) if len(perfs) > 1 else 0.5
        )
        recent, recent_days = perfs[-SLOPE_DAYS:], days[-SLOPE_DAYS:]
        slope = float(np.polyfit(recent_days, recent, 1)[0]) if len(recent) > 1 else 0.0
        types = (
            plans["anomaly_type"]
            if "anomaly_type" in plans
            else [(ec or {}).get("anomaly_type") for ec in plans["entry_conditions"]]
        )
        types = [t for t, keep in zip(types, handled, strict=True) if keep]
        hhi = _hhi(types)
        rows.append(
            {
                "performance_id": plan_uuid(mid, day.isoformat()),
                "module_id": mid,
                "timestamp": stamp,
                "performance_score": performance,
                "consistency_score": unit_score(consistency),
                "innovation_score": unit_score(innovation.get(mid, 0.0)),
                "specialization_score": unit_score(_or(hhi, 1.0 / s["specialty_size"])),
                "collaboration_score": unit_score(s["collaboration"]),
                "trading_plan_success_rate": unit_score(s["success"])
                if math.isfinite(s["success"])
                else np.nan,
                "execution_quality": unit_score(s["quality"]) if math.isfinite(s["quality"]) else np.nan,
                "risk_adjusted_returns": rar,
                "sharpe_ratio": decimal_8_4(sharpe),
                "max_drawdown": decimal_8_4(drawdown),
                "learning_effectiveness": unit_score(learning),
                "adaptation_speed": unit_score(0.5 + 0.5 * math.tanh(slope / 0.05)),
                "intelligence_sharing_effectiveness": unit_score(s["sharing"])
                if math.isfinite(s["sharing"])
                else np.nan,
                "market_regime": regime,
                "asset_class": asset_class,
                "time_horizon": s.get("horizon") or _mode_horizon(plans["time_horizon"][handled]),
            }
        )
    return conform(pd.DataFrame(rows), PERFORMANCE_SCHEMA)
