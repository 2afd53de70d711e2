"""Modules that learn from what others share, learning parameters that evolve, a lifecycle that follows
evidence, and replication's validation and initialization as real steps. Pure: no database."""

from __future__ import annotations

import warnings

import pandas as pd
import pytest

from tis_pipeline.trading_day.day import run_day
from tis_pipeline.trading_day.ecosystem.founders import founding_population
from tis_pipeline.trading_day.ecosystem.replicate import (
    RATES,
    initialize_child,
    replicate,
    validate_child,
)
from tis_pipeline.trading_day.ecosystem.sharing import share_intelligence
from tis_pipeline.trading_day.ecosystem.update import update_population
from tis_pipeline.trading_day.plans.generate import generate_plans
from tis_pipeline_tests.trading_day.test_ecosystem import (
    DAY,
    clone,
    ids,
    make_triggers,
    messages_frame,
    perf_frame,
    row,
    with_history,
)
from tis_pipeline_tests.trading_day.test_plans import walk_bars, walk_events

warnings.filterwarnings("ignore", category=FutureWarning)
LEARNER = "c0000000-0000-5000-8000-0000000000b1"


def _two_momentum(threshold: float = 0.7, learning_rate: float = 0.5) -> pd.DataFrame:
    """The founders (momentum proven over 8 days at 0.9) and a second momentum module, the learner: a strict
    entry filter (min_edge 0.15), two poor days behind it."""
    pop = founding_population(DAY - pd.Timedelta(days=10))
    m = ids(pop)
    pop = with_history(pop, m["momentum"], [0.9] * 8)
    pop = clone(pop, m["momentum"], LEARNER, learning_rate=learning_rate, adaptation_threshold=threshold)
    i = pop.index[pop["module_id"] == LEARNER][0]
    pop.at[i, "genome"] = {**pop.at[i, "genome"], "min_edge": 0.15}
    pop.at[i, "name"] = "momentum~learner"
    return with_history(pop, LEARNER, [0.3, 0.3])


def _day(pop: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    m = ids(pop)
    perf = perf_frame({m["momentum"]: 0.9, LEARNER: 0.2, m["reversal"]: 0.95, m["risk_desk"]: 0.5})
    return perf, share_intelligence(DAY, perf, pop)


def test_a_receiver_below_its_threshold_moves_toward_better_senders():
    pop = _two_momentum()
    m = ids(pop)
    perf, sharing = _day(pop)
    after = update_population(DAY, pop, perf, messages_frame([]), sharing)

    # the sender's confidence: consistency 0.6 x 9 scored days of the 10 for full confidence
    shared = sharing.set_index("sender_module_id")
    assert shared.loc[m["momentum"], "confidence_level"] == 0.54
    # weight 0.54 x (0.9 - 0.2); one sender of its specialty scored better: min_edge moves half way (lr 0.5)
    learner = row(after, LEARNER)
    assert learner["genome"]["min_edge"] == 0.085
    lesson = learner["learning_patterns"]["learned"][-1]
    assert lesson == {
        "day": "2026-01-05",
        "from": [m["momentum"]],
        "weights": {m["momentum"]: 0.378},
        "learning_rate": 0.5,
        "genes": {"min_edge": {"from": 0.15, "to": 0.085}},
    }
    # reversal scored better still, but is of another specialty: not a teacher
    assert m["reversal"] not in lesson["from"]
    # the teacher, above its threshold, learns nothing from anyone
    assert "learned" not in row(after, m["momentum"])["learning_patterns"]
    assert row(after, m["momentum"])["genome"] == row(pop, m["momentum"])["genome"]


def test_a_receiver_at_or_above_its_threshold_or_without_sharing_learns_nothing():
    perf, sharing = _day(_two_momentum())
    content = update_population(DAY, _two_momentum(threshold=0.25), perf, messages_frame([]), sharing)
    assert row(content, LEARNER)["genome"]["min_edge"] == 0.15
    cut = update_population(DAY, _two_momentum(), perf, messages_frame([]), None)
    assert row(cut, LEARNER)["genome"]["min_edge"] == 0.15
    assert "learned" not in row(cut, LEARNER)["learning_patterns"]


def test_cutting_the_sharing_changes_the_receivers_later_decisions():
    """What it learned at the end of day d changes its plans on day d + 1; its plans of day d were made
    before (by the population at the start of the day, the same either way)."""
    pop = _two_momentum()
    perf, sharing = _day(pop)
    shared = update_population(DAY, pop, perf, messages_frame([]), sharing)
    cut = update_population(DAY, pop, perf, messages_frame([]), None)
    bars = walk_bars()
    shift = pd.Timestamp("2024-03-04", tz="UTC") - (DAY + pd.Timedelta(days=1))
    nxt = DAY + pd.Timedelta(days=1)
    bars = bars.assign(timestamp=bars["timestamp"] - shift)
    events = walk_events(walk_bars()).assign(timestamp=lambda e: e["timestamp"] - shift)
    with_sharing = generate_plans(nxt, events, bars, shared)
    without = generate_plans(nxt, events, bars, cut)
    mine = lambda plans: plans[plans["module_id"] == LEARNER]  # noqa: E731
    assert len(mine(with_sharing)) > len(mine(without)) > 0
    # the plans it still made either way are the same plans (the filter opened, nothing else moved)
    assert set(mine(without)["plan_id"]) < set(mine(with_sharing)["plan_id"])


def test_learning_parameters_are_inherited_mutated_and_bounded():
    pop = founding_population(DAY - pd.Timedelta(days=5))
    m = ids(pop)
    for name in ("momentum", "reversal", "divergence", "risk_desk", "execution_sim"):
        pop = with_history(pop, m[name], [0.8, 0.8, 0.8])
    children = []
    for k in range(6):
        day = DAY + pd.Timedelta(days=k)
        trig = make_triggers(
            [("performance_threshold", m[n], {}) for n in ("momentum", "reversal", "divergence")], day=day
        )
        reps, _, after = replicate(day, trig, pop)
        children.append((reps, after))
    rates = pd.concat([after[after["module_id"].isin(reps["child_module_id"])] for reps, after in children])
    assert len(rates) == 18
    for r in RATES:
        assert rates[r].between(0.01, 0.99).all()
        assert (rates[r] * 100).round(6).mod(1).eq(0).all()  # 2 places, the column's scale
    # the rates evolve: children differ from their parents' seed values, and from each other
    assert rates["mutation_rate"].nunique() > 3 and rates["learning_rate"].nunique() > 1
    assert rates["adaptation_threshold"].nunique() > 3 and rates["recombination_rate"].nunique() > 3
    for reps, after in children:
        for rep in reps.to_dict("records"):
            child = row(after, rep["child_module_id"])
            moved = rep["inherited_intelligence"]["rates_mutated"]
            for r in RATES:
                parent_mean = sum(row(after, p)[r] for p in child["parent_modules"]) / len(
                    child["parent_modules"]
                )
                assert (r in moved) == (round(parent_mean, 2) != child[r])


@pytest.mark.parametrize(("rate", "parents"), [(0.0, 1), (0.99, 2)])
def test_recombination_rate_decides_whether_a_child_takes_a_mate(rate, parents):
    pop = founding_population(DAY - pd.Timedelta(days=5))
    m = ids(pop)
    pop = with_history(pop, m["momentum"], [0.8, 0.8, 0.8], recombination_rate=rate)
    pop = clone(pop, m["momentum"], LEARNER)
    pop = with_history(pop, LEARNER, [0.6, 0.6, 0.6])
    reps, _, after = replicate(DAY, make_triggers([("performance_threshold", m["momentum"], {})]), pop)
    child = row(after, reps.iloc[0]["child_module_id"])
    assert len(child["parent_modules"]) == parents
    if parents == 2:
        assert child["parent_modules"] == [m["momentum"], LEARNER]  # the best other of its specialty
        assert reps.iloc[0]["recombination_applied"]["parents"] == [m["momentum"], LEARNER]


# ------------------------------------------------------------------------------------------------ lifecycle


@pytest.mark.parametrize(("sample", "expected"), [(1, "experimental"), (2, "active")])
def test_graduation_needs_a_minimum_sample(sample, expected):
    pop = founding_population(DAY - pd.Timedelta(days=10))
    mid = ids(pop)["momentum"]
    pop = with_history(pop, mid, [0.6, 0.6], sample=sample)
    after = update_population(DAY, pop, perf_frame({mid: 0.6}), messages_frame([]))
    # its risk-adjusted return is positive (0.01 a day); 2 x 1 = 2 plans < 3 <= 2 x 2
    assert row(after, mid)["lifecycle_stage"] == expected


@pytest.mark.parametrize(("lagging_before", "expected"), [(4, "deprecated"), (3, "active")])
def test_an_active_module_behind_its_peers_for_five_days_is_retired(lagging_before, expected):
    pop = founding_population(DAY - pd.Timedelta(days=10))
    m = ids(pop)
    pop = with_history(pop, m["momentum"], [0.6] * 5, lifecycle_stage="active")
    i = pop.index[pop["module_id"] == m["momentum"]][0]
    history = pop.at[i, "performance_history"]
    pop.at[i, "performance_history"] = [
        {**e, "below_peers": k >= len(history) - lagging_before} for k, e in enumerate(history)
    ]
    perf = perf_frame({m["momentum"]: 0.6, m["reversal"]: 0.6, m["divergence"]: 0.6})
    rar = {m["momentum"]: -0.5, m["reversal"]: 0.2, m["divergence"]: 0.1}
    perf["risk_adjusted_returns"] = perf["module_id"].map(rar)
    after = update_population(DAY, pop, perf, messages_frame([]))
    r = row(after, m["momentum"])
    # its risk-adjusted return is below its peers' median today, whatever its score (0.6, above any bar)
    assert r["performance_history"][-1]["below_peers"] is True
    assert row(after, m["reversal"])["performance_history"][-1]["below_peers"] is False
    assert r["lifecycle_stage"] == expected
    assert r["status"] == ("inactive" if expected == "deprecated" else "active")


def _walk_day() -> tuple[pd.Timestamp, pd.DataFrame, pd.DataFrame]:
    bars = walk_bars()
    day = pd.Timestamp("2024-03-04", tz="UTC")
    return day, walk_events(bars), bars


def test_a_module_whose_step_raises_fails_and_the_day_goes_on():
    day, events, bars = _walk_day()
    pop = founding_population(day)
    m = ids(pop)
    i = pop.index[pop["module_id"] == m["reversal"]][0]
    pop.at[i, "genome"] = {**pop.at[i, "genome"], "stop_atr": None}
    rows = run_day(day, events, bars, pop, pd.DataFrame())
    after = rows["population"]
    assert row(after, m["reversal"])["status"] == "failed"
    failure = row(after, m["reversal"])["learning_patterns"]["failure"]
    assert failure["step"] == "generate_plans" and "TypeError" in failure["error"]
    plans = rows["trading_plans"]
    assert len(plans) > 20 and m["reversal"] not in set(plans["module_id"])
    assert {m["momentum"], m["divergence"]} <= set(plans["module_id"])
    assert set(rows["module_performance"]["module_id"]).isdisjoint({m["reversal"]})


# --------------------------------------------------------------------- replication: validate and initialize


def test_replication_validates_and_initializes_each_child():
    day, events, bars = _walk_day()
    pop = founding_population(day - pd.Timedelta(days=1))
    rows = run_day(day, events, bars, pop, pd.DataFrame())
    reps, after = rows["module_replications"], rows["population"]
    assert len(reps) == 3 and set(reps["replication_status"]) == {"completed"}
    # wall-clock measurements, whole ms rounded up: never 0, never missing
    for col in ("creation_time_ms", "validation_time_ms", "initialization_time_ms"):
        assert reps[col].notna().all() and (reps[col] >= 1).all()
    for rep in reps.to_dict("records"):
        child = row(after, rep["child_module_id"])
        parent = row(after, rep["parent_module_id"])
        assert child["learning_patterns"]["learned"] == []
        assert child["peer_ratings"] == parent["peer_ratings"]
    # a replication signal goes to every child; they are born tomorrow, so it waits for them
    signals = rows["module_messages"]
    signals = signals[signals["message_type"] == "replication_signal"]
    assert sorted(signals["receiver_module_id"]) == sorted(reps["child_module_id"])
    assert set(signals["status"]) == {"pending"} and (signals["delivery_attempts"] == 2).all()


def test_an_invalid_child_is_found_and_a_valid_one_is_initialized():
    pop = founding_population(DAY)
    m = ids(pop)
    parent = {**row(pop, m["momentum"]).to_dict(), "module_id": m["momentum"]}
    parent["peer_ratings"] = {m["risk_desk"]: 0.8}
    parent["learning_patterns"] = {"learned": [{"day": "2026-01-04", "genes": {"min_edge": {}}}]}
    child = {
        **parent,
        "module_id": LEARNER,
        "name": "momentum~x",
        "parent_modules": [m["momentum"]],
        "generational_depth": 1,
    }
    assert validate_child(child, [parent], None) == []
    broken = {**child, "genome": {**child["genome"], "stop_atr": 9.0}, "mutation_rate": 1.5}
    problems = validate_child(broken, [parent], None)
    assert problems == ["gene stop_atr = 9.0 outside [0.5, 5.0]", "mutation_rate = 1.5 outside [0, 1]"]
    assert validate_child({**child, "generational_depth": 3}, [parent], None) == [
        "generational_depth is not its parents' + 1"
    ]
    ready = initialize_child(child, [parent], 5)
    assert ready["peer_ratings"] == {m["risk_desk"]: 0.8} and ready["communication_latency_ms"] == 5
    assert ready["learning_patterns"]["learned"] == []
    assert ready["learning_patterns"]["inherited_lessons"] == [
        {"day": "2026-01-04", "genes": {"min_edge": {}}, "parent": m["momentum"]}
    ]


def test_the_bars_say_which_modules_acted_and_learned():
    day, events, bars = _walk_day()
    pop = founding_population(day)
    rows = run_day(day, events, bars, pop, pd.DataFrame())
    notes, plans = rows["bar_notes"], rows["trading_plans"]
    acted = notes.dropna(subset=["module_intelligence"])
    entries = [a for n in acted["module_intelligence"] for a in n["acted"]]
    # every plan is noted once, on its event's bar (one minute before the plan), with its decision
    assert sorted(a["plan_id"] for a in entries) == sorted(plans["plan_id"])
    by_plan = {
        a["plan_id"]: (s, t)
        for s, t, n in zip(acted["symbol"], acted["timestamp"], acted["module_intelligence"], strict=True)
        for a in n["acted"]
    }
    for p in plans.itertuples():
        assert by_plan[p.plan_id] == (p.symbol, p.timestamp - pd.Timedelta(minutes=1))
    decisions = dict(
        zip(
            rows["trading_plan_approvals"]["plan_id"],
            rows["trading_plan_approvals"]["approval_status"],
            strict=True,
        )
    )
    assert all(a["decision"] == decisions.get(a["plan_id"], "not decided") for a in entries)
    # the day's own learning (min_edge tuned on the success rate) is on the last bar of each symbol it traded
    learners = rows["module_intelligence_sharing"]
    learners = set(learners.loc[learners["intelligence_type"] == "learning_update", "sender_module_id"])
    learned = notes.dropna(subset=["module_learning_updates"])
    noted = {x["module_id"] for n in learned["module_learning_updates"] for x in n["learned"]}
    assert learners and noted == learners & set(plans["module_id"])
    last = bars[bars["timestamp"] >= day].groupby("symbol")["timestamp"].max()
    assert all(t == last[s] for s, t in zip(learned["symbol"], learned["timestamp"], strict=True))
