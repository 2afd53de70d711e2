"""The lifecycle's exits: a module of any type whose step raises becomes 'failed' and the day goes on without
it (the acting decision maker, the acting trader; an alpha in test_learning.py), and a module whose
risk-adjusted return stays below its peers' for five scored days is retired."""

from __future__ import annotations

import uuid

import pandas as pd
import pytest

from tis_pipeline.trading_day.day import run_day
from tis_pipeline.trading_day.ecosystem.founders import founding_population
from tis_pipeline.trading_day.ecosystem.update import update_population
from tis_pipeline.trading_day.population import ECOSYSTEM_NAMESPACE, acting_module
from tis_pipeline_tests.trading_day.test_ecosystem import clone, ids, messages_frame, perf_frame, row
from tis_pipeline_tests.trading_day.test_plans import walk_bars, walk_events

DAY = pd.Timestamp("2024-03-04", tz="UTC")


def _broken(pop: pd.DataFrame, module_id: str, **genes) -> pd.DataFrame:
    pop = pop.copy()
    i = pop.index[pop["module_id"] == module_id][0]
    pop.at[i, "genome"] = {**pop.at[i, "genome"], **genes}
    return pop


@pytest.mark.parametrize(
    ("name", "genes", "step"),
    [
        ("risk_desk", {"min_confidence": "high"}, "approve_plans"),
        ("execution_sim", {"entry_delay_bars": "soon"}, "simulate_execution"),
    ],
)
def test_an_acting_desk_whose_step_raises_fails_and_its_sibling_takes_over(name, genes, step):
    bars = walk_bars()
    events = walk_events(bars)
    pop = founding_population(DAY)
    m = ids(pop)
    sibling = str(uuid.uuid5(ECOSYSTEM_NAMESPACE, f"sibling-of-{name}"))
    pop = clone(pop, m[name], sibling)
    module_type = row(pop, m[name])["module_type"]
    # the broken one acts (neither has a score: the smaller id acts)
    broken = str(acting_module(pop, module_type, last_entry_only=True)["module_id"])
    pop = _broken(pop, broken, **genes)

    rows = run_day(DAY, events, bars, pop, pd.DataFrame())
    after = rows["population"]
    assert row(after, broken)["status"] == "failed"
    failure = row(after, broken)["learning_patterns"]["failure"]
    assert failure["step"] == step and "ValueError" in failure["error"]
    other = sibling if broken != sibling else m[name]
    assert row(after, other)["status"] == "active"
    plans, approvals = rows["trading_plans"], rows["trading_plan_approvals"]
    assert len(plans) > 20 and (plans["execution_status"] == "executed").sum() > 5
    if module_type == "decision_maker":
        assert set(approvals["decision_maker_module_id"]) == {other}
    # the failed module takes no part: it is not scored and the bus sends it nothing it could take
    assert broken not in set(rows["module_performance"]["module_id"])
    msgs = rows["module_messages"]
    assert broken not in set(msgs["receiver_module_id"].dropna())
    assert broken not in set(msgs["sender_module_id"].dropna())


def test_the_only_trader_failing_leaves_the_plans_unexecuted_and_the_day_goes_on():
    bars = walk_bars()
    events = walk_events(bars)
    pop = founding_population(DAY)
    m = ids(pop)
    pop = _broken(pop, m["execution_sim"], entry_delay_bars="soon")
    rows = run_day(DAY, events, bars, pop, pd.DataFrame())
    assert row(rows["population"], m["execution_sim"])["status"] == "failed"
    plans = rows["trading_plans"]
    assert len(plans) > 20 and plans["pnl"].isna().all()
    # the decisions went to a trader that is not there: no decision message was delivered to anyone
    assert (rows["trading_plan_approvals"]["decision_maker_module_id"] == m["risk_desk"]).all()
    assert row(rows["population"], m["risk_desk"])["status"] == "active"


def test_a_module_behind_its_peers_for_five_scored_days_is_retired_on_the_fifth():
    """Day by day, the flags computed by update_population itself: momentum loses 0.1 (risk-adjusted) a day
    while its peers break even; it is below its peers from its first day and retired on its fifth."""
    start = pd.Timestamp("2026-01-05", tz="UTC")
    pop = founding_population(start)
    m = ids(pop)
    pop.loc[pop["module_id"] == m["momentum"], "lifecycle_stage"] = "active"
    peers = (m["reversal"], m["divergence"])
    stages = []
    for k in range(6):
        day = start + pd.Timedelta(days=k)
        perf = perf_frame({m["momentum"]: 0.6, **dict.fromkeys(peers, 0.6)}, day=day)
        perf["risk_adjusted_returns"] = perf["module_id"].map(
            {m["momentum"]: -0.1, **dict.fromkeys(peers, 0.0)}
        )
        # one plan taken to its end a day: the sample reaches 3 on the third day
        feedback = messages_frame(
            [
                {
                    "sender_module_id": m["execution_sim"],
                    "receiver_module_id": m["momentum"],
                    "message_type": "execution_feedback",
                    "message_data": {"plan_id": f"p{k}", "symbol": "BTCUSDT"},
                    "timestamp": day + pd.Timedelta(hours=12),
                    "last_delivery_attempt": day + pd.Timedelta(hours=12, milliseconds=1),
                }
            ]
        )
        pop = update_population(day, pop, perf, feedback)
        stages.append(row(pop, m["momentum"])["lifecycle_stage"])
        if stages[-1] == "deprecated":
            break
    assert stages == ["active"] * 4 + ["deprecated"]
    r = row(pop, m["momentum"])
    assert r["status"] == "inactive"
    assert [e["below_peers"] for e in r["performance_history"]] == [True] * 5
    assert [e["n"] for e in r["performance_history"]] == [1] * 5
    # its peers, level with each other and above it, stay
    assert {row(pop, p)["lifecycle_stage"] for p in peers} == {"experimental"}
