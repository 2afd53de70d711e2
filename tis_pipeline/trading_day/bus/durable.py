"""The durable transport of the module message bus: ``module_messages`` in PostgreSQL, for live use.

Same interface and delivery rule as the in-process transport (``bus/inprocess.py``: ``step`` decides every
row's fate); here the rows live in the table:

* ``enqueue`` COPYs new messages as 'pending' (no attempt yet) and ``NOTIFY tis_bus`` (sent at commit);
* consumers claim pending rows with ``FOR UPDATE SKIP LOCKED`` in batches, so competing consumers never
  take the same row, and run the receivers' handler **in the claiming transaction**; the row's outcome
  is written in the same transaction. A consumer that dies mid-batch rolls the whole batch back: the rows
  are pending and unlocked again and another consumer takes them (at-least-once). Handlers are idempotent
  (keyed on ``message_id``), so a batch whose effects reached something outside the database is not
  applied twice;
* an idle consumer waits on ``LISTEN tis_bus`` (psycopg 3) instead of polling.

Two clocks:

* **live** (``consume_batch``): ``now`` is the wall clock; the claims take the messages due by now (arrival,
  or the next retry, in the SQL WHERE) and a receiver with a capacity per minute gets at most that many in
  the wall-clock minute, shared by all consumers;
* **replay** (``replay``): data time, the in-process transport's ticks. The pending set is read once; per
  tick a consumer claims a *receiver's* queue (``pg_try_advisory_xact_lock`` on the receiver, the
  receiver-level ``SKIP LOCKED``) and its rows due in the tick ``FOR UPDATE SKIP LOCKED``; the receiver's
  capacity already used in the tick is counted from the table. So competing consumers give the rows the
  in-process transport gives (a test holds them to it).

SQL is parameterised; the table name is fixed here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tis_pipeline.pg.copy import copy_frame
from tis_pipeline.pg.engine import raw_connection
from tis_pipeline.trading_day.bus.inprocess import (
    TICK,
    BusPolicy,
    due,
    first_tick,
    next_tick,
    step,
)
from tis_pipeline.trading_day.ecosystem.common import MESSAGE_COLUMNS

CHANNEL = "tis_bus"
# a receivers' handler: the claiming connection and the delivered messages (in live use their message_id,
# sender_module_id, receiver_module_id, message_type; in a replay whole rows). It must be idempotent on
# message_id: a batch rolled back after its effects left the database is delivered again
Handler = Callable[[sa.Connection, list[dict[str, Any]]], None]

_SELECT = (
    "SELECT message_id::text AS message_id, sender_module_id::text AS sender_module_id, "
    'receiver_module_id::text AS receiver_module_id, "timestamp", message_type, message_data, priority, '
    "ttl_seconds, status, delivery_attempts, last_delivery_attempt, error_message FROM module_messages"
)
_UPDATE = sa.text(
    "UPDATE module_messages m SET status = u.status, delivery_attempts = u.attempts, "
    "last_delivery_attempt = u.last_attempt, error_message = u.error "
    "FROM unnest(CAST(:ids AS uuid[]), CAST(:statuses AS text[]), CAST(:attempts AS int[]), "
    "CAST(:lasts AS timestamptz[]), CAST(:errors AS text[])) AS u(id, status, attempts, last_attempt, error) "
    "WHERE m.message_id = u.id"
)


def enqueue(conn: sa.Connection, messages: pd.DataFrame) -> int:
    """Write ``messages`` (module_messages rows, 'pending') and wake the consumers when the transaction
    commits."""
    from tis_pipeline.trading_day.store import table_frame

    if messages.empty:
        return 0
    written = copy_frame(raw_connection(conn), "module_messages", table_frame(messages, "module_messages"))
    conn.execute(
        sa.text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": str(written)}
    )
    return written


def read_messages(
    conn: sa.Connection, where: str = "TRUE", params: Mapping[str, Any] | None = None
) -> pd.DataFrame:
    """module_messages rows (``where`` is code, never input) as the logic's frame, sorted by message_id."""
    from tis_pipeline.trading_day.ecosystem.common import rows_frame

    rows = [dict(r._mapping) for r in conn.execute(sa.text(f"{_SELECT} WHERE {where}"), dict(params or {}))]
    frame = rows_frame(rows, "module_messages", MESSAGE_COLUMNS)
    return frame.sort_values("message_id", kind="stable").reset_index(drop=True)


def _write(conn: sa.Connection, changed: Sequence[Mapping[str, Any]]) -> None:
    if not changed:
        return
    conn.execute(
        _UPDATE,
        {
            "ids": [str(m["message_id"]) for m in changed],
            "statuses": [m["status"] for m in changed],
            "attempts": [int(m["delivery_attempts"]) for m in changed],
            "lasts": [
                None
                if m.get("last_delivery_attempt") is None or pd.isna(m["last_delivery_attempt"])
                else pd.Timestamp(m["last_delivery_attempt"]).to_pydatetime()
                for m in changed
            ],
            "errors": [m.get("error_message") for m in changed],
        },
    )


def _settle(
    conn: sa.Connection,
    rows: list[dict[str, Any]],
    t0: pd.Timestamp,
    policy: BusPolicy,
    handler: Handler | None,
    used: Mapping[str | None, int] | None = None,
) -> list[dict[str, Any]]:
    """``step`` per receiver over claimed rows, the handler on the delivered ones, the outcome written."""
    by_receiver: dict[str | None, list[dict[str, Any]]] = {}
    for r in rows:
        by_receiver.setdefault(r["receiver_module_id"], []).append(r)
    changed = []
    for rid, queue in by_receiver.items():
        changed += step(queue, rid, t0, (used or {}).get(rid, 0), policy)
    delivered = [m for m in changed if m["status"] == "delivered"]
    if handler is not None and delivered:
        handler(conn, delivered)
    _write(conn, changed)
    return changed


# ------------------------------------------------------------------------------------------------- live

# when a message reaches its receiver (``inprocess.arrival``) and, after a failed attempt to a receiver
# that is not live, when the next attempt is due (``inprocess.due``): the claims filter on these in SQL
_ARRIVAL = (
    "m.\"timestamp\" + COALESCE((m.message_data->>'sender_latency_ms')::bigint, 0) * INTERVAL '1 millisecond'"
)
_RETRY_DUE = "m.last_delivery_attempt + :backoff * power(2, m.delivery_attempts - 1) * INTERVAL '1 second'"
# past its deadline, or no time to live at all (``inprocess._too_late``)
_TOO_LATE = "(m.\"timestamp\" + m.ttl_seconds * INTERVAL '1 second' < :now OR m.ttl_seconds <= 0)"

# the capped receivers this consumer serves in its transaction (a try-lock each: the receiver-level SKIP
# LOCKED, so two consumers never count the same minute's capacity twice) and the room each has left in the
# minute: its capacity - what was delivered to it since the minute began (committed by whoever held it)
_ROOMS = sa.text(
    """
    SELECT r.rid::text AS rid, r.cap - (
        SELECT count(*) FROM module_messages m
        WHERE m.receiver_module_id = r.rid AND m.status = 'delivered'
          AND m.last_delivery_attempt >= :minute AND m.last_delivery_attempt < :minute_end) AS room
    FROM unnest(CAST(:ids AS uuid[]), CAST(:caps AS int[])) AS r(rid, cap)
    WHERE pg_try_advisory_xact_lock(hashtextextended('tis_bus:' || r.rid::text, 0))
    """
)

_CLAIM_LIVE = sa.text(
    f"""
    WITH open_claim AS (
        SELECT m.message_id FROM module_messages m
        WHERE m.status = 'pending' AND m."timestamp" < :now AND {_ARRIVAL} < :now
          AND (m.receiver_module_id IS NULL OR m.receiver_module_id = ANY(CAST(:open AS uuid[])))
        ORDER BY m.priority, m."timestamp", m.message_id LIMIT :n FOR UPDATE SKIP LOCKED),
    capped_claim AS (
        SELECT c.message_id FROM unnest(CAST(:capped AS uuid[]), CAST(:rooms AS int[])) AS r(rid, room)
        CROSS JOIN LATERAL (
            SELECT m.message_id FROM module_messages m
            WHERE m.status = 'pending' AND m.receiver_module_id = r.rid AND {_ARRIVAL} < :now
            ORDER BY m.priority, {_ARRIVAL}, m.message_id LIMIT r.room FOR UPDATE SKIP LOCKED) c),
    claimed AS (SELECT message_id FROM open_claim UNION ALL SELECT message_id FROM capped_claim)
    UPDATE module_messages m SET
        status = CASE WHEN {_TOO_LATE} THEN 'expired' ELSE 'delivered' END,
        delivery_attempts = m.delivery_attempts + CASE WHEN {_TOO_LATE} THEN 0 ELSE 1 END,
        last_delivery_attempt = CASE WHEN {_TOO_LATE} THEN m.last_delivery_attempt ELSE :now END,
        error_message = CASE WHEN {_TOO_LATE} THEN 'not handled within ttl_seconds=' || m.ttl_seconds
                             || ': its deadline passed before it reached the receiver' END
    FROM claimed s WHERE m.message_id = s.message_id
    RETURNING m.message_id::text AS message_id, m.sender_module_id::text AS sender_module_id,
              m.receiver_module_id::text AS receiver_module_id, m.message_type, m.status
    """
)

_CLAIM_DOWN = sa.text(
    f"""{_SELECT} m WHERE m.status = 'pending' AND m.receiver_module_id IS NOT NULL
    AND m.receiver_module_id <> ALL(CAST(:live AS uuid[]))
    AND CASE WHEN m.delivery_attempts = 0 THEN {_ARRIVAL} ELSE {_RETRY_DUE} END < :now
    ORDER BY m.priority, m."timestamp", m.message_id LIMIT :n FOR UPDATE SKIP LOCKED"""
)


def consume_batch(
    conn: sa.Connection,
    policy: BusPolicy,
    handler: Handler | None = None,
    batch: int = 500,
    now: pd.Timestamp | None = None,
) -> int:
    """Claim up to ``batch`` pending messages *due* by ``now`` (default: the wall clock) with ``FOR UPDATE
    SKIP LOCKED``, hand the delivered ones to ``handler`` and write every outcome, in the caller's
    transaction. Returns the messages whose row changed (0: nothing to do now).

    Due, in the claims' WHERE (the in-process rule, ``inprocess.due``): arrival = ``timestamp +
    sender_latency_ms`` < now; to a receiver that is not live, after k >= 1 failed attempts,
    ``last_delivery_attempt + backoff_seconds * 2**(k-1)`` < now.

    * broadcasts and live receivers without a capacity: delivered now, or 'expired' when ``timestamp +
      ttl_seconds`` < now, in one set-based statement;
    * live receivers with a capacity per minute (``CAPACITY_PER_MINUTE`` by type in the ecosystem): this
      consumer serves those whose try-lock it gets; each gets at most ``capacity - delivered to it since the
      minute of now began`` of its due messages, in priority order (1 first), then arrival, then message_id.
      The others wait for the next minute (expired, without using capacity, once their deadline has passed);
    * receivers not live: ``step`` makes the attempts due before now (retries with backoff, 'failed' after
      ``max_attempts``, 'expired' past the deadline), when the live queues left room in the batch.
    """
    now = pd.Timestamp.now(tz="UTC") if now is None else now
    minute = now.floor("min")
    live = {k: v for k, v in policy.receivers.items() if v.live}
    capped = sorted(k for k, v in live.items() if v.capacity_per_minute is not None)
    rooms: dict[str, int] = {}
    if capped:
        rooms = {
            r.rid: int(r.room)
            for r in conn.execute(
                _ROOMS,
                {
                    "ids": capped,
                    "caps": [live[k].capacity_per_minute for k in capped],
                    "minute": minute.to_pydatetime(),
                    "minute_end": (minute + TICK).to_pydatetime(),
                },
            )
            if r.room > 0
        }
    rows = [
        dict(r)
        for r in conn.execute(
            _CLAIM_LIVE,
            {
                "now": now.to_pydatetime(),
                "open": sorted(k for k, v in live.items() if v.capacity_per_minute is None),
                "capped": sorted(rooms),
                "rooms": [rooms[k] for k in sorted(rooms)],
                "n": batch,
            },
        ).mappings()
    ]
    delivered = [r for r in rows if r["status"] == "delivered"]
    if handler is not None and delivered:
        handler(conn, delivered)
    if len(rows) >= batch:
        return len(rows)  # the live queues first: the others' retries when they run dry
    down = [
        dict(r._mapping)
        for r in conn.execute(
            _CLAIM_DOWN,
            {
                "now": now.to_pydatetime(),
                "live": sorted(live),
                "n": batch - len(rows),
                "backoff": policy.backoff_seconds,
            },
        )
    ]
    # the tick ending at now: every attempt due before now is made (at its due time), none after
    changed = _settle(conn, down, now - TICK, policy, handler)
    return len(rows) + len(changed)


def psycopg_url(url: str) -> str:
    """A SQLAlchemy URL as libpq understands it (no driver name)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def run_consumer(
    url: str,
    policy: BusPolicy,
    handler: Handler | None = None,
    batch: int = 1000,
    stop: threading.Event | None = None,
    idle_timeout: float | None = None,
    wait: float = 0.05,
) -> int:
    """A live consumer: claim batches until none is left, then sleep on ``LISTEN tis_bus`` until woken (or
    ``wait`` seconds). Stops when ``stop`` is set, or after ``idle_timeout`` seconds without work. Returns the
    messages it claimed."""
    import psycopg

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    listener = psycopg.connect(psycopg_url(url), autocommit=True)
    listener.execute(f"LISTEN {CHANNEL}")
    claimed, idle_since = 0, time.monotonic()
    try:
        with engine.connect() as conn:
            # the claim must walk the pending index in its order: with stale statistics after a bulk enqueue
            # the planner would rather bitmap-scan and sort every pending row, per batch
            conn.execute(sa.text("SET enable_bitmapscan = off"))
            conn.execute(sa.text("SET enable_sort = off"))
            # a consumer's commit need not wait for the WAL flush: a crash loses only its last batches whole
            # (outcome and handler effects together), which are pending again and redelivered: at-least-once
            # holds, and the producers' enqueues stay synchronous
            conn.execute(sa.text("SET synchronous_commit = off"))
            conn.commit()
            while stop is None or not stop.is_set():
                with conn.begin():
                    n = consume_batch(conn, policy, handler, batch)
                claimed += n
                if n:
                    idle_since = time.monotonic()
                    continue
                if idle_timeout is not None and time.monotonic() - idle_since > idle_timeout:
                    break
                for _ in listener.notifies(timeout=wait, stop_after=1):
                    pass
    finally:
        listener.close()
        engine.dispose()
    return claimed


# ----------------------------------------------------------------------------------------------- replay


def _pending_due(
    conn: sa.Connection, end: pd.Timestamp, policy: BusPolicy
) -> dict[str, tuple[str | None, pd.Timestamp]]:
    """message_id -> (receiver, due) of the pending messages stamped before ``end``: read once per replay."""
    rows = conn.execute(
        sa.text(
            "SELECT message_id::text AS message_id, receiver_module_id::text AS receiver_module_id, "
            '"timestamp", message_data, ttl_seconds, delivery_attempts, last_delivery_attempt '
            "FROM module_messages "
            "WHERE status = 'pending' AND \"timestamp\" < :end"
        ),
        {"end": end.to_pydatetime()},
    )
    return {r.message_id: (r.receiver_module_id, due(dict(r._mapping), policy)) for r in rows}


def _lock_key(receiver: str | None) -> str:
    return f"{CHANNEL}:{receiver or 'broadcast'}"


def consume_tick(
    engine: sa.Engine,
    t0: pd.Timestamp,
    queues: Mapping[str | None, Sequence[str]],
    policy: BusPolicy,
    handler: Handler | None = None,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """One consumer's share of the replay tick ``[t0, t0 + 1 min)``: ``queues`` = receiver -> the ids of its
    messages due in the tick; each receiver whose queue it can lock (another consumer holds the others) is
    settled by ``step``. Returns the rows it changed."""
    t1 = t0 + TICK
    todo = sorted(queues, key=lambda k: "" if k is None else k)
    if not todo:
        return []
    todo = todo[offset % len(todo) :] + todo[: offset % len(todo)]
    changed: list[dict[str, Any]] = []
    for rid in todo:
        with engine.begin() as conn:
            locked = conn.execute(
                sa.text("SELECT pg_try_advisory_xact_lock(hashtextextended(:k, 0))"),
                {"k": _lock_key(rid)},
            ).scalar_one()
            if not locked:
                continue  # another consumer settles this receiver in this tick
            rows = [
                dict(r._mapping)
                for r in conn.execute(
                    sa.text(
                        f"{_SELECT} WHERE status = 'pending' AND message_id = ANY(CAST(:ids AS uuid[])) "
                        'ORDER BY priority, "timestamp", message_id FOR UPDATE SKIP LOCKED'
                    ),
                    {"ids": list(queues[rid])},
                )
            ]
            if not rows:
                continue  # settled already by the consumer that held it before
            used = 0
            if rid is not None:
                used = conn.execute(
                    sa.text(
                        "SELECT count(*) FROM module_messages "
                        "WHERE receiver_module_id = CAST(:r AS uuid) AND status = 'delivered' "
                        "AND last_delivery_attempt >= :a AND last_delivery_attempt < :b"
                    ),
                    {"r": rid, "a": t0.to_pydatetime(), "b": t1.to_pydatetime()},
                ).scalar_one()
            changed += _settle(conn, rows, t0, policy, handler, {rid: int(used)})
    return changed


def replay(
    engine: sa.Engine,
    start: pd.Timestamp,
    end: pd.Timestamp,
    policy: BusPolicy,
    handler: Handler | None = None,
    consumers: int = 2,
) -> int:
    """The pending messages stamped before ``end`` walked through ``[start, end)`` in data time, on the
    in-process transport's ticks, by ``consumers`` competing consumer threads per tick. Returns ticks run.

    The pending set is read once, at the start (with each message's due time, ``inprocess.due``); after that
    the replay follows what the consumers changed (a row's due time moves only when its row changes), as the
    in-process transport does: a tick claims by id only the messages due in it."""
    with engine.connect() as conn:
        due_at = _pending_due(conn, end, policy)
    if not due_at:
        return 0
    ticks = 0
    t0 = first_tick(min(at for _, at in due_at.values()), start)
    with ThreadPoolExecutor(consumers) as pool:
        while t0 < end:
            t1 = t0 + TICK
            queues: dict[str | None, list[str]] = {}
            for mid in sorted(due_at):
                rid, at = due_at[mid]
                if at < t1:
                    queues.setdefault(rid, []).append(mid)
            futures = [
                pool.submit(consume_tick, engine, t0, queues, policy, handler, i) for i in range(consumers)
            ]
            for future in futures:
                for row in future.result():  # a consumer's error is the replay's
                    mid = str(row["message_id"])
                    if row["status"] != "pending":
                        due_at.pop(mid, None)
                    else:
                        due_at[mid] = (row["receiver_module_id"], due(row, policy))
            ticks += 1
            if not due_at:
                break
            t0 = next_tick(t0, min(at for _, at in due_at.values()))
    return ticks
