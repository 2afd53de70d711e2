"""A digest of every project table: row count and md5 of the rows sorted as text, per table, as JSON.

    .venv/bin/python -m bench.table_digest postgresql://user@host:5432/db > digest.json

Used to prove that a change leaves every table bit-for-bit the same: run the demo (synthetic, and with
``TIS_MARKET_DATA_DIR=../shared/data/market``) on the old and the new tree into two databases, digest both,
diff. The columns in ``VOLATILE`` differ between two runs of the same code (wall clock, measured latency), so
they are left out; ``mx_expert_contributions`` is digested without its measured ``latency`` member.
"""

from __future__ import annotations

import json
import sys

import psycopg
from psycopg import sql

PROJECT_TABLES = (
    "anomaly_events", "dsi_day_versions", "dsi_evidence", "dsi_state", "ecosystem_state", "market_data_15m",
    "market_data_1h", "market_data_1m", "market_data_day_versions", "market_data_quarantine",
    "module_intelligence_sharing", "module_messages", "module_performance", "module_replication_triggers",
    "module_replications", "modules", "tis_alembic_version", "trading_plan_approvals", "trading_plans",
)  # fmt: skip
VOLATILE = {
    "dsi_day_versions.written_at", "dsi_evidence.mx_latency_p50", "dsi_evidence.mx_latency_p95",
    "dsi_evidence.mx_throughput_per_second", "dsi_evidence.mx_processing_latency_ms",
    "dsi_state.computed_at", "ecosystem_state.computed_at", "market_data_day_versions.written_at",
    "module_replications.creation_time_ms", "module_replications.initialization_time_ms",
    "module_replications.validation_time_ms",
}  # fmt: skip


def _column(table: str, column: str) -> sql.Composable:
    if (table, column) == ("dsi_evidence", "mx_expert_contributions"):
        return sql.SQL("({} - 'latency')").format(sql.Identifier(column))
    return sql.Identifier(column)


def digest(url: str, tables: tuple[str, ...] = PROJECT_TABLES) -> dict[str, str]:
    """``{table: "<rows> <md5>"}`` for ``tables`` (default: every project table) of the database at ``url``
    (a libpq URL or SQLAlchemy's ``postgresql+psycopg://``)."""
    out = {}
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        for table in tables:
            columns = [
                row[0]
                for row in conn.execute(
                    "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
                    "AND NOT attisdropped ORDER BY attnum",
                    (table,),
                )
            ]
            kept = [_column(table, c) for c in columns if f"{table}.{c}" not in VOLATILE]
            query = sql.SQL(
                "SELECT count(*), md5(coalesce(string_agg(r::text, E'\\n' ORDER BY r::text), '')) "
                "FROM (SELECT {} FROM {}) r"
            ).format(sql.SQL(", ").join(kept), sql.Identifier(table))
            row = conn.execute(query).fetchone()
            assert row is not None
            out[table] = f"{row[0]} {row[1]}"
    return out


if __name__ == "__main__":
    print(json.dumps(digest(sys.argv[1]), indent=1))
