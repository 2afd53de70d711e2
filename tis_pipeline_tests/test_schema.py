"""The migrations build exactly the seed's data model, plus the CHECK contract, and take it all away again.

The expectation is parsed from the seed itself (docs/data-model.md, the shared seed copied unchanged) at test
time, never copied into this file: every ```sql CREATE TABLE block and every CREATE INDEX line. The live
catalog (pg_attribute, pg_attrdef, pg_constraint, pg_index) is compared with it column by column: type with
its length/precision/scale, NOT NULL, default, primary keys, foreign keys, indexes with their column order and
DESC. What the seed leaves unnamed follows STYLE.md §11 and the migration: ``pk_<table>``,
``fk_<table>_<column>``.

The CHECK constraints are not in the seed's SQL: they are the contract shared with the quality registry
(``ck_<table>_<column>_range`` / ``_enum``, ``ck_<market bar table>_<rule>``), written out below as CHECK_SPEC
data, cross-checked against the seed's comments and its "Data Validation" section, and probed with real
INSERTs and UPDATEs at each bound: the bound accepted, one step (one unit of the column's scale) past it
rejected by that very constraint. Every probe runs in a savepoint of a transaction that is rolled back.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import NamedTuple

import psycopg.errors
import pytest
import sqlalchemy as sa
from psycopg.types.json import Jsonb

from tis_pipeline.catalog import split_sql_comment, split_top_level
from tis_pipeline.pg import migrate
from tis_pipeline.pg.engine import engine
from tis_pipeline.settings import PROJECT_ROOT
from tis_pipeline_tests.support.shared import shared_dir

pytestmark = pytest.mark.pg

# the data model travels with the repository; the shared seed it was copied from is checked against it
DATA_MODEL = PROJECT_ROOT / "docs" / "data-model.md"
SHARED_SEED = shared_dir() / "seed" / "000_c52755d5c1b60a37.txt"

SEED_REVISION = "20261125_seed"
VERSION_TABLE = migrate.VERSION_TABLE

# The seed's tables (checked against the parsed seed by test_seed_parses_to_the_known_tables), listed here so
# that the tests can be parametrised by name even when the seed file is absent.
SEED_TABLES = (
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
DERIVED_BAR_TABLES = ("market_data_15m", "market_data_1h")  # same shape as market_data_1m
BAR_TABLES = ("market_data_1m", *DERIVED_BAR_TABLES)
QUARANTINE = "market_data_quarantine"
OUR_TABLES = (*SEED_TABLES, *DERIVED_BAR_TABLES, QUARANTINE)

# (table, column) of every REFERENCES in the seed (checked against the parsed seed).
SEED_FOREIGN_KEYS = (
    ("module_performance", "module_id"),
    ("trading_plans", "module_id"),
    ("trading_plan_approvals", "plan_id"),
    ("trading_plan_approvals", "decision_maker_module_id"),
    ("dsi_evidence", "plan_id"),
    ("module_messages", "sender_module_id"),
    ("module_messages", "receiver_module_id"),
    ("module_intelligence_sharing", "sender_module_id"),
    ("module_replications", "parent_module_id"),
    ("module_replications", "child_module_id"),
    ("module_replication_triggers", "module_id"),
    ("module_replication_triggers", "replication_id"),
    ("anomaly_events", "trading_plan_id"),
    ("anomaly_events", "plan_generation_module_id"),
    ("anomaly_events", "dsi_evidence_id"),
)

# ------------------------------------------------------------------------------------------------------------
# The CHECK contract (shared with the quality registry)
# ------------------------------------------------------------------------------------------------------------

UNIT_RANGE_COLUMNS = {
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
    **dict.fromkeys(BAR_TABLES, ("mx_evidence",)),
}


@dataclass(frozen=True)
class Range:
    table: str
    column: str
    low: int
    low_inclusive: bool
    high: int
    high_inclusive: bool

    @property
    def name(self) -> str:
        return f"ck_{self.table}_{self.column}_range"


RANGES = (
    *(
        Range(table, column, 0, True, 1, True)
        for table, columns in UNIT_RANGE_COLUMNS.items()
        for column in columns
    ),
    Range("trading_plans", "position_size", 0, False, 100, True),
    Range("trading_plans", "risk_reward_ratio", 0, False, 10, True),
    Range("dsi_evidence", "mx_processing_latency_ms", 0, False, 10000, False),
    Range("dsi_evidence", "mx_throughput_per_second", 0, False, 10000, False),
    Range("module_messages", "priority", 1, True, 3, True),
    Range("module_intelligence_sharing", "sharing_priority", 1, True, 3, True),
    Range("module_replication_triggers", "trigger_priority", 1, True, 3, True),
)

TRIGGER_TYPES = ("performance_threshold", "diversity_gap", "regime_change", "failure_recovery")
ENUMS = {
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
    ("module_replications", "trigger_type"): TRIGGER_TYPES,
    ("module_replications", "replication_status"): ("initiated", "in_progress", "completed", "failed"),
    ("module_replication_triggers", "trigger_type"): TRIGGER_TYPES,
    ("module_replication_triggers", "status"): ("active", "processed", "expired", "cancelled"),
}

# Table-level rules of each bar table, with the columns each one reads.
BAR_RULES = {
    "prices_positive": ("close", "high", "low", "open"),
    "volume_nonnegative": ("volume",),
    "high_bounds": ("close", "high", "low", "open"),
    "low_bounds": ("close", "low", "open"),
}


def expected_checks(table: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """CHECK name -> ("c", the columns it reads, sorted) for one table, from the contract above."""
    checks = {r.name: ("c", (r.column,)) for r in RANGES if r.table == table}
    checks |= {f"ck_{t}_{column}_enum": ("c", (column,)) for (t, column) in ENUMS if t == table}
    if table in BAR_TABLES:
        checks |= {f"ck_{table}_{rule}": ("c", columns) for rule, columns in BAR_RULES.items()}
    return checks


# ------------------------------------------------------------------------------------------------------------
# The seed, parsed
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeedColumn:
    name: str
    type: str  # as format_type() renders it
    not_null: bool
    default: tuple | None  # canonical_default() form
    references: tuple[str, str] | None
    primary_key: bool
    comment: str


@dataclass(frozen=True)
class SeedTable:
    name: str
    columns: tuple[SeedColumn, ...]
    primary_key: tuple[str, ...]

    def column(self, name: str) -> SeedColumn:
        return next(c for c in self.columns if c.name == name)


@dataclass(frozen=True)
class SeedIndex:
    name: str
    table: str
    columns: tuple[tuple[str, bool], ...]  # (column, descending)


@dataclass(frozen=True)
class Seed:
    tables: dict[str, SeedTable]
    indexes: dict[str, SeedIndex]
    text: str


_SQL_BLOCK = re.compile(r"```sql\n(.*?)```", re.S)
_CREATE_TABLE = re.compile(r"CREATE TABLE (\w+) \((.*?)\n\);", re.S | re.I)
_CREATE_INDEX = re.compile(r"CREATE INDEX (\w+) ON (\w+)\s*\(([^)]*)\);", re.I)
_TABLE_PRIMARY_KEY = re.compile(r"PRIMARY KEY\s*\(([^)]*)\)", re.I)
_TYPES = (
    (re.compile(r"TIMESTAMP WITH TIME ZONE\b", re.I), lambda m: "timestamp with time zone"),
    (re.compile(r"DECIMAL\((\d+),\s*(\d+)\)", re.I), lambda m: f"numeric({m[1]},{m[2]})"),
    (re.compile(r"VARCHAR\((\d+)\)", re.I), lambda m: f"character varying({m[1]})"),
    (re.compile(r"UUID\b", re.I), lambda m: "uuid"),
    (re.compile(r"JSONB\b", re.I), lambda m: "jsonb"),
    (re.compile(r"INTEGER\b", re.I), lambda m: "integer"),
    (re.compile(r"BOOLEAN\b", re.I), lambda m: "boolean"),
    (re.compile(r"TEXT\b", re.I), lambda m: "text"),
)
_MODIFIER = re.compile(
    r"\s*(?:(?P<pk>PRIMARY KEY)|(?P<not_null>NOT NULL)"
    r"|DEFAULT\s+(?P<default>\w+\(\s*\)|'(?:[^']|'')*'|[+-]?\d+(?:\.\d+)?)"
    r"|REFERENCES\s+(?P<ref_table>\w+)\s*\(\s*(?P<ref_column>\w+)\s*\))",
    re.I,
)
_CAST = re.compile(r"::[a-z_ ]+(?:\(\d+(?:,\s*\d+)?\))?(?:\[\])?$", re.I)


def _balanced(text: str) -> bool:
    depth = 0
    for ch in text:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


def canonical_default(expr: str | None) -> tuple | None:
    """One form for a default as the seed writes it and as PostgreSQL renders it.

    ``0.01``, ``(0.01)::numeric`` and ``'0.01'``-coerced-to-numeric -> ("number", Decimal("0.01"));
    ``'experimental'::character varying`` -> ("text", "experimental"); ``NOW()`` / ``now()`` -> ("call",
    "now"). Numbers compare by value (``0.0`` equals ``0.00``); anything unrecognised stays as is, and so
    differs.
    """
    if expr is None:
        return None
    text, previous = expr.strip(), None
    while text != previous:
        previous = text
        text = _CAST.sub("", text).strip()
        if text.startswith("(") and text.endswith(")") and _balanced(text[1:-1]):
            text = text[1:-1].strip()
    if m := re.fullmatch(r"'((?:[^']|'')*)'", text):
        return ("text", m[1].replace("''", "'"))
    if re.fullmatch(r"[+-]?\d+(?:\.\d+)?", text):
        return ("number", Decimal(text))
    if m := re.fullmatch(r"(\w+)\(\s*\)", text):
        return ("call", m[1].lower())
    return ("unrecognised", expr)


def _parse_column(table: str, item: str, comment: str) -> SeedColumn:
    name, _, rest = item.partition(" ")
    rest = rest.strip()
    for pattern, render in _TYPES:
        if m := pattern.match(rest):
            column_type, rest = render(m), rest[m.end() :]
            break
    else:
        raise ValueError(f"seed {table}.{name}: unknown type in {item!r}")
    not_null = primary_key = False
    default = references = None
    pos, rest = 0, rest.rstrip()
    while pos < len(rest):
        m = _MODIFIER.match(rest, pos)
        if m is None:
            raise ValueError(f"seed {table}.{name}: cannot parse {rest[pos:]!r}")
        pos = m.end()
        if m["pk"]:
            primary_key = not_null = True
        elif m["not_null"]:
            not_null = True
        elif m["default"]:
            default = canonical_default(m["default"])
        else:
            references = (m["ref_table"], m["ref_column"])
    return SeedColumn(name, column_type, not_null, default, references, primary_key, comment)


def _parse_table(name: str, body: str) -> SeedTable:
    columns: list[SeedColumn] = []
    primary_key: tuple[str, ...] = ()
    for line in body.splitlines():
        code, comment = split_sql_comment(line)
        for item in split_top_level(code):
            if m := _TABLE_PRIMARY_KEY.fullmatch(item):
                primary_key = tuple(c.strip() for c in m[1].split(","))
            else:
                columns.append(_parse_column(name, item, comment))
    inline = tuple(c.name for c in columns if c.primary_key)
    if inline:
        assert not primary_key, f"seed {name}: two primary keys"
        primary_key = inline
    if len(primary_key) > 1:  # a table-level key makes its columns NOT NULL
        columns = [
            SeedColumn(c.name, c.type, True, c.default, c.references, c.primary_key, c.comment)
            if c.name in primary_key
            else c
            for c in columns
        ]
    assert len({c.name for c in columns}) == len(columns), f"seed {name}: a column is defined twice"
    return SeedTable(name, tuple(columns), primary_key)


def parse_seed(text: str) -> Seed:
    tables: dict[str, SeedTable] = {}
    indexes: dict[str, SeedIndex] = {}
    for block in _SQL_BLOCK.findall(text):
        for name, body in _CREATE_TABLE.findall(block):
            assert name not in tables, f"seed: table {name} is created twice"
            tables[name] = _parse_table(name, body)
        for name, table, columns in _CREATE_INDEX.findall(block):
            parsed = []
            for element in columns.split(","):
                column, *order = element.split()
                assert [o.upper() for o in order] in ([], ["ASC"], ["DESC"]), (
                    f"seed index {name}: {element!r}"
                )
                parsed.append((column, [o.upper() for o in order] == ["DESC"]))
            assert name not in indexes, f"seed: index {name} is created twice"
            indexes[name] = SeedIndex(name, table, tuple(parsed))
    return Seed(tables, indexes, text)


@pytest.fixture(scope="session")
def seed() -> Seed:
    return parse_seed(DATA_MODEL.read_text(encoding="utf-8"))


def test_the_data_model_in_the_repository_is_the_shared_seed_unchanged():
    if not SHARED_SEED.is_file():
        pytest.skip(f"the shared seed is absent ({SHARED_SEED}): nothing to compare docs/data-model.md with")
    text = DATA_MODEL.read_text(encoding="utf-8")
    note_end = text.index("-->\n\n") + len("-->\n\n")
    assert text[:4] == "<!--"
    assert text[note_end:] == SHARED_SEED.read_text(encoding="utf-8")


# ------------------------------------------------------------------------------------------------------------
# Catalog snapshots: the live one, and the expected one built from the seed
# ------------------------------------------------------------------------------------------------------------


class ColumnShape(NamedTuple):
    type: str
    not_null: bool
    default: tuple | None
    identity: str  # pg_attribute.attidentity: "" none, "a" ALWAYS, "d" BY DEFAULT
    generated: str  # pg_attribute.attgenerated


_COLUMNS_SQL = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid),
       a.attidentity::text, a.attgenerated::text
FROM pg_attribute a
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = CAST(:table AS regclass) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""
_CONSTRAINTS_SQL = """
SELECT c.conname, c.contype::text,
       ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY AS k(attnum, i)
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum ORDER BY k.i),
       CASE WHEN c.confrelid = 0 THEN NULL ELSE c.confrelid::regclass::text END,
       ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY AS k(attnum, i)
             JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.attnum ORDER BY k.i),
       c.confupdtype::text, c.confdeltype::text, c.confmatchtype::text, c.condeferrable
FROM pg_constraint c
WHERE c.conrelid = CAST(:table AS regclass) AND c.contype <> 'n'  -- PG 18 lists NOT NULL here too
"""
_INDEXES_SQL = """
SELECT i.relname, x.indisprimary, x.indisunique, am.amname,
       ARRAY(SELECT a.attname::text FROM unnest(x.indkey) WITH ORDINALITY AS k(attnum, i)
             JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum ORDER BY k.i),
       ARRAY(SELECT k.opt::int FROM unnest(x.indoption) WITH ORDINALITY AS k(opt, i) ORDER BY k.i),
       x.indnatts, x.indexprs IS NULL AND x.indpred IS NULL
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_am am ON am.oid = i.relam
WHERE x.indrelid = CAST(:table AS regclass)
"""
_INDOPTION = {0: "", 3: " DESC"}  # DESC is DESC NULLS FIRST (3); ASC is ASC NULLS LAST (0)


def live_snapshot(conn: sa.Connection, table: str) -> dict:
    """Columns (in order), constraints and indexes of one table as the catalog has them."""
    params = {"table": f"public.{table}"}
    columns = {
        name: ColumnShape(type_, not_null, canonical_default(default), identity, generated)
        for name, type_, not_null, default, identity, generated in conn.execute(sa.text(_COLUMNS_SQL), params)
    }
    constraints = {}
    for name, kind, cols, ref_table, ref_cols, on_update, on_delete, match, deferrable in conn.execute(
        sa.text(_CONSTRAINTS_SQL), params
    ):
        if kind == "f":
            constraints[name] = ("f", tuple(cols), ref_table, tuple(ref_cols), on_update, on_delete, match)
        elif kind == "c":
            constraints[name] = ("c", tuple(sorted(cols)))
        else:
            constraints[name] = (kind, tuple(cols))
        if deferrable:
            constraints[name] += ("DEFERRABLE",)
    indexes = {}
    for name, primary, unique, method, cols, options, natts, plain in conn.execute(
        sa.text(_INDEXES_SQL), params
    ):
        kind = "primary" if primary else "unique" if unique else "index"
        rendered = tuple(
            f"{col}{_INDOPTION.get(opt, f' indoption={opt}')}"
            for col, opt in zip(cols, options, strict=False)
        )
        indexes[name] = (method, kind, rendered)
        if not plain or natts != len(cols):
            indexes[name] += ("expression or partial index",)
    return {"column_order": list(columns), "columns": columns, "constraints": constraints, "indexes": indexes}


# Indexes the project adds beyond the seed (additions are allowed; each is listed here so none slips in
# unseen)
ADDED_INDEXES = {
    "anomaly_events": {
        "ux_anomaly_events_symbol_timestamp_type": (
            "btree",
            "unique",
            ("symbol", "timestamp", "anomaly_type"),
        ),
        "ix_anomaly_events_trading_plan_id": ("btree", "index", ("trading_plan_id",)),
        "ix_anomaly_events_dsi_evidence_id": ("btree", "index", ("dsi_evidence_id",)),
    },
    "trading_plan_approvals": {
        "ix_trading_plan_approvals_timestamp": ("btree", "index", ("timestamp",)),
        # a deleted plan's foreign-key check probes it instead of scanning the table (below)
        "ix_trading_plan_approvals_plan_id": ("btree", "index", ("plan_id",)),
    },
    "module_replication_triggers": {
        "ix_module_replication_triggers_replication_id": ("btree", "index", ("replication_id",)),
    },
    "module_messages": {
        "ix_module_messages_timestamp": ("btree", "index", ("timestamp",)),
        # the durable bus claims pending messages in priority order (bus/durable.py)
        "ix_module_messages_pending": (
            "btree",
            "index",
            ("priority", "timestamp", "message_id"),
            "expression or partial index",
        ),
        # the trading day looks up which pending messages are carried already (trading_day/store.py)
        "ix_module_messages_carried_from": ("btree", "index", (), "expression or partial index"),
    },
}


def expected_snapshot(seed: Seed, table: str) -> dict:
    """What live_snapshot() must return for ``table``: the seed, the naming rules and the CHECK contract."""
    if table == QUARANTINE:
        return QUARANTINE_SNAPSHOT
    source = seed.tables["market_data_1m" if table in DERIVED_BAR_TABLES else table]
    columns = {c.name: ColumnShape(c.type, c.not_null, c.default, "", "") for c in source.columns}
    constraints: dict[str, tuple] = {f"pk_{table}": ("p", source.primary_key)}
    for c in source.columns:
        if c.references:
            constraints[f"fk_{table}_{c.name}"] = (
                "f",
                (c.name,),
                c.references[0],
                (c.references[1],),
                "a",
                "a",
                "s",
            )
    constraints |= expected_checks(table)
    indexes = {f"pk_{table}": ("btree", "primary", source.primary_key)}
    for index in seed.indexes.values():
        if index.table == table:
            indexes[index.name] = (
                "btree",
                "index",
                tuple(f"{col}{' DESC' if desc else ''}" for col, desc in index.columns),
            )
    indexes |= ADDED_INDEXES.get(table, {})
    return {"column_order": list(columns), "columns": columns, "constraints": constraints, "indexes": indexes}


def _col(type_: str, not_null: bool = False, default: str | None = None, identity: str = "") -> ColumnShape:
    return ColumnShape(type_, not_null, canonical_default(default), identity, "")


TIMESTAMPTZ = "timestamp with time zone"
QUARANTINE_COLUMNS = {
    "quarantine_id": _col("bigint", True, identity="a"),
    "partition_date": _col("date", True),
    "source_file": _col("text", True),
    "source_line": _col("integer"),
    "symbol": _col("text"),
    "timestamp": _col(TIMESTAMPTZ),
    "raw_values": _col("jsonb", True),
    "rule": _col("character varying(100)", True),
    "message": _col("text"),
    "quarantined_at": _col(TIMESTAMPTZ, True, "now()"),
}
QUARANTINE_SNAPSHOT = {
    "column_order": list(QUARANTINE_COLUMNS),
    "columns": QUARANTINE_COLUMNS,
    "constraints": {f"pk_{QUARANTINE}": ("p", ("quarantine_id",))},
    "indexes": {
        f"pk_{QUARANTINE}": ("btree", "primary", ("quarantine_id",)),
        f"ix_{QUARANTINE}_partition_date": ("btree", "index", ("partition_date",)),
    },
}


def public_tables(url: str) -> set[str]:
    with engine(url).connect() as conn:
        return set(
            conn.execute(sa.text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars()
        )


_USER_NAMESPACES = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'"
)
_VERSION_TABLE_OBJECTS = (VERSION_TABLE, f"{VERSION_TABLE}_pkc", f"_{VERSION_TABLE}")


def user_objects(url: str) -> dict[str, list]:
    """Every schema object outside the system catalogs, except Alembic's version table and what hangs on
    it."""
    queries = {
        "namespaces": f"SELECT n.nspname FROM pg_namespace n WHERE {_USER_NAMESPACES}",
        "relations (tables, indexes, sequences, views)": f"""
            SELECT n.nspname || '.' || c.relname || ' (' || c.relkind::text || ')' FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE {_USER_NAMESPACES} AND c.relname <> ALL(:version_objects)""",
        "constraints": f"""
            SELECT n.nspname || '.' || c.conname FROM pg_constraint c
            JOIN pg_namespace n ON n.oid = c.connamespace
            WHERE {_USER_NAMESPACES}
              AND c.conrelid IS DISTINCT FROM to_regclass('public.{VERSION_TABLE}')""",
        "types": f"""
            SELECT n.nspname || '.' || t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
            WHERE {_USER_NAMESPACES} AND t.typname <> ALL(:version_objects)""",
        "functions": f"""
            SELECT n.nspname || '.' || p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE {_USER_NAMESPACES}""",
        "extensions": "SELECT extname FROM pg_extension",
    }
    with engine(url).connect() as conn:
        return {
            what: sorted(
                conn.execute(sa.text(sql), {"version_objects": list(_VERSION_TABLE_OBJECTS)}).scalars()
            )
            for what, sql in queries.items()
        }


# ------------------------------------------------------------------------------------------------------------
# Rows for the probes
# ------------------------------------------------------------------------------------------------------------

T0 = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
HALF = Decimal("0.5")
PRICE_STEP = Decimal("0.00000001")  # one unit of numeric(20,8)

# The smallest valid row of each table: its NOT NULL columns without a default; the rest are left to defaults.
BASE_ROWS = {
    "modules": {"module_type": "alpha_detector", "module_version": "1.0.0"},
    "module_performance": {
        "performance_score": HALF,
        "consistency_score": HALF,
        "innovation_score": HALF,
        "specialization_score": HALF,
        "collaboration_score": HALF,
    },
    "trading_plans": {
        "symbol": "ZZPROBE",
        "signal_strength": HALF,
        "direction": "long",
        "confidence_score": HALF,
    },
    "trading_plan_approvals": {"approval_status": "approved"},
    "dsi_evidence": {"mx_evidence": HALF, "mx_confirm": True},
    "module_messages": {"message_type": "trading_plan", "message_data": Jsonb({})},
    "module_intelligence_sharing": {
        "intelligence_type": "performance_update",
        "intelligence_data": Jsonb({}),
    },
    "module_replications": {"trigger_type": "performance_threshold"},
    "module_replication_triggers": {"trigger_type": "performance_threshold", "trigger_data": Jsonb({})},
    **{
        table: {
            "symbol": "ZZPROBE",
            "timestamp": T0,
            "open": Decimal(1),
            "high": Decimal(1),
            "low": Decimal(1),
            "close": Decimal(1),
            "volume": Decimal(1),
        }
        for table in BAR_TABLES
    },
    "anomaly_events": {
        "symbol": "ZZPROBE",
        "timestamp": T0,
        "anomaly_type": "volume_spike",
        "anomaly_score": HALF,
        "signal_pack": Jsonb({}),
    },
}


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def insert(conn: sa.Connection, table: str, values: dict, returning: tuple[str, ...]) -> sa.Row:
    names = list(values)
    statement = (
        f"INSERT INTO {_quote(table)} ({', '.join(map(_quote, names))}) "
        f"VALUES ({', '.join(f':p{i}' for i in range(len(names)))}) "
        f"RETURNING {', '.join(map(_quote, returning))}"
    )
    return conn.execute(sa.text(statement), {f"p{i}": values[n] for i, n in enumerate(names)}).one()


def update(conn: sa.Connection, table: str, key: dict, values: dict) -> None:
    sets = ", ".join(f"{_quote(n)} = :v{i}" for i, n in enumerate(values))
    where = " AND ".join(f"{_quote(n)} = :k{i}" for i, n in enumerate(key))
    params = {f"v{i}": v for i, v in enumerate(values.values())} | {
        f"k{i}": v for i, v in enumerate(key.values())
    }
    result = conn.execute(sa.text(f"UPDATE {_quote(table)} SET {sets} WHERE {where}"), params)
    assert result.rowcount == 1


@pytest.fixture
def conn(database_url: str) -> Iterator[sa.Connection]:
    """A connection to the session database inside a transaction that is always rolled back."""
    with engine(database_url).connect() as connection:
        transaction = connection.begin()
        try:
            yield connection
        finally:
            transaction.rollback()


def primary_key(seed: Seed, table: str) -> tuple[str, ...]:
    return seed.tables["market_data_1m" if table in DERIVED_BAR_TABLES else table].primary_key


def accepted(conn: sa.Connection, seed: Seed, table: str, values: dict) -> None:
    """The row (the table's base row with ``values``) is inserted; the savepoint is then rolled back."""
    savepoint = conn.begin_nested()
    try:
        insert(conn, table, BASE_ROWS[table] | values, primary_key(seed, table))
    finally:
        savepoint.rollback()


def _assert_violation(raised: pytest.ExceptionInfo, error: type[Exception], constraint: str | None) -> None:
    assert isinstance(raised.value.orig, error), raised.value.orig
    if constraint is not None:  # NOT NULL violations are named on PG 18 only
        assert raised.value.orig.diag.constraint_name == constraint, raised.value.orig


def rejected(
    conn: sa.Connection,
    seed: Seed,
    table: str,
    values: dict,
    constraint: str | None,
    error: type[Exception] = psycopg.errors.CheckViolation,
) -> None:
    """Both an INSERT of the row and an UPDATE of a valid row to ``values`` fail on ``constraint``."""
    with pytest.raises(sa.exc.IntegrityError) as raised, conn.begin_nested():
        insert(conn, table, BASE_ROWS[table] | values, primary_key(seed, table))
    _assert_violation(raised, error, constraint)

    savepoint = conn.begin_nested()
    try:
        keys = primary_key(seed, table)
        row = insert(conn, table, BASE_ROWS[table], keys)
        with pytest.raises(sa.exc.IntegrityError) as raised, conn.begin_nested():
            update(conn, table, dict(zip(keys, row, strict=True)), values)
        _assert_violation(raised, error, constraint)
    finally:
        savepoint.rollback()


def _step(column_type: str) -> Decimal:
    """One unit of the column: 1 for integer, 10^-scale for numeric(p, s)."""
    if column_type == "integer":
        return Decimal(1)
    if m := re.fullmatch(r"numeric\(\d+,(\d+)\)", column_type):
        return Decimal(1).scaleb(-int(m[1]))
    raise AssertionError(f"no range probe for a column of type {column_type}")


# ------------------------------------------------------------------------------------------------------------
# The seed file and the contract above agree
# ------------------------------------------------------------------------------------------------------------


def test_seed_parses_to_the_known_tables_indexes_and_foreign_keys(seed: Seed) -> None:
    assert list(seed.tables) == list(SEED_TABLES)
    assert len(seed.indexes) == 14
    assert {i.table for i in seed.indexes.values()} <= set(seed.tables)
    for index in seed.indexes.values():
        names = {c.name for c in seed.tables[index.table].columns}
        assert {col for col, _ in index.columns} <= names, index
    fks = [(t.name, c.name) for t in seed.tables.values() for c in t.columns if c.references]
    assert fks == list(SEED_FOREIGN_KEYS)
    for t in seed.tables.values():
        for c in t.columns:
            if c.references:
                ref_table, ref_column = c.references
                assert seed.tables[ref_table].primary_key == (ref_column,), (t.name, c.name)
    assert seed.tables["market_data_1m"].primary_key == ("symbol", "timestamp")


def test_check_contract_names_seed_columns_of_the_right_type(seed: Seed) -> None:
    for r in RANGES:
        source = seed.tables["market_data_1m" if r.table in DERIVED_BAR_TABLES else r.table]
        assert _step(source.column(r.column).type), r
    for table, column in ENUMS:
        assert seed.tables[table].column(column).type.startswith("character varying("), (table, column)


def test_enumerations_are_exactly_the_seed_comments(seed: Seed) -> None:
    for (table, column), values in ENUMS.items():
        comment = seed.tables[table].column(column).comment
        assert tuple(re.findall(r"'([^']*)'", comment)) == values, (table, column, comment)
        # and every enumeration admits its column's seed default
        default = seed.tables[table].column(column).default
        assert default is None or default[1] in values, (table, column, default)


def test_every_seed_column_annotated_0_1_has_a_unit_range(seed: Seed) -> None:
    annotated = {(t.name, c.name) for t in seed.tables.values() for c in t.columns if c.comment == "0-1"}
    units = {
        (r.table, r.column)
        for r in RANGES
        if (r.low, r.high) == (0, 1) and r.low_inclusive and r.high_inclusive
    }
    assert annotated, "no '-- 0-1' annotation found in the seed: has the parser broken?"
    assert annotated <= units


def test_ranges_match_the_seed_data_validation_section(seed: Seed) -> None:
    section = seed.text.split("## Data Validation", 1)[1]
    bounds = re.findall(r"(\d+)\s*([<≤])\s*(\w+)\s*([<≤])\s*(\d+)", section)
    assert len(bounds) >= 10, "the seed's Data Validation section no longer parses"
    for low, low_op, column, high_op, high in bounds:
        ranges = [r for r in RANGES if r.column == column]
        assert ranges, f"the seed bounds {column} but the CHECK contract does not"
        for r in ranges:
            assert (r.low, r.low_inclusive, r.high, r.high_inclusive) == (
                int(low),
                low_op == "≤",
                int(high),
                high_op == "≤",
            ), r


# ------------------------------------------------------------------------------------------------------------
# Migrations: up, down, up again, and the result is exactly the seed
# ------------------------------------------------------------------------------------------------------------


def test_upgrade_downgrade_upgrade_builds_exactly_the_seed(empty_database_url: str, request) -> None:
    url = empty_database_url
    before = user_objects(url)

    migrate.upgrade(url)
    assert set(OUR_TABLES) <= public_tables(url)

    migrate.downgrade(url, SEED_REVISION)
    tables = public_tables(url)
    assert QUARANTINE not in tables
    assert set(SEED_TABLES) | set(DERIVED_BAR_TABLES) <= tables

    migrate.downgrade(url)
    assert migrate.current_revision(url) is None
    assert public_tables(url) <= {VERSION_TABLE}
    assert user_objects(url) == before, "the downgrade to base left schema objects behind"

    migrate.upgrade(url)
    seed: Seed = request.getfixturevalue("seed")
    with engine(url).connect() as conn:
        live = {table: live_snapshot(conn, table) for table in OUR_TABLES}
    assert live == {table: expected_snapshot(seed, table) for table in OUR_TABLES}


# ------------------------------------------------------------------------------------------------------------
# The session database (at head), table by table
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("table", OUR_TABLES)
def test_table_is_exactly_as_specified(database_url: str, seed: Seed, table: str) -> None:
    with engine(database_url).connect() as conn:
        live = live_snapshot(conn, table)
    expected = expected_snapshot(seed, table)
    assert live["column_order"] == expected["column_order"]
    for column, shape in expected["columns"].items():
        assert live["columns"][column] == shape, f"{table}.{column}"
    assert live["constraints"] == expected["constraints"]
    assert live["indexes"] == expected["indexes"]


@pytest.mark.parametrize("table", DERIVED_BAR_TABLES)
def test_coarser_bar_tables_equal_market_data_1m(database_url: str, table: str) -> None:
    with engine(database_url).connect() as conn:
        one_minute = live_snapshot(conn, "market_data_1m")
        coarser = live_snapshot(conn, table)
    for part in ("constraints", "indexes"):
        coarser[part] = {
            name.replace(table, "market_data_1m"): shape for name, shape in coarser[part].items()
        }
    assert coarser == one_minute
    assert coarser["constraints"]["pk_market_data_1m"] == ("p", ("symbol", "timestamp"))


def test_check_constraints_are_exactly_the_contract(database_url: str) -> None:
    with engine(database_url).connect() as conn:
        live = conn.execute(
            sa.text(
                "SELECT conrelid::regclass::text, conname FROM pg_constraint "
                "WHERE contype = 'c' AND conrelid = ANY(CAST(:tables AS regclass[]))"
            ),
            {"tables": [f"public.{t}" for t in OUR_TABLES]},
        ).all()
    expected = {(table, name) for table in OUR_TABLES for name in expected_checks(table)}
    assert set(live) == expected
    assert len(live) == len(expected)


def test_base_rows_and_defaults_pass_every_constraint(conn: sa.Connection, seed: Seed) -> None:
    for table in BASE_ROWS:
        accepted(conn, seed, table, {})
    savepoint = conn.begin_nested()
    try:
        module_id = insert(conn, "modules", BASE_ROWS["modules"], ("module_id",))[0]
        row = conn.execute(
            sa.text(
                "SELECT lifecycle_stage, status, learning_rate, created_at FROM modules WHERE module_id = :m"
            ),
            {"m": module_id},
        ).one()
        assert row[:3] == ("experimental", "active", Decimal("0.01"))
        assert row[3] is not None
    finally:
        savepoint.rollback()


def test_quarantine_accepts_a_rejected_row_and_numbers_it(conn: sa.Connection) -> None:
    row = conn.execute(
        sa.text(
            "INSERT INTO market_data_quarantine (partition_date, source_file, raw_values, rule) "
            "VALUES (DATE '2026-01-02', 'AAPL.csv', CAST(:raw AS jsonb), 'prices_positive') "
            "RETURNING quarantine_id, quarantined_at, source_line, symbol, message"
        ),
        {"raw": '{"open": "-1"}'},
    ).one()
    assert row[0] is not None and row[1] is not None and row[2:] == (None, None, None)
    with pytest.raises(sa.exc.DBAPIError) as raised, conn.begin_nested():
        conn.execute(
            sa.text(
                "INSERT INTO market_data_quarantine "
                "(quarantine_id, partition_date, source_file, raw_values, rule) "
                "VALUES (1, DATE '2026-01-02', 'x', CAST('{}' AS jsonb), 'r')"
            )
        )
    assert isinstance(raised.value.orig, psycopg.errors.GeneratedAlways)


# ------------------------------------------------------------------------------------------------------------
# Every CHECK, probed at its bounds
# ------------------------------------------------------------------------------------------------------------

RANGE_PROBES = ("low_bound", "below_low", "high_bound", "above_high", "null")


@pytest.mark.parametrize("probe", RANGE_PROBES)
@pytest.mark.parametrize("bound", RANGES, ids=lambda r: f"{r.table}.{r.column}")
def test_range_check_at_its_bounds(conn: sa.Connection, seed: Seed, bound: Range, probe: str) -> None:
    column = seed.tables["market_data_1m" if bound.table in DERIVED_BAR_TABLES else bound.table].column(
        bound.column
    )
    step = _step(column.type)
    low_ok = Decimal(bound.low) if bound.low_inclusive else bound.low + step
    high_ok = Decimal(bound.high) if bound.high_inclusive else bound.high - step
    values = {
        "low_bound": (low_ok, True),
        "below_low": (low_ok - step, False),
        "high_bound": (high_ok, True),
        "above_high": (high_ok + step, False),
    }
    if probe == "null":
        if column.not_null:
            rejected(conn, seed, bound.table, {bound.column: None}, None, psycopg.errors.NotNullViolation)
        else:
            accepted(conn, seed, bound.table, {bound.column: None})
        return
    value, ok = values[probe]
    value = int(value) if column.type == "integer" else value
    if ok:
        accepted(conn, seed, bound.table, {bound.column: value})
    else:
        rejected(conn, seed, bound.table, {bound.column: value}, bound.name)


ENUM_PROBES = [
    pytest.param(table, column, value, id=f"{table}.{column}={value}")
    for (table, column), values in ENUMS.items()
    for value in (*values, "bogus", None)
]


@pytest.mark.parametrize(("table", "column", "value"), ENUM_PROBES)
def test_enum_check_admits_exactly_its_values(
    conn: sa.Connection, seed: Seed, table: str, column: str, value: str | None
) -> None:
    if value is None:
        if seed.tables[table].column(column).not_null:
            rejected(conn, seed, table, {column: None}, None, psycopg.errors.NotNullViolation)
        else:
            accepted(conn, seed, table, {column: None})
    elif value in ENUMS[(table, column)]:
        accepted(conn, seed, table, {column: value})
    else:
        rejected(conn, seed, table, {column: value}, f"ck_{table}_{column}_enum")
        rejected(conn, seed, table, {column: ENUMS[(table, column)][0].upper()}, f"ck_{table}_{column}_enum")


@pytest.mark.parametrize(("table", "column"), list(ENUMS), ids=lambda v: v)
def test_enum_check_lists_no_other_value(database_url: str, table: str, column: str) -> None:
    """A value admitted beyond the contract cannot be found by probing: read the definition's literals."""
    with engine(database_url).connect() as conn:
        definition = conn.execute(
            sa.text(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = CAST(:table AS regclass) AND conname = :name"
            ),
            {"table": f"public.{table}", "name": f"ck_{table}_{column}_enum"},
        ).scalar_one()
    literals = [value.replace("''", "'") for value in re.findall(r"'((?:[^']|'')*)'", definition)]
    assert sorted(literals) == sorted(ENUMS[(table, column)]), definition


P = PRICE_STEP
BAR_PROBES = {
    # rule: [(case, the bar's values, accepted)], each rejected case breaking that rule only
    "prices_positive": [
        ("smallest_prices", {"open": P, "high": P, "low": P, "close": P}, True),
        ("open_zero", {"open": 0, "low": 0}, False),
        ("close_zero", {"close": 0, "low": 0}, False),
        ("low_zero", {"low": 0}, False),
        ("all_zero", {"open": 0, "high": 0, "low": 0, "close": 0}, False),
        ("negative", {"open": -P, "high": -P, "low": -P, "close": -P}, False),
    ],
    "volume_nonnegative": [
        ("zero", {"volume": 0}, True),
        ("below_zero", {"volume": -P}, False),
    ],
    "high_bounds": [
        ("high_equals_all", {"open": 2, "high": 2, "low": 2, "close": 2}, True),
        ("below_open", {"open": 2, "high": 2 - P}, False),
        ("below_close", {"close": 2, "high": 2 - P}, False),
        ("below_low", {"open": 2, "close": 2, "low": 2, "high": 2 - P}, False),
    ],
    "low_bounds": [
        ("low_equals_open_and_close", {"open": 2, "close": 2, "low": 2, "high": 3}, True),
        ("above_open", {"high": 3, "close": 3, "low": 1 + P}, False),
        ("above_close", {"high": 3, "open": 3, "low": 1 + P}, False),
    ],
}


@pytest.mark.parametrize(
    ("rule", "values", "ok"),
    [
        pytest.param(rule, values, ok, id=f"{rule}-{case}")
        for rule, cases in BAR_PROBES.items()
        for case, values, ok in cases
    ],
)
@pytest.mark.parametrize("table", BAR_TABLES)
def test_bar_checks_at_their_bounds(
    conn: sa.Connection, seed: Seed, table: str, rule: str, values: dict, ok: bool
) -> None:
    values = {column: Decimal(v) for column, v in values.items()}
    if ok:
        accepted(conn, seed, table, values)
    else:
        rejected(conn, seed, table, values, f"ck_{table}_{rule}")


# ------------------------------------------------------------------------------------------------------------
# Every foreign key is enforced
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("table", "column"), SEED_FOREIGN_KEYS, ids=lambda v: v)
def test_foreign_key_is_enforced(conn: sa.Connection, seed: Seed, table: str, column: str) -> None:
    ref_table, ref_column = seed.tables[table].column(column).references
    savepoint = conn.begin_nested()
    try:
        parent_id = insert(conn, ref_table, BASE_ROWS[ref_table], (ref_column,))[0]
        accepted(conn, seed, table, {column: parent_id})
    finally:
        savepoint.rollback()
    rejected(
        conn, seed, table, {column: uuid.uuid4()}, f"fk_{table}_{column}", psycopg.errors.ForeignKeyViolation
    )


# Parents whose rows are deleted (a re-run clears its window, retention drops old rows; ``modules`` never is)
# and the keys to them
PARENTS_THAT_LOSE_ROWS = {"trading_plans", "dsi_evidence", "module_replications"}
KEYS_TO_PARENTS_THAT_LOSE_ROWS = (
    ("trading_plan_approvals", "plan_id"),
    ("dsi_evidence", "plan_id"),
    ("module_replication_triggers", "replication_id"),
    ("anomaly_events", "trading_plan_id"),
    ("anomaly_events", "dsi_evidence_id"),
)


def test_the_keys_to_parents_that_lose_rows_are_all_listed(seed: Seed) -> None:
    keys = [
        (table, column)
        for table, column in SEED_FOREIGN_KEYS
        if seed.tables[table].column(column).references[0] in PARENTS_THAT_LOSE_ROWS
    ]
    assert keys == list(KEYS_TO_PARENTS_THAT_LOSE_ROWS)


@pytest.mark.parametrize(("table", "column"), KEYS_TO_PARENTS_THAT_LOSE_ROWS, ids=lambda v: v)
def test_a_key_to_a_parent_that_loses_rows_is_indexed(database_url: str, table: str, column: str) -> None:
    """Deleting a parent row checks the key by looking the row up in ``table``: without an index leading with
    ``column`` that is a scan of the whole table per deleted row, which grows with the history kept."""
    with engine(database_url).connect() as conn:
        leading = conn.execute(
            sa.text(
                """
                SELECT count(*) FROM pg_index i
                JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                WHERE i.indrelid = to_regclass(:table) AND a.attname = :column"""
            ),
            {"table": table, "column": column},
        ).scalar_one()
    assert leading >= 1, f"no index leads with {table}.{column}"
