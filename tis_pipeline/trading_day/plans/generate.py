"""The day's trading plans: each anomaly event dealt to one alpha module, which plans it when its genome
agrees (``generate_plans(day, events, bars, population) -> plans``). Pure pandas/numpy.

Dealing and plan fields (``generate_plans``)
--------------------------------------------
Active modules: ``status == 'active'`` and ``lifecycle_stage in ('experimental', 'active')``. An event goes to
the alpha module, among the active ones whose ``anomaly_types`` hold its type, with the smallest
``uuid5(PLANS_NAMESPACE, f"{event_id}|{module_id}")`` (rendezvous hashing: uniform shares, and a newcomer only
takes events, it never reshuffles the others'); that uuid is the ``plan_id``.

* edge ``= |mx_evidence - 0.5|`` (rounded to 1e-10 before the comparison with ``min_edge``).
* direction ``d`` (+1 long, -1 short): momentum ``sign(mx_evidence - 0.5)``; reversal
  ``-sign(close/open - 1)`` of the event bar; divergence ``sign(htf_1h_ret)``. No plan when ``d`` is 0/NaN,
  edge < ``min_edge``, the event bar or ATR is missing, the plan would be stamped at/after the day end, or a
  long stop would be <= 0.
* ``ATR = mean(TR of the 14 bars <= t)``, ``TR = max(high, prev close) - min(low, prev close)`` (NaN with
  fewer than 14 bars).
* ``entry_price`` = close of the event bar; with ``h`` the horizon in minutes (below), stop distance
  ``sd = stop_atr * ATR * sqrt(h)``; target distance ``td = clip(target_atr, 0.01 stop_atr, 10 stop_atr) * ATR
  * sqrt(h)`` (so the ratio fits DECIMAL(5,2) in (0, 10]): a 1-minute ATR scaled to the plan's horizon, as a
  random walk's move grows with the square root of time, so a 1-hour plan is not stopped by a 1-minute
  wiggle and its risk-based size stays well below the whole portfolio;
  ``stop_loss = entry - d sd``, ``take_profit = entry + d td`` (re-anchored at the fill: ``execute``).
* ``risk_reward_ratio = td / sd``.
* ``position_size = clip(risk_pct / (sd / entry), 0.01, 100)`` (% of capital; risk_pct is % of capital
  risked).
* ``signal_strength = 0.5 anomaly_score + 0.5 min(1, 2 edge)`` (how strong the event is, either way).
* ``confidence_score = 0.35 a 2 edge + 0.25 side_rate + 0.15 a mx_confirm + 0.10 agree_15m + 0.15 (1 - w)``
  with ``a`` = 1 when the evidence is on the plan's side (mx_evidence > 0.5 for a long, < 0.5 for a short),
  ``side_rate`` = mx_confirm_rate when a else 1 - mx_confirm_rate (share of experts voting the plan's side),
  ``agree_15m`` = 1 / 0.5 / 0 when sign(htf_15m_ret) is d / 0-or-NaN / -d,
  ``w = clip(ci_high - ci_low, 0, 1)`` (1 when missing). Weights sum to 1, so both scores lie in [0, 1].
* ``time_horizon`` from ``horizon_minutes`` (snapped to the nearest of 1, 5, 15, 60, 240, 1440 minutes);
  ``valid_until = min(timestamp + horizon, day end)``.
* regime (plan's ``regime_context`` and the day's ``market_regime``): with ``s`` the sum of 1-bar log returns
  and ``v`` their standard deviation (ddof 1) over the window (the 60 bars <= t; the day's bars for the day),
  ``z = s / (v sqrt(n))`` (0 when v = 0): ``high_volatility`` if v > 0.002, else ``trending_up`` if z > 1,
  ``trending_down`` if z < -1, else ``ranging`` (the day: medians of v and z over symbols; ``unknown`` without
  data).

"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pandas as pd

from tis_pipeline.trading_day.plans.common import (
    ATR_WINDOW,
    DAY,
    MINUTE,
    PLAN_SCHEMA,
    REGIME_WINDOW,
    conform,
    empty_frame,
    iso_utc,
    json_number,
    json_numbers,
    naive_ns,
    snap_horizon,
    utc_day,
    utc_series,
)
from tis_pipeline.trading_day.plans.market import DayBars, day_bars, features_at, regime_label, trend_z
from tis_pipeline.trading_day.population import (
    frame_columns,
    genome_of,
    live_modules,
    plan_uuid,
)


def longest_horizon(population: pd.DataFrame) -> pd.Timedelta:
    """The longest horizon a live alpha of ``population`` plans with (snapped as in ``generate_plans``; a
    genome without a readable ``horizon_minutes`` counts as a whole day): no plan of the day is valid longer
    after its timestamp, so no plan reads a bar later than that after its event (``store.read_plan_bars``)."""
    longest = 0
    for genome in live_modules(population, "alpha_detector")["genome"]:
        try:
            minutes = snap_horizon(genome_of(genome)["horizon_minutes"])[0]
        except (KeyError, TypeError, ValueError):
            minutes = 1440
        longest = max(longest, minutes)
    return pd.Timedelta(minutes=longest)


def horizons_by_type(population: pd.DataFrame) -> dict[str, pd.Timedelta] | pd.Timedelta:
    """Per anomaly type, the longest horizon of the live alphas whose ``anomaly_types`` hold it (snapped as in
    ``generate_plans``; a genome without a readable ``horizon_minutes`` counts as a whole day): an event is
    dealt only to such an alpha, so none of its plans reads a bar later than that after the event
    (``store.read_plan_bars``; a type no alpha plans is absent: its events make no plan). When a genome's
    types cannot be read, ``longest_horizon`` for every event."""
    longest: dict[str, int] = {}
    for genome in live_modules(population, "alpha_detector")["genome"]:
        g = genome_of(genome)
        try:
            minutes = snap_horizon(g["horizon_minutes"])[0]
        except (KeyError, TypeError, ValueError):
            minutes = 1440
        try:
            for anomaly_type in g.get("anomaly_types", []):
                longest[anomaly_type] = max(longest.get(anomaly_type, 0), minutes)
        except TypeError:  # types that cannot be iterated or used as keys (a number, a list in the list):
            # the module fails today (``generate_plans`` reads them too), the day reads its bars as before
            return longest_horizon(population)
    return {t: pd.Timedelta(minutes=m) for t, m in longest.items()}


def _json_copy(value: Any) -> Any:
    """A deep copy of a genome (``copy.deepcopy``'s result): its dicts and lists copied, its text, numbers,
    booleans and None kept (immutable), anything else deep-copied (a genome is JSON: no cycle, no sharing)."""
    kind = type(value)
    if kind is dict:
        return {k: _json_copy(v) for k, v in value.items()}
    if kind is list:
        return [_json_copy(v) for v in value]
    if kind in (str, int, float, bool) or value is None:
        return value
    return copy.deepcopy(value)


def generate_plans(
    day: pd.Timestamp,
    events: pd.DataFrame,
    bars: pd.DataFrame | DayBars,
    population: pd.DataFrame,
    text: bool = True,
) -> pd.DataFrame:
    """The day's trading plans: each event dealt to one alpha module, which plans it when its genome agrees.

    Input ``events``: event_id, symbol, timestamp, anomaly_type, anomaly_score, dsi_evidence_id, mx_evidence,
    mx_confirm, mx_confirm_rate, mx_evidence_boost, ci_low, ci_high, htf_15m_ret, htf_1h_ret (events outside
    the day are ignored).
    ``bars``: symbol, timestamp, open, high, low, close, volume (the day and 2 h before, or the stretches of
    it that hold each event's bar and the ``REGIME_WINDOW`` bars of its symbol before it), or a ``DayBars``.
    ``population``: module_id, module_type, status, lifecycle_stage, name, genome, module_version, ...

    Output, one row per plan sorted by (timestamp, plan_id): the ``trading_plans`` columns
    (``PLAN_COLUMNS``: plan_id, module_id, symbol, timestamp, signal_strength, direction, entry_conditions,
    entry_price, position_size, stop_loss, take_profit, time_horizon, risk_reward_ratio, confidence_score,
    microstructure_evidence, regime_context, module_intelligence, execution_notes, valid_until,
    validation_status='pending', risk_assessment, portfolio_impact, and the execution columns left None/NaN)
    plus event_id and dsi_evidence_id. ``text=False``: the same rows and numbers, with the JSON and text
    columns (entry_conditions, microstructure_evidence, regime_context, module_intelligence, execution_notes,
    risk_assessment, portfolio_impact) left None: what a dry run that checks the plans' numbers reads (a
    child's validation), without building a few dicts per plan.
    """
    day = utc_day(day)
    end = day + DAY
    alphas = live_modules(population, "alpha_detector")
    if events is None or events.empty or alphas.empty:
        return empty_frame(PLAN_SCHEMA)

    ev = events.reset_index(drop=True).copy()
    ev["timestamp"] = utc_series(ev["timestamp"])
    ev["event_id"] = ev["event_id"].astype("str")
    ev["symbol"] = ev["symbol"].astype("str")
    ev["plan_ts"] = ev["timestamp"] + MINUTE
    # a plan stamped at the day end would belong to the next day's window of rows (and could not trade today)
    ev = ev[(ev["timestamp"] >= day) & (ev["plan_ts"] < end)].reset_index(drop=True)

    modules = {str(r.module_id): r for r in alphas.itertuples(index=False)}
    specialty = pd.DataFrame(
        [(mid, t) for mid, r in modules.items() for t in genome_of(r.genome).get("anomaly_types", [])],
        columns=["module_id", "anomaly_type"],
    )
    cand = ev[["event_id", "anomaly_type"]].merge(specialty, on="anomaly_type", how="inner")
    if cand.empty:
        return empty_frame(PLAN_SCHEMA)
    # the columns' values as lists first (iterating a text column yields the same strings, ten times slower)
    cand["plan_id"] = [
        plan_uuid(e, m) for e, m in zip(cand["event_id"].tolist(), cand["module_id"].tolist(), strict=True)
    ]
    dealt = cand.sort_values(["event_id", "plan_id"], kind="stable").drop_duplicates("event_id")
    ev = ev.merge(dealt[["event_id", "module_id", "plan_id"]], on="event_id", how="inner")

    prepared = day_bars(bars)
    rows = prepared.rows_at(ev["symbol"], ev["timestamp"])  # the event bar (an inner join: none, no plan)
    ev = ev[rows >= 0].assign(row=rows[rows >= 0]).reset_index(drop=True)
    if ev.empty:
        return empty_frame(PLAN_SCHEMA)
    ev = ev.sort_values(["plan_ts", "plan_id"], kind="stable").reset_index(drop=True)
    f = features_at(prepared.bars, ev["row"].to_numpy(), prepared.columns)

    # the plan keeps a copy of its genome (module_intelligence); the numbers only read it
    module_ids = ev["module_id"].tolist()
    genome = {m: genome_of(modules[m].genome) for m in set(module_ids)}
    genomes = [_json_copy(genome[m]) if text else genome[m] for m in module_ids]
    style = np.array([str(g.get("style")) for g in genomes])
    unknown = sorted(set(style) - {"momentum", "reversal", "divergence"})
    if unknown:
        raise ValueError(f"alpha genome style(s) {unknown} are not momentum, reversal or divergence")
    param = {
        k: np.array([float(g[k]) for g in genomes])
        for k in ("min_edge", "stop_atr", "target_atr", "risk_pct", "horizon_minutes")
    }

    e = ev["mx_evidence"].to_numpy(dtype="float64")
    edge = np.round(np.abs(e - 0.5), 10)
    direction = np.select(
        [style == "momentum", style == "reversal", style == "divergence"],
        [np.sign(e - 0.5), -np.sign(f["bar_ret"]), np.sign(ev["htf_1h_ret"].to_numpy(dtype="float64"))],
        default=np.nan,
    )
    entry = np.round(f["close"], 8)
    atr = f["atr"]
    # a module's horizon is one number: snapped once per distinct value
    minutes = param["horizon_minutes"].tolist()
    snapped = {m: snap_horizon(m) for m in set(minutes)}
    horizon = [snapped[m] for m in minutes]
    # a 1-minute ATR measures one minute's move; over h minutes a random walk moves sqrt(h) times as far
    scale = np.sqrt(np.array([h for h, _ in horizon], dtype="float64"))
    sd = param["stop_atr"] * atr * scale
    td = np.clip(param["target_atr"], 0.01 * param["stop_atr"], 10.0 * param["stop_atr"]) * atr * scale
    stop = np.round(entry - direction * sd, 8)
    target = np.round(entry + direction * td, 8)
    horizon_end = naive_ns(ev["plan_ts"] + pd.to_timedelta([h for h, _ in horizon], unit="min"))
    valid_until = np.minimum(horizon_end, end.tz_localize(None).to_datetime64())
    with np.errstate(invalid="ignore"):
        keep = (
            (np.abs(direction) == 1)
            & (edge >= param["min_edge"])
            & np.isfinite(atr)
            & (atr > 0)
            & (entry > 0)
            & (stop > 0)
            & (target > 0)
            & (param["stop_atr"] > 0)
        )
    if not keep.any():
        return empty_frame(PLAN_SCHEMA)
    idx = np.flatnonzero(keep)
    ev = ev.iloc[idx].reset_index(drop=True)
    direction, edge, entry, atr, sd, td, stop, target, scale = (
        a[idx] for a in (direction, edge, entry, atr, sd, td, stop, target, scale)
    )
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
    confidence = (
        0.35 * aligned * 2 * edge
        + 0.25 * side_rate
        + 0.15 * (aligned & confirm)
        + 0.10 * agree
        + 0.15 * (1.0 - width)
    )
    confidence = np.clip(np.round(confidence, 2), 0, 1)
    rr = np.clip(np.round(td / sd, 2), 0.01, 10.0)
    raw_size = param["risk_pct"] / (sd / entry)
    size = np.clip(np.round(raw_size, 2), 0.01, 100.0)
    n = len(ev)
    side = np.where(direction > 0, "long", "short")
    z60 = trend_z(f["sum60"], f["vol60"], f["n60"])

    source_name = {"momentum": "mx_evidence", "reversal": "event_bar_return", "divergence": "htf_1h_ret"}
    source_value = {
        "momentum": e,
        "reversal": f["bar_ret"],
        "divergence": ev["htf_1h_ret"].to_numpy(dtype="float64"),
    }
    entry_conditions: list[Any] = []
    micro: list[Any] = []
    regime: list[Any] = []
    intel: list[Any] = []
    notes: list[Any] = []
    risk: list[Any] = []
    impact: list[Any] = []
    if text:
        # the JSON and text columns built a column at a time: each input column converted once (its values as
        # a row of ``frame_records`` holds them), each number rounded as ``json_number`` rounds it, each time
        # written as ``iso`` writes it, then one dict per plan put together from the columns
        read = [
            "event_id",
            "anomaly_type",
            "anomaly_score",
            "mx_evidence",
            "mx_confirm",
            "mx_confirm_rate",
            "mx_evidence_boost",
            "ci_low",
            "ci_high",
            "htf_15m_ret",
            "htf_1h_ret",
            "module_id",
            "symbol",
        ]
        col = frame_columns(ev[read])
        evidence_ids = (
            frame_columns(ev[["dsi_evidence_id"]])["dsi_evidence_id"]
            if "dsi_evidence_id" in ev
            else [None] * n
        )
        event_at, plan_at = iso_utc(ev["timestamp"]), iso_utc(ev["plan_ts"])
        exit_at = iso_utc(pd.Series(valid_until).dt.tz_localize("UTC"))
        styles = [str(x) for x in style]
        j4 = {
            c: json_numbers(col[c], 4)
            for c in (
                "anomaly_score",
                "mx_evidence",
                "mx_confirm_rate",
                "mx_evidence_boost",
                "ci_low",
                "ci_high",
            )
        }
        j8 = {c: json_numbers(col[c], 8) for c in ("htf_15m_ret", "htf_1h_ret")}
        edge4, min_edge4 = json_numbers(edge, 4), json_numbers(param["min_edge"], 4)
        source8 = {st: json_numbers(v, 8) for st, v in source_value.items()}
        returns_used = [int(x) for x in f["n60"].tolist()]
        trailing = [json_number(np.expm1(x), 8) for x in f["sum60"]]
        vol8, z4 = json_numbers(f["vol60"], 8), json_numbers(z60, 4)
        labels = [regime_label(z, v) for z, v in zip(z60.tolist(), f["vol60"].tolist(), strict=True)]
        aligned_l, sides = aligned.tolist(), side.tolist()
        stop_atr, target_atr = param["stop_atr"].tolist(), (td / atr / scale).tolist()
        atr8, scale6, sd8, td8 = (json_numbers(a, k) for a, k in ((atr, 8), (scale, 6), (sd, 8), (td, 8)))
        stop_pct6 = json_numbers(sd / entry * 100, 6)
        risk4, requested4 = json_numbers(param["risk_pct"], 4), json_numbers(raw_size, 4)
        at_risk6, size2 = json_numbers(size * sd / entry, 6), json_numbers(size, 2)
        names = {m: (str(r.name), str(getattr(r, "module_version", ""))) for m, r in modules.items()}
        for i in range(n):
            st, mid, symbol, anomaly_type = (
                styles[i],
                col["module_id"][i],
                col["symbol"][i],
                col["anomaly_type"][i],
            )
            dsi_evidence_id = evidence_ids[i]
            entry_conditions.append(
                {
                    "trigger": "market order at the open of the first bar at or after the plan timestamp",
                    "event_id": str(col["event_id"][i]),
                    "event_timestamp": event_at[i],
                    "anomaly_type": str(anomaly_type),
                    "anomaly_score": j4["anomaly_score"][i],
                    "style": st,
                    "edge": edge4[i],
                    "min_edge": min_edge4[i],
                    "direction_source": source_name[st],
                    "direction_source_value": source8[st][i],
                }
            )
            micro.append(
                {
                    "dsi_evidence_id": None if pd.isna(dsi_evidence_id) else str(dsi_evidence_id),
                    "mx_evidence": j4["mx_evidence"][i],
                    "mx_confirm": bool(col["mx_confirm"][i]),
                    "mx_confirm_rate": j4["mx_confirm_rate"][i],
                    "mx_evidence_boost": j4["mx_evidence_boost"][i],
                    "confidence_interval": {"low": j4["ci_low"][i], "high": j4["ci_high"][i]},
                    "evidence_on_plan_side": bool(aligned_l[i]),
                }
            )
            regime.append(
                {
                    "window_bars": REGIME_WINDOW,
                    "returns_used": returns_used[i],
                    "trailing_return": trailing[i],
                    "volatility": vol8[i],
                    "z": z4[i],
                    "regime": labels[i],
                    "htf_15m_ret": j8["htf_15m_ret"][i],
                    "htf_1h_ret": j8["htf_1h_ret"][i],
                }
            )
            name, version = names[mid]
            intel.append({"module_name": name, "module_version": version, "genome": genomes[i]})
            notes.append(
                f"{name} {sides[i]} {symbol} on {anomaly_type}: enter at the next open after "
                f"{plan_at[i]}, stop {stop_atr[i]:g} ATR, target "
                f"{target_atr[i]:g} ATR (x sqrt({horizon[i][0]}) for the horizon), exit by {exit_at[i]}"
            )
            risk.append(
                {
                    "atr": atr8[i],
                    "atr_window": ATR_WINDOW,
                    "horizon_scale": scale6[i],
                    "stop_distance": sd8[i],
                    "stop_distance_pct": stop_pct6[i],
                    "target_distance": td8[i],
                    "risk_pct": risk4[i],
                    "requested_position_pct": requested4[i],
                    "capital_at_risk_pct": at_risk6[i],
                }
            )
            impact.append({"position_pct": size2[i], "side": str(sides[i]), "symbol": str(symbol)})

    if not text:
        entry_conditions = micro = regime = intel = notes = risk = impact = [None] * n
    plans = pd.DataFrame(
        {
            "plan_id": ev["plan_id"],
            "module_id": ev["module_id"],
            "symbol": ev["symbol"],
            "timestamp": ev["plan_ts"],
            "signal_strength": signal,
            "direction": side,
            "entry_conditions": entry_conditions,
            "entry_price": entry,
            "position_size": size,
            "stop_loss": stop,
            "take_profit": target,
            "time_horizon": [h for _, h in horizon],
            "risk_reward_ratio": rr,
            "confidence_score": confidence,
            "microstructure_evidence": micro,
            "regime_context": regime,
            "module_intelligence": intel,
            "execution_notes": notes,
            "valid_until": valid_until,
            "validation_status": "pending",
            "risk_assessment": risk,
            "portfolio_impact": impact,
            "event_id": ev["event_id"],
            "dsi_evidence_id": ev.get("dsi_evidence_id", None),
        }
    )
    return conform(plans, PLAN_SCHEMA)
