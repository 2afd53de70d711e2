"""Simulated execution of the validated plans on the bars of their window
(``simulate_execution(day, plans, bars, population) -> plans``). Pure pandas/numpy.

Execution (``simulate_execution``)
----------------------------------
The trader is chosen like the decision maker. Genome: ``capital``, ``slippage_bps``, ``fee_bps`` and
``range_factor`` (default 0.1). With ``d`` the direction, entry bar e, ``o_e`` its open:
``entry slippage (bps) = slippage_bps + range_factor * 0.5 (high_e - low_e) / o_e * 1e4``,
``executed_price = o_e (1 + d slip / 1e4)``. A later bar hits the stop when its low (long) / high (short)
crosses it and the target when its high / low does; both in one bar: the stop. Stop fill: the stop, or the
bar's open when it gapped through, less ``slippage_bps`` (market order); target fill: the target (resting
limit, no slippage); no hit: the close of the last bar of the window less ``slippage_bps``, status
``executed`` when that bar closes at valid_until, ``partial`` when the window's data ends earlier (the missing
minutes at its end are never looked for beyond valid_until).
``executed_quantity = capital * position_size / 100 / executed_price``;
``fees = fee_bps / 1e4 * qty (entry fill + exit fill)``; ``pnl = d (exit fill - entry fill) qty
- fees`` (= gross move ``d (exit ref - o_e) qty`` - slippage cost - fees); ``execution_cost = fees + slippage
cost``; ``slippage`` = entry + exit slippage in bps. MAE/MFE: worst/best excursion of low/high against the
entry fill over the bars held (entry bar through exit bar), as fractions of the entry fill.

"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from tis_pipeline.trading_day.plans.common import (
    DEFAULT_CAPITAL,
    DEFAULT_RANGE_FACTOR,
    MINUTE,
    PLAN_SCHEMA,
    conform,
    decimal_8_4,
    decimal_20_8,
    empty_frame,
    iso,
    json_number,
    naive_ns,
    ratio,
    utc_day,
    utc_series,
)
from tis_pipeline.trading_day.plans.market import prepare_bars
from tis_pipeline.trading_day.population import (
    acting_module,
    genome_of,
)


def simulate_fills(plans: pd.DataFrame, bars: pd.DataFrame, genome: Mapping) -> pd.DataFrame:
    """Entry and exit of each plan (row order kept): one vectorised pass over the bars of the plans' windows.

    Columns: filled, status, entry_ts, entry_ref, entry_fill, entry_slip_bps, exit_ts, exit_time, exit_ref,
    exit_fill, exit_slip_bps, exit_reason, mae, mfe, bars_held, net_return.
    """
    n = len(plans)
    b = prepare_bars(bars)
    slip_bps = float(genome.get("slippage_bps", 0.0))
    fee = float(genome.get("fee_bps", 0.0)) / 1e4
    range_factor = float(genome.get("range_factor", DEFAULT_RANGE_FACTOR))

    start = np.zeros(n, dtype=np.int64)
    stop_at = np.zeros(n, dtype=np.int64)
    sym = plans["symbol"].astype("str").to_numpy()
    p_ts = naive_ns(plans["timestamp"])
    p_vu = naive_ns(plans["valid_until"])
    b_sym = b["symbol"].to_numpy()
    b_ts = naive_ns(b["timestamp"])
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
    reason = np.where(
        ~filled,
        None,
        np.where(
            by_stop, "stop", np.where(by_target, "target", np.where(closes_at_end, "horizon", "data_end"))
        ),
    )
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
    out["entry_ts"] = utc_series(entry_ts)
    out["entry_ref"], out["entry_fill"], out["entry_slip_bps"] = (
        entry_ref,
        entry_fill,
        np.where(filled, entry_slip, nan),
    )
    out["exit_ts"] = utc_series(exit_bar_ts)
    out["exit_time"] = utc_series(exit_time)
    out["exit_ref"], out["exit_fill"] = np.where(filled, exit_ref, nan), np.where(filled, exit_fill, nan)
    out["exit_slip_bps"] = np.where(filled, exit_slip, nan)
    out["exit_reason"] = reason
    out["mae"], out["mfe"] = np.where(filled, mae, nan), np.where(filled, mfe, nan)
    out["bars_held"] = np.where(filled, exit_row - first + 1, 0)
    out["net_return"] = np.where(filled, net_return, nan)
    return out


def fill_money(
    fills: pd.DataFrame, direction: np.ndarray, sizes: np.ndarray, genome: Mapping
) -> pd.DataFrame:
    """Quantity, costs and pnl of filled plans (NaN for the others), from the rounded fills and quantity."""
    capital = float(genome.get("capital", DEFAULT_CAPITAL))
    fee = float(genome.get("fee_bps", 0.0)) / 1e4
    d = np.where(direction == "long", 1.0, -1.0)
    entry, exit_ = fills["entry_fill"].to_numpy(), fills["exit_fill"].to_numpy()
    qty = decimal_20_8(capital * sizes / 100.0 / entry)
    fees = fee * qty * (entry + exit_)
    slip_cost = qty * (
        np.abs(entry - fills["entry_ref"].to_numpy()) + np.abs(fills["exit_ref"].to_numpy() - exit_)
    )
    gross = d * (fills["exit_ref"].to_numpy() - fills["entry_ref"].to_numpy()) * qty
    pnl = d * (exit_ - entry) * qty - fees
    return pd.DataFrame(
        {
            "qty": qty,
            "fees": decimal_20_8(fees),
            "slip_cost": decimal_20_8(slip_cost),
            "gross": decimal_20_8(gross),
            "pnl": decimal_20_8(pnl),
            "cost": decimal_20_8(fees + slip_cost),
            "slippage": [decimal_8_4(x) for x in fills["entry_slip_bps"] + fills["exit_slip_bps"]],
        }
    )


def simulate_execution(
    day: pd.Timestamp, plans: pd.DataFrame, bars: pd.DataFrame, population: pd.DataFrame
) -> pd.DataFrame:
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
    utc_day(day)
    if plans is None or plans.empty:
        return empty_frame(PLAN_SCHEMA)
    out = conform(plans, PLAN_SCHEMA)
    n = len(out)
    trader = acting_module(population, "trader", last_entry_only=True)
    validated = (out["validation_status"] == "validated").to_numpy()
    status = np.where(validated, "failed", "cancelled").astype(object)
    numbers = {
        c: np.full(n, np.nan)
        for c in ("executed_price", "executed_quantity", "execution_cost", "slippage", "pnl")
    }
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
        genome = genome_of(trader["genome"])
        sub = out.iloc[idx].reset_index(drop=True)
        f = simulate_fills(sub, bars, genome)
        m = fill_money(f, sub["direction"].to_numpy(), sub["position_size"].to_numpy(dtype="float64"), genome)
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
                "entry_time": iso(f["entry_ts"].iat[j]),
                "entry_reference_price": json_number(f["entry_ref"].iat[j], 8),
                "exit_price": json_number(f["exit_fill"].iat[j], 8),
                "exit_reference_price": json_number(f["exit_ref"].iat[j], 8),
                "exit_time": iso(f["exit_time"].iat[j]),
                "exit_reason": str(f["exit_reason"].iat[j]),
                "return": json_number(ratio(m["pnl"].iat[j], notional), 8),
                "gross_return": json_number(ratio(m["gross"].iat[j], notional), 8),
                "mae": json_number(f["mae"].iat[j], 8),
                "mfe": json_number(f["mfe"].iat[j], 8),
                "minutes_held": json_number((f["exit_time"].iat[j] - f["entry_ts"].iat[j]) / MINUTE, 2),
                "bars_held": int(f["bars_held"].iat[j]),
            }
            attribution[i] = {
                "gross_pnl": json_number(m["gross"].iat[j], 8),
                "slippage_cost": json_number(m["slip_cost"].iat[j], 8),
                "fees": json_number(m["fees"].iat[j], 8),
                "net_pnl": json_number(m["pnl"].iat[j], 8),
                "entry_slippage_bps": json_number(f["entry_slip_bps"].iat[j], 4),
                "exit_slippage_bps": json_number(f["exit_slip_bps"].iat[j], 4),
            }
    out["execution_status"] = status
    for column, values in numbers.items():
        out[column] = values
    out["performance_metrics"] = pd.Series(metrics, dtype=object)
    out["attribution_analysis"] = pd.Series(attribution, dtype=object)
    return conform(out, PLAN_SCHEMA)
