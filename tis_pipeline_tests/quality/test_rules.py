"""The registry against the CHECK spec (written out again here, independently of rules.py) and its own SQL."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from tis_pipeline.quality.rules import RULES, TABLES, Rule, db_check_rules, rule, rules_for
from tis_pipeline_tests.support.constraints import CheckParseError, compare, parse_check, rule_atoms

UNIT = {
    "modules": "learning_rate adaptation_threshold innovation_score specialization_index "
    "intelligence_sharing_rate "
    "collaboration_score network_centrality replication_readiness mutation_rate recombination_rate",
    "module_performance": "performance_score consistency_score innovation_score specialization_score "
    "collaboration_score trading_plan_success_rate execution_quality learning_effectiveness "
    "adaptation_speed intelligence_sharing_effectiveness",
    "module_intelligence_sharing": "performance_score",
    "trading_plans": "signal_strength confidence_score",
    "trading_plan_approvals": "decision_confidence",
    "dsi_evidence": "mx_evidence mx_confirm_rate mx_expert_survival_rate",
    "market_data_1m": "mx_evidence",
    "market_data_15m": "mx_evidence",
    "market_data_1h": "mx_evidence",
}
OTHER = {
    ("trading_plans", "position_size"): (0, 100, False, True),
    ("trading_plans", "risk_reward_ratio"): (0, 10, False, True),
    ("dsi_evidence", "mx_processing_latency_ms"): (0, 10000, False, False),
    ("dsi_evidence", "mx_throughput_per_second"): (0, 10000, False, False),
    ("module_messages", "priority"): (1, 3, True, True),
    ("module_intelligence_sharing", "sharing_priority"): (1, 3, True, True),
    ("module_replication_triggers", "trigger_priority"): (1, 3, True, True),
}
ENUMS = {
    ("modules", "lifecycle_stage"): "experimental active deprecated archived",
    ("modules", "status"): "active inactive failed",
    ("trading_plans", "direction"): "long short neutral",
    ("trading_plans", "time_horizon"): "1m 5m 15m 1h 4h 1d",
    ("trading_plans", "validation_status"): "validated pending failed",
    ("trading_plans", "execution_status"): "executed partial failed cancelled",
    ("trading_plan_approvals", "approval_status"): "approved rejected modified",
    (
        "module_messages",
        "message_type",
    ): "trading_plan execution_feedback intelligence_broadcast replication_signal",
    ("module_messages", "status"): "pending delivered failed expired",
    (
        "module_intelligence_sharing",
        "intelligence_type",
    ): "performance_update learning_update capability_update",
    ("module_intelligence_sharing", "sharing_scope"): "broadcast targeted private",
    (
        "module_replications",
        "trigger_type",
    ): "performance_threshold diversity_gap regime_change failure_recovery",
    ("module_replications", "replication_status"): "initiated in_progress completed failed",
    (
        "module_replication_triggers",
        "trigger_type",
    ): "performance_threshold diversity_gap regime_change failure_recovery",
    ("module_replication_triggers", "status"): "active processed expired cancelled",
}
MARKET = {
    "prices_positive": {"open > 0", "high > 0", "low > 0", "close > 0"},
    "volume_nonnegative": {"volume >= 0"},
    "high_bounds": {"high >= open", "high >= close", "high >= low"},
    "low_bounds": {"low <= open", "low <= close"},
}


def spec_atoms() -> dict[str, frozenset]:
    """The CHECK spec of the brief, as {constraint name: atoms}."""
    out = {}
    for table, columns in UNIT.items():
        for column in columns.split():
            out[f"ck_{table}_{column}_range"] = parse_check(f"{column} >= 0 AND {column} <= 1")
    for (table, column), (lo, hi, lo_inc, hi_inc) in OTHER.items():
        expr = f"{column} {'>=' if lo_inc else '>'} {lo} AND {column} {'<=' if hi_inc else '<'} {hi}"
        out[f"ck_{table}_{column}_range"] = parse_check(expr)
    for (table, column), values in ENUMS.items():
        out[f"ck_{table}_{column}_enum"] = frozenset({("in", column, frozenset(values.split()))})
    for table in ("market_data_1m", "market_data_15m", "market_data_1h"):
        for suffix, predicates in MARKET.items():
            out[f"ck_{table}_{suffix}"] = parse_check(" AND ".join(sorted(predicates)))
    return out


def test_registry_has_exactly_the_spec_checks_bound_for_bound():
    spec = spec_atoms()
    registry = {c.name: rule_atoms(c.rule) for c in db_check_rules()}
    assert sorted(registry) == sorted(spec)
    assert {name: atoms for name, atoms in registry.items() if atoms != spec[name]} == {}
    assert len(spec) == 64


def test_each_check_expression_says_what_its_params_say():
    for check in db_check_rules():
        assert parse_check(check.expression) == rule_atoms(check.rule), check.name
        assert check.rule.check_sql() == check.expression


def test_rule_names_are_dagster_names_and_postgres_identifiers():
    names = [r.name for r in RULES]
    assert len(names) == len(set(names))
    for r in RULES:
        assert re.fullmatch(r"[A-Za-z0-9_]+", r.name), r.name
        if r.is_db_check:
            assert len(r.name) <= 63, r.name
            assert r.name.startswith(f"ck_{r.table}_")


def test_market_tables_have_bar_rules_and_rollups_check_their_source():
    kinds = {
        t: {r.kind for r in rules_for(t)} for t in ("market_data_1m", "market_data_15m", "market_data_1h")
    }
    bar = {
        "not_null",
        "range",
        "positive",
        "nonnegative",
        "ohlc_high",
        "ohlc_low",
        "unique",
        "on_minute",
        "not_future",
    }
    assert kinds["market_data_1m"] == bar | {"stale_series", "gaps", "price_jump"}
    assert kinds["market_data_15m"] == kinds["market_data_1h"] == bar | {"rollup_consistent"}
    assert rule("market_data_1h_timestamp_aligned").params["minutes"] == 60
    assert {
        r.severity for r in rules_for("market_data_1m", kinds={"stale_series", "gaps", "price_jump"})
    } == {"warn"}
    assert rule("market_data_1m_close_not_stale").params["max_run"] == 30


def test_not_null_rules_follow_the_seed():
    not_null = {(r.table, r.column) for r in RULES if r.kind == "not_null"}
    assert ("dsi_evidence", "mx_confirm") in not_null
    assert ("anomaly_events", "signal_pack") in not_null
    assert ("modules", "status") not in not_null  # nullable with a default
    assert all(r.severity == "error" for r in RULES if r.kind == "not_null")
    assert set(TABLES) == {r.table for r in RULES}


def test_rules_are_frozen_and_validated():
    r = rule("ck_trading_plans_position_size_range")
    with pytest.raises(AttributeError):
        r.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        r.params["min"] = 1  # type: ignore[index]
    with pytest.raises(ValueError, match="valid"):
        Rule("bad-name", "modules", ("x",), "not_null", "error")
    with pytest.raises(ValueError, match="needs params"):
        Rule("ck_modules_x_range", "modules", ("x",), "range", "error", params={"min": 0})
    with pytest.raises(KeyError):
        rules_for("no_such_table")


# What PostgreSQL 18 renders for CHECKs written in the ways a migration might write them.
RENDERED = {
    "CHECK (((learning_rate >= (0)::numeric) AND (learning_rate <= (1)::numeric)))": {
        ("cmp", "learning_rate", ">=", Decimal(0)),
        ("cmp", "learning_rate", "<=", Decimal(1)),
    },
    "CHECK (((lr3 IS NULL) OR ((lr3 >= 0.0) AND (lr3 <= 1.0))))": {
        ("cmp", "lr3", ">=", Decimal(0)),
        ("cmp", "lr3", "<=", Decimal(1)),
    },
    "CHECK (((pos > (0)::numeric) AND (pos <= (100)::numeric)))": {
        ("cmp", "pos", ">", Decimal(0)),
        ("cmp", "pos", "<=", Decimal(100)),
    },
    "CHECK (((prio >= 1) AND (prio <= 3)))": {
        ("cmp", "prio", ">=", Decimal(1)),
        ("cmp", "prio", "<=", Decimal(3)),
    },
    "CHECK (((d > (0)::double precision) AND (d < ('10000'::numeric)::double precision)))": {
        ("cmp", "d", ">", Decimal(0)),
        ("cmp", "d", "<", Decimal(10000)),
    },
    "CHECK (((status)::text = ANY ((ARRAY['active'::character varying, "
    "'inactive'::character varying])::text[])))": {("in", "status", frozenset({"active", "inactive"}))},
    "CHECK ((st3 = ANY (ARRAY['x'::text, 'y''z'::text])))": {("in", "st3", frozenset({"x", "y'z"}))},
    "CHECK ((high >= GREATEST(open, close, low)))": {
        ("cmp", "high", ">=", "open"),
        ("cmp", "high", ">=", "close"),
        ("cmp", "high", ">=", "low"),
    },
    "CHECK (((low <= open) AND (low <= close)))": {
        ("cmp", "open", ">=", "low"),
        ("cmp", "close", ">=", "low"),
    },
    "CHECK ((1 >= x)) NOT VALID": {("cmp", "x", "<=", Decimal(1))},
    'CHECK (("Weird col" > (0)::numeric))': {("cmp", "Weird col", ">", Decimal(0))},
}


@pytest.mark.parametrize("definition", RENDERED)
def test_parse_postgres_renderings(definition):
    assert parse_check(definition) == frozenset(RENDERED[definition])


@pytest.mark.parametrize(
    "definition",
    ["CHECK ((a > 0) OR (b > 0))", "CHECK ((length(x) > 3))", "CHECK (NOT (x > 1))", "CHECK ((x ~ '^a'))"],
)
def test_unsupported_definitions_are_reported(definition):
    with pytest.raises(CheckParseError):
        parse_check(definition)


def test_compare_reports_each_kind_of_drift():
    checks = db_check_rules("trading_plans")
    db = {c.name: (c.table, f"CHECK ({c.expression})") for c in checks}
    assert compare(db, checks).ok
    drifted = dict(db)
    drifted["ck_trading_plans_position_size_range"] = (
        "trading_plans",
        "CHECK (position_size >= 0 AND position_size <= 100)",
    )
    drifted["ck_trading_plans_extra_range"] = ("trading_plans", "CHECK (x > 0)")
    del drifted["ck_trading_plans_direction_enum"]
    drifted["ck_trading_plans_signal_strength_range"] = (
        "modules",
        db["ck_trading_plans_signal_strength_range"][1],
    )
    diff = compare(drifted, checks)
    assert diff.missing_in_db == ("ck_trading_plans_direction_enum",)
    assert diff.extra_in_db == ("ck_trading_plans_extra_range",)
    assert [name for name, *_ in diff.wrong_bounds] == ["ck_trading_plans_position_size_range"]
    assert diff.wrong_table == (("ck_trading_plans_signal_strength_range", "trading_plans", "modules"),)
    assert "position_size" in diff.describe()
