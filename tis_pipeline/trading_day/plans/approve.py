"""The acting decision maker approves, resizes ('modified') or rejects the day's plans against the portfolio
as it stands at each plan's time (``approve_plans(day, plans, population, bars) -> (plans, approvals)``).
Pure pandas/numpy.

Approval (``approve_plans``)
----------------------------
The decision maker is the active ``decision_maker`` with the best last ``performance_history`` score (no
history ranks last; ties by module_id). Plans are decided one after the other in (timestamp, plan_id) order,
and each approved plan is executed (``execute.simulate_fills`` with the acting trader, at the approved size)
before the next is decided, so that the desk sees the portfolio a real desk would see at the plan's time t:

* open positions: the plans it approved earlier whose exit time is after t (an approved plan without a fill
  is held as committed until its valid_until, since the desk cannot know it will not fill); positions are
  closed by the end of the UTC day, so none is carried from the day before;
* gross exposure ``G = sum size``, net exposure ``N = sum d size`` (d = +1 long, -1 short) and the plan's
  symbol's exposure ``S``, in % of capital;
* the day's realised P&L: the pnl of the approved plans that exited at or before t.

Only information of time <= t enters: an earlier plan's exit counts only once its exit time has passed.

Rules, with the genome's ``min_confidence``, ``min_risk_reward``, ``max_position_pct``,
``max_plans_per_symbol`` and the portfolio limits ``max_gross_pct``, ``max_net_pct``, ``max_symbol_pct``,
``max_daily_loss_pct``, ``min_position_pct``, ``max_participation`` (genome keys; the defaults
``PORTFOLIO_LIMITS`` apply when absent):

1. rejected when confidence < min_confidence or R:R < min_risk_reward, or when the plan is beyond the
   ``max_plans_per_symbol``-th plan of its symbol that passed those thresholds today;
2. rejected when the day's realised loss has reached ``max_daily_loss_pct`` of capital;
3. room ``= min(max_position_pct, max_gross_pct - G, max_symbol_pct - S, max_net_pct - d N, L)`` with the
   liquidity room ``L = max_participation * v * entry_price / capital * 100``, ``v`` the mean volume of the
   cost model's window before the plan's first bar (no limit without volume); the size is
   ``min(proposed, room)``: ``approved`` when that is the proposed size, ``modified`` (resized down, the
   binding limit named) when smaller, ``rejected`` when below ``min_position_pct`` (no room).

``decision_confidence``: approved/modified ``0.5 + 0.5 clip(min((c - min_c) / (1 - min_c), (rr - min_rr) /
(10 - min_rr)), 0, 1)`` (margin to the nearest threshold); rejected on a threshold ``0.5 + 0.5 clip(max
shortfall, 0, 1)`` with ``shortfall = (threshold - value) / threshold``; rejected by a rule (symbol limit,
loss limit, no room) 1.0. The columns record what was decided against: ``risk_assessment`` (the plan's
risk: confidence, R:R, stop distance, capital at risk at the proposed and the final size, the day's realised
P&L), ``risk_controls`` (every limit, which were applied, which one bound), ``portfolio_impact`` (the open
positions, G, N and S before and after the decision), ``alternative_plans`` (the other decisions and why they
were not taken). Without an active decision maker plans stay ``pending`` and get no approval row (execution
then cancels them).

"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from tis_pipeline.trading_day.plans.common import (
    APPROVAL_SCHEMA,
    DEFAULT_CAPITAL,
    PLAN_SCHEMA,
    conform,
    empty_frame,
    iso_utc,
    json_number,
    json_numbers,
    naive_ns,
    utc_day,
)
from tis_pipeline.trading_day.plans.execute import Book, fill_arrays, open_book
from tis_pipeline.trading_day.plans.market import DayBars
from tis_pipeline.trading_day.population import (
    acting_module,
    genome_of,
    plan_uuid,
)

PORTFOLIO_LIMITS: Mapping[str, float] = {
    "max_gross_pct": 100.0,  # no leverage: open positions together at most the capital
    "max_net_pct": 60.0,  # at most 60 % of capital net long or net short
    "max_symbol_pct": 40.0,  # concentration: one symbol at most 40 % of capital
    "max_daily_loss_pct": 1.0,  # no new position once the day's realised loss reached 1 % of capital
    "min_position_pct": 1.0,  # a position resized below 1 % is not worth its fees: rejected
    "max_participation": 0.1,  # liquidity: an order of at most 10 % of the mean volume of the bars before it
}


def limits_of(genome: Mapping) -> dict[str, float]:
    """The desk's limits: the genome's thresholds and its portfolio limits (defaults where absent)."""
    return {
        "min_confidence": float(genome["min_confidence"]),
        "min_risk_reward": float(genome["min_risk_reward"]),
        "max_position_pct": float(genome["max_position_pct"]),
        "max_plans_per_symbol": int(genome["max_plans_per_symbol"]),
        **{k: float(genome.get(k, v)) for k, v in PORTFOLIO_LIMITS.items()},
    }


def _pct(x: float | None) -> float | None:
    return json_number(x, 2)


def _clip_pct(x: float) -> float:
    """``float(np.clip(x, 0.0, 100.0))`` of a float, without numpy's call per plan: the same value, NaN and
    the sign of a zero kept."""
    if 0.0 <= x <= 100.0:
        return x
    return 0.0 if x < 0.0 else 100.0 if x > 100.0 else x


# NaT of an open position's end and of a closed position's exit, as int64 ns that compare as NaT does with any
# time t of a plan (never NaT on the path that reads them): an end never after t, an exit never at or before t
_NAT_END = np.iinfo(np.int64).min
_NAT_EXIT = np.iinfo(np.int64).max


def _ns(value: np.datetime64, nat: int) -> int:
    """A ``datetime64[ns]`` as int64 ns (``nat`` for NaT)."""
    return nat if np.isnat(value) else int(value.astype("datetime64[ns]").view("int64"))


def _in_time_order(ts: np.ndarray) -> bool:
    """Whether the times never decrease (a NaT breaks the order)."""
    return bool(np.all(ts[1:] >= ts[:-1])) if len(ts) > 1 else True


def review(
    plans: pd.DataFrame,
    sizes: np.ndarray,
    desk: Mapping,
    trader: Mapping | None,
    book: Book | None,
    fills: pd.DataFrame | None = None,
    describe: bool = True,
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """One decision maker's decisions on ``plans`` (already in (timestamp, plan_id) order, the rows of
    ``book.plans``) at the proposed ``sizes``, with the portfolio at each plan's time.

    The fills of every plan at its proposed size (``fills``: ``simulate_fills(book, arange(n), sizes,
    trader)`` when the caller has them, else made here in one pass) serve every plan approved at that size:
    a fill depends on its size (quantity, impact, hence levels and exits), and each plan's fill depends on its
    own row only, so the fill of one plan alone at the same size is the same numbers. Only a plan cut to
    another size is simulated on its own.

    Returns a frame (status, final_size, conf_ok, rr_ok, over, rank, loss_limit, binding,
    decision_confidence, pnl: the approved plan's pnl at its final size, NaN otherwise) and one record per
    plan of what the desk saw (the JSON columns' content; none with ``describe=False``, for a caller that
    reads only the frame).

    The plans come in time order, so a position that closed before a plan's time stays closed for every
    later plan: the open and closed positions are carried from one plan to the next (in plan order, as a
    scan of every earlier plan would list them), not found again among all the plans for each.
    """
    lim = limits_of(desk)
    n = len(plans)
    conf = plans["confidence_score"].to_numpy(dtype="float64")
    rr = plans["risk_reward_ratio"].to_numpy(dtype="float64")
    symbol = plans["symbol"].astype("str").to_numpy()
    d = np.where(plans["direction"].to_numpy() == "long", 1.0, -1.0)
    ts = naive_ns(plans["timestamp"])
    valid_until = naive_ns(plans["valid_until"])
    plan_ids = plans["plan_id"].to_numpy()
    conf_ok, rr_ok = conf >= lim["min_confidence"], rr >= lim["min_risk_reward"]
    passing = conf_ok & rr_ok
    rank = pd.Series(passing.astype(int)).groupby(symbol).cumsum().to_numpy()
    over = passing & (rank > lim["max_plans_per_symbol"])
    capital = float((trader or {}).get("capital", DEFAULT_CAPITAL))
    # the position (% of capital) that is max_participation of the mean volume of the bars before the plan's
    # first bar (the cost model's window: known at the plan's time); NaN without volume (no limit)
    liquidity = np.full(n, np.nan)
    if book is not None and len(book.bars):
        # the plan's first bar is a bar of its own symbol only when the symbol has one at or after the plan's
        # time (start < the end of the symbol's rows); else there is no volume to size against
        row = np.minimum(book.start, len(book.bars) - 1)
        same = book.start < book.block_end
        volume = np.where(same, book.costs.at(row)[2], np.nan)
        price = plans["entry_price"].to_numpy(dtype="float64")
        liquidity = lim["max_participation"] * volume * price / capital * 100.0

    status = np.full(n, "rejected", dtype=object)
    final = np.zeros(n)
    pnl = np.full(n, np.nan)
    end = np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]")
    exit_at = np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]")
    loss_limit = np.zeros(n, dtype=bool)
    binding: list[str | None] = [None] * n
    seen: list[dict[str, Any]] = []
    can_fill = book is not None and trader is not None
    if can_fill and fills is None:
        # the three columns read below, as arrays (``simulate_fills``' frame holds the same values)
        assert book is not None and trader is not None
        made = fill_arrays(book, np.arange(n), sizes, trader, outcome_only=True)
        fill_ok, fill_pnl, fill_exit = made["filled"].astype(bool), made["pnl"], made["exit_time"]
    elif fills is not None:
        fill_ok, fill_pnl, fill_exit = (
            fills["filled"].to_numpy(dtype=bool),
            fills["pnl"].to_numpy(dtype="float64"),
            naive_ns(fills["exit_time"]),
        )
    # the loop's per-plan values as Python objects (a numpy scalar per access costs more than the arithmetic):
    # the same IEEE doubles, added one after the other in the same order; times as int64 ns, NaT as a
    # sentinel that compares as NaT does (an end never after t, an exit never at or before t)
    t_ns = ts.view("int64").tolist()
    d_l = d.tolist()
    sym_l = symbol.tolist()
    size_l = np.asarray(sizes, dtype="float64").tolist()
    liquidity_l = liquidity.tolist()
    final_l = [0.0] * n
    end_ns = [_NAT_END] * n
    exit_ns = [_NAT_EXIT] * n
    realised = 0.0
    # t never decreases (plans in time order): what closed by an earlier plan's time is closed at this one's
    # (else, e.g. a NaT, every accepted plan is looked at again for each plan)
    monotone = _in_time_order(ts)
    taken: list[int] = []  # accepted plans, in plan order
    live: list[int] = []  # accepted plans open at the last plan's time, in plan order
    closed: list[int] = []  # accepted plans closed with a P&L by the last plan's time, in plan order
    closing: list[int] = []  # accepted plans with a P&L, not closed yet
    position: dict[int, dict[str, Any]] = {}  # an accepted plan's entry in open_positions (its size is final)
    for j in range(n):
        # the earlier approved plans still open at t and those closed by t with a P&L, in plan order (the
        # order the sums below add them in)
        if monotone:
            t = t_ns[j]
            live = [i for i in live if end_ns[i] > t]
            if any(exit_ns[i] <= t for i in closing):
                closed = sorted(closed + [i for i in closing if exit_ns[i] <= t])
                closing = [i for i in closing if not exit_ns[i] <= t]
                realised = float(np.sum(pnl[closed]))  # changes only when a position closes
        else:
            tt = ts[j]
            live = [i for i in taken if end[i] > tt]
            closed = [i for i in taken if exit_at[i] <= tt and np.isfinite(pnl[i])]
            realised = float(np.sum(pnl[closed])) if closed else 0.0
        gross = net = sym = 0.0
        here = sym_l[j]
        for i in live:
            f = final_l[i]
            gross += f
            net += d_l[i] * f
            if sym_l[i] == here:
                sym += f
        rooms = {
            "max_position_pct": lim["max_position_pct"],
            "max_gross_pct": lim["max_gross_pct"] - gross,
            "max_symbol_pct": lim["max_symbol_pct"] - sym,
            "max_net_pct": lim["max_net_pct"] - d_l[j] * net,
        }
        if math.isfinite(liquidity_l[j]):
            rooms["max_participation"] = liquidity_l[j]
        room = max(0.0, min(rooms.values()))
        size = size_l[j]
        target = _clip_pct(round(min(size, room), 2))
        loss_limit[j] = realised <= -lim["max_daily_loss_pct"] / 100.0 * capital
        if passing[j] and not over[j] and not loss_limit[j]:
            tightest = min(rooms, key=lambda k: (rooms[k], k))
            if target < lim["min_position_pct"]:
                binding[j] = tightest
            else:
                status[j] = "approved" if target >= size else "modified"
                final[j] = final_l[j] = target
                if target < size:
                    binding[j] = tightest
        if describe:
            seen.append(
                {
                    "open_positions": [position[i] for i in live],
                    "gross": gross,
                    "net": net,
                    "symbol_exposure": sym,
                    "realised": realised,
                    "closed_positions": len(closed),
                    "rooms": rooms,
                    "room": room,
                }
            )
        if status[j] != "rejected":
            if can_fill:
                assert book is not None and trader is not None
                if final[j] == sizes[j]:
                    ok, j_pnl, j_exit = fill_ok[j], fill_pnl[j], fill_exit[j]
                else:  # cut to another size: another quantity, impact and path
                    one = fill_arrays(book, np.array([j]), np.array([final[j]]), trader, outcome_only=True)
                    ok, j_pnl, j_exit = one["filled"][0], one["pnl"][0], one["exit_time"][0]
                if ok:
                    pnl[j] = float(j_pnl)
                    exit_at[j] = j_exit
                    end[j] = exit_at[j]
                    exit_ns[j] = _ns(exit_at[j], _NAT_EXIT)
                else:
                    end[j] = valid_until[j]
            else:
                end[j] = valid_until[j]
            end_ns[j] = _ns(end[j], _NAT_END)
            taken.append(j)
            live.append(j)
            if np.isfinite(pnl[j]):
                closing.append(j)
            position[j] = {
                "plan_id": str(plan_ids[j]),
                "symbol": str(symbol[j]),
                "side": "long" if d[j] > 0 else "short",
                "position_pct": _pct(final[j]),
            }

    margin = np.minimum(
        (conf - lim["min_confidence"]) / max(1.0 - lim["min_confidence"], 1e-9),
        (rr - lim["min_risk_reward"]) / max(10.0 - lim["min_risk_reward"], 1e-9),
    )
    shortfall = np.maximum(
        np.where(conf_ok, 0.0, (lim["min_confidence"] - conf) / max(lim["min_confidence"], 1e-9)),
        np.where(rr_ok, 0.0, (lim["min_risk_reward"] - rr) / max(lim["min_risk_reward"], 1e-9)),
    )
    rejected = status == "rejected"
    confidence = np.where(
        ~passing,
        0.5 + 0.5 * np.clip(shortfall, 0, 1),
        np.where(rejected, 1.0, 0.5 + 0.5 * np.clip(margin, 0, 1)),
    )
    frame = pd.DataFrame(
        {
            "status": status.astype(str),
            "final_size": final,
            "conf_ok": conf_ok,
            "rr_ok": rr_ok,
            "over": over,
            "rank": np.where(passing, rank, 0),
            "loss_limit": loss_limit,
            "binding": binding,
            "decision_confidence": np.round(confidence, 2),
            "pnl": pnl,
        }
    )
    return frame, seen


def proposed_sizes(plans: pd.DataFrame, approvals: pd.DataFrame | None) -> np.ndarray:
    """The alpha's own sizes: a modified plan's size before the decision maker cut it."""
    sizes = plans["position_size"].to_numpy(dtype="float64").copy()
    if approvals is None or approvals.empty:
        return sizes
    before = {}
    for pid, mods in zip(approvals["plan_id"], approvals["modifications"], strict=True):
        if isinstance(mods, Mapping) and isinstance(mods.get("position_size"), Mapping):
            before[str(pid)] = float(mods["position_size"]["from"])
    return np.array([before.get(str(p), s) for p, s in zip(plans["plan_id"], sizes, strict=True)])


def _records(
    plans: pd.DataFrame,
    sizes: np.ndarray,
    v: pd.DataFrame,
    seen: list[dict[str, Any]],
    desk: Mapping,
    name: str,
) -> dict[str, list[Any]]:
    """The approval rows' text and JSON columns from the decisions and what the desk saw."""
    lim = limits_of(desk)
    out: dict[str, list[Any]] = {
        k: [] for k in ("reason", "mods", "risk", "controls", "impact", "factors", "alternatives")
    }
    # one lookup per column, not one per plan, and each column's values as Python scalars (what ``float``,
    # ``int`` and ``bool`` of its numpy scalars give)
    col = {c: v[c].tolist() for c in v.columns}
    # only the columns read below: the others (the JSON ones, valid_until's Timestamps) are not built per plan
    read = [
        "symbol",
        "direction",
        "entry_price",
        "stop_loss",
        "confidence_score",
        "risk_reward_ratio",
    ]
    # the text columns as object columns of the same values: iterated ten times as fast as text ones
    rows = plans[read].astype({"symbol": object, "direction": object})
    stamps = iso_utc(plans["timestamp"])  # each plan's time as ``iso`` writes it, a column at a time
    # the numbers written as they are (``json_number``/``_pct`` of each), a column at a time
    conf2, rr2 = (json_numbers(plans[c].to_numpy(dtype="float64"), 2) for c in read[4:])
    size2 = json_numbers(np.asarray(sizes, dtype="float64"), 2)
    for i, p in enumerate(rows.itertuples(index=False)):
        status, conf, rr = col["status"][i], float(p.confidence_score), float(p.risk_reward_ratio)
        size, final = float(sizes[i]), float(col["final_size"][i])
        s = seen[i]
        d = 1.0 if p.direction == "long" else -1.0
        stop_pct = abs(p.entry_price - p.stop_loss) / p.entry_price * 100
        bound = col["binding"][i] if isinstance(col["binding"][i], str) else None
        applied: list[str] = []
        if status == "rejected":
            why = []
            if not col["conf_ok"][i]:
                why.append(f"confidence {conf:.2f} below {lim['min_confidence']:.2f}")
                applied.append("min_confidence")
            if not col["rr_ok"][i]:
                why.append(f"risk/reward {rr:.2f} below {lim['min_risk_reward']:.2f}")
                applied.append("min_risk_reward")
            if col["over"][i]:
                why.append(
                    f"symbol limit: plan {int(col['rank'][i])} of {p.symbol} today exceeds "
                    f"{int(lim['max_plans_per_symbol'])}"
                )
                applied.append("max_plans_per_symbol")
            if not why and col["loss_limit"][i]:
                why.append(
                    f"daily loss limit: realised {s['realised']:.2f} today reaches "
                    f"{lim['max_daily_loss_pct']:.2f}% of capital"
                )
                applied.append("max_daily_loss_pct")
            if not why:
                why.append(
                    f"no room: {bound} leaves {s['room']:.2f}% (gross {s['gross']:.2f}%, "
                    f"net {s['net']:.2f}%, {p.symbol} {s['symbol_exposure']:.2f}%), "
                    f"below the {lim['min_position_pct']:.2f}% minimum"
                )
                applied += [str(bound), "min_position_pct"]
            out["reason"].append("rejected: " + "; ".join(why))
            out["mods"].append(None)
            alternatives = [
                {
                    "action": "approve",
                    "position_pct": _pct(min(size, s["room"])),
                    "not_taken": why[0],
                }
            ]
        elif status == "modified":
            out["reason"].append(
                f"modified: position size {size:.2f}% cut to {final:.2f}% by {bound} "
                f"(gross {s['gross']:.2f}%, net {s['net']:.2f}%, {p.symbol} {s['symbol_exposure']:.2f}% open)"
            )
            applied.append(str(bound))
            out["mods"].append({"position_size": {"from": size2[i], "to": _pct(final), "limit": bound}})
            alternatives = [
                {
                    "action": "approve_as_proposed",
                    "position_pct": size2[i],
                    "not_taken": f"breaches {bound}: room {s['room']:.2f}%",
                },
                {"action": "reject", "not_taken": f"{final:.2f}% fits every limit"},
            ]
        else:
            out["reason"].append(
                f"approved: confidence {conf:.2f}, risk/reward {rr:.2f}, size {size:.2f}% within "
                f"every limit (room {s['room']:.2f}%)"
            )
            out["mods"].append(None)
            alternatives = [{"action": "reject", "not_taken": "every threshold and limit holds"}]
        out["alternatives"].append(alternatives)
        out["risk"].append(
            {
                "confidence_score": conf2[i],
                "risk_reward_ratio": rr2[i],
                "stop_distance_pct": json_number(stop_pct, 6),
                "proposed_position_pct": size2[i],
                "capital_at_risk_pct_proposed": json_number(size * stop_pct / 100, 6),
                "capital_at_risk_pct": json_number(final * stop_pct / 100, 6),
                "day_realised_pnl": json_number(s["realised"], 2),
                "closed_positions_today": int(s["closed_positions"]),
            }
        )
        out["controls"].append(
            {
                **lim,
                "applied": applied,
                "binding": bound,
                "room_by_limit": {k: _pct(x) for k, x in s["rooms"].items()},
            }
        )
        held = final if status != "rejected" else 0.0
        same = [o for o in s["open_positions"] if o["symbol"] == p.symbol]
        out["impact"].append(
            {
                "timestamp": stamps[i],
                "symbol": str(p.symbol),
                "side": str(p.direction),
                "position_pct": _pct(held),
                "open_positions": s["open_positions"],
                "open_in_symbol": len(same),
                "before": {
                    "gross_exposure_pct": _pct(s["gross"]),
                    "net_exposure_pct": _pct(s["net"]),
                    "symbol_exposure_pct": _pct(s["symbol_exposure"]),
                },
                "after": {
                    "gross_exposure_pct": _pct(s["gross"] + held),
                    "net_exposure_pct": _pct(s["net"] + d * held),
                    "symbol_exposure_pct": _pct(s["symbol_exposure"] + held),
                },
            }
        )
        out["factors"].append(
            {
                "decision_maker": name,
                "confidence_ok": bool(col["conf_ok"][i]),
                "risk_reward_ok": bool(col["rr_ok"][i]),
                "symbol_rank": int(col["rank"][i]),
                "daily_loss_limit_reached": bool(col["loss_limit"][i]),
                "binding_limit": bound,
                "size_capped": bool(status == "modified"),
            }
        )
    return out


def approve_plans(
    day: pd.Timestamp,
    plans: pd.DataFrame,
    population: pd.DataFrame,
    bars: pd.DataFrame | DayBars | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The acting decision maker approves, resizes ('modified') or rejects each plan of the day against the
    portfolio at the plan's time (rules in the module docstring).

    Input ``plans``: ``generate_plans``' frame (``PLAN_FRAME_COLUMNS``); ``population`` as there (the decision
    maker's genome and the acting trader's); ``bars``: the day's bars (as for ``simulate_execution``), through
    which earlier approved plans are executed to know when they close and what they made; without bars every
    approved plan stays open until its valid_until and no P&L is realised.

    Output ``(plans, approvals)``: plans with the same columns, in (timestamp, plan_id) order, with
    ``validation_status`` 'validated' (approved/modified) or 'failed' (rejected), ``position_size`` cut where
    modified and ``portfolio_impact`` the desk's view; approvals with the ``trading_plan_approvals`` columns
    (``APPROVAL_COLUMNS``), one row per plan.
    """
    utc_day(day)
    desk = acting_module(population, "decision_maker", last_entry_only=True)
    if plans is None or plans.empty:
        return empty_frame(PLAN_SCHEMA), empty_frame(APPROVAL_SCHEMA)
    plans = (
        conform(plans, PLAN_SCHEMA)
        .sort_values(["timestamp", "plan_id"], kind="stable")
        .reset_index(drop=True)
    )
    if desk is None:
        return plans, empty_frame(APPROVAL_SCHEMA)
    genome = genome_of(desk["genome"])
    trader = acting_module(population, "trader", last_entry_only=True)
    trader_genome = genome_of(trader["genome"]) if trader is not None else None
    book = open_book(plans, bars) if bars is not None else None
    sizes = plans["position_size"].to_numpy(dtype="float64")
    v, seen = review(plans, sizes, genome, trader_genome, book)
    r = _records(plans, sizes, v, seen, genome, str(desk.get("name")))
    accepted = v["status"].to_numpy() != "rejected"
    approvals = pd.DataFrame(
        {
            "approval_id": [plan_uuid(pid, "approval") for pid in plans["plan_id"]],
            "plan_id": plans["plan_id"],
            "decision_maker_module_id": str(desk["module_id"]),
            "timestamp": plans["timestamp"],
            "approval_status": v["status"],
            "approval_reason": r["reason"],
            "modifications": r["mods"],
            "risk_assessment": r["risk"],
            "risk_controls": r["controls"],
            "portfolio_impact": r["impact"],
            "decision_confidence": v["decision_confidence"],
            "decision_factors": r["factors"],
            "alternative_plans": r["alternatives"],
        }
    )
    out = plans.copy()
    out["position_size"] = np.where(accepted, v["final_size"].to_numpy(), sizes)
    out["validation_status"] = np.where(accepted, "validated", "failed")
    out["portfolio_impact"] = pd.Series(r["impact"], dtype=object)
    return conform(out, PLAN_SCHEMA), conform(approvals, APPROVAL_SCHEMA)
