"""Retention: what ages out of each table, in which order, and the SQL that archives and deletes it.

Periods are the seed's "Data Retention Strategy" (overridable per table with ``TIS_RETENTION_<TABLE>`` such as
``TIS_RETENTION_MARKET_DATA_1M=90d``, or per run in the job's config). ``anomaly_events`` is not named by the
seed; it keeps its rows as long as ``dsi_evidence`` (1 year), since each event points at one evidence row.

Every row is written to Parquet (one file per table and UTC day, ``<table>/<day>.parquet``) and read back
with the same content (row count, an order-independent digest and sorted equality: never the bytes of an
encoding, which depend on how the rows happen to be chunked) before it is deleted. Tables are
visited children first, following the foreign keys found in the live catalog, and a row that a kept row still
references is kept. 1-minute bars go only when their 15-minute and 1-hour rollups exist and are up to date
(not ``rollups.stale_days``: a stale rollup day is healed from them); a whole day of them is a partition,
detached and dropped rather than deleted row by row. Deleting a whole rollup day deletes its
``rollup_source_versions`` row too: a day retention deleted is never stale, so no heal brings it back.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import uuid
from dataclasses import dataclass, field
from datetime import date
from graphlib import TopologicalSorter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import sqlalchemy as sa

from tis_pipeline.pg.buckets import bucket_sql
from tis_pipeline.pg.day_partitions import lock_partition_changes
from tis_pipeline.pg.engine import raw_connection
from tis_pipeline.settings import tis_home

SEED_PERIODS = {
    "module_performance": "1y",
    "module_messages": "30d",
    "module_intelligence_sharing": "6mo",
    "module_replications": "permanent",
    "trading_plans": "2y",
    "trading_plan_approvals": "2y",
    "dsi_evidence": "1y",
    "anomaly_events": "1y",
    "market_data_1m": "7d",
    "market_data_15m": "30d",
    "market_data_1h": "1y",
}
PRIMARY_KEYS = {
    "module_performance": "performance_id",
    "module_messages": "message_id",
    "module_intelligence_sharing": "sharing_id",
    "module_replications": "replication_id",
    "trading_plans": "plan_id",
    "trading_plan_approvals": "approval_id",
    "dsi_evidence": "evidence_id",
    "anomaly_events": "event_id",
}
_PERIOD = re.compile(r"^(\d+)\s*(d|w|mo|y)$")


def parse_period(text: str) -> pd.DateOffset | None:
    """``7d``, ``2w``, ``6mo``, ``1y``; ``permanent`` (or ``none``, ``forever``) keeps rows forever."""
    text = text.strip().lower()
    if text in {"permanent", "none", "forever", "keep"}:
        return None
    match = _PERIOD.match(text)
    if not match:
        raise ValueError(f"retention period {text!r}: use e.g. 7d, 2w, 6mo, 1y or permanent")
    n, unit = int(match.group(1)), match.group(2)
    return {
        "d": pd.DateOffset(days=n),
        "w": pd.DateOffset(weeks=n),
        "mo": pd.DateOffset(months=n),
        "y": pd.DateOffset(years=n),
    }[unit]


def periods(overrides: dict[str, str] | None = None) -> dict[str, str]:
    """The seed's periods, then ``TIS_RETENTION_<TABLE>``, then the run's overrides."""
    out = dict(SEED_PERIODS)
    for table in SEED_PERIODS:
        env = os.environ.get(f"TIS_RETENTION_{table.upper()}")
        if env:
            out[table] = env
    for table, value in (overrides or {}).items():
        if table not in SEED_PERIODS:
            raise ValueError(f"no retention for unknown table {table!r}")
        out[table] = value
    return out


def archive_dir() -> Path:
    return Path(os.environ.get("TIS_ARCHIVE_DIR") or tis_home() / "archive")


def foreign_keys(conn: sa.Connection) -> list[tuple[str, str, str, str]]:
    """(child table, child column, parent table, parent column) for every single-column FK in public."""
    return [
        tuple(r)
        for r in conn.execute(
            sa.text("""
        SELECT c.relname, a.attname, p.relname, pa.attname
        FROM pg_constraint k
        JOIN pg_class c ON c.oid = k.conrelid JOIN pg_class p ON p.oid = k.confrelid
        JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1]
        JOIN pg_attribute pa ON pa.attrelid = k.confrelid AND pa.attnum = k.confkey[1]
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE k.contype = 'f' AND n.nspname = current_schema() AND array_length(k.conkey, 1) = 1
        ORDER BY 1, 2
    """)
        )
    ]


def children_first(tables: list[str], fks: list[tuple[str, str, str, str]]) -> list[str]:
    """Tables ordered so that every referencing table comes before the table it references."""
    graph: dict[str, set[str]] = {t: set() for t in tables}
    for child, _, parent, _ in fks:
        if child in graph and parent in graph and child != parent:
            graph[parent].add(child)
    return list(TopologicalSorter(graph).static_order())


@dataclass
class TableOutcome:
    table: str
    cutoff: str | None
    archived: int = 0
    deleted: int = 0
    kept_referenced: int = 0
    kept_without_rollup: int = 0  # 1-minute bars whose rollups are missing or out of date (stale days)
    files: list[str] = field(default_factory=list)


def _fetch_text(conn: sa.Connection, select_sql: str, params: dict) -> pa.Table:
    """Rows as PostgreSQL prints them (every column text), so that an archive restores exactly."""
    import psycopg
    from psycopg import sql

    raw = raw_connection(conn)
    inner = psycopg.ClientCursor(raw).mogrify(select_sql, params)
    buf = io.BytesIO()
    with raw.cursor() as cur:
        cur.execute("SET LOCAL TIME ZONE 'UTC'")
        with cur.copy(sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv)").format(sql.SQL(inner))) as cp:
            for chunk in cp:
                buf.write(chunk)
    with raw.cursor() as cur:
        cur.execute(sql.SQL("SELECT * FROM ({}) q LIMIT 0").format(sql.SQL(inner)))
        names = [d.name for d in cur.description or []]
    data = buf.getvalue()
    if not data.strip():
        return pa.table({n: pa.array([], pa.string()) for n in names})
    return pacsv.read_csv(
        io.BytesIO(data),
        read_options=pacsv.ReadOptions(column_names=names),
        convert_options=pacsv.ConvertOptions(
            column_types={n: pa.string() for n in names},
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        ),
    )


def archive_key(table: str) -> list[str]:
    """The columns that identify a row of ``table`` in its archive (its primary key)."""
    return [PRIMARY_KEYS[table]] if table in PRIMARY_KEYS else ["symbol", "timestamp"]


def _canonical(rows: pa.Table) -> pa.Table:
    """``rows`` in one order (every column ascending) and one chunk: two tables of the same rows compare
    equal whatever their order or chunking."""
    if rows.num_rows == 0:
        return rows.combine_chunks()
    return rows.sort_by([(name, "ascending") for name in rows.column_names]).combine_chunks()


def content_digest(rows: pa.Table) -> str:
    """SHA-256 of the multiset of rows: the same rows give the same digest in any order, chunking or encoding
    (a NULL and an empty string differ). Every value is text, as PostgreSQL printed it."""
    frame = rows.to_pandas(types_mapper=None)
    per_row = np.sort(pd.util.hash_pandas_object(frame, index=False).to_numpy(dtype=np.uint64))
    digest = hashlib.sha256(",".join(rows.column_names).encode())
    digest.update(per_row.tobytes())
    return digest.hexdigest()


def same_rows(a: pa.Table, b: pa.Table) -> bool:
    """Whether ``a`` and ``b`` hold the same rows (columns by name), whatever their order and chunking."""
    if a.num_rows != b.num_rows or sorted(a.column_names) != sorted(b.column_names):
        return False
    b = b.select(a.column_names)
    return content_digest(a) == content_digest(b) and _canonical(a).equals(_canonical(b))


def _day_files(folder: Path, day: str) -> list[Path]:
    """The archive files of ``day``: ``<day>.parquet``, then the ``<day>-N.parquet`` that versions before
    the one-file-per-day naming left (one per failed try), by N."""
    numbered = [p for p in folder.glob(f"{day}-*.parquet") if p.stem[len(day) + 1 :].isdigit()]
    plain = folder / f"{day}.parquet"
    return ([plain] if plain.exists() else []) + sorted(numbered, key=lambda p: int(p.stem[len(day) + 1 :]))


def _merged(archived: list[pa.Table], rows: pa.Table, key: list[str]) -> pa.Table:
    """What a day's archive holds after ``rows`` join it: every archived row whose key is not among
    ``rows`` (deleted by earlier runs: this file is their only copy), then ``rows`` themselves, which replace
    archived rows of the same key (the database is the source of truth for the rows it still holds).
    Archived duplicates (the same key in several old files) keep their last copy."""
    if not archived:
        return rows
    old = pa.concat_tables(archived, promote_options="default")
    keys = pd.MultiIndex.from_frame(old.select(key).to_pandas().fillna("\x00"))
    new_keys = pd.MultiIndex.from_frame(rows.select(key).to_pandas().fillna("\x00"))
    keep = ~keys.isin(new_keys) & ~keys.duplicated(keep="last")
    old = old.filter(pa.array(keep))
    return pa.concat_tables([old, rows], promote_options="default").select(
        list(dict.fromkeys(rows.column_names + old.column_names))
    )


def write_verified(rows: pa.Table, table: str, day: str) -> str:
    """Make ``<table>/<day>.parquet`` hold ``rows`` and prove it reads back with the same content; returns its
    path.

    One file per table and day, so a retry never adds a copy. A file already there is from an earlier run
    (rows of the day that have been deleted since: it is their only copy) or from a try that died before its
    deletion committed (rows still in the database): it is kept as it is when it already holds every one of
    ``rows`` unchanged, else replaced by its rows merged with ``rows`` (``_merged``), written to a temporary
    name, read back and compared (row count, order-independent digest, sorted equality), then renamed over
    it: the day's archive is whole at every moment. Files ``<day>-N.parquet`` of older versions are merged in
    and removed.
    """
    folder = archive_dir() / table
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{day}.parquet"
    key = archive_key(table) if set(archive_key(table)) <= set(rows.column_names) else rows.column_names
    files, archived = [], []
    for file in _day_files(folder, day):
        try:
            archived.append(pq.read_table(file))
            files.append(file)
        except (pa.ArrowInvalid, OSError):
            # only a write killed half-way leaves one (older versions wrote in place), and its rows were never
            # deleted: set aside for a person to look at, out of the archive's way
            file.rename(file.with_name(file.name + ".unreadable"))
    target = _merged(archived, rows, key)
    if files == [path] and same_rows(archived[0], target):
        return str(path)  # a retry of a run whose file was written: nothing to add
    for stale in folder.glob(f".{day}.parquet.*.tmp"):  # a try killed while writing
        stale.unlink(missing_ok=True)
    temporary = folder / f".{day}.parquet.{uuid.uuid4().hex[:8]}.tmp"
    try:
        pq.write_table(target, temporary)
        back = pq.read_table(temporary)
        if not same_rows(back, target):
            raise RuntimeError(
                f"archive {temporary} did not read back with the rows to delete ({back.num_rows} rows read, "
                f"{target.num_rows} written); nothing deleted"
            )
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    for old in files:
        if old != path:
            old.unlink(missing_ok=True)
    return str(path)


def _archive_by_day(rows: pa.Table, table: str) -> list[str]:
    if rows.num_rows == 0:
        return []
    days = pd.Series(rows.column("timestamp").to_pylist()).str.slice(0, 10).fillna("undated")
    files = []
    for day in sorted(days.unique()):
        mask = pa.array((days == day).to_numpy())
        files.append(write_verified(rows.filter(mask), table, day))
    return files


def apply_table(
    conn: sa.Connection, table: str, cutoff: pd.Timestamp, fks: list[tuple[str, str, str, str]]
) -> TableOutcome:
    """Archive then delete ``table``'s rows older than ``cutoff`` that no remaining row references."""
    outcome = TableOutcome(table=table, cutoff=cutoff.isoformat())
    if table == "market_data_1m":
        return _apply_market_1m(conn, cutoff, outcome)
    refs = [(child, col, pcol) for child, col, parent, pcol in fks if parent == table]
    unreferenced = (
        " AND ".join(
            f'NOT EXISTS (SELECT 1 FROM "{child}" r WHERE r."{col}" = t."{pcol}")'
            for child, col, pcol in refs
        )
        or "TRUE"
    )
    where = f't."timestamp" < %(cutoff)s AND {unreferenced}'
    outcome.kept_referenced = conn.execute(
        sa.text(f'SELECT count(*) FROM "{table}" t WHERE t."timestamp" < :cutoff AND NOT ({unreferenced})'),
        {"cutoff": cutoff},
    ).scalar_one()
    rows = _fetch_text(
        conn,
        f'SELECT t.* FROM "{table}" t WHERE {where} ORDER BY t."timestamp"',
        {"cutoff": cutoff.to_pydatetime()},
    )
    outcome.files = _archive_by_day(rows, table)
    outcome.archived = rows.num_rows
    outcome.deleted = conn.execute(
        sa.text(f'DELETE FROM "{table}" t WHERE {where.replace("%(cutoff)s", ":cutoff")}'), {"cutoff": cutoff}
    ).rowcount
    if outcome.deleted != outcome.archived:
        raise RuntimeError(f"{table}: archived {outcome.archived} rows but would delete {outcome.deleted}")
    if table in ROLLUP_TABLES:
        forget_deleted_rollup_days(conn, table, cutoff)
    return outcome


ROLLUP_TABLES = ("market_data_15m", "market_data_1h")
_DAY_START = "(CAST({day} AS timestamp) AT TIME ZONE 'UTC')"


def forget_deleted_rollup_days(conn: sa.Connection, table: str, cutoff: pd.Timestamp) -> int:
    """Delete the ``rollup_source_versions`` rows of ``table``'s days that ended by ``cutoff`` and keep no
    bar; rows deleted. Without its version a day is never stale, so the rollup's healing never rebuilds
    (brings back) a day retention deleted."""
    if table not in ROLLUP_TABLES:
        raise ValueError(f"{table} is not a rollup")
    start, end = _DAY_START.format(day="r.day"), _DAY_START.format(day="r.day + 1")
    return conn.execute(
        sa.text(
            f"DELETE FROM rollup_source_versions r WHERE r.rollup = :table AND {end} <= :cutoff "
            f'AND NOT EXISTS (SELECT 1 FROM "{table}" t '
            f'WHERE t."timestamp" >= {start} AND t."timestamp" < {end})'
        ),
        {"table": table, "cutoff": cutoff},
    ).rowcount


def _stale_rollup_days(conn: sa.Connection) -> set[date]:
    """Days whose 15-minute or hourly rollup is older than their 1-minute bars: the heal needs those bars."""
    from tis_pipeline.market_data.rollups import stale_days

    return {d for table in ROLLUP_TABLES for d in stale_days(conn, table)}


_MISSING_ROLLUPS = """
    SELECT count(*) FROM (
        SELECT DISTINCT symbol, {bucket} b
        FROM {source} WHERE "timestamp" >= :a AND "timestamp" < :b) x
    WHERE NOT EXISTS (SELECT 1 FROM {rollup} r WHERE r.symbol = x.symbol AND r."timestamp" = x.b)
"""


def _apply_market_1m(conn: sa.Connection, cutoff: pd.Timestamp, outcome: TableOutcome) -> TableOutcome:
    from psycopg import sql

    lock_partition_changes(conn)  # an ingest swapping days meanwhile waits (or is waited for), no deadlock
    partitions = (
        conn.execute(
            sa.text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'market_data_1m'::regclass AND c.relname ~ '^market_data_1m_p[0-9]{8}$' "
                "ORDER BY 1"
            )
        )
        .scalars()
        .all()
    )
    stale = _stale_rollup_days(conn)
    for name in partitions:
        day = pd.Timestamp(name[-8:], tz="UTC")
        if day + pd.Timedelta(days=1) > cutoff:
            continue
        if day.date() in stale:  # the next rollup run heals this day from these bars
            outcome.kept_without_rollup += conn.execute(
                sa.text(f'SELECT count(*) FROM "{name}"')
            ).scalar_one()
            continue
        bounds = {"a": day, "b": day + pd.Timedelta(days=1)}
        missing = sum(
            conn.execute(
                sa.text(_MISSING_ROLLUPS.format(bucket=bucket_sql(m), source=f'"{name}"', rollup=r)), bounds
            ).scalar_one()
            for m, r in ((15, "market_data_15m"), (60, "market_data_1h"))
        )
        if missing:
            outcome.kept_without_rollup += conn.execute(
                sa.text(f'SELECT count(*) FROM "{name}"')
            ).scalar_one()
            continue
        rows = _fetch_text(conn, f'SELECT * FROM "{name}" ORDER BY symbol, "timestamp"', {})
        outcome.files += _archive_by_day(rows, "market_data_1m")
        outcome.archived += rows.num_rows
        with raw_connection(conn).cursor() as cur:
            cur.execute(
                sql.SQL("ALTER TABLE market_data_1m DETACH PARTITION {}").format(sql.Identifier(name))
            )
            cur.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
        outcome.deleted += rows.num_rows
    # rows of days without a partition of their own sit in the DEFAULT partition: row by row
    t_timestamp = 't."timestamp"'
    has_rollups = " AND ".join(
        f"EXISTS (SELECT 1 FROM {r} x WHERE x.symbol = t.symbol "
        f'AND x."timestamp" = {bucket_sql(m, t_timestamp)})'
        for m, r in ((15, "market_data_15m"), (60, "market_data_1h"))
    )
    # the stale days as a literal of code-made dates (never input), the same text for both drivers' params
    stale_days = "'{" + ",".join(sorted(d.isoformat() for d in stale)) + "}'"
    has_rollups += (
        f" AND NOT ((t.\"timestamp\" AT TIME ZONE 'UTC')::date = ANY(CAST({stale_days} AS date[])))"
    )
    where = f't."timestamp" < %(cutoff)s AND {has_rollups}'
    outcome.kept_without_rollup += conn.execute(
        sa.text(
            "SELECT count(*) FROM market_data_1m_default t "
            f'WHERE t."timestamp" < :cutoff AND NOT ({has_rollups})'
        ),
        {"cutoff": cutoff},
    ).scalar_one()
    rows = _fetch_text(
        conn,
        f'SELECT t.* FROM market_data_1m_default t WHERE {where} ORDER BY symbol, "timestamp"',
        {"cutoff": cutoff.to_pydatetime()},
    )
    outcome.files += _archive_by_day(rows, "market_data_1m")
    outcome.archived += rows.num_rows
    outcome.deleted += conn.execute(
        sa.text(f"DELETE FROM market_data_1m_default t WHERE {where.replace('%(cutoff)s', ':cutoff')}"),
        {"cutoff": cutoff},
    ).rowcount
    return outcome


def apply(
    conn: sa.Connection, as_of: pd.Timestamp, overrides: dict[str, str] | None = None
) -> list[TableOutcome]:
    """Run retention for every table with a period, children first, in the caller's transaction."""
    chosen = periods(overrides)
    fks = foreign_keys(conn)
    existing = set(sa.inspect(conn).get_table_names())
    outcomes = []
    for table in children_first([t for t in chosen if t in existing], fks):
        offset = parse_period(chosen[table])
        if offset is None:
            outcomes.append(TableOutcome(table=table, cutoff=None))
            continue
        outcomes.append(apply_table(conn, table, as_of - offset, fks))
    return outcomes


def restore(conn: sa.Connection, table: str, first: str, last: str) -> tuple[int, list[str]]:
    """Copy archived rows of days first..last back (rows already present are left as they are)."""
    from psycopg import sql

    if table not in SEED_PERIODS:
        raise ValueError(f"no archive for unknown table {table!r}")
    files = sorted(p for p in (archive_dir() / table).glob("*.parquet") if first <= p.stem[:10] <= last)
    if not files:
        return 0, []
    rows = pa.concat_tables([pq.read_table(p) for p in files])
    sink = io.BytesIO()
    pacsv.write_csv(
        rows, sink, write_options=pacsv.WriteOptions(include_header=False, quoting_style="all_valid")
    )
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in rows.column_names)
    raw = raw_connection(conn)
    with raw.cursor() as cur:
        cur.execute(
            sql.SQL("CREATE TEMP TABLE tis_restore (LIKE {}) ON COMMIT DROP").format(sql.Identifier(table))
        )
        with cur.copy(sql.SQL("COPY tis_restore ({}) FROM STDIN (FORMAT csv)").format(columns)) as cp:
            cp.write(sink.getvalue())
        cur.execute(
            sql.SQL("INSERT INTO {} ({}) SELECT {} FROM tis_restore ON CONFLICT DO NOTHING").format(
                sql.Identifier(table), columns, columns
            )
        )
        inserted = cur.rowcount
    return inserted, [str(p) for p in files]
