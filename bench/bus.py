"""Durable message bus benchmark: sustained throughput with two competing consumers, and enqueue-to-handled
latency at a steady load.

    python -m bench.bus [--messages 200000] [--rate 1000] [--seconds 20] [--batch 2500]

In a scratch database (``TIS_DATABASE_URL``'s server, or the embedded one):

* **sustained**: ``--messages`` pending messages to 8 live receivers are enqueued (COPY), then two consumer
  processes (``durable.run_consumer``: ``FOR UPDATE SKIP LOCKED`` claims of ``--batch``, the outcome written
  per row: status, delivery_attempts, last_delivery_attempt, an idempotent handler recording each message
  id) drain them; messages/s = messages / wall time from start to the last row handled;
* **steady**: a producer enqueues ``--rate`` messages/s (a batch every 10 ms, ``NOTIFY`` on commit) for
  ``--seconds``; the two consumers sleep on ``LISTEN`` between batches; latency = ``last_delivery_attempt -
  "timestamp"`` (both the wall clock: enqueue time and handling time), p50 / p95 / max over the run.

Prints one JSON line last.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import time
import warnings

import pandas as pd
import sqlalchemy as sa

warnings.filterwarnings("ignore")

RECEIVERS = 8


def _modules(url: str) -> list[str]:
    from tis_pipeline.pg.engine import engine
    from tis_pipeline.trading_day import store
    from tis_pipeline.trading_day.ecosystem.common import population_rows
    from tis_pipeline.trading_day.ecosystem.founders import founding_population

    pop = founding_population(pd.Timestamp("2026-01-01", tz="UTC"))
    with engine(url).begin() as conn:
        store.upsert_modules(conn, population_rows(pop))
    return sorted(pop["module_id"])


def _messages(ids: list[str], n: int, start: int, at: pd.Timestamp | None = None) -> pd.DataFrame:
    from tis_pipeline.trading_day.ecosystem.common import MESSAGE_COLUMNS, rows_frame
    from tis_pipeline.trading_day.population import ecosystem_uuid

    now = pd.Timestamp.now(tz="UTC") if at is None else at
    rows = [
        {
            "message_id": ecosystem_uuid("bench", start + i),
            "sender_module_id": ids[(start + i) % len(ids)],
            "receiver_module_id": ids[(start + i + 1) % len(ids)],
            "timestamp": now,
            "message_type": "trading_plan",
            "message_data": {"n": start + i, "sender_latency_ms": 0},
            "priority": 1 + (start + i) % 3,
            "ttl_seconds": 3600,
            "status": "pending",
            "delivery_attempts": 0,
            "last_delivery_attempt": None,
            "error_message": None,
        }
        for i in range(n)
    ]
    return rows_frame(rows, "module_messages", MESSAGE_COLUMNS)


def _consumer(url: str, ids: list[str], batch: int, idle: float, ready, go) -> None:
    from tis_pipeline.trading_day.bus import durable
    from tis_pipeline.trading_day.bus.inprocess import BusPolicy, Receiver

    def handler(conn: sa.Connection, delivered: list[dict]) -> None:
        # the idempotent bookkeeping of a handled message: its id, once (a temp table of the session)
        conn.execute(
            sa.text(
                "INSERT INTO bench_handled SELECT CAST(unnest(CAST(:ids AS text[])) AS uuid) "
                "ON CONFLICT DO NOTHING"
            ),
            {"ids": [m["message_id"] for m in delivered]},
        )

    policy = BusPolicy(receivers={i: Receiver(live=True) for i in ids})
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(
            sa.text("CREATE UNLOGGED TABLE IF NOT EXISTS bench_handled (message_id uuid PRIMARY KEY)")
        )
    engine.dispose()
    ready.set()
    go.wait(120)  # start-up (imports, connections) is not the bus's time
    durable.run_consumer(url, policy, handler, batch=batch, idle_timeout=idle)


def _start_consumers(url: str, ids: list[str], batch: int, idle: float):
    """Two consumer processes, started and ready; they run once the returned event is set."""
    ctx = mp.get_context("spawn")
    go = ctx.Event()
    procs, ready = [], [ctx.Event() for _ in range(2)]
    for r in ready:
        p = ctx.Process(target=_consumer, args=(url, ids, batch, idle, r, go))
        p.start()
        procs.append(p)
    for r in ready:
        r.wait(120)
    return procs, go


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--batch", type=int, default=2500)
    args = parser.parse_args()

    from bench.ingest import drop_database, scratch_database
    from tis_pipeline.pg import migrate
    from tis_pipeline.pg.engine import engine
    from tis_pipeline.trading_day.bus import durable

    server, url = scratch_database()
    try:
        migrate.upgrade(url)
        ids = _modules(url)
        eng = engine(url)
        # sustained: a backlog drained by two competing consumers
        with eng.begin() as conn:
            durable.enqueue(conn, _messages(ids, args.messages, 0))
        procs, go = _start_consumers(url, ids, args.batch, idle=1.0)
        started = time.perf_counter()
        go.set()
        while True:
            with eng.connect() as conn:
                left = conn.execute(
                    sa.text("SELECT count(*) FROM module_messages WHERE status = 'pending'")
                ).scalar_one()
            if left == 0:
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        for p in procs:
            p.join()
        with eng.connect() as conn:
            handled = conn.execute(sa.text("SELECT count(*) FROM bench_handled")).scalar_one()
            delivered = conn.execute(
                sa.text("SELECT count(*) FROM module_messages WHERE status = 'delivered'")
            ).scalar_one()
        assert handled == delivered == args.messages, (handled, delivered)
        sustained = args.messages / elapsed

        # steady load: the producer enqueues every 10 ms, the consumers sleep on LISTEN in between
        with eng.begin() as conn:
            conn.execute(sa.text("DELETE FROM module_messages"))
            conn.execute(sa.text("TRUNCATE bench_handled"))
        procs, go = _start_consumers(url, ids, args.batch, idle=2.0)
        go.set()
        per_tick = max(1, args.rate // 100)
        sent, t_start = 0, time.perf_counter()
        while time.perf_counter() - t_start < args.seconds:
            target = int((time.perf_counter() - t_start) * args.rate)
            if target > sent:
                n = min(target - sent, per_tick * 5)
                with eng.begin() as conn:
                    durable.enqueue(conn, _messages(ids, n, args.messages + sent))
                sent += n
            time.sleep(0.01)
        for p in procs:
            p.join()
        with eng.connect() as conn:
            lat = conn.execute(
                sa.text(
                    "SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), "
                    "percentile_cont(0.95) WITHIN GROUP (ORDER BY ms), max(ms) FROM "
                    '(SELECT extract(epoch FROM last_delivery_attempt - "timestamp") * 1000 AS ms '
                    "FROM module_messages WHERE status = 'delivered') x"
                )
            ).one()
        result = {
            "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus",
            "date": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
            "sustained_messages": args.messages,
            "batch": args.batch,
            "sustained_seconds": round(elapsed, 2),
            "sustained_msgs_per_s": round(sustained),
            "steady_rate": args.rate,
            "steady_seconds": args.seconds,
            "steady_sent": sent,
            "steady_handled": int(lat[0]),
            "latency_p50_ms": round(float(lat[1]), 2),
            "latency_p95_ms": round(float(lat[2]), 2),
            "latency_max_ms": round(float(lat[3]), 2),
        }
        print(json.dumps(result))
    finally:
        drop_database(server, url)


if __name__ == "__main__":
    main()
