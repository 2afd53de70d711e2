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

* **live** (``consume_batch``): ``now`` is the wall clock; every claimed message is looked at now (capacity
  per minute is not applied: a live receiver takes what it is given);
* **replay** (``replay``): data time, the in-process transport's ticks. Per tick a consumer claims a
  *receiver's* queue (``pg_try_advisory_xact_lock`` on the receiver, the receiver-level ``SKIP LOCKED``) and
  its due rows ``FOR UPDATE SKIP LOCKED``; the receiver's capacity already used in the tick is counted from
  the table. So competing consumers give the rows the in-process transport gives (a test holds them to it).

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


_CLAIM_LIVE = sa.text(
    """
    WITH claimed AS (
        SELECT message_id FROM module_messages
        WHERE status = 'pending' AND "timestamp" <= :now
          AND (receiver_module_id IS NULL OR receiver_module_id = ANY(CAST(:live AS uuid[])))
        ORDER BY priority, "timestamp", message_id LIMIT :n FOR UPDATE SKIP LOCKED),
    settled AS (
        SELECT c.message_id, m."timestamp" + m.ttl_seconds * INTERVAL '1 second' < :now AS too_late
        FROM claimed c JOIN module_messages m USING (message_id))
    UPDATE module_messages m SET
        status = CASE WHEN s.too_late THEN 'expired' ELSE 'delivered' END,
        delivery_attempts = m.delivery_attempts + CASE WHEN s.too_late THEN 0 ELSE 1 END,
        last_delivery_attempt = CASE WHEN s.too_late THEN m.last_delivery_attempt ELSE :now END,
        error_message = CASE WHEN s.too_late THEN 'not handled within ttl_seconds=' || m.ttl_seconds
                             || ': its deadline passed before it reached the receiver' END
    FROM settled s WHERE m.message_id = s.message_id
    RETURNING m.message_id::text AS message_id, m.sender_module_id::text AS sender_module_id,
              m.receiver_module_id::text AS receiver_module_id, m.message_type, m.status
    """
)


def consume_batch(
    conn: sa.Connection,
    policy: BusPolicy,
    handler: Handler | None = None,
    batch: int = 500,
    now: pd.Timestamp | None = None,
) -> int:
    """Claim up to ``batch`` pending messages sent by ``now`` (default: the wall clock) with ``FOR UPDATE SKIP
    LOCKED``, hand the delivered ones to ``handler`` and write every outcome, in the caller's transaction.
    Returns the messages claimed (0: nothing to do).

    In live use a message is looked at when claimed (the tick is "now"; capacity per minute is not applied):
    to a live receiver (or a broadcast) it is delivered now, or expired past its deadline, in one set-based
    statement; to any other receiver ``step`` makes the attempt when due (retries not yet due stay pending),
    when a batch finds the live queue short of ``batch``.
    """
    now = pd.Timestamp.now(tz="UTC") if now is None else now
    live = sorted(k for k, v in policy.receivers.items() if v.live)
    rows = [
        dict(r)
        for r in conn.execute(_CLAIM_LIVE, {"now": now.to_pydatetime(), "live": live, "n": batch}).mappings()
    ]
    delivered = [r for r in rows if r["status"] == "delivered"]
    if handler is not None and delivered:
        handler(conn, delivered)
    if len(rows) >= batch:
        return len(rows)  # the live queue first: the others' retries when it runs dry
    down = [
        dict(r._mapping)
        for r in conn.execute(
            sa.text(
                f"{_SELECT} WHERE status = 'pending' AND \"timestamp\" <= :now "
                "AND receiver_module_id IS NOT NULL "
                "AND receiver_module_id <> ALL(CAST(:live AS uuid[])) "
                'ORDER BY priority, "timestamp", message_id LIMIT :n FOR UPDATE SKIP LOCKED'
            ),
            {"now": now.to_pydatetime(), "live": live, "n": batch},
        )
    ]
    due_rows = [r for r in down if due(r, policy) <= now]
    _settle(conn, due_rows, now, policy, handler)
    return len(rows) + len(due_rows)


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
) -> list[tuple[str | None, pd.Timestamp]]:
    rows = conn.execute(
        sa.text(
            'SELECT receiver_module_id::text AS receiver_module_id, "timestamp", message_data, ttl_seconds, '
            "delivery_attempts, last_delivery_attempt FROM module_messages "
            "WHERE status = 'pending' AND \"timestamp\" < :end"
        ),
        {"end": end.to_pydatetime()},
    )
    return [(r.receiver_module_id, due(dict(r._mapping), policy)) for r in rows]


def _lock_key(receiver: str | None) -> str:
    return f"{CHANNEL}:{receiver or 'broadcast'}"


def consume_tick(
    engine: sa.Engine,
    t0: pd.Timestamp,
    end: pd.Timestamp,
    policy: BusPolicy,
    handler: Handler | None = None,
    offset: int = 0,
) -> int:
    """One consumer's share of the replay tick ``[t0, t0 + 1 min)``: each receiver with due messages whose
    queue it can lock (another consumer holds the others) is settled by ``step``. Returns messages changed."""
    t1, done, changed = t0 + TICK, set(), 0
    while True:
        with engine.connect() as conn:
            todo = sorted(
                {rid for rid, at in _pending_due(conn, end, policy) if at < t1} - done,
                key=lambda k: "" if k is None else k,
            )
        if not todo:
            return changed
        todo = todo[offset % len(todo) :] + todo[: offset % len(todo)]
        for rid in todo:
            done.add(rid)
            with engine.begin() as conn:
                locked = conn.execute(
                    sa.text("SELECT pg_try_advisory_xact_lock(hashtextextended(:k, 0))"),
                    {"k": _lock_key(rid)},
                ).scalar_one()
                if not locked:
                    continue  # another consumer settles this receiver in this tick
                who = "receiver_module_id IS NULL" if rid is None else "receiver_module_id = CAST(:r AS uuid)"
                rows = [
                    dict(r._mapping)
                    for r in conn.execute(
                        sa.text(
                            f"{_SELECT} WHERE status = 'pending' AND \"timestamp\" < :end AND {who} "
                            'ORDER BY priority, "timestamp", message_id FOR UPDATE SKIP LOCKED'
                        ),
                        {"end": end.to_pydatetime(), "r": rid},
                    )
                ]
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
                changed += len(_settle(conn, rows, t0, policy, handler, {rid: int(used)}))


def replay(
    engine: sa.Engine,
    start: pd.Timestamp,
    end: pd.Timestamp,
    policy: BusPolicy,
    handler: Handler | None = None,
    consumers: int = 2,
) -> int:
    """The pending messages stamped before ``end`` walked through ``[start, end)`` in data time, on the
    in-process transport's ticks, by ``consumers`` competing consumer threads per tick. Returns ticks run."""
    ticks = 0
    with engine.connect() as conn:
        pending = _pending_due(conn, end, policy)
    if not pending:
        return 0
    t0 = first_tick(min(at for _, at in pending), start)
    while t0 < end:
        with ThreadPoolExecutor(consumers) as pool:
            for future in [
                pool.submit(consume_tick, engine, t0, end, policy, handler, i) for i in range(consumers)
            ]:
                future.result()  # a consumer's error is the replay's
        ticks += 1
        with engine.connect() as conn:
            pending = _pending_due(conn, end, policy)
        if not pending:
            break
        t0 = next_tick(t0, min(at for _, at in pending))
    return ticks
