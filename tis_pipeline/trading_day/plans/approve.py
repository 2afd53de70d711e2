"""The acting decision maker approves, modifies or rejects the day's plans
(``approve_plans(day, plans, population) -> (plans, approvals)``). Pure pandas/numpy.

Approval (``approve_plans``)
----------------------------
The decision maker is the active ``decision_maker`` with the best last ``performance_history`` score (no
history ranks last; ties by module_id). In (timestamp, plan_id) order: rejected if confidence <
``min_confidence`` or R:R < ``min_risk_reward``; of the remaining plans of a symbol, the ones ranked beyond
``max_plans_per_symbol`` are rejected; then ``modified`` if position_size > ``max_position_pct`` (cut to it),
else ``approved``. ``decision_confidence``: approved/modified ``0.5 + 0.5 clip(min((c - min_c) / (1 - min_c),
(rr - min_rr) / (10 - min_rr)), 0, 1)`` (margin to the nearest threshold); rejected on a threshold
``0.5 + 0.5 clip(max(shortfall), 0, 1)`` with ``shortfall = (threshold - value) / threshold``; rejected on the
symbol limit 1.0 (a rule, not a judgement). Without an active decision maker plans stay ``pending`` and get no
approval row (execution then cancels them).

"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from tis_pipeline.trading_day.plans.common import (
    APPROVAL_SCHEMA,
    PLAN_SCHEMA,
    conform,
    empty_frame,
    json_number,
    utc_day,
)
from tis_pipeline.trading_day.population import (
    acting_module,
    genome_of,
    plan_uuid,
)


def decide(plans: pd.DataFrame, sizes: np.ndarray, genome: Mapping) -> pd.DataFrame:
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
    shortfall = np.maximum(
        np.where(conf_ok, 0.0, (min_c - conf) / max(min_c, 1e-9)),
        np.where(rr_ok, 0.0, (min_rr - rr) / max(min_rr, 1e-9)),
    )
    confidence = np.where(
        ~passing, 0.5 + 0.5 * np.clip(shortfall, 0, 1), np.where(over, 1.0, 0.5 + 0.5 * np.clip(margin, 0, 1))
    )
    return pd.DataFrame(
        {
            "status": status,
            "final_size": final,
            "conf_ok": conf_ok,
            "rr_ok": rr_ok,
            "over": over,
            "rank": np.where(passing, rank, 0),
            "capped": capped,
            "decision_confidence": np.round(confidence, 2),
        }
    )


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


def approve_plans(
    day: pd.Timestamp, plans: pd.DataFrame, population: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
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
    sizes = plans["position_size"].to_numpy(dtype="float64")
    v = decide(plans, sizes, genome)
    accepted = v["status"].to_numpy() != "rejected"
    held = np.where(accepted, v["final_size"].to_numpy(), 0.0)
    symbol_exposure = pd.Series(held).groupby(plans["symbol"].to_numpy()).cumsum().to_numpy()
    day_exposure = np.cumsum(held)
    controls = {
        "min_confidence": float(genome["min_confidence"]),
        "min_risk_reward": float(genome["min_risk_reward"]),
        "max_position_pct": float(genome["max_position_pct"]),
        "max_plans_per_symbol": int(genome["max_plans_per_symbol"]),
    }

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
                why.append(
                    f"symbol limit: plan {int(v['rank'].iat[i])} of {p.symbol} today exceeds "
                    f"{int(genome['max_plans_per_symbol'])}"
                )
                applied.append("max_plans_per_symbol")
            reasons.append("rejected: " + "; ".join(why))
            mods.append(None)
            alternatives.append([{"action": "approve", "position_size": json_number(min(size, final), 2)}])
        elif status == "modified":
            reasons.append(f"modified: position size {size:.2f}% cut to {final:.2f}%")
            applied.append("max_position_pct")
            mods.append({"position_size": {"from": json_number(size, 2), "to": json_number(final, 2)}})
            alternatives.append([{"action": "approve_as_proposed", "position_size": json_number(size, 2)}])
        else:
            reasons.append(
                f"approved: confidence {conf:.2f}, risk/reward {rr:.2f}, size {size:.2f}% within limits"
            )
            mods.append(None)
            alternatives.append([])
        risks.append(
            {
                "confidence_score": json_number(conf, 2),
                "risk_reward_ratio": json_number(rr, 2),
                "proposed_position_pct": json_number(size, 2),
                "capital_at_risk_pct": json_number(
                    final * abs(p.entry_price - p.stop_loss) / p.entry_price, 6
                ),
            }
        )
        ctrls.append({**controls, "applied": applied})
        impacts.append(
            {
                "position_pct": json_number(held[i], 2),
                "symbol": p.symbol,
                "symbol_exposure_pct": json_number(symbol_exposure[i], 2),
                "day_gross_exposure_pct": json_number(day_exposure[i], 2),
            }
        )
        factors.append(
            {
                "decision_maker": str(desk.get("name")),
                "confidence_ok": bool(v["conf_ok"].iat[i]),
                "risk_reward_ok": bool(v["rr_ok"].iat[i]),
                "symbol_rank": int(v["rank"].iat[i]),
                "size_capped": bool(v["capped"].iat[i]),
            }
        )

    approvals = pd.DataFrame(
        {
            "approval_id": [plan_uuid(pid, "approval") for pid in plans["plan_id"]],
            "plan_id": plans["plan_id"],
            "decision_maker_module_id": str(desk["module_id"]),
            "timestamp": plans["timestamp"],
            "approval_status": v["status"],
            "approval_reason": reasons,
            "modifications": mods,
            "risk_assessment": risks,
            "risk_controls": ctrls,
            "portfolio_impact": impacts,
            "decision_confidence": v["decision_confidence"],
            "decision_factors": factors,
            "alternative_plans": alternatives,
        }
    )
    out = plans.copy()
    out["position_size"] = v["final_size"].to_numpy()
    out["validation_status"] = np.where(accepted, "validated", "failed")
    out["portfolio_impact"] = pd.Series(impacts, dtype=object)
    return conform(out, PLAN_SCHEMA), conform(approvals, APPROVAL_SCHEMA)
