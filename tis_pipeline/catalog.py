"""The catalog of the project's tables, read from the data model (``docs/data-model.md``): every column of
each table with its type, nullability, constraints and the seed's own comment, and who owns each table.

``docs/data-model.md`` is the contract every migration implements (``tis_pipeline_tests/test_schema.py``
checks the live database against it); the Dagster glue in ``tis_pipeline/definitions.py`` turns this catalog
into each table asset's ``dagster/column_schema``, ``dagster/table_name``, owners and tags, so that the UI's
asset pages show what the seed says about each column. No Dagster here: plain data and a parser.

The derived bar tables (``market_data_15m``, ``market_data_1h``) have the shape of ``market_data_1m`` (the
migration builds them so); the seed does not list them, so they take its columns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from tis_pipeline.settings import PROJECT_ROOT

DATA_MODEL = PROJECT_ROOT / "docs" / "data-model.md"
SCHEMA = "public"
DERIVED_BAR_TABLES = {"market_data_15m": "market_data_1m", "market_data_1h": "market_data_1m"}


@dataclass(frozen=True)
class Domain:
    """Who answers for a group of tables: the Dagster group name, an owner and a short word for the UI."""

    group: str
    owner: str  # a Dagster owner: an e-mail or ``team:<name>``
    label: str


DOMAINS = {
    "market_data": Domain("market_data", "team:market-data", "market data"),
    "dsi": Domain("dsi", "team:dsi", "DSI scoring"),
    "trading_day": Domain("trading_day", "team:trading-day", "trading day"),
}

# What a table is in the data flow (docs/architecture.md): the ``layer`` tag of its asset.
LAYERS = {
    "market_data_1m": "ingest",
    "market_data_15m": "rollup",
    "market_data_1h": "rollup",
    "dsi_evidence": "signal",
    "anomaly_events": "signal",
    "trading_plans": "decision",
    "trading_plan_approvals": "decision",
    "module_performance": "ecosystem",
    "modules": "ecosystem",
    "module_messages": "ecosystem",
    "module_intelligence_sharing": "ecosystem",
    "module_replication_triggers": "ecosystem",
    "module_replications": "ecosystem",
}


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # as the seed writes it: ``DECIMAL(3,2)``, ``TIMESTAMP WITH TIME ZONE``
    not_null: bool
    primary_key: bool
    default: str | None  # as the seed writes it: ``NOW()``, ``'pending'``, ``0.01``
    references: str | None  # ``modules(module_id)``
    comment: str  # the seed's comment on the column's line ("" when it has none)
    section: str  # the seed's comment line above a group of columns ("Core Trading Plan")

    @property
    def constraints(self) -> tuple[str, ...]:
        """The column's constraints in SQL words, besides NOT NULL (primary key, default, references)."""
        out = []
        if self.primary_key:
            out.append("PRIMARY KEY")
        if self.default is not None:
            out.append(f"DEFAULT {self.default}")
        if self.references is not None:
            out.append(f"REFERENCES {self.references}")
        return tuple(out)


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    source: str  # the table of the seed whose CREATE TABLE it follows (itself, or market_data_1m)

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


_SQL_BLOCK = re.compile(r"```sql\n(.*?)```", re.S)
_CREATE_TABLE = re.compile(r"CREATE TABLE (\w+) \((.*?)\n\);", re.S | re.I)
_TABLE_PRIMARY_KEY = re.compile(r"PRIMARY KEY\s*\(([^)]*)\)", re.I)
_TYPE = re.compile(
    r"TIMESTAMP WITH TIME ZONE|DECIMAL\(\s*\d+\s*,\s*\d+\s*\)|VARCHAR\(\s*\d+\s*\)|UUID|JSONB|INTEGER|BOOLEAN"
    r"|TEXT",
    re.I,
)
_MODIFIER = re.compile(
    r"\s*(?:(?P<pk>PRIMARY KEY)|(?P<not_null>NOT NULL)"
    r"|DEFAULT\s+(?P<default>\w+\(\s*\)|'(?:[^']|'')*'|[+-]?\d+(?:\.\d+)?)"
    r"|REFERENCES\s+(?P<references>\w+\s*\(\s*\w+\s*\)))",
    re.I,
)


def split_sql_comment(line: str) -> tuple[str, str]:
    """(code, comment) of one SQL line: ``--`` starts a comment unless it is inside a string literal."""
    quoted = False
    for i, ch in enumerate(line):
        if ch == "'":
            quoted = not quoted
        elif not quoted and line.startswith("--", i):
            return line[:i], line[i + 2 :].strip()
    return line, ""


def split_top_level(text: str) -> list[str]:
    """Split on commas outside parentheses and string literals."""
    parts, depth, quoted, start = [], 0, False, 0
    for i, ch in enumerate(text):
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch in "()":
            depth += 1 if ch == "(" else -1
        elif not quoted and depth == 0 and ch == ",":
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _column(table: str, item: str, comment: str, section: str) -> Column:
    name, _, rest = item.partition(" ")
    rest = rest.strip()
    match = _TYPE.match(rest)
    if match is None:
        raise ValueError(f"data model {table}.{name}: unknown type in {item!r}")
    # DECIMAL( 3, 2 ) -> DECIMAL(3,2); TIMESTAMP WITH TIME ZONE keeps its spaces
    column_type = re.sub(r"\s+", "", match[0]) if "(" in match[0] else match[0]
    rest = rest[match.end() :]
    not_null = primary_key = False
    default = references = None
    pos = 0
    rest = rest.rstrip()
    while pos < len(rest):
        m = _MODIFIER.match(rest, pos)
        if m is None:
            raise ValueError(f"data model {table}.{name}: cannot parse {rest[pos:]!r}")
        pos = m.end()
        if m["pk"]:
            primary_key = not_null = True
        elif m["not_null"]:
            not_null = True
        elif m["default"]:
            default = m["default"]
        else:
            references = re.sub(r"\s+", "", m["references"])
    return Column(name, column_type.upper(), not_null, primary_key, default, references, comment, section)


def _table(name: str, body: str) -> Table:
    columns: list[Column] = []
    primary_key: tuple[str, ...] = ()
    section = ""
    for line in body.splitlines():
        code, comment = split_sql_comment(line)
        if not code.strip():
            if comment and not comment.startswith("..."):  # a heading over the columns below it
                section = comment
            continue
        for item in split_top_level(code):
            if m := _TABLE_PRIMARY_KEY.fullmatch(item):
                primary_key = tuple(c.strip() for c in m[1].split(","))
            else:
                columns.append(_column(name, item, comment, section))
    inline = tuple(c.name for c in columns if c.primary_key)
    primary_key = primary_key or inline
    # a table-level key makes its columns NOT NULL and part of the key
    columns = [
        Column(c.name, c.type, True, True, c.default, c.references, c.comment, c.section)
        if c.name in primary_key
        else c
        for c in columns
    ]
    if len({c.name for c in columns}) != len(columns):
        raise ValueError(f"data model {name}: a column is defined twice")
    return Table(name, tuple(columns), primary_key, name)


def parse_data_model(text: str) -> dict[str, Table]:
    """Every ``CREATE TABLE`` of the data model's ```sql blocks, plus the derived bar tables."""
    tables: dict[str, Table] = {}
    for block in _SQL_BLOCK.findall(text):
        for name, body in _CREATE_TABLE.findall(block):
            if name in tables:
                raise ValueError(f"data model: table {name} is created twice")
            tables[name] = _table(name, body)
    for derived, source in DERIVED_BAR_TABLES.items():
        if source in tables and derived not in tables:
            base = tables[source]
            tables[derived] = Table(derived, base.columns, base.primary_key, source)
    return tables


@cache
def tables() -> dict[str, Table]:
    """The project's tables as ``docs/data-model.md`` declares them (read once per process)."""
    return parse_data_model(DATA_MODEL.read_text(encoding="utf-8"))


def table_name(table: str) -> str:
    """The table's qualified name (the database is the one ``TIS_DATABASE_URL`` names)."""
    return f"{SCHEMA}.{table}"


def describe_table(table: Table) -> str:
    """One line on where a table's columns come from."""
    if table.source == table.name:
        return f"columns as docs/data-model.md declares {table.name}"
    return f"columns of {table.source} (docs/data-model.md); the migration builds {table.name} in its shape"
