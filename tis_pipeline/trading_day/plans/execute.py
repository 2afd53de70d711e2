"""Simulated execution of the validated plans on the bars of their window
(``simulate_execution(day, plans, bars, population) -> plans``). Pure pandas/numpy.

Execution (``simulate_execution``)
----------------------------------
The trader is chosen like the decision maker. Its genome holds ``capital`` and one execution tactic,
``entry_delay_bars`` (0 by default): the order goes to the market at the open of the bar that many bars after
the first bar at or after the plan's timestamp (and before valid_until). What a fill costs is not in any
genome: ``costs`` charges the spread and impact it estimates from the bars and the asset class's fee, so a
trader can change when it trades, never what the same fill costs.

With ``d`` the direction, entry bar e, ``o_e`` its open and ``q = capital * position_size / 100 / o_e`` the
quantity ordered: ``executed_price = o_e (1 + d c_e / 1e4)`` with ``c_e`` = the entry's half-spread + impact
in bps (``costs.market_cost_bps`` with the bar cost inputs of e).

Re-anchoring at the fill (chosen over cancelling): the plan's stop and target were set from the event bar's
close, but the fill is where the position really starts, so both are moved to the fill by the plan's own
distances (``stop_loss = fill - d sd``, ``take_profit = fill + d td`` with ``sd = |entry_price - stop_loss|``
and ``td = |take_profit - entry_price|`` as planned; the planned levels are kept in ``performance_metrics``).
No executed plan is therefore beyond its stop or target at entry. The entry bar itself is checked after the
fill: every price of the bar but the open comes after the fill, and when a bar (the entry bar or a later one)
reaches both the stop and the target the path inside it is unknown and the stop is taken (the pessimistic
reading). A bar hits the stop when its low (long) / high (short) crosses it and the target when its high /
low does.

Exit fills: stop = the stop, or the bar's open when it gapped through (a later bar), as a market order paying
the exit bar's half-spread + impact; target = the target (a resting limit: no spread, no impact); no hit =
the close of the last bar of the window, as a market order; status ``executed`` when that bar closes at
valid_until, ``partial`` when the window's data ends earlier (the missing minutes at its end are never looked
for beyond valid_until).
``executed_quantity = q``; ``fees = fee * q (entry fill + exit fill)`` with the asset class's fee;
``pnl = d (exit fill - entry fill) q - fees`` (= gross move ``d (exit ref - o_e) q`` - spread and impact cost
- fees); ``execution_cost = fees + spread and impact cost``; ``slippage`` = entry + exit cost in bps (spread
and impact, not fees). MAE/MFE: worst/best excursion of low/high against the entry fill over the bars held
(entry bar through exit bar), as fractions of the entry fill.

"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tis_pipeline.trading_day.plans.common import (
    DEFAULT_CAPITAL,
    MINUTE,
    PLAN_SCHEMA,
    conform,
    decimal_8_4_values,
    decimal_20_8,
    empty_frame,
    iso,
    json_number,
    naive_ns,
    ratio,
    utc_day,
    utc_series,
)
from tis_pipeline.trading_day.plans.costs import BarCosts, CostConfig, cost_config, market_cost_bps
from tis_pipeline.trading_day.plans.market import DayBars, day_bars
from tis_pipeline.trading_day.population import (
    acting_module,
    genome_of,
)

MAX_ENTRY_DELAY_BARS = 3


def entry_delay(genome: Mapping) -> int:
    """The trader's tactic: bars to wait after the first bar it may enter at (0..MAX_ENTRY_DELAY_BARS)."""
    return int(np.clip(round(float(genome.get("entry_delay_bars", 0) or 0)), 0, MAX_ENTRY_DELAY_BARS))


@dataclass(frozen=True)
class Book:
    """The bars of a day prepared once for any number of fills: bars, their timestamps (naive ns), their cost
    inputs (``costs.BarCosts``: computed at the bars a fill reads, on first use), and each plan's window of
    bar rows ``[start, stop_at)`` and the end of its symbol's rows (``block_end``: ``start == block_end`` when
    the symbol has no bar at or after the plan's timestamp)."""

    plans: pd.DataFrame
    bars: pd.DataFrame
    costs: BarCosts
    start: np.ndarray
    stop_at: np.ndarray
    config: CostConfig
    ts: np.ndarray
    block_end: np.ndarray
    # per bar: open, high, low, close
    arrays: Mapping[str, np.ndarray]
    # per plan: d (+1 long, -1 short), entry_price, stop_loss, take_profit, valid_until, fee
    plan_arrays: Mapping[str, np.ndarray]


def open_book(plans: pd.DataFrame, bars: pd.DataFrame | DayBars, config: CostConfig | None = None) -> Book:
    """Prepare the bars (once per ``DayBars``) and each plan's window (plans' row order kept)."""
    config = config or cost_config()
    prepared = day_bars(bars)
    n = len(plans)
    start = np.zeros(n, dtype=np.int64)
    stop_at = np.zeros(n, dtype=np.int64)
    block_end = np.zeros(n, dtype=np.int64)
    sym = plans["symbol"].astype("str").to_numpy()
    p_ts = naive_ns(plans["timestamp"])
    p_vu = naive_ns(plans["valid_until"])
    b_ts = prepared.ts
    blocks = prepared.blocks
    found = prepared.block_search(sym, (p_ts, p_vu)) if n else None
    if found is not None:  # one search over every bar's (block, time) keys
        (start, stop_at), block_end = found
    else:
        names, inverse = np.unique(sym, return_inverse=True)
        # the plans of each symbol, found by one sort (not one scan of every plan per symbol)
        by_symbol = np.split(np.argsort(inverse, kind="stable"), np.cumsum(np.bincount(inverse))[:-1])
        for s, k in zip(names, by_symbol, strict=True):
            lo, hi = blocks.get(str(s), (0, 0))
            start[k] = lo + np.searchsorted(b_ts[lo:hi], p_ts[k], side="left")
            stop_at[k] = lo + np.searchsorted(b_ts[lo:hi], p_vu[k], side="left")
            block_end[k] = hi
    costs = prepared.bar_costs(config)
    bar_arrays = {c: prepared.bars[c].to_numpy(dtype="float64") for c in ("open", "high", "low", "close")}
    plan_arrays = {
        "d": np.where(plans["direction"].to_numpy() == "long", 1.0, -1.0),
        **{c: plans[c].to_numpy(dtype="float64") for c in ("entry_price", "stop_loss", "take_profit")},
        "valid_until": p_vu,
        "fee": config.fee_for(sym) if n else np.zeros(0),
    }
    return Book(
        plans.reset_index(drop=True),
        prepared.bars,
        costs,
        start,
        stop_at,
        config,
        b_ts,
        block_end,
        bar_arrays,
        plan_arrays,
    )


def as_planned(plans: pd.DataFrame) -> pd.DataFrame:
    """Executed plans with the stop and target they were planned with (before the re-anchoring at the fill),
    so that they can be executed again, e.g. by another trader."""
    out = plans.copy()
    for column, key in (("stop_loss", "planned_stop_loss"), ("take_profit", "planned_take_profit")):
        planned = [
            m.get(key) if isinstance(m, Mapping) and m.get(key) is not None else v
            for m, v in zip(out["performance_metrics"], out[column], strict=True)
        ]
        out[column] = np.asarray(planned, dtype="float64")
    return out


def simulate_fills(
    book: Book,
    idx: np.ndarray,
    sizes: np.ndarray,
    genome: Mapping,
) -> pd.DataFrame:
    """Entry, re-anchored levels, exit and money of the plans ``book.plans.iloc[idx]`` at ``sizes`` (% of the
    trader's capital): one vectorised pass over the bars of their windows (row order of ``idx`` kept).

    Columns: filled, status, entry_ts, entry_ref, entry_fill, entry_cost_bps, entry_spread_bps,
    entry_impact_bps, stop, target, exit_ts, exit_time, exit_ref, exit_fill, exit_cost_bps, exit_reason, mae,
    mfe, bars_held, qty, fees, cost, slip_cost, gross, pnl, slippage (``fill_arrays`` as a frame).
    """
    f = fill_arrays(book, idx, sizes, genome)
    n = len(f["filled"])
    out = pd.DataFrame(
        {
            name: utc_series(values) if name in ("entry_ts", "exit_ts", "exit_time") else values
            for name, values in f.items()
        },
        index=pd.RangeIndex(n),
    )
    out["slippage"] = decimal_8_4_values(f["slippage"])
    return out


def fill_arrays(
    book: Book,
    idx: np.ndarray,
    sizes: np.ndarray,
    genome: Mapping,
    outcome_only: bool = False,
) -> dict[str, np.ndarray]:
    """``simulate_fills``' columns as arrays (timestamps naive UTC ``datetime64[ns]``, ``slippage`` before its
    DECIMAL(8,4) rounding): what a caller that needs a few numbers of one fill reads without building a frame.
    Each plan's numbers depend on its own row, size and window only. ``outcome_only``: only ``filled``,
    ``pnl`` and ``exit_time`` (what the desk reads of each approved plan: the same numbers, by the same
    steps), without the columns only the plan rows show (excursions, exit reason, costs apart)."""
    idx = np.asarray(idx, dtype=np.int64)
    n = len(idx)
    pa = {k: v[idx] for k, v in book.plan_arrays.items()}
    bars = book.arrays
    capital = float(genome.get("capital", DEFAULT_CAPITAL))
    delay = entry_delay(genome)
    start = book.start[idx] + delay
    stop_at = book.stop_at[idx]
    length = np.maximum(stop_at - start, 0)
    filled = length > 0
    safe_start = np.where(filled, start, 0)
    d = pa["d"]
    sizes = np.asarray(sizes, dtype="float64")
    nan = np.full(n, np.nan)

    def col(name: str, rows: np.ndarray) -> np.ndarray:
        values = bars[name]
        return np.where(filled, values[rows] if len(values) else nan, np.nan)

    def cost_inputs(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # spread, sigma, volume of the bars at rows (NaN where the plan did not fill), as ``col`` reads a bar
        spread, sigma, volume = book.costs.at(rows)
        return (
            np.where(filled, spread, np.nan),
            np.where(filled, sigma, np.nan),
            np.where(filled, volume, np.nan),
        )

    entry_ref = col("open", safe_start)
    qty = decimal_20_8(np.where(filled, capital * sizes / 100.0 / entry_ref, np.nan))
    spread_in, sigma_in, volume_in = cost_inputs(safe_start)
    half_in, impact_in = market_cost_bps(spread_in, sigma_in, volume_in, qty, book.config)
    entry_cost = half_in + impact_in
    entry_fill = np.round(entry_ref * (1 + d * entry_cost / 1e4), 8)
    planned = pa["entry_price"]
    sd = np.abs(planned - pa["stop_loss"])
    td = np.abs(pa["take_profit"] - planned)
    stop = np.round(entry_fill - d * sd, 8)
    target = np.round(entry_fill + d * td, 8)

    # the plans x window-bars join, as row indices: plan k owns rows start[k] .. stop_at[k] - 1
    plan_of = np.repeat(np.arange(n), length)
    offset = np.arange(len(plan_of)) - np.repeat(np.cumsum(length) - length, length)
    row = np.repeat(start, length) + offset
    dd = d[plan_of]
    o, h, lo_, c = (bars[name][row] for name in ("open", "high", "low", "close"))
    stop_hit = np.where(dd > 0, lo_ <= stop[plan_of], h >= stop[plan_of])
    target_hit = np.where(dd > 0, h >= target[plan_of], lo_ <= target[plan_of])

    first = np.cumsum(length) - length
    last = first + length - 1
    hits = np.flatnonzero(stop_hit | target_hit)
    hit_plans, first_hit = np.unique(plan_of[hits], return_index=True)
    exit_row = last.copy()
    exit_row[hit_plans] = hits[first_hit]
    has_hit = np.zeros(n, dtype=bool)
    has_hit[hit_plans] = True
    safe_exit = np.where(filled, exit_row, 0)

    def at(values: np.ndarray, pos: np.ndarray) -> np.ndarray:
        return np.where(filled, values[pos] if len(values) else nan, np.nan)

    by_stop = has_hit & np.where(filled, stop_hit[safe_exit] if len(stop_hit) else False, False)
    by_target = has_hit & ~by_stop
    exit_open, exit_close = at(o, safe_exit), at(c, safe_exit)
    stop_ref = np.where(d > 0, np.minimum(exit_open, stop), np.maximum(exit_open, stop))
    exit_ref = np.where(by_stop, stop_ref, np.where(by_target, target, exit_close))
    exit_bar = np.where(filled, row[safe_exit] if len(row) else 0, 0)
    spread_out, sigma_out, volume_out = cost_inputs(exit_bar)
    half_out, impact_out = market_cost_bps(spread_out, sigma_out, volume_out, qty, book.config)
    exit_cost = np.where(by_target, 0.0, half_out + impact_out)
    exit_fill = np.round(exit_ref * (1 - d * exit_cost / 1e4), 8)

    b_ts = book.ts
    p_vu = pa["valid_until"]
    exit_bar_ts = np.where(
        filled, b_ts[exit_bar] if len(b_ts) else np.datetime64("NaT"), np.datetime64("NaT")
    )
    if outcome_only:
        fees = pa["fee"] * qty * (entry_fill + exit_fill)
        return {
            "filled": filled,
            "pnl": decimal_20_8(np.where(filled, d * (exit_fill - entry_fill) * qty - fees, nan)),
            "exit_time": np.where(has_hit, exit_bar_ts, exit_bar_ts + np.timedelta64(1, "m")),
        }
    entry_ts = np.where(filled, b_ts[safe_start] if len(b_ts) else np.datetime64("NaT"), np.datetime64("NaT"))
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
    # each plan's extremes over the bars it held: a plan's rows are one run of the join (reduceat over the
    # runs; min and max are exact, so the order they are taken in does not matter); NaN without a bar
    runs = first[length > 0]
    low_held, high_held = np.full(n, np.nan), np.full(n, np.nan)
    if len(runs):
        low_held[length > 0] = np.minimum.reduceat(np.where(held, lo_, np.inf), runs)
        high_held[length > 0] = np.maximum.reduceat(np.where(held, h, -np.inf), runs)
    worst, best = np.where(d > 0, low_held, high_held), np.where(d > 0, high_held, low_held)
    mae = np.maximum(0.0, d * (entry_fill - worst) / entry_fill)
    mfe = np.maximum(0.0, d * (best - entry_fill) / entry_fill)

    fee = pa["fee"]
    fees = fee * qty * (entry_fill + exit_fill)
    slip_cost = qty * (np.abs(entry_fill - entry_ref) + np.abs(exit_ref - exit_fill))
    gross = d * (exit_ref - entry_ref) * qty
    pnl = d * (exit_fill - entry_fill) * qty - fees

    return {
        "filled": filled,
        "status": status,
        "entry_ts": entry_ts,
        "entry_ref": entry_ref,
        "entry_fill": entry_fill,
        "entry_cost_bps": np.where(filled, entry_cost, nan),
        "entry_spread_bps": np.where(filled, half_in, nan),
        "entry_impact_bps": np.where(filled, impact_in, nan),
        "planned_stop": pa["stop_loss"],
        "planned_target": pa["take_profit"],
        "stop": np.where(filled, stop, nan),
        "target": np.where(filled, target, nan),
        "exit_ts": exit_bar_ts,
        "exit_time": exit_time,
        "exit_ref": np.where(filled, exit_ref, nan),
        "exit_fill": np.where(filled, exit_fill, nan),
        "exit_cost_bps": np.where(filled, exit_cost, nan),
        "exit_reason": reason,
        "mae": np.where(filled, mae, nan),
        "mfe": np.where(filled, mfe, nan),
        "bars_held": np.where(filled, exit_row - first + 1, 0),
        "qty": qty,
        "fees": decimal_20_8(np.where(filled, fees, nan)),
        "slip_cost": decimal_20_8(np.where(filled, slip_cost, nan)),
        "gross": decimal_20_8(np.where(filled, gross, nan)),
        "pnl": decimal_20_8(np.where(filled, pnl, nan)),
        "cost": decimal_20_8(np.where(filled, fees + slip_cost, nan)),
        "slippage": np.where(filled, entry_cost + exit_cost, nan),
    }


def simulate_execution(
    day: pd.Timestamp, plans: pd.DataFrame, bars: pd.DataFrame | DayBars, population: pd.DataFrame
) -> pd.DataFrame:
    """Validated plans are traded by the acting trader on the bars of their window; the others are cancelled.

    Input ``plans``: ``approve_plans``' plans (``PLAN_FRAME_COLUMNS``); ``bars``: symbol, timestamp, open,
    high, low, close, volume (the day and the context before it); ``population``: the trader's genome
    (capital, entry_delay_bars). Costs come from ``costs`` (configuration, not the genome).

    Output: the same plans and columns (``PLAN_FRAME_COLUMNS``, same order) with the execution columns filled
    and stop_loss / take_profit re-anchored at the fill of executed plans: execution_status ('executed',
    'partial', 'failed', 'cancelled'), executed_price, executed_quantity, execution_cost, slippage, pnl,
    performance_metrics {entry_time, entry_reference_price, planned_stop_loss, planned_take_profit,
    exit_price, exit_reference_price, exit_time, exit_reason, return, gross_return, mae, mfe, minutes_held,
    bars_held}, attribution_analysis {gross_pnl, slippage_cost, fees, net_pnl, entry_slippage_bps,
    entry_spread_bps, entry_impact_bps, exit_slippage_bps, cost_model}.
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
    stops = out["stop_loss"].to_numpy(dtype="float64").copy()
    targets = out["take_profit"].to_numpy(dtype="float64").copy()
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
        book = open_book(out, bars)
        f = simulate_fills(book, idx, out["position_size"].to_numpy(dtype="float64")[idx], genome)
        model = book.config.as_dict()
        # one lookup per column (a frame's column lookup per plan and field cost more than the fills)
        fc: dict[str, Any] = {c: f[c].to_numpy() for c in f.columns}
        fc.update({c: list(f[c]) for c in ("entry_ts", "exit_time")})  # as Timestamps
        for j, i in enumerate(idx):
            status[i] = fc["status"][j]
            if not fc["filled"][j]:
                metrics[i] = {"reason": "no bar between the plan timestamp and valid_until"}
                continue
            stops[i], targets[i] = fc["stop"][j], fc["target"][j]
            numbers["executed_price"][i] = fc["entry_fill"][j]
            numbers["executed_quantity"][i] = fc["qty"][j]
            numbers["execution_cost"][i] = fc["cost"][j]
            numbers["slippage"][i] = fc["slippage"][j]
            numbers["pnl"][i] = fc["pnl"][j]
            notional = fc["qty"][j] * fc["entry_fill"][j]
            metrics[i] = {
                "entry_time": iso(fc["entry_ts"][j]),
                "entry_reference_price": json_number(fc["entry_ref"][j], 8),
                "entry_delay_bars": entry_delay(genome),
                "planned_stop_loss": json_number(fc["planned_stop"][j], 8),
                "planned_take_profit": json_number(fc["planned_target"][j], 8),
                "re_anchored": "stop and target moved to the fill by the planned distances",
                "exit_price": json_number(fc["exit_fill"][j], 8),
                "exit_reference_price": json_number(fc["exit_ref"][j], 8),
                "exit_time": iso(fc["exit_time"][j]),
                "exit_reason": str(fc["exit_reason"][j]),
                "return": json_number(ratio(fc["pnl"][j], notional), 8),
                "gross_return": json_number(ratio(fc["gross"][j], notional), 8),
                "mae": json_number(fc["mae"][j], 8),
                "mfe": json_number(fc["mfe"][j], 8),
                "minutes_held": json_number((fc["exit_time"][j] - fc["entry_ts"][j]) / MINUTE, 2),
                "bars_held": int(fc["bars_held"][j]),
            }
            attribution[i] = {
                "gross_pnl": json_number(fc["gross"][j], 8),
                "slippage_cost": json_number(fc["slip_cost"][j], 8),
                "fees": json_number(fc["fees"][j], 8),
                "net_pnl": json_number(fc["pnl"][j], 8),
                "entry_slippage_bps": json_number(fc["entry_cost_bps"][j], 4),
                "entry_spread_bps": json_number(fc["entry_spread_bps"][j], 4),
                "entry_impact_bps": json_number(fc["entry_impact_bps"][j], 4),
                "exit_slippage_bps": json_number(fc["exit_cost_bps"][j], 4),
                "cost_model": model,
            }
    out["execution_status"] = status
    for column, values in numbers.items():
        out[column] = values
    out["stop_loss"], out["take_profit"] = stops, targets
    out["performance_metrics"] = pd.Series(metrics, dtype=object)
    out["attribution_analysis"] = pd.Series(attribution, dtype=object)
    return conform(out, PLAN_SCHEMA)
