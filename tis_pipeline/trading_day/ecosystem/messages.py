"""The day's ``module_messages``: what each module sends, and the bus policy its receivers follow. Pure.

The day flows through the bus (``bus/inprocess.py``, in data time; ``day.run_day`` wires the stages):

* ``trading_plan`` alpha -> the acting decision maker, per plan, at the plan's timestamp; ``ttl_seconds`` =
  seconds to ``valid_until`` (a plan not decided by then is worthless). Only a plan whose message was
  delivered is decided.
* ``trading_plan`` decision maker -> the acting trader, per validated (approved or modified) plan: the
  decision, sent when the decision maker handled the plan's message (``message_data['decision']``); ttl =
  seconds left to ``valid_until`` (at least 1). Only a plan whose decision reached the trader is executed.
* ``execution_feedback`` trader -> the plan's author, per executed/partial plan, at its exit time
  (``performance_metrics['exit_time']``, else valid_until, clipped into [plan timestamp, day_end]); ttl 3600.
* ``intelligence_broadcast`` per live module at day_end, receiver NULL, ttl 86400, priority 3; and the same
  report *private* to its lineage: one message to each of its ancestors and descendants (through
  ``parent_modules``, whatever their status: a module knows its family, not who of it is still alive), ttl
  3600, priority 3, ``message_data['scope'] = 'private'``. To a deprecated or failed relative the bus retries
  (day end, +20 s, +60 s: the last after midnight, so it is carried) and fails it; carried over a gap in the
  data longer than its hour, it expires.
* ``replication_signal`` parent -> child per replication at day_end, ttl 86400, priority 2: the child is born
  at the next midnight, so the bus retries and carries the signal into the next day, where the child takes it.

Every message starts 'pending' with no attempt and carries ``message_data['sender_latency_ms']`` (the
sender's ``communication_latency_ms``); the bus sets status, delivery_attempts, last_delivery_attempt and
error_message. priority from the plan's signal strength s: 1 if s >= 0.70, 2 if s >= 0.40, else 3.
``message_id = uuid5("message|{type}|{key}")``: key = plan_id (plan), ``decision|{plan_id}``, plan_id
(feedback), ``{module_id}|{YYYY-MM-DD}`` (broadcast), replication_id (signal), ``carried|{id}|{day}``.

Receivers (``bus_policy``): a module is a live receiver in a window when it is live and born before the
window ends; capacity per minute by type (``CAPACITY_PER_MINUTE``); 3 attempts, backoff 20 s.

A message still pending at the end of its day is *carried* (``carry_messages``): its row stays 'pending' (what
was true at the end of that day) and the next day re-offers it as a new row stamped at the day's start, with
the ttl that is left (0 when it ran out before the day, after a gap in the data: the bus expires it at
once), its attempts so far and ``message_data['carried_from']`` = the original message_id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from tis_pipeline.trading_day.bus.inprocess import LATENCY_KEY, BusPolicy, Receiver, deliver
from tis_pipeline.trading_day.ecosystem.common import (
    MESSAGE_COLUMNS,
    as_utc,
    columns_frame,
    day_end_stamp,
    day_start,
    hundredths,
    iso_day,
    plain,
    plain_values,
    population_records,
    rows_frame,
)
from tis_pipeline.trading_day.plans.common import iso_utc
from tis_pipeline.trading_day.population import (
    ALPHA,
    DECISION,
    TRADER,
    acting_module,
    ecosystem_uuid,
    frame_columns,
    frame_records,
    is_live_record,
    is_missing,
    specialty,
)

CAPACITY_PER_MINUTE: Mapping[str, int] = {ALPHA: 30, DECISION: 12, TRADER: 12}
MAX_ATTEMPTS, BACKOFF_SECONDS = 3, 20
PLAN_KEYS = (
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
FEEDBACK_KEYS = (
    "plan_id",
    "symbol",
    "execution_status",
    "executed_price",
    "executed_quantity",
    "execution_cost",
    "slippage",
    "pnl",
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


def bus_policy(population: pd.DataFrame, day: pd.Timestamp) -> BusPolicy:
    """The receivers of the window ``[day, day + 1 day)``: live and born before it ends."""
    end = day_start(day) + pd.Timedelta(days=1)
    receivers = {}
    for r in population_records(population):
        born = as_utc(pd.Timestamp(r["created_at"]))
        if born >= end:
            state = f"not born until {born.isoformat()}"
        else:
            state = f"status {r['status']}, lifecycle {r['lifecycle_stage']}"
        receivers[str(r["module_id"])] = Receiver(
            live=is_live_record(r) and born < end,
            capacity_per_minute=CAPACITY_PER_MINUTE.get(str(r["module_type"])),
            state=state,
        )
    return BusPolicy(max_attempts=MAX_ATTEMPTS, backoff_seconds=BACKOFF_SECONDS, receivers=receivers)


def _latencies(population: pd.DataFrame) -> dict[str, int]:
    return {
        str(r["module_id"]): int(r.get("communication_latency_ms") or 0)
        for r in population_records(population)
    }


def _message(
    mtype: str,
    key: str,
    sender: str | None,
    receiver: str | None,
    ts: pd.Timestamp,
    data: Mapping[str, Any],
    priority: int,
    ttl: int,
    latency: Mapping[str, int],
) -> dict[str, Any]:
    return {
        "message_id": ecosystem_uuid("message", mtype, key),
        "sender_module_id": sender,
        "receiver_module_id": receiver,
        "timestamp": ts,
        "message_type": mtype,
        # made plain once, by ``_frame`` (``rows_frame`` makes every JSON column plain)
        "message_data": {**data, LATENCY_KEY: latency.get(str(sender), 0)},
        "priority": priority,
        "ttl_seconds": ttl,
        "status": "pending",
        "delivery_attempts": 0,
        "last_delivery_attempt": None,
        "error_message": None,
    }


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = rows_frame(rows, "module_messages", MESSAGE_COLUMNS)
    return frame.sort_values(["timestamp", "message_type", "message_id"], kind="stable").reset_index(
        drop=True
    )


def _frame_of(
    mtype: str,
    keys: Sequence[str],
    senders: Sequence[str],
    receiver: str | None,
    ts: pd.Series,
    data: Sequence[Mapping[str, Any]],
    priorities: Sequence[int],
    ttls: Sequence[int],
) -> pd.DataFrame:
    """``_frame`` of the pending messages ``_message`` makes, a column at a time (one message per key;
    ``message_data`` plain already, its latency included)."""
    n = len(keys)
    columns = {
        "message_id": [ecosystem_uuid("message", mtype, key) for key in keys],
        "sender_module_id": senders,
        "receiver_module_id": [receiver] * n,
        "timestamp": ts,
        "message_type": [mtype] * n,
        "message_data": data,
        "priority": priorities,
        "ttl_seconds": ttls,
        "status": ["pending"] * n,
        "delivery_attempts": [0] * n,
    }
    frame = columns_frame(columns, "module_messages", MESSAGE_COLUMNS, plain_json=True)
    return frame.sort_values(["timestamp", "message_type", "message_id"], kind="stable").reset_index(
        drop=True
    )


def _records(plans: pd.DataFrame | None, columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The rows as dicts: of ``columns`` only when given (those the caller reads; a plan's dozen JSON columns
    are not converted for nothing), every column else."""
    if plans is None or plans.empty:
        return []
    if columns is not None:
        plans = plans[[c for c in dict.fromkeys(columns) if c in plans.columns]]
    return frame_records(plans)


def _utc_times(values: pd.Series) -> pd.Series:
    """``as_utc(pd.Timestamp(x))`` of each value, as a Series of UTC times (NaT where missing)."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC")
    if values.dtype.kind == "M":
        return values.dt.tz_localize("UTC")
    return pd.Series(
        [pd.NaT if is_missing(v) else as_utc(pd.Timestamp(v)) for v in values], dtype="object"
    ).pipe(pd.to_datetime, utc=True)


def _ttl(left: pd.Timedelta) -> int:
    """A message's ttl: the whole seconds ``left`` (``int`` of ``total_seconds``), at least 1."""
    return max(1, int(left.total_seconds()))


def _plan_columns(
    plans: pd.DataFrame, also: Sequence[str]
) -> tuple[dict[str, list[Any]], dict[str, list[Any]], pd.Series | None]:
    """(``frame_columns`` of the plans' ``PLAN_KEYS`` and ``also`` columns that they have, the ``PLAN_KEYS``
    values of each plan's message data as ``plain`` makes them (None for a key the plans lack), each plan's
    valid_until as a UTC time or None without the column). The valid_until text is ``iso`` of each time, as
    ``plain`` writes a time."""
    n = len(plans)
    until = plans.get("valid_until")
    timed = until is not None and until.dtype.kind == "M"
    read = [
        c for c in dict.fromkeys((*PLAN_KEYS, *also)) if c in plans and not (timed and c == "valid_until")
    ]
    cols = frame_columns(plans[read])
    data = {k: plain_values(cols[k]) if k in cols else [None] * n for k in PLAN_KEYS}
    if until is not None:
        if timed:
            data["valid_until"] = iso_utc(until)
        until = _utc_times(until.reset_index(drop=True))
    return cols, data, until


def plan_messages(day: pd.Timestamp, plans: pd.DataFrame, population: pd.DataFrame) -> pd.DataFrame:
    """A ``trading_plan`` message per plan, its author -> the acting decision maker (NULL receiver when there
    is none: the bus fails it)."""
    desk = acting_module(population, DECISION, last_entry_only=True)
    receiver = None if desk is None else str(desk["module_id"])
    if plans is None or plans.empty:
        return _frame([])
    latency = _latencies(population)
    # a column at a time: each plan's message as ``_message`` makes it, its ``message_data`` plain already
    # (what ``rows_frame`` would make of it), the times and ttl from the time columns
    n = len(plans)
    cols, data_cols, until = _plan_columns(plans, ("module_id", "signal_strength"))
    if until is None:
        until = pd.Series([pd.NaT] * n, dtype="datetime64[ns, UTC]")
    ts = _utc_times(plans["timestamp"].reset_index(drop=True))
    ttl = [3600 if missing else _ttl(d) for d, missing in zip(until - ts, until.isna().tolist(), strict=True)]
    conditions = plans["entry_conditions"].tolist() if "entry_conditions" in plans else [None] * n
    types = plain_values(c.get("anomaly_type") if isinstance(c, Mapping) else None for c in conditions)
    sender = [str(m) for m in cols["module_id"]]
    ms = {m: latency.get(m, 0) for m in set(sender)}
    keys = (*PLAN_KEYS, "anomaly_type", LATENCY_KEY)
    data = [
        dict(zip(keys, row, strict=True))
        for row in zip(*data_cols.values(), types, [ms[m] for m in sender], strict=True)
    ]
    frame = _frame_of(
        "trading_plan",
        [str(p) for p in cols["plan_id"]],
        sender,
        receiver,
        ts,
        data,
        [_priority(x) for x in cols.get("signal_strength", [None] * n)],
        ttl,
    )
    if receiver is None and len(frame):  # not a broadcast: the plan has nobody to go to
        frame = frame.assign(status="failed", error_message="no decision maker is live")
    return frame


def decision_messages(
    day: pd.Timestamp,
    plans: pd.DataFrame,
    approvals: pd.DataFrame,
    handled_at: Mapping[str, pd.Timestamp],
    population: pd.DataFrame,
) -> pd.DataFrame:
    """A ``trading_plan`` message per validated plan, the decision maker -> the acting trader, sent when the
    decision maker handled the plan (``handled_at[plan_id]``)."""
    trader = acting_module(population, TRADER, last_entry_only=True)
    latency = _latencies(population)
    decided = {
        str(a["plan_id"]): a
        for a in _records(
            approvals, ("plan_id", "approval_status", "approval_id", "decision_maker_module_id")
        )
    }
    if plans is None or plans.empty:
        return _frame([])
    # a column at a time, as ``plan_messages``: the validated plans the decision maker handled
    cols, data_cols, until = _plan_columns(plans, ("validation_status", "signal_strength"))
    n = len(plans)
    status = cols.get("validation_status", [None] * n)
    pids = [str(p) for p in cols["plan_id"]]
    sent = [i for i in range(n) if status[i] == "validated" and pids[i] in decided and pids[i] in handled_at]
    if not sent:
        return _frame([])
    if until is None:
        raise KeyError("valid_until")
    ts = pd.Series([as_utc(pd.Timestamp(handled_at[pids[i]])) for i in sent], dtype="object")
    ts = pd.to_datetime(ts, utc=True)
    left = until.iloc[sent].reset_index(drop=True) - ts
    keys = (*PLAN_KEYS, "decision", "approval_id", LATENCY_KEY)
    senders = [str(decided[pids[i]]["decision_maker_module_id"]) for i in sent]
    data = [
        dict(
            zip(
                keys,
                (
                    *(data_cols[k][i] for k in PLAN_KEYS),
                    plain(decided[pids[i]].get("approval_status")),
                    plain(decided[pids[i]].get("approval_id")),
                    latency.get(sender, 0),
                ),
                strict=True,
            )
        )
        for i, sender in zip(sent, senders, strict=True)
    ]
    signal = cols.get("signal_strength", [None] * n)
    return _frame_of(
        "trading_plan",
        [f"decision|{pids[i]}" for i in sent],
        senders,
        None if trader is None else str(trader["module_id"]),
        ts,
        data,
        [_priority(signal[i]) for i in sent],
        [_ttl(d) for d in left],
    )


def feedback_messages(day: pd.Timestamp, plans: pd.DataFrame, population: pd.DataFrame) -> pd.DataFrame:
    """An ``execution_feedback`` message per executed or partial plan, the acting trader -> the author."""
    day_end = day_end_stamp(day_start(day))
    trader = acting_module(population, TRADER, last_entry_only=True)
    latency = _latencies(population)
    rows = []
    read = (
        *FEEDBACK_KEYS,
        "timestamp",
        "valid_until",
        "performance_metrics",
        "module_id",
        "signal_strength",
    )
    if plans is not None and "execution_status" in plans:
        # only the executed and partial plans get feedback: the others' rows are not built
        plans = plans[plans["execution_status"].isin(["executed", "partial"]).to_numpy()]
    for p in _records(plans, read):
        if p.get("execution_status") not in ("executed", "partial"):
            continue
        ts = as_utc(pd.Timestamp(p["timestamp"]))
        exit_ts = _exit_time(p)
        fb_ts = ts if exit_ts is None else min(max(as_utc(exit_ts), ts), day_end)
        data = {k: p.get(k) for k in FEEDBACK_KEYS}
        if isinstance(p.get("performance_metrics"), Mapping):
            data["performance_metrics"] = p["performance_metrics"]
        rows.append(
            _message(
                "execution_feedback",
                str(p["plan_id"]),
                None if trader is None else str(trader["module_id"]),
                str(p["module_id"]),
                fb_ts,
                data,
                _priority(p.get("signal_strength")),
                3600,
                latency,
            )
        )
    return _frame(rows)


def _lineages(population: pd.DataFrame) -> dict[str, list[str]]:
    """module_id -> its ancestors and descendants through ``parent_modules`` (every module, any status)."""
    parents = {
        str(r["module_id"]): [str(p) for p in (r["parent_modules"] or [])]
        for r in population_records(population)
    }
    children: dict[str, list[str]] = {}
    for child, ps in parents.items():
        for p in ps:
            children.setdefault(p, []).append(child)
    out = {}
    for me in parents:
        found: set[str] = set()
        for links in (parents, children):
            todo = list(links.get(me, []))
            while todo:
                m = todo.pop()
                if m not in found and m != me:
                    found.add(m)
                    todo += links.get(m, [])
        out[me] = sorted(found & set(parents))
    return out


def broadcast_messages(day: pd.Timestamp, plans: pd.DataFrame, population: pd.DataFrame) -> pd.DataFrame:
    """One ``intelligence_broadcast`` per live module at day_end (its day in figures) to everyone, and the
    same report private to each member of its lineage."""
    day = day_start(day)
    latency = _latencies(population)
    lineages = _lineages(population)
    by_module: dict[str, list[Mapping[str, Any]]] = {}
    for p in _records(plans, ("module_id", "execution_status", "pnl")):
        by_module.setdefault(str(p["module_id"]), []).append(p)
    rows = []
    for r in population_records(population):
        if not is_live_record(r):
            continue
        mid = str(r["module_id"])
        own = by_module.get(mid, [])
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
        rows.append(
            _message(
                "intelligence_broadcast",
                f"{mid}|{iso_day(day)}",
                mid,
                None,
                day_end_stamp(day),
                data,
                3,
                86_400,
                latency,
            )
        )
        for relative in lineages.get(mid, []):
            rows.append(
                _message(
                    "intelligence_broadcast",
                    f"{mid}|{relative}|{iso_day(day)}",
                    mid,
                    relative,
                    day_end_stamp(day),
                    {**data, "scope": "private"},
                    3,
                    3600,
                    latency,
                )
            )
    return _frame(rows)


def replication_messages(
    day: pd.Timestamp, replications: pd.DataFrame, population: pd.DataFrame
) -> pd.DataFrame:
    """A ``replication_signal`` per replication, parent -> child at day_end: the child's genome, lineage and
    what it inherited."""
    latency = _latencies(population)
    rows = []
    for r in _records(replications):
        data = {
            "replication_id": r["replication_id"],
            "child_module_id": r["child_module_id"],
            "trigger_type": r["trigger_type"],
            "mutation_applied": r.get("mutation_applied"),
            "recombination_applied": r.get("recombination_applied"),
            "inherited_intelligence": r.get("inherited_intelligence"),
        }
        rows.append(
            _message(
                "replication_signal",
                str(r["replication_id"]),
                str(r["parent_module_id"]),
                str(r["child_module_id"]),
                day_end_stamp(day_start(day)),
                data,
                2,
                86_400,
                latency,
            )
        )
    return _frame(rows)


def carry_messages(day: pd.Timestamp, pending: pd.DataFrame) -> pd.DataFrame:
    """The messages left pending by the day before, re-offered at the start of ``day`` (module docstring)."""
    day = day_start(day)
    rows = []
    for m in _records(pending):
        if m.get("status") != "pending":
            continue
        sent = as_utc(pd.Timestamp(m["timestamp"]))
        left = int(m["ttl_seconds"]) - int((day - sent).total_seconds())
        data = dict(m["message_data"]) if isinstance(m.get("message_data"), Mapping) else {}
        rows.append(
            {
                **m,
                "message_id": ecosystem_uuid("message", "carried", m["message_id"], iso_day(day)),
                "timestamp": day,
                "message_data": plain({**data, "carried_from": str(m["message_id"])}),
                "ttl_seconds": max(0, left),  # 0: its time ran out before this day, the bus expires it
                "error_message": None,
            }
        )
    return _frame(rows)


def run_bus(day: pd.Timestamp, messages: pd.DataFrame, policy: BusPolicy) -> pd.DataFrame:
    """``messages`` through the in-process bus over the day (pending ones; the others as they are)."""
    day = day_start(day)
    if messages.empty:
        return messages
    return deliver(messages, day, day + pd.Timedelta(days=1), policy)
