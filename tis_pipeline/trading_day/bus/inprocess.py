"""The module message bus: its delivery rule (shared by both transports) and the in-process transport, which
runs in data time for backfills. Pure: pandas in, pandas out; no Dagster, no SQL, no wall clock.

A message (a ``module_messages`` row) is sent at ``timestamp`` and *arrives* ``sender_latency_ms`` later
(``message_data['sender_latency_ms']``: messages carry their sender's latency). Its *deadline* is
``timestamp + ttl_seconds``. Data time is walked in one-minute *ticks*; in a tick ``[t0, t0 + 1 min)``, per
receiver (``step``):

* **live receiver** (status 'active', stage experimental/active): the pending messages that have arrived
  before the tick's end are taken in priority order (1 first), then arrival, then message_id. Each is handled
  at ``max(arrival, t0)``: past its deadline (or ``ttl_seconds`` 0: no time to live) -> 'expired'; else,
  while the receiver has capacity left in the tick (``capacity_per_minute``; None = unbounded) ->
  'delivered' (``delivery_attempts + 1``, ``last_delivery_attempt`` = the handling time); else it waits for
  the next tick. At the tick's end a message
  still waiting whose deadline fell inside the tick -> 'expired'.
* **receiver not live or unknown**: a delivery attempt is made when due: attempt k (1-based) at
  ``arrival + backoff_seconds * (2**(k-1) - 1)`` (arrival, +b, +3b, ...), or at ``t0`` when that fell before
  the window (a carried message). An attempt past the deadline (or with ttl 0) makes
  the message 'expired'; the ``max_attempts``-th failed attempt makes it 'failed'. ``delivery_attempts``,
  ``last_delivery_attempt`` and ``error_message`` say what happened.
* **broadcast** (receiver NULL): delivered at its arrival (one attempt).

Ticks: the first is the minute of the earliest due time (arrival, or next attempt), but not before the window
start; the next is ``max(t0 + 1 min, minute of the earliest due time of what is still pending)``. A message
still pending when the window ends stays 'pending' (``delivery_attempts`` so far) and is carried to the next
window. The durable transport (``bus/durable.py``) applies the same ``step`` on the same ticks, so the same
messages give the same rows on both.
"""

from __future__ import annotations

import functools
import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from tis_pipeline.trading_day.population import frame_records

TICK = pd.Timedelta(minutes=1)
LATENCY_KEY = "sender_latency_ms"


@dataclass(frozen=True)
class Receiver:
    """What the bus knows of a receiver: whether it takes messages, how many per minute, and why not."""

    live: bool
    capacity_per_minute: int | None = None
    state: str = ""  # e.g. "status inactive, lifecycle deprecated": said in error messages


@dataclass(frozen=True)
class BusPolicy:
    max_attempts: int = 3
    backoff_seconds: int = 20
    receivers: Mapping[str, Receiver] = field(default_factory=dict)


# where ``deliver`` keeps each row's arrival: it never changes, and a day's walk asks for it on every tick
_ARRIVAL = "_arrival"


def arrival(msg: Mapping[str, Any]) -> pd.Timestamp:
    cached = msg.get(_ARRIVAL)
    if cached is not None:
        return cached
    data = msg.get("message_data")
    latency = int(data.get(LATENCY_KEY) or 0) if isinstance(data, Mapping) else 0
    sent = msg["timestamp"]
    return (sent if type(sent) is pd.Timestamp else pd.Timestamp(sent)) + _milliseconds(latency)


@functools.lru_cache(maxsize=256)  # a day's senders have a handful of latencies
def _milliseconds(latency: int) -> pd.Timedelta:
    return pd.Timedelta(milliseconds=latency)


@functools.lru_cache(maxsize=4096)  # a day's ttls are whole minutes to a plan's end mostly: a few hundred
def _seconds(ttl: int) -> pd.Timedelta:
    return pd.Timedelta(seconds=ttl)


def deadline(msg: Mapping[str, Any]) -> pd.Timestamp:
    sent = msg["timestamp"]
    return (sent if type(sent) is pd.Timestamp else pd.Timestamp(sent)) + _seconds(int(msg["ttl_seconds"]))


def due(msg: Mapping[str, Any], policy: BusPolicy) -> pd.Timestamp:
    """When the message is next looked at: its arrival, or after a failed attempt, the next attempt."""
    attempts = int(msg.get("delivery_attempts") or 0)
    if attempts == 0 or _receiver(msg, policy).live:
        return arrival(msg)
    return pd.Timestamp(msg["last_delivery_attempt"]) + pd.Timedelta(
        seconds=policy.backoff_seconds * 2 ** (attempts - 1)
    )


def _receiver(msg: Mapping[str, Any], policy: BusPolicy) -> Receiver:
    rid = msg.get("receiver_module_id")
    if rid is None:
        return Receiver(live=True)
    return policy.receivers.get(str(rid), Receiver(live=False, state="not a known module"))


def step(
    queue: Sequence[dict[str, Any]],
    receiver_id: str | None,
    t0: pd.Timestamp,
    used: int,
    policy: BusPolicy,
) -> list[dict[str, Any]]:
    """One tick ``[t0, t0 + 1 min)`` for one receiver's pending messages (the module docstring's rule).

    ``used``: messages the receiver already handled in this tick. Returns the messages whose row changed
    (copies, with status / delivery_attempts / last_delivery_attempt / error_message set).
    """
    t1 = t0 + TICK
    changed: dict[str, dict[str, Any]] = {}
    if receiver_id is None:
        for msg in queue:
            at = arrival(msg)
            if at < t1:
                changed[msg["message_id"]] = {
                    **msg,
                    "status": "delivered",
                    "delivery_attempts": int(msg.get("delivery_attempts") or 0) + 1,
                    "last_delivery_attempt": at,
                    "error_message": None,
                }
        return list(changed.values())
    receiver = policy.receivers.get(receiver_id, Receiver(live=False, state="not a known module"))
    if receiver.live:
        eligible = sorted(
            (m for m in queue if arrival(m) < t1),
            key=lambda m: (int(m["priority"]), arrival(m), str(m["message_id"])),
        )
        cap = receiver.capacity_per_minute
        for msg in eligible:
            at = max(arrival(msg), t0)
            if _too_late(msg, at):
                changed[msg["message_id"]] = _expired(
                    msg, "its deadline passed before it reached the receiver"
                )
            elif cap is None or used < cap:
                used += 1
                changed[msg["message_id"]] = {
                    **msg,
                    "status": "delivered",
                    "delivery_attempts": int(msg.get("delivery_attempts") or 0) + 1,
                    "last_delivery_attempt": at,
                    "error_message": None,
                }
            elif deadline(msg) < t1:
                changed[msg["message_id"]] = _expired(
                    msg,
                    f"the receiver's capacity of {cap} messages a minute went to higher-priority messages",
                )
        return list(changed.values())
    for msg in queue:
        cur = dict(msg)
        while cur["status"] == "pending" and due(cur, policy) < t1:
            at = max(due(cur, policy), t0)  # a retry due while no window ran (a gap) is made when one does
            attempts = int(cur.get("delivery_attempts") or 0)
            if _too_late(cur, at):
                cur = _expired(
                    cur, f"receiver {receiver_id} not reachable ({receiver.state}) until its deadline"
                )
                break
            cur["delivery_attempts"] = attempts + 1
            cur["last_delivery_attempt"] = at
            cur["error_message"] = f"receiver {receiver_id} is not active ({receiver.state})"
            if attempts + 1 >= policy.max_attempts:
                cur["status"] = "failed"
                cur["error_message"] += f"; gave up after {attempts + 1} attempts"
        if cur != msg:
            changed[cur["message_id"]] = cur
    return list(changed.values())


def _too_late(msg: Mapping[str, Any], at: pd.Timestamp) -> bool:
    """Handled at ``at``, past its deadline, or with no time to live at all (ttl 0: carried after its time ran
    out)."""
    return at > deadline(msg) or int(msg["ttl_seconds"]) <= 0


def _expired(msg: Mapping[str, Any], why: str) -> dict[str, Any]:
    return {
        **msg,
        "status": "expired",
        "error_message": f"not handled within ttl_seconds={int(msg['ttl_seconds'])}: {why}",
    }


def first_tick(min_due: pd.Timestamp, start: pd.Timestamp) -> pd.Timestamp:
    return max(start, min_due.floor("min"))


def next_tick(t0: pd.Timestamp, min_due: pd.Timestamp) -> pd.Timestamp:
    return max(t0 + TICK, min_due.floor("min"))


def deliver(
    messages: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp, policy: BusPolicy
) -> pd.DataFrame:
    """The in-process transport: ``messages`` (module_messages rows; new ones 'pending' with no attempt, and
    those carried from an earlier window) walked through the window ``[start, end)`` in data time.

    Returns the same rows (same order) with status, delivery_attempts, last_delivery_attempt and error_message
    as the bus left them at ``end``: delivered, failed, expired or still pending (carried).
    """
    if messages.empty:
        return messages.copy()
    rows = {str(r["message_id"]): r for r in frame_records(messages)}  # new dicts: ours to change
    for r in rows.values():
        r[_ARRIVAL] = arrival(r)  # copies made by ``step`` carry it along; the output drops it
    pending = {mid for mid, r in rows.items() if r["status"] == "pending"}
    if not pending:
        return messages.copy()
    # a row's due time changes only when ``step`` replaces the row: kept here, not recomputed every tick, and
    # the pending rows kept in a heap by due time, so a tick looks only at the rows due in it (a day's walk
    # has ~1,440 ticks and thousands of pending rows: a scan of every pending row per tick cost seconds)
    due_at = {mid: due(rows[mid], policy) for mid in pending}
    heap = [(at, mid) for mid, at in due_at.items()]
    heapq.heapify(heap)
    t0 = first_tick(heap[0][0], start)
    while pending and t0 < end:
        t1 = t0 + TICK
        due_now: set[str] = set()
        while heap and heap[0][0] < t1:
            at, mid = heapq.heappop(heap)
            if mid in pending and due_at[mid] == at:  # else a stale entry: the row moved on
                due_now.add(mid)
        queues: dict[str | None, list[dict[str, Any]]] = {}
        for mid in sorted(due_now):  # message_id order within each receiver's queue, as every tick takes it
            r = rows[mid]
            rid = r.get("receiver_module_id")
            queues.setdefault(None if rid is None else str(rid), []).append(r)
        for rid in sorted(queues, key=lambda k: "" if k is None else k):
            # only due messages can change in a tick: the receiver's queue of them is enough
            for new in step(queues[rid], rid, t0, 0, policy):
                mid = str(new["message_id"])
                rows[mid] = new
                if new["status"] != "pending":
                    pending.discard(mid)
                    due_at.pop(mid, None)
                else:
                    due_at[mid] = due(new, policy)
        for mid in sorted(due_now & pending):  # still pending: back in the heap at its (new) due time
            heapq.heappush(heap, (due_at[mid], mid))
        if not pending:
            break
        while heap[0][1] not in pending or due_at[heap[0][1]] != heap[0][0]:
            heapq.heappop(heap)
        t0 = next_tick(t0, heap[0][0])
    out = pd.DataFrame([rows[str(m)] for m in messages["message_id"]], columns=messages.columns)
    out["last_delivery_attempt"] = pd.to_datetime(out["last_delivery_attempt"], utc=True)
    # the input's column kinds (object text, int64, UTC times), whatever pandas would infer
    return out.astype(messages.dtypes.to_dict()).set_axis(messages.index)
