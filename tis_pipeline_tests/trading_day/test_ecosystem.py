"""Module ecosystem logic: founders, messages, sharing, population update, triggers, replication, lineage.

Inputs are built by hand (plans, approvals, performance, bars); no database, no Dagster.
"""

from __future__ import annotations

import hashlib
import json
import uuid

import networkx as nx
import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from tis_pipeline.quality.evaluate import evaluate_frame
from tis_pipeline.trading_day.closes import reduce_closes
from tis_pipeline.trading_day.ecosystem import common as logic
from tis_pipeline.trading_day.ecosystem.common import (
    MESSAGE_COLUMNS,
    MODULE_COLUMNS,
    POPULATION_COLUMNS,
    REPLICATION_COLUMNS,
    SHARING_COLUMNS,
    TRIGGER_COLUMNS,
    population_rows,
)
from tis_pipeline.trading_day.ecosystem.founders import founding_population
from tis_pipeline.trading_day.ecosystem.messages import bus_policy
from tis_pipeline.trading_day.ecosystem.replicate import replicate
from tis_pipeline.trading_day.ecosystem.routing import closing_messages, concat_messages, route_plans
from tis_pipeline.trading_day.ecosystem.sharing import share_intelligence
from tis_pipeline.trading_day.ecosystem.triggers import replication_triggers
from tis_pipeline.trading_day.ecosystem.update import update_population
from tis_pipeline.trading_day.population import ECOSYSTEM_NAMESPACE as NAMESPACE
from tis_pipeline.trading_day.population import GENE_BOUNDS, HORIZONS, MUTABLE_GENES

DAY = pd.Timestamp("2026-01-05", tz="UTC")
DAY_END = DAY + pd.Timedelta(hours=23, minutes=59)

PLAN_COLUMNS = [
    "plan_id",
    "module_id",
    "symbol",
    "timestamp",
    "signal_strength",
    "direction",
    "entry_conditions",
    "entry_price",
    "position_size",
    "stop_loss",
    "take_profit",
    "time_horizon",
    "risk_reward_ratio",
    "confidence_score",
    "microstructure_evidence",
    "regime_context",
    "module_intelligence",
    "execution_notes",
    "valid_until",
    "validation_status",
    "risk_assessment",
    "portfolio_impact",
    "execution_status",
    "executed_price",
    "executed_quantity",
    "execution_cost",
    "slippage",
    "pnl",
    "performance_metrics",
    "attribution_analysis",
    "event_id",
    "dsi_evidence_id",
]
APPROVAL_COLUMNS = [
    "approval_id",
    "plan_id",
    "decision_maker_module_id",
    "timestamp",
    "approval_status",
    "approval_reason",
    "modifications",
    "risk_assessment",
    "risk_controls",
    "portfolio_impact",
    "decision_confidence",
    "decision_factors",
    "alternative_plans",
]
PERFORMANCE_COLUMNS = [
    "performance_id",
    "module_id",
    "timestamp",
    "performance_score",
    "consistency_score",
    "innovation_score",
    "specialization_score",
    "collaboration_score",
    "trading_plan_success_rate",
    "execution_quality",
    "risk_adjusted_returns",
    "sharpe_ratio",
    "max_drawdown",
    "learning_effectiveness",
    "adaptation_speed",
    "intelligence_sharing_effectiveness",
    "market_regime",
    "asset_class",
    "time_horizon",
]


# ------------------------------------------------------------------------------------------------ builders


def ids(pop: pd.DataFrame) -> dict[str, str]:
    return dict(zip(pop["name"], pop["module_id"], strict=True))


def row(pop: pd.DataFrame, module_id: str) -> pd.Series:
    return pop.set_index("module_id").loc[module_id]


def make_plan(
    plan_id: str,
    module_id: str,
    minute: int,
    *,
    symbol: str = "BTCUSDT",
    strength: float = 0.8,
    status: str = "executed",
    day: pd.Timestamp = DAY,
    exit_minutes: int = 10,
) -> dict:
    ts = day + pd.Timedelta(minutes=minute)
    executed = status in ("executed", "partial")
    return {
        "plan_id": plan_id,
        "module_id": module_id,
        "symbol": symbol,
        "timestamp": ts,
        "signal_strength": strength,
        "direction": "long",
        "entry_conditions": {"anomaly_type": "price_jump"},
        "entry_price": 100.0,
        "position_size": 5.0,
        "stop_loss": 99.0,
        "take_profit": 102.0,
        "time_horizon": "15m",
        "risk_reward_ratio": 2.0,
        "confidence_score": 0.6,
        "microstructure_evidence": {},
        "regime_context": {},
        "module_intelligence": {},
        "execution_notes": "",
        "valid_until": ts + pd.Timedelta(minutes=15),
        "validation_status": "validated" if status != "cancelled" else "failed",
        "risk_assessment": None,
        "portfolio_impact": None,
        "execution_status": status,
        "executed_price": 100.01 if executed else np.nan,
        "executed_quantity": 500.0 if executed else np.nan,
        "execution_cost": 12.5 if executed else np.nan,
        "slippage": 1.0 if executed else np.nan,
        "pnl": 250.0 if executed else np.nan,
        "performance_metrics": {
            "exit_time": (ts + pd.Timedelta(minutes=exit_minutes)).isoformat(),
            "exit_reason": "target",
        }
        if executed
        else None,
        "attribution_analysis": None,
        "event_id": str(uuid.uuid5(NAMESPACE, f"event|{plan_id}")),
        "dsi_evidence_id": str(uuid.uuid5(NAMESPACE, f"evidence|{plan_id}")),
    }


def plans_frame(plans: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(plans, columns=PLAN_COLUMNS)
    for col in ("timestamp", "valid_until"):
        frame[col] = pd.to_datetime(frame[col], utc=True)
    return frame


def approvals_frame(plans: pd.DataFrame, decision_maker: str) -> pd.DataFrame:
    rows = [
        {
            "approval_id": f"a-{p}",
            "plan_id": p,
            "decision_maker_module_id": decision_maker,
            "timestamp": t,
            "approval_status": "rejected" if s == "cancelled" else "approved",
        }
        for p, t, s in zip(plans["plan_id"], plans["timestamp"], plans["execution_status"], strict=True)
    ]
    return pd.DataFrame(rows, columns=APPROVAL_COLUMNS)


def perf_frame(
    scores: dict[str, float],
    day: pd.Timestamp = DAY,
    success: dict[str, float] | None = None,
    consistency: float = 0.6,
) -> pd.DataFrame:
    success = success or {}
    rows = [
        {
            "performance_id": f"p-{m}-{day.date()}",
            "module_id": m,
            "timestamp": day + pd.Timedelta(hours=23, minutes=59),
            "performance_score": s,
            "consistency_score": consistency,
            "innovation_score": 0.1,
            "specialization_score": 0.5,
            "collaboration_score": 0.5,
            "trading_plan_success_rate": success.get(m, np.nan),
            "execution_quality": 0.8,
            "risk_adjusted_returns": 0.01,
            "sharpe_ratio": 1.2,
            "max_drawdown": -0.02,
            "learning_effectiveness": 0.5,
            "adaptation_speed": 0.5,
            "intelligence_sharing_effectiveness": 0.5,
            "market_regime": "ranging",
            "asset_class": "crypto",
            "time_horizon": "15m",
        }
        for m, s in scores.items()
    ]
    frame = pd.DataFrame(rows, columns=PERFORMANCE_COLUMNS)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    return frame


def messages_frame(rows: list[dict]) -> pd.DataFrame:
    base = {
        "priority": 2,
        "ttl_seconds": 3600,
        "status": "delivered",
        "delivery_attempts": 1,
        "error_message": None,
        "receiver_module_id": None,
    }
    full = []
    for i, r in enumerate(rows):
        m = {**base, "message_id": f"m{i}", "timestamp": DAY + pd.Timedelta(hours=1), **r}
        # handled when sent, unless the row says when (the bus's measurement)
        m["last_delivery_attempt"] = r.get("last_delivery_attempt", m["timestamp"])
        full.append(m)
    frame = pd.DataFrame(full, columns=list(MESSAGE_COLUMNS))
    for col in ("timestamp", "last_delivery_attempt"):
        frame[col] = pd.to_datetime(frame[col], utc=True)
    return frame


def day_messages(
    day: pd.Timestamp, plans: pd.DataFrame, approvals: pd.DataFrame, pop: pd.DataFrame
) -> pd.DataFrame:
    """The day's messages through the trading day's one wiring (``routing.route_plans`` and
    ``closing_messages``, as ``run_day``), the decision maker's and the trader's steps being the hand-made
    ``approvals`` and the plans' hand-made execution columns."""
    policy = bus_policy(pop, day)

    def decide(reached: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        ids_ = set(reached["plan_id"])
        return plans[plans["plan_id"].isin(ids_)], approvals[approvals["plan_id"].isin(ids_)]

    def execute(reached: pd.DataFrame) -> pd.DataFrame:
        return plans[plans["plan_id"].isin(set(reached["plan_id"]))]

    routed, _, messages = route_plans(day, plans, pop, policy, pd.DataFrame(), decide, execute)
    return concat_messages(messages, closing_messages(day, routed, pop, policy))


def with_history(
    pop: pd.DataFrame,
    module_id: str,
    scores: list[float],
    day: pd.Timestamp = DAY,
    sample: int = 10,
    below_peers: bool | None = None,
    **columns,
):
    """``module_id`` with the given scores on the days before ``day`` (last score = the day before), each
    behind ``sample`` plans (and below its peers or not, when given)."""
    pop = pop.copy()
    i = pop.index[pop["module_id"] == module_id][0]
    n = len(scores)
    extra = {} if below_peers is None else {"below_peers": below_peers}
    pop.at[i, "performance_history"] = [
        {"day": (day - pd.Timedelta(days=n - k)).strftime("%Y-%m-%d"), "score": s, "n": sample, **extra}
        for k, s in enumerate(scores)
    ]
    for col, value in columns.items():
        pop.at[i, col] = value
    return pop


def clone(pop: pd.DataFrame, module_id: str, new_id: str, **columns) -> pd.DataFrame:
    """A copy of a module row under another id (a hand-made sibling of the same specialty)."""
    src = pop[pop["module_id"] == module_id].iloc[[0]].copy()
    src["module_id"] = new_id
    src["name"] = f"{src['name'].iloc[0]}~{new_id[:8]}"
    for col, value in columns.items():
        src[col] = [value]
    return pd.concat([pop, src], ignore_index=True)


def plain_json(value) -> bool:
    if value is None or type(value) in (str, int, float, bool):
        return not (type(value) is float and not np.isfinite(value))
    if type(value) is list:
        return all(plain_json(v) for v in value)
    if type(value) is dict:
        return all(type(k) is str and plain_json(v) for k, v in value.items())
    return False


def assert_valid(frame: pd.DataFrame, table: str) -> None:
    report = evaluate_frame(frame, table)
    assert report.passed, [(r.name, r.unexpected_count) for r in report.failed]
    for col in logic.JSON_COLUMNS[table]:
        for value in frame[col]:
            assert plain_json(value), (table, col, value)
            json.dumps(value, sort_keys=True, allow_nan=False)


# ----------------------------------------------------------------------------------------------- founders


def test_founders_are_five_modules_with_stable_ids_and_valid_bounds():
    pop = founding_population(DAY)
    assert list(pop.columns) == list(POPULATION_COLUMNS)
    assert list(pop["name"]) == ["momentum", "reversal", "divergence", "risk_desk", "execution_sim"]
    assert list(pop["module_type"]) == ["alpha_detector"] * 3 + ["decision_maker", "trader"]
    for name, mtype, mid in zip(pop["name"], pop["module_type"], pop["module_id"], strict=True):
        assert mid == str(uuid.uuid5(NAMESPACE, f"{mtype}:{name}"))
    # a literal: the ids are the same in every process and on every start date
    assert ids(pop)["momentum"] == "1baa807d-62b5-51ed-b214-5d733020bcb1"
    later = founding_population(DAY + pd.Timedelta(days=9))
    assert list(later["module_id"]) == list(pop["module_id"])
    assert_frame_equal(founding_population(DAY), pop)

    assert set(pop["module_version"]) == {"1.0.0"}
    assert set(pop["lifecycle_stage"]) == {"experimental"} and set(pop["status"]) == {"active"}
    assert (pop["created_at"] == DAY).all() and (pop["generational_depth"] == 0).all()
    assert list(pop["learning_rate"]) == [0.01] * 5 and list(pop["adaptation_threshold"]) == [0.7] * 5
    genomes = dict(zip(pop["name"], pop["genome"], strict=True))
    assert genomes["momentum"]["anomaly_types"] == ["price_jump", "range_expansion"]
    assert genomes["reversal"]["anomaly_types"] == ["volume_spike", "pattern"]
    assert genomes["divergence"]["anomaly_types"] == ["divergence"]
    for name in ("momentum", "reversal", "divergence"):
        g = genomes[name]
        assert g["style"] == name and g["horizon_minutes"] in HORIZONS
        assert set(g) == {
            "style",
            "anomaly_types",
            "min_edge",
            "stop_atr",
            "target_atr",
            "horizon_minutes",
            "risk_pct",
        }
    assert set(genomes["risk_desk"]) == {
        "min_confidence",
        "min_risk_reward",
        "max_position_pct",
        "max_plans_per_symbol",
    }
    assert genomes["execution_sim"]["capital"] == 1_000_000.0

    rows = population_rows(pop)
    assert list(rows.columns) == list(MODULE_COLUMNS)
    assert rows["learning_patterns"].iloc[0] == {"name": "momentum", "genome": genomes["momentum"]}
    assert_valid(rows, "modules")


# ----------------------------------------------------------------------------------------------- messages


def _day_of_plans(pop: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    m = ids(pop)
    plans = plans_frame(
        [
            make_plan("p1", m["momentum"], 60, strength=0.80, status="executed"),
            make_plan("p2", m["momentum"], 90, strength=0.50, status="cancelled", symbol="ETHUSDT"),
            make_plan("p3", m["reversal"], 120, strength=0.30, status="partial"),
            make_plan("p4", m["divergence"], 150, strength=0.45, status="failed"),
        ]
    )
    return plans, approvals_frame(plans, m["risk_desk"])


def test_messages_exact_counts_priorities_and_delivery():
    pop = founding_population(DAY)
    m = ids(pop)
    pop.loc[pop["name"] == "momentum", "communication_latency_ms"] = 7
    pop.loc[pop["name"] == "execution_sim", "communication_latency_ms"] = 3
    plans, approvals = _day_of_plans(pop)
    msgs = day_messages(DAY, plans, approvals, pop)

    assert list(msgs.columns) == list(MESSAGE_COLUMNS)
    # 4 plans to the decision maker, 3 decisions (the validated plans) to the trader
    assert msgs["message_type"].value_counts().to_dict() == {
        "trading_plan": 7,
        "execution_feedback": 2,
        "intelligence_broadcast": 5,
    }
    assert msgs["message_id"].is_unique
    assert set(msgs["status"]) == {"delivered"} and msgs["error_message"].isna().all()
    assert (msgs["delivery_attempts"] == 1).all()

    plan_msgs = msgs[(msgs["message_type"] == "trading_plan") & (msgs["sender_module_id"] != m["risk_desk"])]
    tp = plan_msgs.set_index(plan_msgs["message_data"].map(lambda d: d["plan_id"]))
    assert tp.loc[["p1", "p2", "p3", "p4"], "priority"].tolist() == [1, 2, 3, 2]
    assert set(tp["receiver_module_id"]) == {m["risk_desk"]}
    assert tp.loc["p1", "sender_module_id"] == m["momentum"]
    assert tp.loc["p1", "timestamp"] == DAY + pd.Timedelta(minutes=60)
    # the message carries its sender's latency and is handled when it arrives
    assert tp.loc["p1", "message_data"]["sender_latency_ms"] == 7
    assert tp.loc["p1", "last_delivery_attempt"] == DAY + pd.Timedelta(minutes=60, milliseconds=7)
    assert tp.loc["p1", "ttl_seconds"] == 15 * 60

    dec = msgs[(msgs["message_type"] == "trading_plan") & (msgs["sender_module_id"] == m["risk_desk"])]
    dec = dec.set_index(dec["message_data"].map(lambda d: d["plan_id"]))
    assert sorted(dec.index) == ["p1", "p3", "p4"]  # p2 was rejected: nothing to execute
    assert set(dec["receiver_module_id"]) == {m["execution_sim"]}
    # sent when the decision maker handled the plan, with the time the plan has left
    assert dec.loc["p1", "timestamp"] == tp.loc["p1", "last_delivery_attempt"]
    assert dec.loc["p1", "ttl_seconds"] == 15 * 60 - 1
    assert dec.loc["p1", "message_data"]["decision"] == "approved"

    fb = msgs[msgs["message_type"] == "execution_feedback"]
    assert sorted(d["plan_id"] for d in fb["message_data"]) == ["p1", "p3"]
    assert set(fb["sender_module_id"]) == {m["execution_sim"]}
    assert sorted(fb["receiver_module_id"]) == sorted([m["momentum"], m["reversal"]])
    first = fb[fb["receiver_module_id"] == m["momentum"]].iloc[0]
    assert first["timestamp"] == DAY + pd.Timedelta(minutes=70)  # the exit time
    assert first["last_delivery_attempt"] == first["timestamp"] + pd.Timedelta(milliseconds=3)

    bc = msgs[msgs["message_type"] == "intelligence_broadcast"]
    assert bc["receiver_module_id"].isna().all() and (bc["timestamp"] == DAY_END).all()
    assert (bc["priority"] == 3).all()
    assert sorted(bc["sender_module_id"]) == sorted(pop["module_id"])
    momentum_bc = bc[bc["sender_module_id"] == m["momentum"]].iloc[0]["message_data"]
    assert (momentum_bc["plans"], momentum_bc["executed"], momentum_bc["pnl"]) == (2, 1, 250.0)
    assert_valid(msgs, "module_messages")


def test_message_to_an_inactive_module_fails_with_an_error():
    pop = founding_population(DAY)
    m = ids(pop)
    plans, approvals = _day_of_plans(pop)
    pop.loc[pop["name"] == "risk_desk", ["lifecycle_stage", "status"]] = ["deprecated", "inactive"]
    msgs = day_messages(DAY, plans, approvals, pop)
    tp = msgs[msgs["message_type"] == "trading_plan"]
    # no decision maker is live: the plans go nowhere, so nothing is decided or sent on to the trader
    assert len(tp) == 4 and set(tp["status"]) == {"failed"}
    assert (tp["error_message"] == "no decision maker is live").all()
    # the deprecated module no longer broadcasts; the others' messages are still delivered
    assert (msgs["message_type"] == "intelligence_broadcast").sum() == 4
    assert set(msgs.loc[msgs["message_type"] != "trading_plan", "status"]) == {"delivered"}

    # feedback to a retired author: retried with backoff (arrival, +20 s, +60 s), then failed
    pop = founding_population(DAY)
    pop.loc[pop["name"] == "reversal", ["lifecycle_stage", "status"]] = ["deprecated", "inactive"]
    msgs = day_messages(DAY, plans, approvals, pop)
    fb = msgs[(msgs["message_type"] == "execution_feedback") & (msgs["receiver_module_id"] == m["reversal"])]
    assert len(fb) == 1
    row = fb.iloc[0]
    assert (row["status"], row["delivery_attempts"]) == ("failed", 3)
    assert row["last_delivery_attempt"] == row["timestamp"] + pd.Timedelta(seconds=60)
    assert (
        f"receiver {m['reversal']} is not active (status inactive, lifecycle deprecated)"
        in row["error_message"]
    )
    assert "gave up after 3 attempts" in row["error_message"]
    assert_valid(msgs, "module_messages")


def test_messages_of_an_empty_day_are_broadcasts_only():
    pop = founding_population(DAY)
    msgs = day_messages(DAY, plans_frame([]), pd.DataFrame(columns=APPROVAL_COLUMNS), pop)
    assert list(msgs.columns) == list(MESSAGE_COLUMNS) and len(msgs) == 5
    assert set(msgs["message_type"]) == {"intelligence_broadcast"}


# ------------------------------------------------------------------------------------------------ sharing


def test_sharing_performance_updates_targeted_to_same_specialty_peers():
    start = DAY - pd.Timedelta(days=3)
    pop = founding_population(start)
    m = ids(pop)
    child = "c0000000-0000-5000-8000-000000000001"
    pop = clone(pop, m["momentum"], child, created_at=DAY, parent_modules=[m["momentum"]])
    scores = {
        m["momentum"]: 0.75,
        m["reversal"]: 0.5,
        m["divergence"]: 0.2,
        m["risk_desk"]: 0.6,
        m["execution_sim"]: 0.9,
        child: 0.4,
    }
    success = {m["momentum"]: 0.40, m["reversal"]: 0.55, m["divergence"]: 0.60, child: 0.59}
    sharing = share_intelligence(DAY, perf_frame(scores, success=success), pop)

    assert list(sharing.columns) == list(SHARING_COLUMNS)
    assert sharing["intelligence_type"].value_counts().to_dict() == {
        "performance_update": 6,
        "learning_update": 2,
        "capability_update": 1,
    }
    perf = sharing[sharing["intelligence_type"] == "performance_update"].set_index("sender_module_id")
    # performance is broadcast: every module may learn from it
    assert (perf["sharing_scope"] == "broadcast").all() and perf["target_modules"].isna().all()
    assert perf.loc[m["momentum"], "performance_score"] == 0.75
    # confidence = consistency (0.6) x the evidence behind it: 1 scored day of the 10 for full confidence
    assert perf.loc[m["momentum"], "confidence_level"] == 0.06
    assert perf.loc[m["momentum"], "intelligence_data"]["genome"] == row(pop, m["momentum"])["genome"]
    assert (perf["timestamp"] == DAY_END).all()
    assert perf.loc[[m["momentum"], m["reversal"], m["divergence"]], "sharing_priority"].tolist() == [1, 3, 1]

    learn = sharing[sharing["intelligence_type"] == "learning_update"].set_index("sender_module_id")
    assert learn.loc[m["momentum"], "intelligence_data"]["genes"] == {"min_edge": {"from": 0.02, "to": 0.03}}
    # what it learned is targeted to its specialty's peers; divergence has none, so it broadcasts
    assert learn.loc[m["momentum"], "sharing_scope"] == "targeted"
    assert learn.loc[m["momentum"], "target_modules"] == [child]
    assert learn.loc[m["divergence"], "sharing_scope"] == "broadcast"
    assert learn.loc[m["divergence"], "intelligence_data"]["genes"] == {
        "min_edge": {"from": 0.02, "to": 0.01}
    }
    # a newborn's capabilities are private to its lineage
    cap = sharing[sharing["intelligence_type"] == "capability_update"].iloc[0]
    assert cap["sender_module_id"] == child and cap["timestamp"] == DAY
    assert cap["sharing_scope"] == "private" and cap["target_modules"] == [m["momentum"]]
    assert cap["intelligence_data"]["parent_modules"] == [m["momentum"]]
    assert_valid(sharing, "module_intelligence_sharing")

    # update_population applies exactly the learning that was announced
    after = update_population(DAY, pop, perf_frame(scores, success=success), messages_frame([]))
    assert row(after, m["momentum"])["genome"]["min_edge"] == 0.03
    assert row(after, m["reversal"])["genome"]["min_edge"] == 0.02
    assert row(after, m["divergence"])["genome"]["min_edge"] == 0.01
    assert row(after, child)["genome"]["min_edge"] == 0.02


def test_founders_announce_their_capabilities_on_the_start_day():
    pop = founding_population(DAY)
    sharing = share_intelligence(DAY, perf_frame({}), pop)
    assert sharing["intelligence_type"].tolist() == ["capability_update"] * 5
    assert set(sharing["sharing_scope"]) == {"broadcast"}
    assert share_intelligence(DAY + pd.Timedelta(days=1), perf_frame({}), pop).empty


# ---------------------------------------------------------------------------------------- update_population


@pytest.mark.parametrize(
    "stage, before, sample, today_rar, peer_rar, expected",
    [
        ("experimental", [0.0, 0.0], 2, 0.01, None, "active"),  # 3 days, 4 plans, R = 0.01 > 0
        ("experimental", [0.0, 0.0], 1, 0.01, None, "experimental"),  # 2 plans < the minimum sample 3
        ("experimental", [0.0], 5, 0.01, None, "experimental"),  # only 2 scored days
        ("experimental", [0.0, 0.0], 2, 0.0, None, "experimental"),  # R = 0 is no evidence of an edge
        ("experimental", [-0.05, 0.0], 2, 0.01, None, "experimental"),  # R = -0.04
        ("experimental", [0.0, 0.0], 2, 0.01, 0.02, "experimental"),  # below its peer's R today
        ("experimental", [0.0, 0.0], 2, 0.02, 0.02, "active"),  # level with its peer
        ("active", [0.0] * 11, 2, 0.01, None, "active"),  # the window: R = 0.01 over the last 10
    ],
)
def test_promotion_on_out_of_sample_risk_adjusted_evidence(
    stage, before, sample, today_rar, peer_rar, expected
):
    pop = founding_population(DAY - pd.Timedelta(days=30))
    m = ids(pop)
    mid = m["momentum"]
    pop = with_history(pop, mid, [0.35] * len(before), sample=sample, lifecycle_stage=stage)
    i = pop.index[pop["module_id"] == mid][0]
    pop.at[i, "performance_history"] = [
        {**e, "rar": r} for e, r in zip(pop.at[i, "performance_history"], before, strict=True)
    ]
    scores = {mid: 0.35} if peer_rar is None else {mid: 0.35, m["reversal"]: 0.35}
    perf = perf_frame(scores)
    perf["risk_adjusted_returns"] = perf["module_id"].map({mid: today_rar, m["reversal"]: peer_rar})
    after = update_population(DAY, pop, perf, messages_frame([]))
    r = row(after, mid)
    assert r["lifecycle_stage"] == expected and r["status"] == "active"
    assert [e["rar"] for e in r["performance_history"]] == [*before, today_rar]
    assert r["last_updated"] == DAY_END
    assert_valid(population_rows(after), "modules")


@pytest.mark.parametrize(
    "stage, before, today, expected",
    [
        ("active", [0.29, 0.29, 0.29, 0.29], 0.29, "deprecated"),  # 5 days below 0.30
        ("active", [0.29, 0.29, 0.29, 0.29], 0.30, "active"),  # 0.30 is not below
        ("active", [0.10, 0.10, 0.10], 0.10, "active"),  # only 4 days
        ("experimental", [0.00, 0.00, 0.00, 0.00], 0.00, "deprecated"),
        ("active", [0.95, 0.95], 0.95, "active"),
    ],
)
def test_a_failing_module_is_retired_at_the_exact_threshold(stage, before, today, expected):
    pop = founding_population(DAY - pd.Timedelta(days=10))
    mid = ids(pop)["momentum"]
    pop = with_history(pop, mid, before, lifecycle_stage=stage)
    after = update_population(DAY, pop, perf_frame({mid: today}), messages_frame([]))
    r = row(after, mid)
    assert r["lifecycle_stage"] == expected
    assert r["status"] == ("inactive" if expected == "deprecated" else "active")
    assert [e["score"] for e in r["performance_history"]] == [*before, today]
    if expected == "deprecated":
        assert r["replication_readiness"] == 0.0
    assert_valid(population_rows(after), "modules")


def test_the_last_live_module_of_a_type_is_never_retired():
    pop = founding_population(DAY - pd.Timedelta(days=10))
    m = ids(pop)
    pop = with_history(pop, m["risk_desk"], [0.1] * 4)
    after = update_population(DAY, pop, perf_frame({m["risk_desk"]: 0.1}), messages_frame([]))
    assert row(after, m["risk_desk"])["status"] == "active"  # the only decision maker
    # with a second decision maker, the failing one goes
    pop = clone(pop, m["risk_desk"], str(uuid.uuid5(NAMESPACE, "desk-2")), performance_history=[])
    after = update_population(DAY, pop, perf_frame({m["risk_desk"]: 0.1}), messages_frame([]))
    assert row(after, m["risk_desk"])[["lifecycle_stage", "status"]].tolist() == ["deprecated", "inactive"]


def test_deprecated_modules_stop_taking_part():
    pop = founding_population(DAY - pd.Timedelta(days=10))
    mid = ids(pop)["momentum"]
    pop = with_history(pop, mid, [0.1] * 4)
    after = update_population(DAY, pop, perf_frame({mid: 0.1}), messages_frame([]))
    nxt = DAY + pd.Timedelta(days=1)
    msgs = day_messages(nxt, plans_frame([]), pd.DataFrame(columns=APPROVAL_COLUMNS), after)
    assert mid not in set(msgs["sender_module_id"]) and len(msgs) == 4
    # a non-live module is left as it was by the next update
    again = update_population(nxt, after, perf_frame({mid: 0.9}, day=nxt), messages_frame([]))
    assert row(again, mid)["performance_history"] == row(after, mid)["performance_history"]
    assert row(again, mid)["last_updated"] == DAY_END


def test_network_measures_on_a_known_message_graph():
    pop = founding_population(DAY)
    m = ids(pop)
    at = DAY + pd.Timedelta(hours=1)
    msgs = messages_frame(
        [
            {
                "sender_module_id": m["momentum"],
                "receiver_module_id": m["risk_desk"],
                "message_type": "trading_plan",
                "message_data": {"plan_id": "p1", "symbol": "BTCUSDT"},
                "timestamp": at,
                "last_delivery_attempt": at + pd.Timedelta(milliseconds=2),
            },
            {
                "sender_module_id": m["reversal"],
                "receiver_module_id": m["risk_desk"],
                "message_type": "trading_plan",
                "message_data": {"plan_id": "p2", "symbol": "ETHUSDT"},
                "timestamp": at,
                "last_delivery_attempt": at + pd.Timedelta(milliseconds=8),
            },
            {
                "sender_module_id": m["execution_sim"],
                "receiver_module_id": m["momentum"],
                "message_type": "execution_feedback",
                "message_data": {"plan_id": "p1", "symbol": "BTCUSDT"},
                "timestamp": at + pd.Timedelta(minutes=5),
                "last_delivery_attempt": at + pd.Timedelta(minutes=5, milliseconds=3),
            },
            # a failed message and broadcasts are not edges
            {
                "sender_module_id": m["reversal"],
                "receiver_module_id": m["divergence"],
                "message_type": "trading_plan",
                "message_data": {"plan_id": "p3", "symbol": "ETHUSDT"},
                "status": "failed",
                "error_message": "x",
            },
            *[
                {
                    "sender_module_id": mid,
                    "message_type": "intelligence_broadcast",
                    "message_data": {},
                    "timestamp": DAY_END,
                }
                for mid in pop["module_id"]
                if mid != m["divergence"]
            ],
        ]
    )
    after = update_population(DAY, pop, perf_frame({}), msgs)

    graph = nx.Graph()
    graph.add_nodes_from(pop["module_id"])
    graph.add_edges_from(
        [
            (m["momentum"], m["risk_desk"]),
            (m["reversal"], m["risk_desk"]),
            (m["execution_sim"], m["momentum"]),
        ]
    )
    expected = {k: round(v, 2) for k, v in nx.degree_centrality(graph).items()}
    got = dict(zip(after["module_id"], after["network_centrality"], strict=True))
    assert got == expected
    assert (got[m["momentum"]], got[m["risk_desk"]], got[m["reversal"]], got[m["divergence"]]) == (
        0.5,
        0.5,
        0.25,
        0.0,
    )

    # p1 went through (it has feedback), p2 did not
    assert row(after, m["momentum"])["peer_ratings"] == {m["execution_sim"]: 1.0, m["risk_desk"]: 1.0}
    assert row(after, m["risk_desk"])["peer_ratings"] == {m["momentum"]: 1.0, m["reversal"]: 0.0}
    assert row(after, m["momentum"])["collaboration_score"] == 1.0
    assert row(after, m["risk_desk"])["collaboration_score"] == 0.5
    assert row(after, m["divergence"])["collaboration_score"] == 0.0
    # one symbol of two -> fully specialised; both symbols equally -> not at all
    assert row(after, m["momentum"])["specialization_index"] == 1.0
    assert row(after, m["risk_desk"])["specialization_index"] == 0.0
    # the bus's measurements: 2 messages in 10 ms of bus time (2 + 8) -> 200 a second, 1 in 3 ms -> 333;
    # the median wait of its inbox (2 and 8 ms); a module that received nothing keeps its type's base latency
    assert row(after, m["risk_desk"])["message_throughput_per_sec"] == 200
    assert row(after, m["momentum"])["message_throughput_per_sec"] == 333
    assert row(after, m["divergence"])["message_throughput_per_sec"] == 0
    assert row(after, m["risk_desk"])["communication_latency_ms"] == 5
    assert row(after, m["momentum"])["communication_latency_ms"] == 3
    assert row(after, m["divergence"])["communication_latency_ms"] == 5
    assert row(after, m["momentum"])["intelligence_sharing_rate"] == 0.2
    assert row(after, m["divergence"])["intelligence_sharing_rate"] == 0.0
    assert_valid(population_rows(after), "modules")


def test_history_window_readiness_and_cooldown():
    pop = founding_population(DAY - pd.Timedelta(days=60))
    m = ids(pop)
    pop = with_history(pop, m["momentum"], [0.9] * 35)
    pop = with_history(pop, m["reversal"], [0.6, 0.8, 0.6, 0.8])
    pop = with_history(pop, m["divergence"], [0.8, 0.8])
    after = update_population(
        DAY,
        pop,
        perf_frame({m["momentum"]: 0.9, m["reversal"]: 0.6, m["divergence"]: 0.8}),
        messages_frame([]),
    )
    hist = row(after, m["momentum"])["performance_history"]
    assert len(hist) == 30 and hist[0]["day"] == "2025-12-07" and hist[-1]["day"] == "2026-01-05"
    assert row(after, m["momentum"])["replication_readiness"] == 0.9
    window = np.array([0.6, 0.8, 0.6, 0.8, 0.6])
    assert row(after, m["reversal"])["replication_readiness"] == round(window.mean() * (1 - window.std()), 2)
    assert row(after, m["divergence"])["replication_readiness"] == round(0.8 * 3 / 5, 2)
    assert row(after, m["risk_desk"])["replication_readiness"] == 0.0  # never scored

    # an offspring born within the last 5 days cools the parent down
    for born, ready in ((DAY - pd.Timedelta(days=3), 0.0), (DAY - pd.Timedelta(days=4), 0.9)):
        kid = clone(
            pop,
            m["momentum"],
            "c0000000-0000-5000-8000-0000000000aa",
            created_at=born,
            parent_modules=[m["momentum"]],
            performance_history=[],
        )
        after = update_population(DAY, kid, perf_frame({m["momentum"]: 0.9}), messages_frame([]))
        assert row(after, m["momentum"])["replication_readiness"] == ready


def test_update_population_does_not_touch_its_inputs():
    pop = with_history(founding_population(DAY), ids(founding_population(DAY))["momentum"], [0.5, 0.6])
    snapshot = pop.copy(deep=True)
    snapshot_json = json.dumps(population_rows(pop).to_dict("records"), default=str, sort_keys=True)
    plans, approvals = _day_of_plans(pop)
    msgs = day_messages(DAY, plans, approvals, pop)
    update_population(
        DAY, pop, perf_frame({ids(pop)["momentum"]: 0.4}, success={ids(pop)["momentum"]: 0.1}), msgs
    )
    assert_frame_equal(pop, snapshot)
    assert json.dumps(population_rows(pop).to_dict("records"), default=str, sort_keys=True) == snapshot_json


# ----------------------------------------------------------------------------------------------- triggers


def _of(triggers: pd.DataFrame, kind: str) -> pd.DataFrame:
    return triggers[triggers["trigger_type"] == kind]


@pytest.mark.parametrize("readiness, fires", [(0.70, True), (0.69, False), (0.95, True), (0.0, False)])
def test_performance_threshold_trigger(readiness, fires):
    pop = founding_population(DAY)
    mid = ids(pop)["reversal"]
    pop.loc[pop["module_id"] == mid, "replication_readiness"] = readiness
    got = _of(
        replication_triggers(DAY, pop, perf_frame({}), reduce_closes(DAY, None)), "performance_threshold"
    )
    assert len(got) == int(fires)
    if fires:
        t = got.iloc[0]
        assert t["module_id"] == mid and t["trigger_priority"] == 2 and t["status"] == "active"
        assert t["trigger_data"]["replication_readiness"] == readiness


def test_performance_threshold_ignores_modules_that_are_not_live():
    pop = founding_population(DAY)
    pop["replication_readiness"] = 0.9
    pop.loc[pop["name"] == "reversal", ["lifecycle_stage", "status"]] = ["deprecated", "inactive"]
    got = _of(
        replication_triggers(DAY, pop, perf_frame({}), reduce_closes(DAY, None)), "performance_threshold"
    )
    assert len(got) == 4 and ids(pop)["reversal"] not in set(got["module_id"])


def test_diversity_gap_trigger():
    pop = founding_population(DAY)
    m = ids(pop)
    got = _of(replication_triggers(DAY, pop, perf_frame({}), reduce_closes(DAY, None)), "diversity_gap")
    assert len(got) == 5 and set(got["trigger_priority"]) == {2}
    assert {d["specialty"] for d in got["trigger_data"]} == {
        "momentum",
        "reversal",
        "divergence",
        "decision_maker",
        "trader",
    }

    pop = clone(pop, m["momentum"], "c0000000-0000-5000-8000-000000000002")
    pop.loc[pop["name"] == "reversal", ["lifecycle_stage", "status"]] = ["deprecated", "inactive"]
    got = _of(replication_triggers(DAY, pop, perf_frame({}), reduce_closes(DAY, None)), "diversity_gap")
    specialties = {
        d["specialty"]: p for d, p in zip(got["trigger_data"], got["trigger_priority"], strict=True)
    }
    assert specialties == {"reversal": 1, "divergence": 2, "decision_maker": 2, "trader": 2}
    # no live reversal module: the lineage is revived from the deprecated one
    assert got[got["trigger_priority"] == 1].iloc[0]["module_id"] == m["reversal"]
    assert got["trigger_priority"].tolist() == sorted(got["trigger_priority"])


@pytest.mark.parametrize(
    "scores, fires",
    [
        ((0.29, 0.10), True),
        ((0.29, 0.30), False),  # one module at 0.30 is not below it
        ((0.10, None), False),  # one live module was not scored: not known to fail
        ((0.95, 0.90), False),
    ],
)
def test_failure_recovery_trigger(scores, fires):
    pop = founding_population(DAY - pd.Timedelta(days=5))
    m = ids(pop)
    sib = "c0000000-0000-5000-8000-000000000003"
    pop = clone(pop, m["momentum"], sib)
    pop = with_history(pop, m["momentum"], [0.6])
    pop = with_history(pop, sib, [0.4])
    today = {mid: s for mid, s in zip((m["momentum"], sib), scores, strict=True) if s is not None}
    today[m["reversal"]] = 0.1  # the only reversal module fails too
    got = _of(replication_triggers(DAY, pop, perf_frame(today), reduce_closes(DAY, None)), "failure_recovery")
    specialties = [d["specialty"] for d in got["trigger_data"]]
    assert specialties == (["momentum", "reversal"] if fires else ["reversal"])
    assert set(got["trigger_priority"]) == {1}
    if fires:
        t = got[got["module_id"].isin([m["momentum"], sib])].iloc[0]
        assert t["trigger_data"]["parents"] == [m["momentum"], sib]  # by mean history score
        assert t["module_id"] == (m["momentum"] if scores[0] >= scores[1] else sib)


def _regime_bars(day: pd.Timestamp, before: str, after: str, symbols=("BTCUSDT", "ETHUSDT", "SOLUSDT")):
    """Two windows of 1-minute bars: the two hours before ``day`` and the last two hours of it."""
    frames = []
    for start, trend in ((day - pd.Timedelta(hours=2), before), (day + pd.Timedelta(hours=22), after)):
        n = 120
        steps = {
            "up": np.full(n, 0.001),
            "down": np.full(n, -0.001),
            "flat": np.where(np.arange(n) % 2 == 0, 0.001, -0.001),
        }[trend]
        close = 100 * np.exp(np.cumsum(steps + 0.0002 * np.sin(np.arange(n))))
        for sym in symbols:
            frames.append(
                pd.DataFrame(
                    {
                        "symbol": sym,
                        "timestamp": start + pd.to_timedelta(np.arange(n), unit="min"),
                        "open": close,
                        "high": close * 1.001,
                        "low": close * 0.999,
                        "close": close,
                        "volume": 1.0,
                    }
                )
            )
    return pd.concat(frames, ignore_index=True).sort_values(["symbol", "timestamp"], ignore_index=True)


@pytest.mark.parametrize(
    "before, after, fires",
    [
        ("up", "flat", True),
        ("flat", "down", True),
        ("up", "down", True),
        ("up", "up", False),
        ("flat", "flat", False),
    ],
)
def test_regime_change_trigger(before, after, fires):
    pop = founding_population(DAY)
    m = ids(pop)
    scores = {m["momentum"]: 0.5, m["reversal"]: 0.7, m["divergence"]: 0.7, m["risk_desk"]: 0.9}
    bars = _regime_bars(DAY, before, after)
    got = _of(replication_triggers(DAY, pop, perf_frame(scores), reduce_closes(DAY, bars)), "regime_change")
    assert len(got) == int(fires)
    if fires:
        t = got.iloc[0]
        assert (t["trigger_data"]["previous_regime"], t["trigger_data"]["regime"]) == (
            {"up": "trending_up", "down": "trending_down", "flat": "ranging"}[before],
            {"up": "trending_up", "down": "trending_down", "flat": "ranging"}[after],
        )
        # best-scoring live alpha, ties by module_id (the decision maker's 0.9 does not count)
        assert t["module_id"] == min(m["reversal"], m["divergence"]) and t["trigger_priority"] == 3


def test_regime_change_needs_the_previous_days_bars():
    pop = founding_population(DAY)
    bars = _regime_bars(DAY, "up", "flat")
    only_day = bars[bars["timestamp"] >= DAY]
    assert _of(
        replication_triggers(DAY, pop, perf_frame({}), reduce_closes(DAY, only_day)), "regime_change"
    ).empty
    # bars after the day are never read
    late = _regime_bars(DAY + pd.Timedelta(days=1), "flat", "down")
    late = late[late["timestamp"] > DAY + pd.Timedelta(days=1)]
    both = pd.concat([bars, late], ignore_index=True)
    assert_frame_equal(
        replication_triggers(DAY, pop, perf_frame({}), reduce_closes(DAY, bars)),
        replication_triggers(DAY, pop, perf_frame({}), reduce_closes(DAY, both)),
    )


def test_triggers_frame_shape_and_bounds():
    pop = founding_population(DAY)
    trig = replication_triggers(DAY, pop, perf_frame({}), reduce_closes(DAY, _regime_bars(DAY, "up", "down")))
    assert list(trig.columns) == list(TRIGGER_COLUMNS)
    assert trig["trigger_id"].is_unique and (trig["timestamp"] == DAY_END).all()
    assert trig["processed_at"].isna().all() and trig["replication_id"].isna().all()
    assert_valid(trig, "module_replication_triggers")
    empty = replication_triggers(DAY, pop.iloc[0:0], perf_frame({}), reduce_closes(DAY, None))
    assert list(empty.columns) == list(TRIGGER_COLUMNS) and empty.empty


# -------------------------------------------------------------------------------------------- replication


def make_triggers(specs: list[tuple[str, str, dict]], day: pd.Timestamp = DAY) -> pd.DataFrame:
    rows = [
        {
            "trigger_id": str(uuid.uuid5(NAMESPACE, f"test|{i}|{day.date()}")),
            "module_id": mid,
            "timestamp": day + pd.Timedelta(hours=23, minutes=59),
            "trigger_type": ttype,
            "trigger_data": data,
            "trigger_priority": 2,
            "status": "active",
            "processed_at": None,
            "replication_id": None,
        }
        for i, (ttype, mid, data) in enumerate(specs)
    ]
    frame = pd.DataFrame(rows, columns=list(TRIGGER_COLUMNS))
    for col in ("timestamp", "processed_at"):
        frame[col] = pd.to_datetime(frame[col], utc=True)
    return frame


def test_replicate_respects_the_daily_cap():
    pop = founding_population(DAY)
    trig = replication_triggers(DAY, pop, perf_frame({}), reduce_closes(DAY, None))
    assert len(trig) == 5
    reps, trig_out, after = replicate(DAY, trig, pop)

    assert list(reps.columns) == list(REPLICATION_COLUMNS) and list(trig_out.columns) == list(TRIGGER_COLUMNS)
    assert len(reps) == 3 and len(after) == 8
    assert trig_out["status"].tolist() == ["processed"] * 3 + ["expired"] * 2
    processed = trig_out[trig_out["status"] == "processed"]
    assert processed["replication_id"].tolist() == reps["replication_id"].tolist()
    assert (processed["processed_at"] == DAY_END).all()
    expired = trig_out[trig_out["status"] == "expired"]
    assert expired["replication_id"].isna().all() and expired["processed_at"].isna().all()
    assert reps["parent_module_id"].tolist() == processed["module_id"].tolist()
    assert set(reps["replication_status"]) == {"completed"}
    assert reps[["creation_time_ms", "validation_time_ms", "initialization_time_ms"]].isna().all().all()

    for rep in reps.itertuples():
        parent, child = row(after, rep.parent_module_id), row(after, rep.child_module_id)
        assert parent["offspring_modules"] == [rep.child_module_id] and parent["offspring_count"] == 1
        assert child["parent_modules"] == [rep.parent_module_id]
        assert child["generational_depth"] == 1 and child["module_version"] == "1.0.0+g1"
        assert child["created_at"] == DAY + pd.Timedelta(days=1)
        assert (child["lifecycle_stage"], child["status"]) == ("experimental", "active")
        assert child["module_type"] == parent["module_type"]
        assert child["name"].split("~")[0] == parent["name"]
        assert len(child["module_version"]) <= 20
    # the inputs are left alone
    assert len(pop) == 5 and (pop["offspring_count"] == 0).all()
    assert_valid(reps, "module_replications")
    assert_valid(trig_out, "module_replication_triggers")
    assert_valid(population_rows(after), "modules")


def test_replicate_respects_the_population_cap():
    pop = founding_population(DAY)
    m = ids(pop)
    for i in range(24):  # 29 live modules
        pop = clone(pop, m["risk_desk"], str(uuid.uuid5(NAMESPACE, f"sib{i}")))
    for i in range(3):  # deprecated modules do not count
        pop = clone(
            pop,
            m["risk_desk"],
            str(uuid.uuid5(NAMESPACE, f"old{i}")),
            lifecycle_stage="deprecated",
            status="inactive",
        )
    trig = make_triggers(
        [("performance_threshold", m["momentum"], {}), ("performance_threshold", m["reversal"], {})]
    )
    reps, trig_out, after = replicate(DAY, trig, pop)
    assert len(reps) == 1 and trig_out["status"].tolist() == ["processed", "expired"]
    assert logic.is_live(after).sum() == 30
    reps, trig_out, _ = replicate(DAY, trig, after)
    assert reps.empty and set(trig_out["status"]) == {"expired"}


def _assert_child_genome(parent_genome: dict, child_genome: dict, applied: dict, module_type: str) -> None:
    assert applied, "a child is never a clone"
    assert set(child_genome) == set(parent_genome)
    for gene, parent_value in parent_genome.items():
        if gene in applied:
            assert gene in MUTABLE_GENES[module_type]
            assert applied[gene] == {"from": parent_value, "to": child_genome[gene]}
            assert child_genome[gene] != parent_value
        else:
            assert child_genome[gene] == parent_value, gene
    for gene in MUTABLE_GENES[module_type]:
        if gene == "horizon_minutes":
            assert child_genome[gene] in HORIZONS
        else:
            lo, hi, dec = GENE_BOUNDS[gene]
            assert lo <= child_genome[gene] <= hi and round(child_genome[gene], dec) == child_genome[gene]


@pytest.mark.parametrize("name", ["momentum", "reversal", "divergence", "risk_desk", "execution_sim"])
@pytest.mark.parametrize("mutation_rate", [0.1, 1.0])
def test_child_genome_differs_only_where_mutation_applied(name, mutation_rate):
    pop = founding_population(DAY)
    pop["mutation_rate"] = mutation_rate
    mid = ids(pop)[name]
    mtype = row(pop, mid)["module_type"]
    for k in range(12):
        day = DAY + pd.Timedelta(days=k)
        reps, _, after = replicate(day, make_triggers([("performance_threshold", mid, {})], day), pop)
        child = row(after, reps.iloc[0]["child_module_id"])
        applied = reps.iloc[0]["mutation_applied"]
        _assert_child_genome(row(pop, mid)["genome"], child["genome"], applied, mtype)
        if mutation_rate == 1.0:
            assert set(applied) <= set(MUTABLE_GENES[mtype])
            # every gene mutates unless the step happened to round back (never for these bounds)
            assert set(applied) == set(MUTABLE_GENES[mtype])
        assert reps.iloc[0]["recombination_applied"] is None
        assert reps.iloc[0]["inherited_intelligence"]["genome"] == row(pop, mid)["genome"]


def test_recombination_from_two_parents():
    pop = founding_population(DAY)
    m = ids(pop)
    other = "c0000000-0000-5000-8000-000000000004"
    genome_b = {
        **row(pop, m["momentum"])["genome"],
        "min_edge": 0.1,
        "stop_atr": 3.0,
        "target_atr": 4.5,
        "horizon_minutes": 240,
        "risk_pct": 1.5,
    }
    pop = clone(pop, m["momentum"], other, genome=genome_b, generational_depth=2)
    trig = make_triggers(
        [("failure_recovery", m["momentum"], {"specialty": "momentum", "parents": [m["momentum"], other]})]
    )
    reps, trig_out, after = replicate(DAY, trig, pop)
    rep = reps.iloc[0]
    child = row(after, rep["child_module_id"])
    assert child["parent_modules"] == [m["momentum"], other] and child["generational_depth"] == 3
    assert child["module_version"] == "1.0.0+g3"
    assert row(after, m["momentum"])["offspring_count"] == 1 and row(after, other)["offspring_count"] == 1
    rec = rep["recombination_applied"]
    assert rec["parents"] == [m["momentum"], other]
    genome_a = row(pop, m["momentum"])["genome"]
    recombined = {**genome_a, **rec["from_second_parent"]}
    assert all(genome_b[g] == v for g, v in rec["from_second_parent"].items())
    _assert_child_genome(recombined, child["genome"], rep["mutation_applied"], "alpha_detector")
    assert set(child["parent_performance"]) == {m["momentum"], other}
    assert trig_out.iloc[0]["status"] == "processed"

    # over many days, both parents contribute genes
    from_b = set()
    for k in range(10):
        day = DAY + pd.Timedelta(days=k)
        t = make_triggers([("failure_recovery", m["momentum"], {"parents": [m["momentum"], other]})], day)
        from_b |= set(replicate(day, t, pop)[0].iloc[0]["recombination_applied"]["from_second_parent"])
    assert from_b == set(MUTABLE_GENES["alpha_detector"])


# ------------------------------------------------------------------------------ several days, end to end


def _u(*parts) -> float:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:4], "big") / 2**32


def _fake_day(day: pd.Timestamp, pop: pd.DataFrame):
    """Plans, approvals and performance of one day, as the plans module would hand them over."""
    live = pop[logic.is_live(pop)]
    dm = sorted(live.loc[live["module_type"] == "decision_maker", "module_id"])
    plans = []
    for mid in sorted(live.loc[live["module_type"] == "alpha_detector", "module_id"]):
        for k in range(2):
            u = _u(mid, day, k)
            status = "executed" if u < 0.5 else "partial" if u < 0.6 else "failed" if u < 0.7 else "cancelled"
            plans.append(
                make_plan(
                    f"{mid[:8]}-{day.date()}-{k}",
                    mid,
                    60 + 90 * k + int(300 * u),
                    symbol=("BTCUSDT", "ETHUSDT", "SOLUSDT")[int(3 * u)],
                    strength=round(u, 2),
                    status=status,
                    day=day,
                )
            )
    plans = plans_frame(plans)
    approvals = approvals_frame(plans, dm[0]) if dm else pd.DataFrame(columns=APPROVAL_COLUMNS)
    # founders' lineages differ in skill, so that some thrive, some fail
    skill = {"momentum": 0.85, "reversal": 0.15, "divergence": 0.55, "risk_desk": 0.7, "execution_sim": 0.6}
    scores = {
        mid: round(min(1.0, max(0.0, skill[name.split("~")[0]] + 0.2 * (_u(mid, day) - 0.5))), 2)
        for mid, name in zip(live["module_id"], live["name"], strict=True)
    }
    success = {mid: round(_u(mid, day, "s"), 2) for mid in scores}
    return plans, approvals, perf_frame(scores, day=day, success=success)


def simulate(days: int, start: pd.Timestamp = DAY) -> dict[str, pd.DataFrame]:
    pop = founding_population(start)
    out: dict[str, list[pd.DataFrame]] = {k: [] for k in ("messages", "sharing", "triggers", "replications")}
    live_per_day = []
    for k in range(days):
        day = start + pd.Timedelta(days=k)
        plans, approvals, perf = _fake_day(day, pop)
        msgs = day_messages(day, plans, approvals, pop)
        sharing = share_intelligence(day, perf, pop)
        pop = update_population(day, pop, perf, msgs)
        bars = _regime_bars(day, ("up", "flat", "down")[k % 3], ("up", "flat", "down")[(k + 1) % 3])
        trig = replication_triggers(day, pop, perf, reduce_closes(day, bars))
        reps, trig, pop = replicate(day, trig, pop)
        live_per_day.append(int(logic.is_live(pop).sum()))
        for key, frame in (
            ("messages", msgs),
            ("sharing", sharing),
            ("triggers", trig),
            ("replications", reps),
        ):
            out[key].append(frame)
    result = {k: pd.concat(v, ignore_index=True) for k, v in out.items()}
    result["population"] = pop
    result["live"] = pd.DataFrame({"live": live_per_day})
    return result


@pytest.fixture(scope="module")
def twelve_days() -> dict[str, pd.DataFrame]:
    return simulate(12)


def test_same_inputs_give_identical_frames(twelve_days):
    again = simulate(12)
    for key, frame in twelve_days.items():
        assert_frame_equal(frame, again[key], check_exact=True, obj=key)


def test_lineage_is_a_tree_and_caps_hold_over_several_days(twelve_days):
    reps, pop, trig = twelve_days["replications"], twelve_days["population"], twelve_days["triggers"]
    assert len(reps) > 5
    days = reps["timestamp"].dt.floor("D")
    assert days.value_counts().max() <= logic.MAX_REPLICATIONS_PER_DAY
    assert twelve_days["live"]["live"].max() <= logic.POPULATION_CAP

    tree = nx.DiGraph()
    tree.add_nodes_from(pop["module_id"])
    tree.add_edges_from(zip(reps["parent_module_id"], reps["child_module_id"], strict=True))
    assert nx.is_directed_acyclic_graph(tree) and nx.is_branching(tree)
    roots = [n for n in tree if tree.in_degree(n) == 0]
    assert sorted(roots) == sorted(founding_population(DAY)["module_id"])
    # the full ancestry (recombination adds second parents) is still a DAG, and depths add up
    ancestry = nx.DiGraph()
    for child, parents in zip(pop["module_id"], pop["parent_modules"], strict=True):
        ancestry.add_node(child)
        ancestry.add_edges_from((p, child) for p in parents)
    assert nx.is_directed_acyclic_graph(ancestry)
    depth = dict(zip(pop["module_id"], pop["generational_depth"], strict=True))
    for child, parents in zip(pop["module_id"], pop["parent_modules"], strict=True):
        assert depth[child] == (max(depth[p] for p in parents) + 1 if parents else 0)
    offspring = dict(zip(pop["module_id"], pop["offspring_modules"], strict=True))
    for rep in reps.itertuples():
        assert rep.child_module_id in offspring[rep.parent_module_id]
    assert (pop["offspring_count"] == pop["offspring_modules"].map(len)).all()
    # every processed trigger names its replication; every other expired
    assert set(trig["status"]) <= {"processed", "expired"}
    assert sorted(trig.loc[trig["status"] == "processed", "replication_id"]) == sorted(reps["replication_id"])
    assert set(trig["trigger_type"]) >= {"diversity_gap", "regime_change", "failure_recovery"}
    # the simulated skills play out: a failing lineage is retired, a good one graduates
    stages = dict(zip(pop["name"], pop["lifecycle_stage"], strict=True))
    assert stages["reversal"] == "deprecated" and stages["momentum"] == "active"


def test_every_output_is_within_the_rules(twelve_days):
    assert_valid(twelve_days["messages"], "module_messages")
    assert_valid(twelve_days["sharing"], "module_intelligence_sharing")
    assert_valid(twelve_days["triggers"], "module_replication_triggers")
    assert_valid(twelve_days["replications"], "module_replications")
    assert_valid(population_rows(twelve_days["population"]), "modules")
    assert twelve_days["messages"]["message_id"].is_unique
    assert twelve_days["sharing"]["sharing_id"].is_unique
    assert twelve_days["triggers"]["trigger_id"].is_unique
    assert twelve_days["population"]["module_id"].is_unique
    assert set(twelve_days["sharing"]["intelligence_type"]) == {
        "performance_update",
        "learning_update",
        "capability_update",
    }
    assert (twelve_days["population"]["module_version"].str.len() <= 20).all()


def test_a_range_run_equals_day_by_day_runs(twelve_days):
    """Days 1-6, then days 7-12 from the stored state, give the same rows as one 12-day run."""
    first = simulate(6)
    pop = first["population"]
    reps = []
    for k in range(6, 12):
        day = DAY + pd.Timedelta(days=k)
        # the state goes through the modules table shape and back, as the store keeps it
        stored = population_rows(pop)
        pop = stored.assign(
            name=[lp["name"] for lp in stored["learning_patterns"]],
            genome=[lp["genome"] for lp in stored["learning_patterns"]],
        )
        plans, approvals, perf = _fake_day(day, pop)
        msgs = day_messages(day, plans, approvals, pop)
        pop = update_population(day, pop, perf, msgs)
        bars = _regime_bars(day, ("up", "flat", "down")[k % 3], ("up", "flat", "down")[(k + 1) % 3])
        r, _, pop = replicate(day, replication_triggers(day, pop, perf, reduce_closes(day, bars)), pop)
        reps.append(r)
    whole = twelve_days["replications"]
    assert_frame_equal(pd.concat([first["replications"], *reps], ignore_index=True), whole)
    assert_frame_equal(pop, twelve_days["population"])


def test_state_read_back_from_the_database_works():
    """NUMERIC columns come back as Decimal and JSON timestamps as text: a day still runs and serialises."""
    from decimal import Decimal

    pop = founding_population(DAY)
    for col in (
        "learning_rate",
        "adaptation_threshold",
        "mutation_rate",
        "recombination_rate",
        "replication_readiness",
    ):
        pop[col] = [Decimal(str(v)) for v in pop[col]]
    pop["created_at"] = [ts.to_pydatetime() for ts in pop["created_at"]]
    plans, approvals = _day_of_plans(pop)
    perf = perf_frame(dict.fromkeys(pop["module_id"], 0.8))
    msgs = day_messages(DAY, plans, approvals, pop)
    after = update_population(DAY, pop, perf, msgs)
    reps, _trig, after = replicate(
        DAY, replication_triggers(DAY, after, perf, reduce_closes(DAY, None)), after
    )
    assert len(reps) == 3
    assert_valid(reps, "module_replications")
    assert_valid(population_rows(after), "modules")
    assert after["learning_rate"].dtype == np.float64
