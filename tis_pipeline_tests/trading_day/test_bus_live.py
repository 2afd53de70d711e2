"""The durable transport's live mode: due-ness in the claim (arrival after the sender's latency, retries after
their backoff) and each receiver's capacity per minute shared by competing consumers."""

from __future__ import annotations

import pandas as pd
import pytest
import sqlalchemy as sa

from tis_pipeline.trading_day.bus import durable
from tis_pipeline.trading_day.bus.inprocess import BusPolicy, Receiver
from tis_pipeline_tests.trading_day.test_bus import _ids, _prepared, frame, message

T = pd.Timestamp("2026-01-05 10:00:30", tz="UTC")


def live_policy(m: dict[str, str]) -> BusPolicy:
    return BusPolicy(
        max_attempts=3,
        backoff_seconds=20,
        receivers={
            m["risk_desk"]: Receiver(live=True, capacity_per_minute=12),
            m["execution_sim"]: Receiver(live=True),
            m["reversal"]: Receiver(live=False, state="status inactive, lifecycle deprecated"),
        },
    )


def _status(eng: sa.Engine) -> dict[str, tuple[str, int]]:
    with eng.connect() as conn:
        rows = durable.read_messages(conn)
    return {
        d["key"]: (s, int(a))
        for d, s, a in zip(rows["message_data"], rows["status"], rows["delivery_attempts"], strict=True)
    }


@pytest.mark.pg
def test_live_claims_take_what_is_due_within_each_receivers_capacity(migrated_database_url):
    m = _ids()
    eng = _prepared(migrated_database_url)
    pol = live_policy(m)
    rows = [
        # 20 to a decision maker taking 12 a minute: priority 1 first
        *(
            message(
                f"desk{i:02d}",
                m["momentum"],
                m["risk_desk"],
                T - pd.Timedelta(seconds=10),
                priority=1 + i % 3,
            )
            for i in range(20)
        ),
        # sent 1 ms before now with a 5 ms latency: not arrived yet
        message("in-flight", m["momentum"], m["risk_desk"], T - pd.Timedelta(milliseconds=1), priority=1),
        # lowest priority and 25 s to live: it waits behind the capacity and expires
        message("short", m["momentum"], m["risk_desk"], T - pd.Timedelta(seconds=10), priority=3, ttl=25),
        # no capacity: all at once
        *(
            message(f"trader{i}", m["momentum"], m["execution_sim"], T - pd.Timedelta(seconds=5))
            for i in range(30)
        ),
        # a deprecated receiver: attempts at arrival and +20 s are due by now, the third (+60 s) is not
        message("down", m["momentum"], m["reversal"], T - pd.Timedelta(seconds=30), ttl=600, latency=7),
    ]
    with eng.begin() as conn:
        durable.enqueue(conn, frame(rows))

    with eng.connect() as a, eng.connect() as b:
        with a.begin():
            assert durable.consume_batch(a, pol, now=T) == 12 + 30 + 1
            # a competing consumer meanwhile: the desk's minute and the claimed rows are the first one's
            with b.begin():
                assert durable.consume_batch(b, pol, now=T) == 0
        with b.begin():  # committed: the desk's capacity of this minute is spent
            assert durable.consume_batch(b, pol, now=T + pd.Timedelta(seconds=20)) == 0
    got = _status(eng)
    desk = {k: v for k, v in got.items() if k.startswith("desk")}
    assert sum(s == "delivered" for s, _ in desk.values()) == 12
    # priority 1 (7 of them) and 2 (the 5 earliest of 7 by arrival, then id) went first
    assert all(got[f"desk{i:02d}"][0] == "delivered" for i in range(0, 20, 3))
    assert all(got[f"desk{i:02d}"][0] == "pending" for i in range(2, 20, 3))
    assert got["in-flight"] == ("pending", 0) and got["short"] == ("pending", 0)
    assert all(got[f"trader{i}"] == ("delivered", 1) for i in range(30))
    assert got["down"] == ("pending", 2)

    # the next minute: 12 more for the desk (the 9 left and the one in flight), the short one expired
    # without using capacity, the deprecated receiver's third attempt fails the message
    with eng.begin() as conn:
        assert durable.consume_batch(conn, pol, now=T + pd.Timedelta(minutes=1)) == 8 + 1 + 1 + 1
    got = _status(eng)
    assert sum(s == "delivered" for k, (s, _) in got.items() if k.startswith("desk")) == 20
    assert got["in-flight"] == ("delivered", 1)
    assert got["short"] == ("expired", 0)
    assert got["down"] == ("failed", 3)
    with eng.connect() as conn:
        per_minute = conn.execute(
            sa.text(
                "SELECT date_trunc('minute', last_delivery_attempt), count(*) FROM module_messages "
                "WHERE receiver_module_id = CAST(:r AS uuid) AND status = 'delivered' GROUP BY 1 ORDER BY 1"
            ),
            {"r": m["risk_desk"]},
        ).all()
    assert [n for _, n in per_minute] == [12, 9]
