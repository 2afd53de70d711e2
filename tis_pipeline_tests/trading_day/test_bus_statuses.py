"""Where 'failed' and 'expired' come from in a day: a module's private report to its lineage reaches a
relative that was retired (retried, carried over midnight, failed) or, carried over a gap in the data longer
than its hour, expires."""

from __future__ import annotations

import uuid

import pandas as pd

from tis_pipeline.trading_day.ecosystem.founders import founding_population
from tis_pipeline.trading_day.ecosystem.messages import (
    broadcast_messages,
    bus_policy,
    carry_messages,
    run_bus,
)
from tis_pipeline.trading_day.population import ECOSYSTEM_NAMESPACE
from tis_pipeline_tests.trading_day.test_ecosystem import clone, ids, plans_frame

DAY = pd.Timestamp("2026-01-05", tz="UTC")


def _family() -> tuple[pd.DataFrame, dict[str, str], str]:
    """The founders (born a week before) and a child of momentum; momentum is retired."""
    pop = founding_population(DAY - pd.Timedelta(days=7))
    m = ids(pop)
    child = str(uuid.uuid5(ECOSYSTEM_NAMESPACE, "child-of-momentum"))
    pop = clone(pop, m["momentum"], child, parent_modules=[m["momentum"]])
    pop.loc[pop["module_id"] == m["momentum"], ["lifecycle_stage", "status"]] = ["deprecated", "inactive"]
    return pop, m, child


def test_a_report_to_a_retired_parent_fails_after_its_retries():
    pop, m, child = _family()
    day = run_bus(DAY, broadcast_messages(DAY, plans_frame([]), pop), bus_policy(pop, DAY))
    private = day[day["receiver_module_id"].notna()]
    # the child writes to its parent, the retired parent writes to nobody
    assert private[["sender_module_id", "receiver_module_id"]].values.tolist() == [[child, m["momentum"]]]
    report = private.iloc[0]
    assert report["message_data"]["scope"] == "private" and report["ttl_seconds"] == 3600
    # attempts at 23:59:00 and +20 s; the third (+60 s) falls after midnight: carried
    assert (report["status"], report["delivery_attempts"]) == ("pending", 2)
    broadcasts = day[day["receiver_module_id"].isna()]
    assert len(broadcasts) == 5 and set(broadcasts["status"]) == {"delivered"}

    nxt = DAY + pd.Timedelta(days=1)
    carried = run_bus(nxt, carry_messages(nxt, private), bus_policy(pop, nxt))
    row = carried.iloc[0]
    assert (row["status"], row["delivery_attempts"]) == ("failed", 3)
    assert row["last_delivery_attempt"] == nxt  # 23:59:00 + 60 s (the founders' latency is 0)
    assert "is not active (status inactive, lifecycle deprecated)" in row["error_message"]
    assert "gave up after 3 attempts" in row["error_message"]


def test_a_report_carried_over_a_gap_in_the_data_expires():
    pop, _, _ = _family()
    day = run_bus(DAY, broadcast_messages(DAY, plans_frame([]), pop), bus_policy(pop, DAY))
    private = day[day["receiver_module_id"].notna()]
    later = DAY + pd.Timedelta(days=3)  # the next day with data
    carried = run_bus(later, carry_messages(later, private), bus_policy(pop, later))
    row = carried.iloc[0]
    assert (row["status"], row["delivery_attempts"], row["ttl_seconds"]) == ("expired", 2, 0)
    assert row["error_message"].startswith("not handled within ttl_seconds=0")


def test_a_report_to_a_live_relative_is_delivered_at_once():
    pop, m, child = _family()
    pop.loc[pop["module_id"] == m["momentum"], ["lifecycle_stage", "status"]] = ["active", "active"]
    day = run_bus(DAY, broadcast_messages(DAY, plans_frame([]), pop), bus_policy(pop, DAY))
    private = day[day["receiver_module_id"].notna()]
    assert sorted(map(tuple, private[["sender_module_id", "receiver_module_id"]].values.tolist())) == sorted(
        [(child, m["momentum"]), (m["momentum"], child)]
    )
    assert set(private["status"]) == {"delivered"} and (private["delivery_attempts"] == 1).all()
