"""Audit of the module ecosystem in a database after a run (issue 18's closing note).

    python -m bench.ecosystem_audit --url postgresql+psycopg://root@127.0.0.1:5432/DB

Prints, as Markdown:

* per table, for every column issue 18 names: rows, fill rate (non-NULL / rows), distinct values (as text)
  and, for numbers, min / max; the most frequent values where there are few;
* ``module_messages``: counts by status, by message_type, and by (type, status); ``delivery_attempts`` counts;
* the lifecycle: ``modules`` by (lifecycle_stage, status) at the end, and the stages and statuses reached
  by any module on any day (``ecosystem_state``'s daily populations);
* the learning parameters' spread over the final population: min / max / distinct of ``learning_rate``,
  ``adaptation_threshold``, ``mutation_rate``, ``recombination_rate``;
* the measured columns (specialization_index, network_centrality, collaboration_score,
  communication_latency_ms, message_throughput_per_sec, ...) over every (live module, day) pair of
  ``ecosystem_state``: distinct values, min, max;
* ``dsi_evidence``: rows whose ``mx_processing_latency_ms`` equals ``mx_latency_p50`` (a per-run constant
  copied into every row would make that every row).

Read-only; the identifiers are this file's constants, never input.
"""

from __future__ import annotations

import argparse

import pandas as pd
import sqlalchemy as sa

# table -> the columns issue 18 names
COLUMNS: dict[str, tuple[str, ...]] = {
    "modules": (
        "status",
        "lifecycle_stage",
        "learning_rate",
        "adaptation_threshold",
        "mutation_rate",
        "recombination_rate",
        "learning_patterns",
        "innovation_score",
        "specialization_index",
        "network_centrality",
        "collaboration_score",
        "communication_latency_ms",
        "message_throughput_per_sec",
        "intelligence_sharing_rate",
        "peer_ratings",
        "replication_readiness",
    ),
    "module_messages": (
        "message_type",
        "status",
        "priority",
        "ttl_seconds",
        "delivery_attempts",
        "last_delivery_attempt",
        "error_message",
    ),
    "module_intelligence_sharing": (
        "intelligence_type",
        "sharing_scope",
        "target_modules",
        "performance_score",
        "confidence_level",
    ),
    "module_replications": (
        "trigger_type",
        "replication_status",
        "creation_time_ms",
        "validation_time_ms",
        "initialization_time_ms",
    ),
    "market_data_1m": ("module_intelligence", "module_learning_updates"),
    "dsi_evidence": (
        "mx_processing_latency_ms",
        "mx_expert_survival_rates",
        "mx_evidence_boost",
        "mx_latency_p50",
    ),
}
NUMERIC = ("integer", "numeric", "bigint", "smallint", "double precision", "real")
TOP = 4  # most frequent values shown for a column with at most this many x 2 distinct values
LEARNING = ("learning_rate", "adaptation_threshold", "mutation_rate", "recombination_rate")


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _types(conn: sa.Connection, table: str) -> dict[str, str]:
    rows = conn.execute(
        sa.text("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = :t"),
        {"t": table},
    )
    return {r.column_name: r.data_type for r in rows}


def _short(value: object, width: int = 60) -> str:
    text = "NULL" if value is None else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _markdown(rows: list, columns: list[str]) -> list[str]:
    """``rows`` as a markdown table (pandas' ``to_markdown``: tabulate), integers with thousands separators;
    ``min`` and ``max`` are printed as the database gave them (tabulate would reparse "0.0" as 0)."""
    as_given = [i for i, name in enumerate(columns) if name in ("min", "max")]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.to_markdown(index=False, intfmt=",", disable_numparse=as_given).splitlines()


def column_table(conn: sa.Connection, table: str, columns: tuple[str, ...]) -> list[str]:
    types = _types(conn, table)
    found = []
    for col in columns:
        if col not in types:
            found.append((col, None, "–", None, "–", "–", "(no such column)"))
            continue
        c, t = _ident(col), _ident(table)
        numeric = types[col] in NUMERIC
        lo_hi = f"min({c}), max({c})" if numeric else "NULL, NULL"
        rows, filled, distinct, lo, hi = conn.execute(
            sa.text(f"SELECT count(*), count({c}), count(DISTINCT {c}::text), {lo_hi} FROM {t}")
        ).one()
        top = ""
        if 0 < distinct <= 2 * TOP:
            freq = conn.execute(
                sa.text(
                    f"SELECT {c}::text AS v, count(*) AS n FROM {t} WHERE {c} IS NOT NULL "
                    f"GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT {TOP}"
                )
            ).all()
            top = "; ".join(f"{_short(v, 40)}: {n:,}" for v, n in freq)
        fill = f"{filled / rows:.1%}" if rows else "–"
        found.append((col, rows, fill, distinct, _short(lo), _short(hi), top.replace("|", "/")))
    header = ["column", "rows", "fill", "distinct", "min", "max", "most frequent"]
    return [f"### {table}", "", *_markdown(found, header), ""]


def message_counts(conn: sa.Connection) -> list[str]:
    pairs = conn.execute(
        sa.text("SELECT message_type, status, count(*) FROM module_messages GROUP BY 1, 2 ORDER BY 1, 2")
    ).all()
    out = [
        "### module_messages by type and status",
        "",
        *_markdown([tuple(p) for p in pairs], ["message_type", "status", "messages"]),
    ]
    # the totals by status and by type are sums of the pairs: no second and third scan
    by_status: dict[str, int] = {}
    by_type: dict[str, int] = {}
    for mtype, status, n in pairs:
        by_status[status] = by_status.get(status, 0) + n
        by_type[mtype] = by_type.get(mtype, 0) + n
    totals, types = sorted(by_status.items()), sorted(by_type.items())
    attempts = conn.execute(
        sa.text("SELECT delivery_attempts, count(*) FROM module_messages GROUP BY 1 ORDER BY 1")
    ).all()
    out += [
        "",
        "status: " + ", ".join(f"{s} {n:,}" for s, n in totals),
        "",
        "message_type: " + ", ".join(f"{s} {n:,}" for s, n in types),
        "",
        "delivery_attempts: " + ", ".join(f"{a}: {n:,}" for a, n in attempts),
        "",
    ]
    errors = conn.execute(
        sa.text(
            "SELECT status, regexp_replace(error_message, '[0-9a-f]{8}-[0-9a-f-]{27}', '<id>', 'g') AS e, "
            "count(*) FROM module_messages WHERE error_message IS NOT NULL "
            "GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 6"
        )
    ).all()
    if errors:
        out += ["error messages (ids masked):", ""]
        out += [f"* {s} ({n:,}): {_short(e, 160)}" for s, e, n in errors]
        out.append("")
    return out


def lifecycle(conn: sa.Connection) -> list[str]:
    at_end = conn.execute(
        sa.text("SELECT lifecycle_stage, status, count(*) FROM modules GROUP BY 1, 2 ORDER BY 1, 2")
    ).all()
    out = [
        "### lifecycle",
        "",
        "at the end (modules):",
        "",
        *_markdown([tuple(r) for r in at_end], ["lifecycle_stage", "status", "modules"]),
    ]
    reached = conn.execute(
        sa.text(
            "SELECT m->>'lifecycle_stage' AS stage, m->>'status' AS status, "
            "count(DISTINCT m->>'module_id') AS modules, min(s.day) AS first_day "
            "FROM ecosystem_state s, jsonb_array_elements(s.population) m GROUP BY 1, 2 ORDER BY 1, 2"
        )
    ).all()
    out += [
        "",
        "reached on any day (ecosystem_state's daily populations):",
        "",
        *_markdown([tuple(r) for r in reached], ["lifecycle_stage", "status", "modules", "first day"]),
    ]
    return [*out, ""]


def learning_spread(conn: sa.Connection) -> list[str]:
    found = []
    for col in LEARNING:
        c = _ident(col)
        n, lo, hi, d = conn.execute(
            sa.text(f"SELECT count(*), min({c}), max({c}), count(DISTINCT {c}) FROM modules")
        ).one()
        found.append((col, n, str(lo), str(hi), d))
    header = ["parameter", "modules", "min", "max", "distinct"]
    return ["### learning parameters over the final population", "", *_markdown(found, header), ""]


VARYING = (
    "specialization_index",
    "network_centrality",
    "collaboration_score",
    "communication_latency_ms",
    "message_throughput_per_sec",
    "intelligence_sharing_rate",
    *LEARNING,
)


def across_days(conn: sa.Connection) -> list[str]:
    """The measured columns over every (live module, day) of ``ecosystem_state``: do they vary?"""
    found = []
    for col in VARYING:
        n, d, lo, hi = conn.execute(
            sa.text(
                "SELECT count(*), count(DISTINCT m->>:c), min((m->>:c)::numeric), max((m->>:c)::numeric) "
                "FROM ecosystem_state s, jsonb_array_elements(s.population) m "
                "WHERE m->>'status' = 'active' AND m->>'lifecycle_stage' IN ('experimental', 'active')"
            ),
            {"c": col},
        ).one()
        found.append((col, n, d, str(lo), str(hi)))
    header = ["column", "pairs", "distinct", "min", "max"]
    title = "### measured columns over (live module, day) pairs (ecosystem_state)"
    return [title, "", *_markdown(found, header), ""]


def dsi_check(conn: sa.Connection) -> list[str]:
    n, same = conn.execute(
        sa.text(
            "SELECT count(*), count(*) FILTER (WHERE mx_processing_latency_ms = mx_latency_p50) "
            "FROM dsi_evidence"
        )
    ).one()
    return [f"dsi_evidence: mx_processing_latency_ms = mx_latency_p50 in {same:,} of {n:,} rows", ""]


def audit(url: str) -> str:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    lines = ["## Ecosystem audit", ""]
    try:
        with engine.connect() as conn:
            for table, columns in COLUMNS.items():
                lines += column_table(conn, table, columns)
            lines += message_counts(conn)
            lines += lifecycle(conn)
            lines += learning_spread(conn)
            lines += across_days(conn)
            lines += dsi_check(conn)
    finally:
        engine.dispose()
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True, help="SQLAlchemy URL of the database to audit")
    print(audit(parser.parse_args().url))


if __name__ == "__main__":
    main()
