"""Compare the registry with PostgreSQL's CHECK constraints, bound for bound.

PostgreSQL does not keep a CHECK as written: ``pg_get_constraintdef`` renders it back with casts and
parentheses, e.g. ``CHECK (((learning_rate >= (0)::numeric) AND (learning_rate <= (1)::numeric)))`` or
``CHECK (((status)::text = ANY ((ARRAY['active'::character varying, ...])::text[])))``. ``parse_check``
reads such a definition (or the expression the registry writes) into a set of *atoms*, a normal form that
does not depend on spelling:

* ``("cmp", column, op, Decimal)`` for a bound, column on the left (``0 <= x`` becomes ``x >= 0``);
* ``("cmp", a, op, b)`` for two columns, with ``op`` in ``>``/``>=`` (``low <= open`` becomes
  ``open >= low``); ``x >= GREATEST(a, b)`` expands to one atom per argument, ``LEAST`` likewise;
* ``("in", column, frozenset(values))`` for ``IN (...)`` and ``= ANY (ARRAY[...])``.

``BETWEEN`` becomes two bounds; conjunctions flatten; a disjunct ``x IS NULL`` is dropped (a CHECK passes on
NULL anyway, so writing it out changes nothing). Anything else raises ``CheckParseError`` so that a
constraint the registry cannot express is reported, not silently ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from tis_pipeline.quality.rules import DbCheck, Rule, db_check_rules

Atom = tuple


class CheckParseError(ValueError):
    """A CHECK definition outside the subset the registry can express."""


_TOKEN = re.compile(
    r"""
    \s*(?:
      (?P<num>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
    | (?P<str>'(?:[^']|'')*')
    | (?P<qident>"(?:[^"]|"")*")
    | (?P<ident>[A-Za-z_][A-Za-z0-9_$]*)
    | (?P<op>::|>=|<=|<>|!=|=|>|<|\(|\)|\[|\]|,)
    )""",
    re.VERBOSE,
)

_TYPE_WORDS = {
    "character",
    "varying",
    "double",
    "precision",
    "timestamp",
    "time",
    "with",
    "without",
    "zone",
    "numeric",
    "decimal",
    "text",
    "integer",
    "int",
    "int2",
    "int4",
    "int8",
    "bigint",
    "smallint",
    "real",
    "float4",
    "float8",
    "boolean",
    "bool",
    "varchar",
    "bpchar",
    "char",
    "date",
    "interval",
    "name",
    "json",
    "jsonb",
    "uuid",
}
_FLIP = {">": "<", ">=": "<=", "<": ">", "<=": ">=", "=": "=", "<>": "<>", "!=": "!="}


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise CheckParseError(f"cannot read {text[pos : pos + 30]!r} in {text!r}")
        kind = m.lastgroup
        value = m.group(kind)
        if kind == "ident":
            tokens.append(("kw" if value.upper() in _KEYWORDS else "ident", value))
        elif kind == "qident":
            tokens.append(("ident", value[1:-1].replace('""', '"')))
        else:
            tokens.append((kind, value))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return tokens


_KEYWORDS = {
    "AND",
    "OR",
    "NOT",
    "IS",
    "NULL",
    "IN",
    "BETWEEN",
    "ANY",
    "ARRAY",
    "CHECK",
    "VALID",
    "TRUE",
    "FALSE",
}


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0

    def peek(self, offset: int = 0) -> tuple[str, str] | None:
        j = self.i + offset
        return self.tokens[j] if j < len(self.tokens) else None

    def accept(self, value: str) -> bool:
        tok = self.peek()
        if tok and (tok[1] == value or (tok[0] == "kw" and tok[1].upper() == value)):
            self.i += 1
            return True
        return False

    def expect(self, value: str) -> None:
        if not self.accept(value):
            raise CheckParseError(f"expected {value!r} at token {self.i} of {self.text!r}")

    def parse(self) -> Any:
        self.accept("CHECK")
        node = self.disjunction()
        if self.accept("NOT"):
            self.expect("VALID")
        if self.peek() is not None:
            raise CheckParseError(f"trailing tokens {self.tokens[self.i :]} in {self.text!r}")
        return node

    def disjunction(self) -> Any:
        parts = [self.conjunction()]
        while self.accept("OR"):
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else ("or", parts)

    def conjunction(self) -> Any:
        parts = [self.negation()]
        while self.accept("AND"):
            parts.append(self.negation())
        return parts[0] if len(parts) == 1 else ("and", parts)

    def negation(self) -> Any:
        if self.accept("NOT"):
            return ("not", self.negation())
        return self.predicate()

    def predicate(self) -> Any:
        left = self.operand()
        tok = self.peek()
        if tok is None:
            return left
        if tok[0] == "op" and tok[1] in _FLIP:
            op = tok[1]
            self.i += 1
            if self.accept("ANY"):
                self.expect("(")
                values = self.operand()
                self.expect(")")
                return ("any", op, left, values)
            return ("cmp", op, left, self.operand())
        if self.accept("IS"):
            negated = self.accept("NOT")
            self.expect("NULL")
            return ("isnull", left, negated)
        following = self.peek(1)
        negated = bool(following and following[1].upper() in ("IN", "BETWEEN")) and self.accept("NOT")
        if self.accept("IN"):
            self.expect("(")
            values = [self.operand()]
            while self.accept(","):
                values.append(self.operand())
            self.expect(")")
            node = ("in", left, ("array", values))
            return ("not", node) if negated else node
        if self.accept("BETWEEN"):
            lo = self.operand()
            self.expect("AND")
            hi = self.operand()
            node = ("and", [("cmp", ">=", left, lo), ("cmp", "<=", left, hi)])
            return ("not", node) if negated else node
        return left

    def operand(self) -> Any:
        node = self.primary()
        while self.accept("::"):
            self._type_name()
        return node

    def _type_name(self) -> None:
        tok = self.peek()
        if not tok or tok[1].lower() not in _TYPE_WORDS:
            raise CheckParseError(f"unknown type after '::' in {self.text!r}")
        while (tok := self.peek()) and tok[0] in ("ident", "kw") and tok[1].lower() in _TYPE_WORDS:
            self.i += 1
        if self.peek() == ("op", "(") and self.peek(1) and self.peek(1)[0] == "num":
            while not self.accept(")"):
                self.i += 1
        while self.accept("["):
            self.expect("]")

    def primary(self) -> Any:
        tok = self.peek()
        if tok is None:
            raise CheckParseError(f"unexpected end of {self.text!r}")
        kind, value = tok
        if value == "(":
            self.i += 1
            node = self.disjunction()
            self.expect(")")
            return node
        if kind == "num":
            self.i += 1
            return ("num", Decimal(value))
        if kind == "str":
            self.i += 1
            return ("str", value[1:-1].replace("''", "'"))
        if kind == "kw" and value.upper() == "ARRAY":
            self.i += 1
            self.expect("[")
            items = [self.operand()]
            while self.accept(","):
                items.append(self.operand())
            self.expect("]")
            return ("array", items)
        if kind == "ident":
            self.i += 1
            if self.peek() == ("op", "("):
                self.i += 1
                args = [self.operand()]
                while self.accept(","):
                    args.append(self.operand())
                self.expect(")")
                return ("func", value.lower(), args)
            return ("col", value)
        if value == "-" or (kind == "op" and value == "-"):
            raise CheckParseError(f"unary minus not supported in {self.text!r}")
        raise CheckParseError(f"unexpected token {value!r} in {self.text!r}")


def _atoms(node: Any, text: str) -> set[Atom]:
    kind = node[0]
    if kind == "and":
        out: set[Atom] = set()
        for part in node[1]:
            out |= _atoms(part, text)
        return out
    if kind == "or":
        # "x IS NULL OR <bound>" only restates what a CHECK does with NULL
        rest = [p for p in node[1] if not (p[0] == "isnull" and not p[2])]
        if len(rest) != 1:
            raise CheckParseError(f"a disjunction the registry cannot express: {text!r}")
        return _atoms(rest[0], text)
    if kind == "cmp":
        return _comparison(node[1], node[2], node[3], text)
    if kind in ("in", "any"):
        column, values = (node[1], node[2]) if kind == "in" else (node[2], node[3])
        if kind == "any" and node[1] != "=":
            raise CheckParseError(f"only '= ANY' is supported: {text!r}")
        if column[0] != "col" or values[0] != "array":
            raise CheckParseError(f"IN/ANY over something other than a column and a list: {text!r}")
        items = frozenset(v[1] for v in values[1])
        return {("in", column[1], items)}
    raise CheckParseError(f"a predicate the registry cannot express ({kind}): {text!r}")


def _comparison(op: str, left: Any, right: Any, text: str) -> set[Atom]:
    if left[0] != "col":
        left, right, op = right, left, _FLIP[op]
    if left[0] != "col":
        raise CheckParseError(f"comparison without a column: {text!r}")
    if right[0] == "str" and op in ("<", "<=", ">", ">=") and re.fullmatch(r"-?\d+(\.\d+)?", right[1]):
        right = ("num", Decimal(right[1]))  # '0.5'::numeric
    if right[0] == "num":
        return {("cmp", left[1], op, right[1])}
    if right[0] == "col":
        a, b = left[1], right[1]
        if op in ("<", "<="):
            a, b, op = b, a, _FLIP[op]
        return {("cmp", a, op, b)}
    if right[0] == "func" and right[1] in ("greatest", "least"):
        wanted = (">", ">=") if right[1] == "greatest" else ("<", "<=")
        if op not in wanted:
            raise CheckParseError(f"{right[1].upper()} on the wrong side of {op}: {text!r}")
        out: set[Atom] = set()
        for arg in right[2]:
            out |= _comparison(op, left, arg, text)
        return out
    raise CheckParseError(f"cannot compare {left} with {right}: {text!r}")


def parse_check(definition: str) -> frozenset[Atom]:
    """The atoms of a CHECK definition (``pg_get_constraintdef`` output or a bare expression)."""
    return frozenset(_atoms(_Parser(definition).parse(), definition))


def rule_atoms(rule: Rule) -> frozenset[Atom]:
    """The atoms the registry says ``rule``'s constraint must have."""
    p = rule.params
    if rule.kind == "range":
        col = rule.column
        return frozenset(
            {
                ("cmp", col, ">=" if p["min_inclusive"] else ">", Decimal(str(p["min"]))),
                ("cmp", col, "<=" if p["max_inclusive"] else "<", Decimal(str(p["max"]))),
            }
        )
    if rule.kind == "enum":
        return frozenset({("in", rule.column, frozenset(p["values"]))})
    if rule.kind in ("positive", "nonnegative"):
        op = ">" if rule.kind == "positive" else ">="
        return frozenset(("cmp", c, op, Decimal(0)) for c in rule.columns)
    if rule.kind == "ohlc_high":
        high, *others = rule.columns
        return frozenset(("cmp", high, ">=", c) for c in others)
    if rule.kind == "ohlc_low":
        low, *others = rule.columns
        return frozenset(("cmp", c, ">=", low) for c in others)
    raise ValueError(f"rule {rule.name} ({rule.kind}) has no CHECK constraint")


@dataclass(frozen=True)
class ConstraintDiff:
    """Registry vs database: names on one side only, tables that differ, and bounds that differ."""

    missing_in_db: tuple[str, ...]
    extra_in_db: tuple[str, ...]
    wrong_table: tuple[tuple[str, str, str], ...]  # (name, registry table, db table)
    wrong_bounds: tuple[tuple[str, frozenset, frozenset], ...]  # (name, registry atoms, db atoms)
    unparsable: tuple[tuple[str, str], ...]  # (name, error)

    @property
    def ok(self) -> bool:
        return not (
            self.missing_in_db or self.extra_in_db or self.wrong_table or self.wrong_bounds or self.unparsable
        )

    def describe(self) -> str:
        lines = []
        lines += [f"missing in the database: {n}" for n in self.missing_in_db]
        lines += [f"in the database, not in the registry: {n}" for n in self.extra_in_db]
        lines += [f"{n}: registry table {a}, database table {b}" for n, a, b in self.wrong_table]
        for name, want, have in self.wrong_bounds:
            lines.append(
                f"{name}: registry {sorted(map(str, want - have))} "
                f"vs database {sorted(map(str, have - want))}"
            )
        lines += [f"{n}: cannot parse ({e})" for n, e in self.unparsable]
        return "\n".join(lines) or "registry and database agree"


def compare(
    db_constraints: dict[str, tuple[str, str]], checks: tuple[DbCheck, ...] | None = None
) -> ConstraintDiff:
    """Compare ``{name: (table, pg_get_constraintdef)}`` with the registry's CHECK rules."""
    checks = db_check_rules() if checks is None else checks
    registry = {c.name: c for c in checks}
    wrong_table, wrong_bounds, unparsable = [], [], []
    for name in sorted(registry.keys() & db_constraints.keys()):
        table, definition = db_constraints[name]
        if table != registry[name].table:
            wrong_table.append((name, registry[name].table, table))
        try:
            have = parse_check(definition)
        except CheckParseError as exc:
            unparsable.append((name, str(exc)))
            continue
        want = rule_atoms(registry[name].rule)
        if have != want:
            wrong_bounds.append((name, want, have))
    return ConstraintDiff(
        missing_in_db=tuple(sorted(registry.keys() - db_constraints.keys())),
        extra_in_db=tuple(sorted(db_constraints.keys() - registry.keys())),
        wrong_table=tuple(wrong_table),
        wrong_bounds=tuple(wrong_bounds),
        unparsable=tuple(unparsable),
    )


CHECK_CONSTRAINTS_SQL = """
SELECT c.conname AS name, t.relname AS table_name, pg_get_constraintdef(c.oid) AS definition
FROM pg_constraint c
JOIN pg_class t ON t.oid = c.conrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE c.contype = 'c' AND c.conname LIKE 'ck\\_%' AND n.nspname = current_schema()
  AND c.conislocal  -- a partition's copies of its parent's CHECKs are inherited, not declared
ORDER BY t.relname, c.conname
"""


def database_checks(conn) -> dict[str, tuple[str, str]]:
    """``{constraint name: (table, definition)}`` of every ``ck_*`` CHECK declared in the current schema.

    ``conn`` is a SQLAlchemy connection. Partitions inherit their parent's CHECKs under the same names; those
    copies are left out, so a partitioned table is compared once, as the parent the registry names.
    """
    import sqlalchemy as sa

    rows = conn.execute(sa.text(CHECK_CONSTRAINTS_SQL)).all()
    out: dict[str, tuple[str, str]] = {}
    for row in rows:
        if row.name in out:
            raise ValueError(f"CHECK {row.name} is declared on both {out[row.name][0]} and {row.table_name}")
        out[row.name] = (row.table_name, row.definition)
    return out
