"""The day's plans through the bus: the one wiring of the trading day's messages (``day.run_day`` calls it;
the tests call it with their hand-made decisions and executions). Pure: no Dagster, no SQL.

``route_plans``: the plans travel to the acting decision maker as ``trading_plan`` messages (with the messages
carried from the day before); only those delivered are decided (``decide``); the decisions travel to the
acting trader; only those delivered are executed (``execute``); the others keep their plan row with why in
``execution_notes`` (``_held``: never decided -> validation 'pending', execution 'cancelled'; decided but not
delivered -> execution 'failed'). ``closing_messages``: the day's ``execution_feedback`` and day-end reports
through the bus, once the plans are executed and scored.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from tis_pipeline.trading_day.bus.inprocess import BusPolicy
from tis_pipeline.trading_day.ecosystem.messages import (
    broadcast_messages,
    decision_messages,
    feedback_messages,
    plan_messages,
    run_bus,
)

# a stage of the day the bus gates: the plans it may act on -> its output
Decide = Callable[[pd.DataFrame], tuple[pd.DataFrame, pd.DataFrame]]
Execute = Callable[[pd.DataFrame], pd.DataFrame]


def route_plans(
    day: pd.Timestamp,
    plans: pd.DataFrame,
    population: pd.DataFrame,
    policy: BusPolicy,
    carried: pd.DataFrame,
    decide: Decide,
    execute: Execute,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(plans, approvals, messages): the plans decided and executed as far as the bus let them (module
    docstring); ``decide(plans) -> (plans, approvals)`` and ``execute(plans) -> plans`` are the decision
    maker's and the trader's steps."""
    sent = run_bus(day, concat_messages(plan_messages(day, plans, population), carried), policy)
    plans, undecided = _split(plans, sent, "trading_plan message to the decision maker")
    plans, approvals = decide(plans)
    handled = _handled_at(sent)
    decisions = run_bus(day, decision_messages(day, plans, approvals, handled, population), policy)
    plans, unexecuted = _split(plans, decisions, "decision message to the trader", only_validated=True)
    plans = execute(plans)
    return _held(plans, undecided, unexecuted), approvals, concat_messages(sent, decisions)


def closing_messages(
    day: pd.Timestamp, plans: pd.DataFrame, population: pd.DataFrame, policy: BusPolicy
) -> pd.DataFrame:
    """The executed plans' feedback to their authors and the day-end reports, through the bus."""
    return run_bus(
        day,
        concat_messages(
            feedback_messages(day, plans, population), broadcast_messages(day, plans, population)
        ),
        policy,
    )


def concat_messages(*frames: pd.DataFrame) -> pd.DataFrame:
    parts = [f for f in frames if len(f)]
    if not parts:
        return frames[0]
    out = pd.concat(parts, ignore_index=True)
    return out.sort_values(["timestamp", "message_type", "message_id"], kind="stable").reset_index(drop=True)


def _plan_of(data: object) -> str | None:
    return str(data["plan_id"]) if isinstance(data, dict) and data.get("plan_id") is not None else None


def _handled_at(messages: pd.DataFrame) -> dict[str, pd.Timestamp]:
    """plan_id -> when its trading_plan message was handled (delivered ones only)."""
    return {
        pid: t
        for pid, t, s, mtype in zip(
            messages["message_data"].map(_plan_of),
            messages["last_delivery_attempt"],
            messages["status"],
            messages["message_type"],
            strict=True,
        )
        if s == "delivered" and mtype == "trading_plan" and pid is not None
    }


def _split(
    plans: pd.DataFrame, messages: pd.DataFrame, what: str, only_validated: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(plans that go on, plans held back with why), by the status of each plan's message in ``messages``;
    ``only_validated``: plans that are not validated go on whatever (they are cancelled anyway)."""
    if plans.empty:
        return plans, plans.assign(held_because=pd.Series(dtype=object))
    outcome = {
        pid: (s, e)
        for pid, s, e, carried in zip(
            messages["message_data"].map(_plan_of),
            messages["status"],
            messages["error_message"],
            messages["message_data"].map(lambda d: isinstance(d, dict) and "carried_from" in d),
            strict=True,
        )
        if pid is not None and not carried
    }
    why = []
    for pid, status in zip(plans["plan_id"], plans["validation_status"], strict=True):
        s, e = outcome.get(str(pid), ("delivered", None))
        if only_validated and status != "validated":
            s = "delivered"
        why.append(None if s == "delivered" else f"{what} {s}" + (f": {e}" if e else ""))
    held = pd.Series(why, index=plans.index, dtype=object).notna()
    return (
        plans[~held].reset_index(drop=True),
        plans[held].assign(held_because=[w for w in why if w is not None]).reset_index(drop=True),
    )


def _held(plans: pd.DataFrame, undecided: pd.DataFrame, unexecuted: pd.DataFrame) -> pd.DataFrame:
    """The executed plans with those the bus held back: never decided (validation 'pending', cancelled) or
    decided but never reached the trader (execution 'failed'); ``execution_notes`` says why."""
    parts = [plans]
    for group, validation, execution in (
        (undecided, "pending", "cancelled"),
        (unexecuted, None, "failed"),
    ):
        if group.empty:
            continue
        notes = [
            f"{n}; not executed: {w}" if isinstance(n, str) and n else f"not executed: {w}"
            for n, w in zip(group["execution_notes"], group["held_because"], strict=True)
        ]
        held = group.drop(columns="held_because").assign(execution_status=execution, execution_notes=notes)
        if validation is not None:
            held = held.assign(validation_status=validation)
        parts.append(held[list(plans.columns)].astype(plans.dtypes.to_dict()))
    if len(parts) == 1:
        return plans
    out = pd.concat([p for p in parts if len(p)], ignore_index=True)  # past the line above, one is non-empty
    return out.sort_values(["timestamp", "plan_id"], kind="stable").reset_index(drop=True)
