"""The module message bus: the delivery rule in data time (in-process), the same rows from the durable
transport in PostgreSQL with competing consumers, and at-least-once delivery across a killed consumer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
import sqlalchemy as sa
from pandas.testing import assert_frame_equal

from tis_pipeline.pg.engine import engine
from tis_pipeline.trading_day import store
from tis_pipeline.trading_day.bus import durable
from tis_pipeline.trading_day.bus.inprocess import BusPolicy, Receiver, deliver
from tis_pipeline.trading_day.ecosystem.common import MESSAGE_COLUMNS, population_rows, rows_frame
from tis_pipeline.trading_day.ecosystem.founders import founding_population
from tis_pipeline.trading_day.population import ecosystem_uuid

DAY = pd.Timestamp("2026-01-05", tz="UTC")
END = DAY + pd.Timedelta(days=1)


def _ids() -> dict[str, str]:
    pop = founding_population(DAY)
    return dict(zip(pop["name"], pop["module_id"], strict=True))


def message(key, sender, receiver, at, priority=2, ttl=120, latency=5, mtype="trading_plan") -> dict:
    return {
        "message_id": ecosystem_uuid("test-message", key),
        "sender_module_id": sender,
        "receiver_module_id": receiver,
        "timestamp": at,
        "message_type": mtype,
        "message_data": {"key": key, "sender_latency_ms": latency},
        "priority": priority,
        "ttl_seconds": ttl,
        "status": "pending",
        "delivery_attempts": 0,
        "last_delivery_attempt": None,
        "error_message": None,
    }


def frame(rows: list[dict]) -> pd.DataFrame:
    return rows_frame(rows, "module_messages", MESSAGE_COLUMNS)


def policy(m: dict[str, str], capacity: int = 3) -> BusPolicy:
    return BusPolicy(
        max_attempts=3,
        backoff_seconds=20,
        receivers={
            m["risk_desk"]: Receiver(live=True, capacity_per_minute=capacity),
            m["momentum"]: Receiver(live=True, capacity_per_minute=capacity),
            m["execution_sim"]: Receiver(live=True, capacity_per_minute=capacity),
            m["reversal"]: Receiver(live=False, state="status inactive, lifecycle deprecated"),
        },
    )


def a_day(m: dict[str, str]) -> list[dict]:
    """Every case of the rule in one day: a burst over capacity (priorities, waits, expiry), retries to an
    inactive receiver (failed, and expired before the last attempt), broadcasts, and a burst at the window's
    end (pending, carried)."""
    t = DAY + pd.Timedelta(hours=10)
    rows = [
        # 6 plans in one minute to a receiver taking 3 a minute: priority 1 first, then by arrival
        *(
            message(
                f"burst{i}",
                m["momentum"],
                m["risk_desk"],
                t + pd.Timedelta(seconds=5 * i),
                priority=p,
                ttl=ttl,
            )
            for i, (p, ttl) in enumerate([(3, 600), (1, 600), (2, 60), (1, 600), (2, 600), (3, 30)])
        ),
        # to a deprecated module: attempts at arrival, +20 s, +60 s -> failed; with a 30 s ttl: expired
        message("down-long", m["momentum"], m["reversal"], t, ttl=600, latency=7),
        message("down-short", m["momentum"], m["reversal"], t, ttl=30, latency=7),
        # broadcasts, delivered on arrival
        message(
            "bc",
            m["risk_desk"],
            None,
            t + pd.Timedelta(minutes=3),
            priority=3,
            ttl=86_400,
            mtype="intelligence_broadcast",
        ),
        # the last minute: 5 to a receiver taking 3 a minute -> 2 still pending at midnight
        *(
            message(
                f"late{i}",
                m["execution_sim"],
                m["momentum"],
                END - pd.Timedelta(seconds=50 - i),
                priority=2,
                ttl=3600,
                latency=1,
                mtype="execution_feedback",
            )
            for i in range(5)
        ),
    ]
    return rows


def test_the_delivery_rule_in_data_time():
    m = _ids()
    out = deliver(frame(a_day(m)), DAY, END, policy(m)).set_index(
        pd.Index([d["key"] for d in frame(a_day(m))["message_data"]])
    )
    t = DAY + pd.Timedelta(hours=10)
    # minute 10:00 handles burst1, burst3 (priority 1) and burst2 (priority 2, earlier than burst4)
    first = ["burst1", "burst3", "burst2"]
    assert (out.loc[first, "status"] == "delivered").all()
    assert out.loc["burst1", "last_delivery_attempt"] == t + pd.Timedelta(seconds=5, milliseconds=5)
    # burst5's 60 s ran out while it waited: expired at the tick's end, no attempt made
    assert out.loc["burst5", "status"] == "expired" and out.loc["burst5", "delivery_attempts"] == 0
    assert "capacity of 3" in out.loc["burst5", "error_message"]
    # burst4 and burst0 go in the next minute, handled at its start
    assert (out.loc[["burst4", "burst0"], "status"] == "delivered").all()
    assert (out.loc[["burst4", "burst0"], "last_delivery_attempt"] == t + pd.Timedelta(minutes=1)).all()
    # retries with backoff to a deprecated module
    arrive = t + pd.Timedelta(milliseconds=7)
    assert out.loc["down-long", ["status", "delivery_attempts"]].tolist() == ["failed", 3]
    assert out.loc["down-long", "last_delivery_attempt"] == arrive + pd.Timedelta(seconds=60)
    assert "is not active (status inactive" in out.loc["down-long", "error_message"]
    assert "gave up after 3 attempts" in out.loc["down-long", "error_message"]
    assert out.loc["down-short", ["status", "delivery_attempts"]].tolist() == ["expired", 2]
    assert out.loc["down-short", "last_delivery_attempt"] == arrive + pd.Timedelta(seconds=20)
    assert out.loc["bc", ["status", "delivery_attempts"]].tolist() == ["delivered", 1]
    # the window's last minute: 3 handled, 2 carried
    late = out.loc[[f"late{i}" for i in range(5)]]
    assert late["status"].tolist() == ["delivered"] * 3 + ["pending"] * 2
    assert late["delivery_attempts"].tolist() == [1, 1, 1, 0, 0]
    assert out["status"].value_counts().to_dict() == {"delivered": 9, "expired": 2, "failed": 1, "pending": 2}

    # the next window takes the carried ones first thing
    carried = out[out["status"] == "pending"].reset_index(drop=True)
    nxt = deliver(carried, END, END + pd.Timedelta(days=1), policy(m))
    assert nxt["status"].tolist() == ["delivered", "delivered"]
    assert (nxt["last_delivery_attempt"] == END).all()
    # deterministic: the same input gives the same frame
    assert_frame_equal(
        deliver(frame(a_day(m)), DAY, END, policy(m)), deliver(frame(a_day(m)), DAY, END, policy(m))
    )


def test_cutting_capacity_changes_what_is_delivered():
    m = _ids()
    tight = deliver(frame(a_day(m)), DAY, END, policy(m, capacity=1))
    loose = deliver(frame(a_day(m)), DAY, END, policy(m, capacity=100))
    assert (tight["status"] == "expired").sum() > (loose["status"] == "expired").sum()
    assert (loose["status"] == "pending").sum() == 0


def _prepared(url: str) -> sa.Engine:
    eng = engine(url)
    with eng.begin() as conn:
        store.upsert_modules(conn, population_rows(founding_population(DAY)))
    return eng


@pytest.mark.pg
def test_both_transports_write_the_same_rows(migrated_database_url):
    m = _ids()
    eng = _prepared(migrated_database_url)
    messages = frame(a_day(m))
    expected = deliver(messages, DAY, END, policy(m))
    with eng.begin() as conn:
        assert durable.enqueue(conn, messages) == len(messages)
    ticks = durable.replay(eng, DAY, END, policy(m), consumers=2)
    assert ticks > 3
    with eng.connect() as conn:
        got = durable.read_messages(conn)
    want = expected.sort_values("message_id").reset_index(drop=True)
    assert_frame_equal(got, want, check_exact=True)
    assert set(got["status"]) == {"pending", "delivered", "failed", "expired"}
    # the carried messages, the next window: still the same on both
    next_end = END + pd.Timedelta(days=1)
    durable.replay(eng, END, next_end, policy(m), consumers=2)
    with eng.connect() as conn:
        got = durable.read_messages(conn)
    carried = deliver(expected, END, next_end, policy(m)).sort_values("message_id").reset_index(drop=True)
    assert_frame_equal(got, carried, check_exact=True)
    assert (got["status"] != "pending").all()


_CONSUMER = textwrap.dedent(
    """
    import os, sys, time
    import sqlalchemy as sa
    from tis_pipeline.trading_day.bus import durable
    from tis_pipeline.trading_day.bus.inprocess import BusPolicy, Receiver

    url, receivers, stall = sys.argv[1], sys.argv[2].split(","), sys.argv[3] == "stall"
    policy = BusPolicy(receivers={r: Receiver(live=True) for r in receivers})

    def handler(conn, delivered):
        # idempotent: an effect is keyed on the message id, a second application adds nothing
        conn.execute(
            sa.text("INSERT INTO bus_test_effects (message_id, handled_by) "
                    "SELECT CAST(unnest(CAST(:ids AS text[])) AS uuid), :pid ON CONFLICT DO NOTHING"),
            {"ids": [str(m["message_id"]) for m in delivered], "pid": os.getpid()},
        )
        if stall:
            print("in-batch", len(delivered), flush=True)
            time.sleep(600)  # killed here, mid-batch

    durable.run_consumer(url, policy, handler, batch=50, idle_timeout=1.0)
    """
)


@pytest.mark.pg
def test_a_consumer_killed_mid_batch_loses_nothing_and_applies_nothing_twice(migrated_database_url):
    m = _ids()
    url = migrated_database_url
    eng = _prepared(url)
    with eng.begin() as conn:
        # a scratch table of the test's own database: what the handlers applied
        conn.execute(sa.text("CREATE TABLE bus_test_effects (message_id uuid PRIMARY KEY, handled_by int)"))
    receivers = [m["risk_desk"], m["execution_sim"]]
    t = pd.Timestamp.now(tz="UTC").floor("s") - pd.Timedelta(minutes=5)
    rows = [
        message(
            f"live{i}",
            m["momentum"],
            receivers[i % 2],
            t + pd.Timedelta(milliseconds=i),
            ttl=86_400,
            latency=0,
        )
        for i in range(400)
    ]
    with eng.begin() as conn:
        durable.enqueue(conn, frame(rows))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    args = [sys.executable, "-c", _CONSUMER, url, ",".join(receivers)]
    doomed = subprocess.Popen([*args, "stall"], stdout=subprocess.PIPE, text=True, env=env)
    line = doomed.stdout.readline()  # it holds a claimed batch, its effects written but not committed
    assert line.startswith("in-batch 50"), line
    with eng.connect() as conn:
        locked = conn.execute(
            sa.text(
                "SELECT count(*) FROM module_messages WHERE message_id IN "
                "(SELECT message_id FROM module_messages FOR UPDATE SKIP LOCKED)"
            )
        ).scalar_one()
    assert locked == 400 - 50  # the doomed consumer's batch is claimed: nobody else may take it
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=30)
    assert doomed.returncode == -signal.SIGKILL

    survivors = [subprocess.Popen([*args, "go"], env=env) for _ in range(2)]  # two competing consumers
    for p in survivors:
        assert p.wait(timeout=120) == 0
    with eng.connect() as conn:
        status = dict(conn.execute(sa.text("SELECT status, count(*) FROM module_messages GROUP BY 1")).all())
        effects = conn.execute(
            sa.text(
                "SELECT count(*), count(DISTINCT message_id), count(DISTINCT handled_by) "
                "FROM bus_test_effects"
            )
        ).one()
        attempts = dict(
            conn.execute(sa.text("SELECT delivery_attempts, count(*) FROM module_messages GROUP BY 1")).all()
        )
        killed = conn.execute(
            sa.text("SELECT count(*) FROM bus_test_effects WHERE handled_by = :p"), {"p": doomed.pid}
        ).scalar_one()
    assert status == {"delivered": 400}  # nothing lost
    assert effects[0] == effects[1] == 400  # each message applied once
    assert killed == 0  # the killed batch was rolled back and redelivered by the survivors
    assert attempts == {1: 400}  # the aborted attempt left no trace but its redelivery


def test_a_message_carried_over_a_gap_in_the_data_expires():
    from tis_pipeline.trading_day.ecosystem.messages import carry_messages

    m = _ids()
    late = deliver(frame(a_day(m)), DAY, END, policy(m))
    pending = late[late["status"] == "pending"]
    # the next day with data is a week later: the feedback's hour ran out on the way
    later = END + pd.Timedelta(days=7)
    carried = carry_messages(later, pending)
    assert (carried["ttl_seconds"] == 0).all() and (carried["timestamp"] == later).all()
    assert sorted(d["carried_from"] for d in carried["message_data"]) == sorted(pending["message_id"])
    out = deliver(carried, later, later + pd.Timedelta(days=1), policy(m))
    assert set(out["status"]) == {"expired"} and (out["delivery_attempts"] == 0).all()
    # the next day, it is re-offered with the time it has left and delivered
    nxt = deliver(carry_messages(END, pending), END, END + pd.Timedelta(days=1), policy(m))
    assert set(nxt["status"]) == {"delivered"}
    # sent 47 and 46 s before midnight with an hour to live
    assert sorted(carry_messages(END, pending)["ttl_seconds"]) == [3600 - 47, 3600 - 46]
