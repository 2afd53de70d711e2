"""The day's ``module_messages`` rows (``build_messages``). Pure pandas.

Messages (``build_messages``)
-----------------------------
* ``trading_plan`` per plan: alpha (plan's module) -> the decision maker of its approval row; timestamp = plan
  timestamp; ``ttl_seconds`` = seconds from timestamp to ``valid_until`` (at least 60; 3600 without one).
* ``execution_feedback`` per executed plan: acting trader -> the plan's module; timestamp = exit time
  (``performance_metrics['exit_time']``, else ``valid_until``, else the plan timestamp) clipped into
  [plan timestamp, day_end]; ttl 3600.
* ``intelligence_broadcast`` per live module at day_end, receiver NULL, ttl 86400, priority 3.
* priority from the plan's signal strength s: 1 if s >= 0.70, 2 if s >= 0.40, else 3.
* status ``delivered`` when the receiver is live (or NULL for a broadcast); else ``failed`` with an
  ``error_message`` (receiver inactive / unknown / missing). Every message made one attempt:
  ``delivery_attempts = 1``, ``last_delivery_attempt = timestamp + sender's communication_latency_ms``.
* ``message_id = uuid5("message|{type}|{plan_id}")`` (broadcast:
  ``"message|intelligence_broadcast|{module_id}| {YYYY-MM-DD}"``).

"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from tis_pipeline.trading_day.ecosystem.common import (
    MESSAGE_COLUMNS,
    as_utc,
    day_end_stamp,
    day_start,
    hundredths,
    iso_day,
    plain,
    population_records,
    rows_frame,
)
from tis_pipeline.trading_day.population import (
    TRADER,
    acting_module,
    ecosystem_uuid,
    is_live_record,
    is_missing,
    specialty,
)


def _priority(signal_strength: Any) -> int:
    if is_missing(signal_strength):
        return 3
    s = hundredths(signal_strength)
    return 1 if s >= 70 else 2 if s >= 40 else 3


def _exit_time(plan: Mapping[str, Any]) -> pd.Timestamp | None:
    metrics = plan.get("performance_metrics")
    if isinstance(metrics, Mapping):
        for key in ("exit_time", "exit_timestamp"):
            if not is_missing(metrics.get(key)):
                return pd.Timestamp(metrics[key])
    if not is_missing(plan.get("valid_until")):
        return pd.Timestamp(plan["valid_until"])
    return None


def build_messages(
    day: pd.Timestamp, plans: pd.DataFrame, approvals: pd.DataFrame, population: pd.DataFrame
) -> pd.DataFrame:
    """The day's ``module_messages`` rows (exactly ``MESSAGE_COLUMNS``), sorted by timestamp, type, id.

    Inputs: ``plans`` (trading_plans columns with execution filled: plan_id, module_id, symbol, timestamp,
    signal_strength, direction, confidence_score, entry_price, stop_loss, take_profit, position_size,
    time_horizon, valid_until, execution_status, executed_price, executed_quantity, execution_cost, slippage,
    pnl, performance_metrics, ...), ``approvals`` (plan_id, decision_maker_module_id, approval_status, ...),
    ``population`` at the start of the day.
    """
    day = day_start(day)
    day_end = day_end_stamp(day)
    recs = population_records(population)
    by_id = {str(r["module_id"]): r for r in recs}
    latency = {mid: int(r.get("communication_latency_ms") or 0) for mid, r in by_id.items()}
    decider: dict[str, str] = {}
    if approvals is not None and not approvals.empty:
        for plan_id, dm in zip(approvals["plan_id"], approvals["decision_maker_module_id"], strict=True):
            if not is_missing(dm):
                decider[str(plan_id)] = str(dm)
    trader = acting_module(population, TRADER, last_entry_only=False)
    rows: list[dict[str, Any]] = []

    def add(
        mtype: str,
        key: str,
        sender: str | None,
        receiver: str | None,
        ts: pd.Timestamp,
        data: Mapping[str, Any],
        priority: int,
        ttl: int,
        missing_receiver: str | None = None,
    ) -> None:
        if receiver is None and missing_receiver is not None:
            status, error = "failed", missing_receiver
        elif receiver is None or (receiver in by_id and is_live_record(by_id[receiver])):
            status, error = "delivered", None
        elif receiver in by_id:
            r = by_id[receiver]
            status = "failed"
            error = (
                f"receiver {receiver} is not active (status {r['status']}, lifecycle {r['lifecycle_stage']})"
            )
        else:
            status, error = "failed", f"receiver {receiver} is not a known module"
        rows.append(
            {
                "message_id": ecosystem_uuid("message", mtype, key),
                "sender_module_id": sender,
                "receiver_module_id": receiver,
                "timestamp": ts,
                "message_type": mtype,
                "message_data": plain(data),
                "priority": priority,
                "ttl_seconds": ttl,
                "status": status,
                "delivery_attempts": 1,
                "last_delivery_attempt": ts + pd.Timedelta(milliseconds=latency.get(str(sender), 0)),
                "error_message": error,
            }
        )

    plan_rows = [] if plans is None or plans.empty else plans.to_dict("records")
    for p in plan_rows:
        plan_id, module_id = str(p["plan_id"]), str(p["module_id"])
        ts = as_utc(pd.Timestamp(p["timestamp"]))
        valid_until = None if is_missing(p.get("valid_until")) else as_utc(pd.Timestamp(p["valid_until"]))
        ttl = max(60, int((valid_until - ts).total_seconds())) if valid_until is not None else 3600
        data = {
            k: p.get(k)
            for k in (
                "plan_id",
                "symbol",
                "direction",
                "signal_strength",
                "confidence_score",
                "entry_price",
                "stop_loss",
                "take_profit",
                "position_size",
                "time_horizon",
                "risk_reward_ratio",
                "valid_until",
                "event_id",
            )
        }
        add(
            "trading_plan",
            plan_id,
            module_id,
            decider.get(plan_id),
            ts,
            data,
            _priority(p.get("signal_strength")),
            ttl,
            missing_receiver="no decision maker decided this plan",
        )
        if p.get("execution_status") in ("executed", "partial"):
            exit_ts = _exit_time(p)
            fb_ts = ts if exit_ts is None else min(max(as_utc(exit_ts), ts), day_end)
            feedback = {
                k: p.get(k)
                for k in (
                    "plan_id",
                    "symbol",
                    "execution_status",
                    "executed_price",
                    "executed_quantity",
                    "execution_cost",
                    "slippage",
                    "pnl",
                )
            }
            metrics = p.get("performance_metrics")
            if isinstance(metrics, Mapping):
                feedback["performance_metrics"] = metrics
            add(
                "execution_feedback",
                plan_id,
                None if trader is None else str(trader["module_id"]),
                module_id,
                fb_ts,
                feedback,
                _priority(p.get("signal_strength")),
                3600,
            )

    plans_by_module: dict[str, list[Mapping[str, Any]]] = {}
    for p in plan_rows:
        plans_by_module.setdefault(str(p["module_id"]), []).append(p)
    for r in recs:
        if not is_live_record(r):
            continue
        mid = str(r["module_id"])
        own = plans_by_module.get(mid, [])
        executed = [p for p in own if p.get("execution_status") in ("executed", "partial")]
        pnl = sum(float(p["pnl"]) for p in executed if not is_missing(p.get("pnl")))
        data = {
            "module_id": mid,
            "name": r["name"],
            "module_type": r["module_type"],
            "specialty": specialty(r["module_type"], r["genome"]),
            "day": iso_day(day),
            "plans": len(own),
            "executed": len(executed),
            "pnl": round(pnl, 8),
            "genome": r["genome"],
        }
        add("intelligence_broadcast", f"{mid}|{iso_day(day)}", mid, None, day_end, data, 3, 86_400)

    frame = rows_frame(rows, "module_messages", MESSAGE_COLUMNS)
    return frame.sort_values(["timestamp", "message_type", "message_id"], kind="stable").reset_index(
        drop=True
    )
