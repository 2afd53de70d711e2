"""The one registry of validation rules: every rule is declared once here and drives everything else.

* the Alembic migration's CHECK constraints must equal ``db_check_rules()`` (a ``pg``-marked test proves it
  rule for rule and bound for bound against ``pg_constraint``);
* ``quality.ge`` turns a table's rules into a Great Expectations suite, ``quality.evaluate`` into boolean
  masks (ingest quarantines rows with them), ``quality.checks`` into Dagster asset checks.

Naming: rules backed by a CHECK constraint carry the constraint's name (``ck_<table>_<column>_range`` /
``_enum``, ``ck_<market table>_prices_positive`` …), so a failed check, a rejected INSERT and the migration
all say the same word. Other rules are predicates prefixed by their table (``market_data_1m_no_gaps``).
Every name is a valid Dagster check name (letters, digits, underscores) and, for CHECK-backed rules, a valid
PostgreSQL identifier (at most 63 bytes; PostgreSQL would silently truncate a longer one).

NULL semantics follow SQL: a value rule (range, enum, positive, OHLC bounds) ignores NULLs, as a CHECK does;
the ``not_null`` rules exist for the columns the seed declares NOT NULL.

No pandas, GE or Dagster import here: this module is pure data.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

Severity = Literal["error", "warn"]
SEVERITIES: tuple[str, ...] = ("error", "warn")

KINDS: tuple[str, ...] = (
    "range",  # params: min, max, min_inclusive, max_inclusive
    "enum",  # params: values
    "not_null",
    "unique",  # columns together form a key
    "positive",  # every column > 0
    "nonnegative",  # every column >= 0
    "ohlc_high",  # high >= open AND high >= close AND high >= low
    "ohlc_low",  # low <= open AND low <= close
    "on_minute",  # params: minutes (timestamps on a whole multiple of it, UTC)
    "not_future",  # params: tolerance_minutes (timestamp <= now + tolerance)
    "stale_series",  # params: max_run (same close for more than max_run consecutive bars)
    "gaps",  # params: minutes, session_break_minutes
    "price_jump",  # params: k, window, min_periods, min_abs_log_return
    "rollup_consistent",  # params: source, minutes, rtol, atol
)

DB_CHECK_KINDS = frozenset({"range", "enum", "positive", "nonnegative", "ohlc_high", "ohlc_low"})

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PG_IDENTIFIER_MAX = 63


@dataclass(frozen=True)
class Rule:
    """One validation rule. ``columns`` are the columns it reads; ``params`` its thresholds (read-only)."""

    name: str
    table: str
    columns: tuple[str, ...]
    kind: str
    severity: Severity
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)
    description: str = ""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"rule name {self.name!r} is not a valid Dagster/SQL name")
        if self.kind not in KINDS:
            raise ValueError(f"rule {self.name}: unknown kind {self.kind!r}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"rule {self.name}: severity must be one of {SEVERITIES}")
        if not self.columns:
            raise ValueError(f"rule {self.name}: no columns")
        object.__setattr__(self, "columns", tuple(self.columns))
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))
        required = {
            "range": {"min", "max", "min_inclusive", "max_inclusive"},
            "enum": {"values"},
            "on_minute": {"minutes"},
            "not_future": {"tolerance_minutes"},
            "stale_series": {"max_run"},
            "gaps": {"minutes", "session_break_minutes"},
            "price_jump": {"k", "window", "min_periods", "min_abs_log_return"},
            "rollup_consistent": {"source", "minutes", "rtol", "atol"},
        }.get(self.kind, set())
        missing = required - set(self.params)
        if missing:
            raise ValueError(f"rule {self.name}: kind {self.kind} needs params {sorted(missing)}")
        if self.is_db_check and len(self.name.encode()) > PG_IDENTIFIER_MAX:
            raise ValueError(
                f"rule {self.name}: longer than PostgreSQL's {PG_IDENTIFIER_MAX}-byte identifiers"
            )

    @property
    def column(self) -> str:
        """The single column of a one-column rule."""
        if len(self.columns) != 1:
            raise ValueError(f"rule {self.name} has {len(self.columns)} columns")
        return self.columns[0]

    @property
    def is_db_check(self) -> bool:
        """True when a CHECK constraint of the same name enforces this rule in PostgreSQL."""
        return self.name.startswith("ck_") and self.kind in DB_CHECK_KINDS

    def check_sql(self) -> str | None:
        """The boolean SQL expression the rule's CHECK constraint holds (None for rules with no CHECK)."""
        if not self.is_db_check:
            return None
        return check_expression(self)


def _q(identifier: str) -> str:
    """Quote an identifier only when PostgreSQL needs it (it renders ``timestamp``, ``open`` bare)."""
    return (
        identifier
        if re.fullmatch(r"[a-z_][a-z0-9_]*", identifier)
        else '"' + identifier.replace('"', '""') + '"'
    )


def _literal(value: Any) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


def check_expression(rule: Rule) -> str:
    """SQL for a CHECK-kind rule, in the shape the CHECK spec writes it."""
    p = rule.params
    if rule.kind == "range":
        col = _q(rule.column)
        lo = ">=" if p["min_inclusive"] else ">"
        hi = "<=" if p["max_inclusive"] else "<"
        return f"{col} {lo} {_literal(p['min'])} AND {col} {hi} {_literal(p['max'])}"
    if rule.kind == "enum":
        values = ", ".join(_literal(v) for v in p["values"])
        return f"{_q(rule.column)} IN ({values})"
    if rule.kind == "positive":
        return " AND ".join(f"{_q(c)} > 0" for c in rule.columns)
    if rule.kind == "nonnegative":
        return " AND ".join(f"{_q(c)} >= 0" for c in rule.columns)
    if rule.kind == "ohlc_high":
        high, *others = rule.columns
        return " AND ".join(f"{_q(high)} >= {_q(c)}" for c in others)
    if rule.kind == "ohlc_low":
        low, *others = rule.columns
        return " AND ".join(f"{_q(low)} <= {_q(c)}" for c in others)
    raise ValueError(f"rule {rule.name}: kind {rule.kind} has no CHECK expression")


@dataclass(frozen=True)
class DbCheck:
    """A CHECK constraint the migration must create:
    ``ALTER TABLE {table} ADD CONSTRAINT {name} CHECK ({expression})``."""

    name: str
    table: str
    expression: str
    rule: Rule


# --------------------------------------------------------------------------------------------------------
# The declarations. Each line below is one rule (or one rule per listed column); names follow from them.
# --------------------------------------------------------------------------------------------------------

MARKET_TABLES: Mapping[str, int] = MappingProxyType(
    {"market_data_1m": 1, "market_data_15m": 15, "market_data_1h": 60}
)  # table -> bar length in minutes
ROLLUP_SOURCE = "market_data_1m"
OHLCV: tuple[str, ...] = ("open", "high", "low", "close", "volume")

# Closed ranges 0 <= x <= 1 (the seed's "-- 0-1" columns, DECIMAL(3,2)).
UNIT_INTERVAL: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "modules": (
            "learning_rate",
            "adaptation_threshold",
            "innovation_score",
            "specialization_index",
            "intelligence_sharing_rate",
            "collaboration_score",
            "network_centrality",
            "replication_readiness",
            "mutation_rate",
            "recombination_rate",
        ),
        "module_performance": (
            "performance_score",
            "consistency_score",
            "innovation_score",
            "specialization_score",
            "collaboration_score",
            "trading_plan_success_rate",
            "execution_quality",
            "learning_effectiveness",
            "adaptation_speed",
            "intelligence_sharing_effectiveness",
        ),
        "module_intelligence_sharing": ("performance_score",),
        "trading_plans": ("signal_strength", "confidence_score"),
        "trading_plan_approvals": ("decision_confidence",),
        "dsi_evidence": ("mx_evidence", "mx_confirm_rate", "mx_expert_survival_rate"),
        "market_data_1m": ("mx_evidence",),
        "market_data_15m": ("mx_evidence",),
        "market_data_1h": ("mx_evidence",),
    }
)

# (table, column, min, max, min_inclusive, max_inclusive)
OTHER_RANGES: tuple[tuple[str, str, int, int, bool, bool], ...] = (
    ("trading_plans", "position_size", 0, 100, False, True),  # % of portfolio
    ("trading_plans", "risk_reward_ratio", 0, 10, False, True),
    ("dsi_evidence", "mx_processing_latency_ms", 0, 10000, False, False),
    ("dsi_evidence", "mx_throughput_per_second", 0, 10000, False, False),
    ("module_messages", "priority", 1, 3, True, True),  # 1=high, 2=medium, 3=low
    ("module_intelligence_sharing", "sharing_priority", 1, 3, True, True),
    ("module_replication_triggers", "trigger_priority", 1, 3, True, True),
)

_TRIGGER_TYPES = ("performance_threshold", "diversity_gap", "regime_change", "failure_recovery")
ENUMS: Mapping[tuple[str, str], tuple[str, ...]] = MappingProxyType(
    {
        ("modules", "lifecycle_stage"): ("experimental", "active", "deprecated", "archived"),
        ("modules", "status"): ("active", "inactive", "failed"),
        ("trading_plans", "direction"): ("long", "short", "neutral"),
        ("trading_plans", "time_horizon"): ("1m", "5m", "15m", "1h", "4h", "1d"),
        ("trading_plans", "validation_status"): ("validated", "pending", "failed"),
        ("trading_plans", "execution_status"): ("executed", "partial", "failed", "cancelled"),
        ("trading_plan_approvals", "approval_status"): ("approved", "rejected", "modified"),
        ("module_messages", "message_type"): (
            "trading_plan",
            "execution_feedback",
            "intelligence_broadcast",
            "replication_signal",
        ),
        ("module_messages", "status"): ("pending", "delivered", "failed", "expired"),
        ("module_intelligence_sharing", "intelligence_type"): (
            "performance_update",
            "learning_update",
            "capability_update",
        ),
        ("module_intelligence_sharing", "sharing_scope"): ("broadcast", "targeted", "private"),
        ("module_replications", "trigger_type"): _TRIGGER_TYPES,
        ("module_replications", "replication_status"): ("initiated", "in_progress", "completed", "failed"),
        ("module_replication_triggers", "trigger_type"): _TRIGGER_TYPES,
        ("module_replication_triggers", "status"): ("active", "processed", "expired", "cancelled"),
    }
)

# Columns the seed declares NOT NULL (primary keys with a DEFAULT are generated by the database: not here).
NOT_NULL: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "modules": ("module_type", "module_version"),
        "module_performance": (
            "performance_score",
            "consistency_score",
            "innovation_score",
            "specialization_score",
            "collaboration_score",
        ),
        "trading_plans": ("symbol", "signal_strength", "direction", "confidence_score"),
        "trading_plan_approvals": ("approval_status",),
        "dsi_evidence": ("mx_evidence", "mx_confirm"),
        "module_messages": ("message_type", "message_data"),
        "module_intelligence_sharing": ("intelligence_type", "intelligence_data"),
        "module_replications": ("trigger_type",),
        "module_replication_triggers": ("trigger_type", "trigger_data"),
        "anomaly_events": ("symbol", "timestamp", "anomaly_type", "anomaly_score", "signal_pack"),
        # the 15m / 1h tables have the 1m table's shape (the seed only spells out the 1m one)
        **dict.fromkeys(MARKET_TABLES, ("symbol", "timestamp", *OHLCV)),
    }
)

# Columns that identify a row in failing-row samples (the primary key, plus symbol/timestamp when present).
TABLE_KEYS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "modules": ("module_id",),
        "module_performance": ("performance_id", "module_id", "timestamp"),
        "trading_plans": ("plan_id", "symbol", "timestamp"),
        "trading_plan_approvals": ("approval_id", "plan_id", "timestamp"),
        "dsi_evidence": ("evidence_id", "plan_id", "timestamp"),
        "module_messages": ("message_id", "timestamp"),
        "module_intelligence_sharing": ("sharing_id", "timestamp"),
        "module_replications": ("replication_id", "timestamp"),
        "module_replication_triggers": ("trigger_id", "timestamp"),
        "anomaly_events": ("event_id", "symbol", "timestamp"),
        **dict.fromkeys(MARKET_TABLES, ("symbol", "timestamp")),
    }
)

SEED_TABLES: tuple[str, ...] = (
    "modules",
    "module_performance",
    "trading_plans",
    "trading_plan_approvals",
    "dsi_evidence",
    "module_messages",
    "module_intelligence_sharing",
    "module_replications",
    "module_replication_triggers",
    "market_data_1m",
    "anomaly_events",
)
TABLES: tuple[str, ...] = (*SEED_TABLES, "market_data_15m", "market_data_1h")

# Market-bar thresholds (warnings): the numbers an operator may want to tune, in one place.
STALE_MAX_RUN = 30  # same close for more than 30 consecutive one-minute bars
GAP_SESSION_BREAK_MINUTES = 240  # longer gaps are a closed venue (nights, weekends), not missing data
JUMP_K = 20.0  # |log return| > k x MAD; on synthetic t(4) bars k=12 flags ~0.6% of bars, k=20 ~0.13%
JUMP_WINDOW = 120  # bars of history for the rolling median / MAD
JUMP_MIN_PERIODS = 30
JUMP_MIN_ABS_LOG_RETURN = 0.002  # floor: a flat stretch has MAD 0, which would flag every tick
ROLLUP_RTOL = 1e-9
ROLLUP_ATOL = 1e-8  # DECIMAL(20,8)
# Ingest-only warnings of market_data_1m: judged on columns the ingest adds to the rows it checks (absent from
# the stored table, so any other frame skips them).
SCALE_LOSS_COLUMN = "values_beyond_scale"  # how many of the row's prices and volume lose digits in (20,8)
UNREADABLE_COLUMN = "file_unreadable"  # on a frame of the data directory's files: 1 = left out, unreadable


def _fmt_bound(value: Any) -> str:
    return str(value)


def _range_rule(table: str, column: str, lo: Any, hi: Any, lo_inc: bool, hi_inc: bool) -> Rule:
    lo_op, hi_op = ("<=" if lo_inc else "<"), ("<=" if hi_inc else "<")
    return Rule(
        name=f"ck_{table}_{column}_range",
        table=table,
        columns=(column,),
        kind="range",
        severity="error",
        params={"min": lo, "max": hi, "min_inclusive": lo_inc, "max_inclusive": hi_inc},
        description=f"{_fmt_bound(lo)} {lo_op} {column} {hi_op} {_fmt_bound(hi)} (NULL allowed)",
    )


def _market_rules(table: str, minutes: int) -> list[Rule]:
    rules = [
        Rule(
            f"ck_{table}_prices_positive",
            table,
            ("open", "high", "low", "close"),
            "positive",
            "error",
            description="open, high, low and close are all > 0",
        ),
        Rule(
            f"ck_{table}_volume_nonnegative",
            table,
            ("volume",),
            "nonnegative",
            "error",
            description="volume >= 0",
        ),
        Rule(
            f"ck_{table}_high_bounds",
            table,
            ("high", "open", "close", "low"),
            "ohlc_high",
            "error",
            description="high >= open, high >= close and high >= low (high >= max(open, close))",
        ),
        Rule(
            f"ck_{table}_low_bounds",
            table,
            ("low", "open", "close"),
            "ohlc_low",
            "error",
            description="low <= open and low <= close (low <= min(open, close))",
        ),
        Rule(
            f"{table}_key_unique",
            table,
            ("symbol", "timestamp"),
            "unique",
            "error",
            description="one bar per (symbol, timestamp): the primary key",
        ),
        Rule(
            f"{table}_timestamp_aligned",
            table,
            ("timestamp",),
            "on_minute",
            "error",
            params={"minutes": minutes},
            description=f"timestamps fall on a whole {minutes}-minute boundary (UTC, no seconds)",
        ),
        Rule(
            f"{table}_timestamp_not_future",
            table,
            ("timestamp",),
            "not_future",
            "error",
            params={"tolerance_minutes": 1},
            description="no bar is stamped later than now + 1 minute",
        ),
    ]
    if minutes == 1:
        rules += [
            Rule(
                f"{table}_values_fit_scale",
                table,
                (SCALE_LOSS_COLUMN,),
                "range",
                "warn",
                params={"min": 0, "max": 0, "min_inclusive": True, "max_inclusive": True},
                description="no price or volume has non-zero digits beyond the 8 decimals of numeric(20,8) "
                "(they are rounded away when stored: volume 1e-9 becomes 0); counts the rows",
            ),
            Rule(
                f"{table}_source_files_readable",
                table,
                (UNREADABLE_COLUMN,),
                "range",
                "warn",
                params={"min": 0, "max": 0, "min_inclusive": True, "max_inclusive": True},
                description="every file under the data directory can be read; a file that cannot (not a "
                "regular file, over a size limit, undecodable) cannot show which days it holds, so it is "
                "left out of every run; one row per file",
            ),
            Rule(
                f"{table}_close_not_stale",
                table,
                ("symbol", "timestamp", "close"),
                "stale_series",
                "warn",
                params={"max_run": STALE_MAX_RUN},
                description=f"the same close for more than {STALE_MAX_RUN} consecutive minutes of one symbol "
                "(every bar of such a run is counted)",
            ),
            Rule(
                f"{table}_no_gaps",
                table,
                ("symbol", "timestamp"),
                "gaps",
                "warn",
                params={"minutes": minutes, "session_break_minutes": GAP_SESSION_BREAK_MINUTES},
                description="missing minutes between consecutive bars of one symbol; the bar after a gap "
                f"is counted; gaps over {GAP_SESSION_BREAK_MINUTES} minutes are session breaks",
            ),
            Rule(
                f"{table}_no_price_jumps",
                table,
                ("symbol", "timestamp", "close"),
                "price_jump",
                "warn",
                params={
                    "k": JUMP_K,
                    "window": JUMP_WINDOW,
                    "min_periods": JUMP_MIN_PERIODS,
                    "min_abs_log_return": JUMP_MIN_ABS_LOG_RETURN,
                },
                description=f"|log return| > max({JUMP_K:g} x rolling MAD of the previous {JUMP_WINDOW} "
                f"log returns, {JUMP_MIN_ABS_LOG_RETURN})",
            ),
        ]
    else:
        rules.append(
            Rule(
                f"{table}_rollup_consistent",
                table,
                ("symbol", "timestamp", *OHLCV),
                "rollup_consistent",
                "error",
                params={
                    "source": ROLLUP_SOURCE,
                    "minutes": minutes,
                    "rtol": ROLLUP_RTOL,
                    "atol": ROLLUP_ATOL,
                },
                description=f"each bar equals the {minutes}-minute rollup of {ROLLUP_SOURCE} (first open, "
                "max high, min low, last close, summed volume; bars labelled by their open)",
            ),
        )
    return rules


def _build() -> tuple[Rule, ...]:
    rules: list[Rule] = []
    for table in TABLES:
        for column in NOT_NULL.get(table, ()):
            rules.append(
                Rule(
                    f"{table}_{column}_not_null",
                    table,
                    (column,),
                    "not_null",
                    "error",
                    description=f"{column} is NOT NULL in the schema",
                )
            )
        for column in UNIT_INTERVAL.get(table, ()):
            rules.append(_range_rule(table, column, 0, 1, True, True))
        for t, column, lo, hi, lo_inc, hi_inc in OTHER_RANGES:
            if t == table:
                rules.append(_range_rule(table, column, lo, hi, lo_inc, hi_inc))
        for (t, column), values in ENUMS.items():
            if t == table:
                rules.append(
                    Rule(
                        f"ck_{table}_{column}_enum",
                        table,
                        (column,),
                        "enum",
                        "error",
                        params={"values": tuple(values)},
                        description=f"{column} in {{{', '.join(values)}}} (NULL allowed)",
                    )
                )
        if table in MARKET_TABLES:
            rules.extend(_market_rules(table, MARKET_TABLES[table]))
    names = [r.name for r in rules]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise ValueError(f"duplicate rule names: {sorted(duplicates)}")
    return tuple(rules)


RULES: tuple[Rule, ...] = _build()
_BY_NAME: Mapping[str, Rule] = MappingProxyType({r.name: r for r in RULES})


def all_rules() -> tuple[Rule, ...]:
    return RULES


def rule(name: str) -> Rule:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"no rule named {name!r}") from None


def rules_for(
    table: str, *, severity: str | None = None, kinds: Iterable[str] | None = None
) -> tuple[Rule, ...]:
    """The rules of ``table`` in registry order, optionally only one severity / some kinds."""
    if table not in TABLES:
        raise KeyError(f"no rules for unknown table {table!r}; known: {', '.join(TABLES)}")
    if severity is not None and severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, not {severity!r}")
    wanted = set(kinds) if kinds is not None else None
    return tuple(
        r
        for r in RULES
        if r.table == table
        and (severity is None or r.severity == severity)
        and (wanted is None or r.kind in wanted)
    )


def db_check_rules(table: str | None = None) -> tuple[DbCheck, ...]:
    """The rules enforced by a CHECK constraint, each with the SQL expression its constraint holds."""
    return tuple(
        DbCheck(name=r.name, table=r.table, expression=check_expression(r), rule=r)
        for r in RULES
        if r.is_db_check and (table is None or r.table == table)
    )


def key_columns(table: str) -> tuple[str, ...]:
    return TABLE_KEYS.get(table, ())
