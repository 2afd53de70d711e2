"""SQL of the market-data domain, behind small functions named for what they do to the data.

Table names come from the fixed set below, never from input; every value is a bound parameter.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import sqlalchemy as sa

from tis_pipeline.pg.copy_binary import PG_EPOCH_US
from tis_pipeline.pg.copy import copy_bars_binary, copy_frame
from tis_pipeline.pg.engine import fetch_column_arrays, fetch_frame, raw_connection

BAR_TABLES = ("market_data_1m", "market_data_15m", "market_data_1h")
BAR_WRITE_COLUMNS = ["symbol", "timestamp", "open", "high", "low", "close", "volume"]
QUARANTINE_COLUMNS = ["partition_date", "source_file", "source_line", "symbol", "timestamp", "raw_values",
                      "rule", "message"]


def _bar_table(table: str) -> str:
    if table not in BAR_TABLES:
        raise ValueError(f"not a bar table: {table!r}")
    return table


def partition_name(day: pd.Timestamp) -> str:
    return f"market_data_1m_p{day:%Y%m%d}"


# Scratch tables (day partitions built for a swap, pieces of an expected rollup) carry their creation time in their
# comment, so that those a killed process left behind can be told from those a running one is about to use
SCRATCH_TABLE_PATTERN = r"^(market_data_1m_p[0-9]{8}_[0-9a-f]{8}|rollup_expected_[0-9a-f]{8}_[0-9]+)$"
SCRATCH_COMMENT_PREFIX = "tis scratch table, created "


def scratch_comment(now: pd.Timestamp | None = None) -> str:
    return SCRATCH_COMMENT_PREFIX + (now if now is not None else pd.Timestamp.now(tz="UTC")).isoformat()


def mark_scratch(cur, name: str) -> None:
    """Write the creation time into the comment of the scratch table ``name`` (``cur``: a psycopg cursor in the
    transaction that created it)."""
    from psycopg import sql

    cur.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(sql.Identifier(name), sql.Literal(scratch_comment())))


def drop_stale_scratch_tables(conn: sa.Connection, now: pd.Timestamp, older_than: pd.Timedelta) -> list[str]:
    """Drop the scratch tables created before ``now - older_than`` (or without their comment: made by a version
    before the comments); their process died between building and swapping or discarding them. Returns them."""
    from psycopg import sql

    rows = conn.execute(sa.text(
        "SELECT c.relname, obj_description(c.oid, 'pg_class') FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = current_schema() AND c.relkind = 'r' AND NOT c.relispartition AND c.relname ~ :pattern"),
        {"pattern": SCRATCH_TABLE_PATTERN}).all()
    stale = []
    for name, comment in rows:
        created = None
        if comment and comment.startswith(SCRATCH_COMMENT_PREFIX):
            created = pd.Timestamp(comment.removeprefix(SCRATCH_COMMENT_PREFIX))
        if created is None or created < now - older_than:
            stale.append(name)
    with raw_connection(conn).cursor() as cur:
        for name in sorted(stale):  # names from the catalogue that matched the pattern, quoted anyway
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
    return sorted(stale)


BUILD_CONNECTIONS = 2  # day partitions built at once, each on its own connection (one per core here)


def create_day_table(cur, day: pd.Timestamp, staging: str) -> None:
    """A new, empty table shaped like market_data_1m for the rows of one UTC day, marked as scratch until swapped in.

    The bound CHECK exists before the rows arrive, so they are checked on their way in (no scan to validate it
    afterwards) and ATTACH PARTITION trusts it. Autovacuum is told not to vacuum it for inserts: a COPY FREEZE
    leaves every page all-visible, and the caller analyses it (``finish_day_table``).
    """
    from psycopg import sql

    bound = sql.SQL('CONSTRAINT {} CHECK ("timestamp" >= {} AND "timestamp" < {})').format(
        sql.Identifier(f"{staging}_bound"), sql.Literal(day.to_pydatetime()),
        sql.Literal((day + pd.Timedelta(days=1)).to_pydatetime()))
    cur.execute(sql.SQL("CREATE TABLE {} (LIKE market_data_1m INCLUDING DEFAULTS INCLUDING CONSTRAINTS, {}) "
                        "WITH (autovacuum_vacuum_insert_threshold = -1)").format(sql.Identifier(staging), bound))
    mark_scratch(cur, staging)


def finish_day_table(cur, staging: str) -> None:
    """Primary key and statistics of a day table filled after ``create_day_table``."""
    from psycopg import sql

    cur.execute(sql.SQL('ALTER TABLE {} ADD PRIMARY KEY (symbol, "timestamp")').format(sql.Identifier(staging)))
    # statistics of every column from a tenth of the default sample (10 ms a day instead of 110): the planner
    # needs the row counts and the keys' spread, or it guesses a few thousand rows of a time range and sorts for
    # every rollup. Analysed here, the day leaves autovacuum nothing to do (no insert vacuum either: FREEZE has
    # set every page all-visible); left to autovacuum, its work on each new day competed with the next steps,
    # and a re-ingest then waited 1 s (deadlock_timeout) per day it was on
    cur.execute("SET LOCAL default_statistics_target = 10")
    cur.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(staging)))


def _build_day(engine: sa.Engine, day: pd.Timestamp, staging: str, rows: pd.DataFrame) -> int:
    """A new table of one day's rows: created with its bound CHECK, COPYed (binary, FREEZE), primary key,
    statistics.

    Runs on a connection of its own and commits: the table is invisible to readers until the caller's
    transaction attaches it, and the caller drops it if anything fails before that. FREEZE: the table was
    created in this transaction, so its rows are written frozen and all-visible, and neither the key build nor
    the rollups' scans stop to set hint bits.
    """
    with engine.connect() as conn:
        raw = raw_connection(conn)
        with raw.cursor() as cur:
            create_day_table(cur, day, staging)
        written = copy_bars_binary(raw, staging, rows, BAR_WRITE_COLUMNS, freeze=True)
        with raw.cursor() as cur:
            finish_day_table(cur, staging)
        raw.commit()  # on the driver connection: SQLAlchemy did not see the transaction these statements opened
    return written


def _drop_tables(engine: sa.Engine, names: list[str]) -> None:
    from psycopg import sql

    if not names:
        return
    with engine.connect() as conn:
        raw = raw_connection(conn)
        with raw.cursor() as cur:
            for name in names:
                cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
        raw.commit()


@dataclass
class BuiltDays:
    """Day partitions built and committed apart, waiting to be swapped in (``swap_built_days``)."""

    tag: str
    jobs: list[tuple[pd.Timestamp, str, str]] = field(default_factory=list)  # (day, partition, staging table)
    written: int = 0


class DayBuilds:
    """Day partitions built in the background as their rows arrive (``add``), ``BUILD_CONNECTIONS`` at a time.

    Each day is built by ``_build_day`` on a connection of its own, so that PostgreSQL COPYs and indexes one
    day while this process reads and validates the next. Nothing is visible to readers until
    ``swap_built_days`` attaches the tables in the caller's transaction. ``finish`` waits for every build and
    gives the ``BuiltDays``; ``abandon`` (or a failed build inside ``finish``) drops whatever was built.
    """

    def __init__(self, engine: sa.Engine, start: pd.Timestamp, end: pd.Timestamp):
        self.engine, self.start, self.end = engine, start, end
        self.built = BuiltDays(tag=uuid.uuid4().hex[:8])  # two runs building the same day never collide on a name
        self._pool = ThreadPoolExecutor(max_workers=BUILD_CONNECTIONS, thread_name_prefix="tis-partition")
        self._builds: list = []

    def add(self, frame: pd.DataFrame) -> None:
        """Start building the days of ``frame`` inside [start, end); each day must come whole, and once."""
        if frame.empty:
            return
        known = {day for day, _, _ in self.built.jobs}
        for day, rows in _by_day(frame):
            if not (self.start <= day < self.end) or rows.empty:
                continue
            if day in known:
                raise ValueError(f"the rows of {day.date()} came in two parts: a day is built from all its rows")
            partition = partition_name(day)
            staging = f"{partition}_{self.built.tag}"
            self.built.jobs.append((day, partition, staging))
            self._builds.append(self._pool.submit(_build_day, self.engine, day, staging, rows))

    def finish(self) -> BuiltDays:
        try:
            self.built.written = sum(build.result() for build in self._builds)
        except BaseException:
            self.abandon()
            raise
        self._pool.shutdown()
        self.built.jobs.sort()
        return self.built

    def abandon(self) -> None:
        for build in self._builds:
            build.cancel()
        self._pool.shutdown(wait=True)
        discard(self.engine, self.built)


def _by_day(frame: pd.DataFrame) -> Iterator[tuple[pd.Timestamp, pd.DataFrame]]:
    """``frame.groupby(frame["timestamp"].dt.floor("D"), sort=True)``; a frame of one UTC day (a piece of the
    synthetic source) is its own group, without the split's copy of every column."""
    timestamps = frame["timestamp"]
    utc = isinstance(timestamps.dtype, pd.DatetimeTZDtype) and str(timestamps.dtype.tz) == "UTC"
    if utc and len(timestamps) and not timestamps.hasnans:
        per_day = np.timedelta64(1, "D").astype(f"timedelta64[{timestamps.dtype.unit}]").astype(np.int64)
        days = timestamps.array.asi8 // per_day
        if days.min() == days.max():
            yield timestamps.iloc[0].floor("D"), frame
            return
    yield from frame.groupby(timestamps.dt.floor("D"), sort=True)


def build_days(engine: sa.Engine, frame: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> BuiltDays:
    """Build one new table per UTC day of [start, end) that has rows (``DayBuilds`` over one frame).

    Call ``discard`` in a ``finally`` after the transaction of ``swap_built_days``.
    """
    builds = DayBuilds(engine, start, end)
    try:
        builds.add(frame)
    except BaseException:
        builds.abandon()
        raise
    return builds.finish()


def discard(engine: sa.Engine, built: BuiltDays) -> None:
    """Drop the staging tables of ``built`` that were not swapped in (none after a committed swap)."""
    _drop_tables(engine, [staging for _, _, staging in built.jobs])


# key of the transaction-level advisory lock that every change to market_data_1m's partitions takes first
PARTITION_CHANGE_LOCK = 7_306_011_001


def lock_partition_changes(conn: sa.Connection) -> None:
    """Serialise changes to market_data_1m's partitions until the caller's transaction ends.

    Swapping or dropping a day partition takes ACCESS EXCLUSIVE locks on the parent and on the DEFAULT partition,
    after statements that hold weaker locks on the DEFAULT partition: two such transactions (two ingests of
    different days, an ingest and retention) could each hold what the other waits for. Taking this one lock
    before anything else makes the second wait for the first to commit instead of deadlocking.
    """
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": PARTITION_CHANGE_LOCK})


def swap_built_days(conn: sa.Connection, built: BuiltDays, start: pd.Timestamp, end: pd.Timestamp,
                    symbols: list[str]) -> tuple[int, int]:
    """Replace market_data_1m's rows of ``symbols`` in [start, end) by the built days; (replaced, written).

    In the caller's transaction: the rows of symbols this source does not own are carried over from the old
    partition and the DEFAULT one, the old partitions are detached and dropped and the new ones attached, so
    readers see the old days or the new ones, never half.
    """
    lock_partition_changes(conn)
    bump_day_versions(conn, [d.date() for d in pd.date_range(start, end, freq="D", inclusive="left")])
    existing = day_partitions(conn)
    window = {"a": start, "b": end, "s": list(symbols)}
    # rows of the source's symbols in the DEFAULT partition are replaced whatever the day
    replaced = conn.execute(sa.text(
        'DELETE FROM market_data_1m_default WHERE "timestamp" >= :a AND "timestamp" < :b AND symbol = ANY(:s)'),
        window).rowcount
    built_days = {day for day, _, _ in built.jobs}
    for day in pd.date_range(start, end, freq="D", inclusive="left"):
        name = partition_name(day)
        if day not in built_days and name in existing:  # the source has nothing that day any more
            replaced += conn.execute(sa.text(f'DELETE FROM "{name}" WHERE symbol = ANY(:s)'),
                                     {"s": list(symbols)}).rowcount
    for day, name, staging in built.jobs:
        bounds = {"a": day, "b": day + pd.Timedelta(days=1), "s": list(symbols)}
        # rows of symbols this source does not own are carried over, from the DEFAULT partition (normally empty)
        # or the old partition
        conn.execute(sa.text(
            f'INSERT INTO "{staging}" SELECT * FROM market_data_1m_default '
            'WHERE "timestamp" >= :a AND "timestamp" < :b AND NOT (symbol = ANY(:s))'), bounds)
        if name in existing:
            # the old day's symbols from its primary key, one probe per symbol: usually all of them are the
            # source's, and then nothing is carried and no row is compared with the source's symbol list (two
            # scans of every old row did that, 1.3 s of a 14-day re-ingest)
            others = sorted(set(window_symbols(conn, day, day + pd.Timedelta(days=1))) - set(symbols))
            carried = conn.execute(sa.text(f'INSERT INTO "{staging}" SELECT * FROM "{name}" '
                                           'WHERE symbol = ANY(:o)'), {"o": others}).rowcount if others else 0
            replaced += conn.execute(sa.text(f'SELECT count(*) FROM "{name}"')).scalar_one() - carried
        conn.execute(sa.text('DELETE FROM market_data_1m_default WHERE "timestamp" >= :a AND "timestamp" < :b'),
                     bounds)
    with raw_connection(conn).cursor() as cur:
        for day, name, staging in built.jobs:
            attach_day(cur, day, name, staging, replace=name in existing)
    return replaced, built.written


# tables of day versions (one sequence for all): the bars' days, written by the ingest, and the days DSI scored
DAY_VERSION_TABLES = ("market_data_day_versions", "dsi_day_versions")


def bump_day_versions(conn: sa.Connection, days: list, table: str = "market_data_day_versions") -> None:
    """Give each of ``days`` (dates) a new version in ``table``, in the caller's transaction.

    Whatever was computed from these days before (DSI's and the trading day's carried states) can then tell that
    it is out of date (``versions_up_to``)."""
    if table not in DAY_VERSION_TABLES:
        raise ValueError(f"{table} is not a table of day versions")
    conn.execute(sa.text(
        f"INSERT INTO {table} (day, version) "
        "SELECT day, nextval('market_data_day_version_seq') FROM unnest(CAST(:days AS date[])) AS day ORDER BY day "
        "ON CONFLICT (day) DO UPDATE SET version = EXCLUDED.version, written_at = now()"), {"days": list(days)})


def versions_up_to(day: str, tables: tuple[str, ...] = ("market_data_day_versions",)) -> str:
    """SQL for the highest version in ``tables`` of the days up to ``day`` (an SQL date expression), 0 if none:
    what a state saved for ``day`` was computed from. A state is out of date once this exceeds its record."""
    if not set(tables) <= set(DAY_VERSION_TABLES):
        raise ValueError(f"{tables} are not tables of day versions")
    return "greatest(" + ", ".join(
        f"coalesce((SELECT max(v.version) FROM {t} v WHERE v.day <= {day}), 0)" for t in tables) + ")"


def attach_day(cur, day: pd.Timestamp, name: str, staging: str, replace: bool) -> None:
    """In the caller's transaction (holding ``lock_partition_changes``): the built table ``staging`` becomes the day
    partition ``name``, replacing the old one when ``replace``. Readers see the old day or the new one."""
    from psycopg import sql

    if replace:
        cur.execute(sql.SQL("ALTER TABLE market_data_1m DETACH PARTITION {}").format(sql.Identifier(name)))
        cur.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
    cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(staging), sql.Identifier(name)))
    cur.execute(sql.SQL("ALTER INDEX {} RENAME TO {}").format(sql.Identifier(f"{staging}_pkey"),
                                                             sql.Identifier(f"{name}_pkey")))
    cur.execute(sql.SQL("ALTER TABLE market_data_1m ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
        sql.Identifier(name), sql.Literal(day.to_pydatetime()),
        sql.Literal((day + pd.Timedelta(days=1)).to_pydatetime())))


def day_partitions(conn: sa.Connection) -> set[str]:
    """Names of market_data_1m's partitions."""
    return set(conn.execute(sa.text(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'market_data_1m'::regclass")).scalars())


def write_days(engine: sa.Engine, frame: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp,
               symbols: list[str]) -> tuple[int, int]:
    """``build_days`` + ``swap_built_days`` in a transaction of its own + ``discard``; (replaced, written)."""
    built = build_days(engine, frame, start, end)
    try:
        with engine.begin() as conn:
            return swap_built_days(conn, built, start, end, symbols)
    finally:
        discard(engine, built)


def replace_quarantine(conn: sa.Connection, frame: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> int:
    """Replace the quarantine rows of the window's partition days (re-ingesting leaves no duplicates)."""
    conn.execute(
        sa.text("DELETE FROM market_data_quarantine WHERE partition_date >= :start AND partition_date < :end"),
        {"start": start.date(), "end": end.date()},
    )
    return copy_frame(raw_connection(conn), "market_data_quarantine", frame, QUARANTINE_COLUMNS)


ROLLUP_SOURCES = {"market_data_15m": "market_data_1m", "market_data_1h": "market_data_15m"}
ROLLUP_CONNECTIONS = 2  # pieces of the expected rollup aggregated at once, each on a connection of its own
ROLLUP_PIECES = 4  # pieces per window: the 15-minute bars of the first ones are inserted while the last aggregate


@dataclass
class ExpectedRollup:
    """The expected bars of a rollup (``stage_expected_rollup``): one unlogged table per piece of the window,
    committed on a connection of its own (``pieces``: their futures, each returning its row count), read as one
    relation until ``discard_expected`` drops them."""

    target: str
    tables: list[str]
    pool: ThreadPoolExecutor
    pieces: list[Future] = field(default_factory=list)

    def ready(self) -> int:
        """Wait until every piece is built (a failed one raises here); the rows staged."""
        return sum(piece.result() for piece in self.pieces)

    @property
    def relation(self) -> str:
        """The pieces as one parenthesised query for a FROM clause (the names are the code's, never input)."""
        return "(" + " UNION ALL ".join(f"SELECT * FROM {name}" for name in self.tables) + ")"


def _rollup_cuts(target: str, start: pd.Timestamp, end: pd.Timestamp) -> list[pd.Timestamp]:
    """[start, ..., end] cut into up to ``ROLLUP_PIECES`` pieces of about equal time, every cut on a bucket
    boundary of ``target`` (binned like ``quality.sql.bucket_sql``), so that no bucket straddles two pieces."""
    from tis_pipeline.quality.rules import MARKET_TABLES
    from tis_pipeline.quality.sql import BIN_ORIGIN

    width = pd.Timedelta(minutes=MARKET_TABLES[target])
    origin = pd.Timestamp(BIN_ORIGIN)
    cuts = [start]
    for i in range(1, ROLLUP_PIECES):
        cut = origin + ((start + (end - start) * i / ROLLUP_PIECES - origin) // width) * width
        if cuts[-1] < cut < end:
            cuts.append(cut)
    return [*cuts, end]


_SNAPSHOT_ID = re.compile(r"^[0-9A-F]+-[0-9A-F]+-[0-9]+$")


def export_snapshot(conn: sa.Connection) -> str:
    """The snapshot of ``conn``'s transaction, for other connections to read with (``pg_export_snapshot``); it
    can be imported until that transaction ends."""
    return conn.execute(sa.text("SELECT pg_export_snapshot()")).scalar_one()


def in_snapshot(side: sa.Connection, snapshot: str) -> None:
    """Make the transaction just begun on ``side`` read in ``snapshot`` (``export_snapshot``); before any query."""
    if not _SNAPSHOT_ID.match(snapshot):  # it is inlined: SET TRANSACTION SNAPSHOT takes no parameters
        raise ValueError(f"unexpected snapshot id {snapshot!r}")
    side.execute(sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
    side.execute(sa.text(f"SET TRANSACTION SNAPSHOT '{snapshot}'"))


def _stage_piece(engine: sa.Engine, name: str, query: str, start: pd.Timestamp, end: pd.Timestamp,
                 snapshot: str | None) -> int:
    with engine.begin() as side:
        if snapshot is not None:  # every piece reads the same committed data, whenever it starts
            in_snapshot(side, snapshot)
        side.execute(sa.text("SET LOCAL work_mem = '256MB'"))  # the hash aggregate fits in memory, no temp spill
        # the pieces already keep every core busy; parallel workers would only compete with the other piece
        side.execute(sa.text("SET LOCAL max_parallel_workers_per_gather = 0"))
        # a scratch table: a crash empties it anyway (unlogged), so its commit need not wait for the WAL flush
        side.execute(sa.text("SET LOCAL synchronous_commit = off"))
        rows = side.execute(sa.text(f"CREATE UNLOGGED TABLE {name} AS {query}"), {"start": start, "end": end}).rowcount
        with raw_connection(side).cursor() as cur:
            mark_scratch(cur, name)
        return rows


def stage_expected_rollup(engine: sa.Engine, target: str, start: pd.Timestamp, end: pd.Timestamp,
                          snapshot: str | None = None) -> ExpectedRollup:
    """Start building the expected bars of ``target`` over [start, end) apart from the transaction that replaces
    them; returns at once (``ExpectedRollup.ready`` waits).

    15-minute: one pass over the 1-minute bars (``quality.sql.rollup_source_sql``, the rollup rule's own SQL).
    Hourly: from the 15-minute bars, whose own blocking check has just compared them with the 1-minute bars,
    plus a count of 1-minute bars per hour for the bucket set and gaps (``quality.sql.rollup_via_sql`` states
    why that is sound); it used to aggregate the numerics of every 1-minute bar a second time.
    The rows also hold ``source_bars`` per bucket, so gaps are counted from them without another scan.

    The window is cut on bucket boundaries into ``ROLLUP_PIECES`` pieces aggregated ``ROLLUP_CONNECTIONS`` at a
    time, each into an unlogged table of its own on a connection of its own: every core aggregates, no partial
    groups are funnelled through one leader to be combined again (as one parallel query does), and the caller's
    transaction can insert a finished piece while the next ones aggregate. Call ``discard_expected`` in a
    ``finally`` after that transaction, whatever happened: it waits for the pieces and drops their tables.
    ``snapshot`` (``export_snapshot`` of that transaction): the pieces read the data as it was when it was
    taken, so a write committed while they run (an ingest of a day in the window) is in none of them or all.
    """
    from tis_pipeline.quality.rules import rule
    from tis_pipeline.quality.sql import rollup_source_sql, rollup_via_sql

    target = _bar_table(target)
    if target not in ROLLUP_SOURCES:
        raise ValueError(f"{target} is not a rollup")
    consistency = rule(f"{target}_rollup_consistent")
    via = ROLLUP_SOURCES[target]
    query = (rollup_source_sql(consistency) if via == consistency.params["source"]
             else rollup_via_sql(consistency, via))
    cuts = _rollup_cuts(target, start, end)
    tag = uuid.uuid4().hex[:8]  # two runs of the same rollup never collide on a name
    expected = ExpectedRollup(target, [f"rollup_expected_{tag}_{i}" for i in range(len(cuts) - 1)],
                              ThreadPoolExecutor(max_workers=ROLLUP_CONNECTIONS, thread_name_prefix="tis-rollup"))
    expected.pieces = [expected.pool.submit(_stage_piece, engine, name, query, cuts[i], cuts[i + 1], snapshot)
                       for i, name in enumerate(expected.tables)]
    return expected


def discard_expected(engine: sa.Engine, expected: ExpectedRollup) -> None:
    """Wait for the pieces of ``expected`` (one still running would create its table after the drop), then drop
    their tables. Only after the transaction that read them: DROP waits for its locks."""
    expected.pool.shutdown(wait=True, cancel_futures=True)
    with engine.begin() as side:
        side.execute(sa.text("SET LOCAL synchronous_commit = off"))  # see _stage_piece
        side.execute(sa.text(f"DROP TABLE IF EXISTS {', '.join(expected.tables)}"))


def rebuild_rollup(conn: sa.Connection, expected: ExpectedRollup, start: pd.Timestamp, end: pd.Timestamp) -> int:
    """Replace the bars of ``expected.target`` over [start, end) with the rollup of their source; rows written.

    open = first, high = max, low = min, close = last, volume = sum per symbol and bucket; a bucket exists only
    where source bars do (no forward fill). 15-minute bars are the staged expected rows, each piece inserted as
    soon as it is built; hourly bars come from the 15-minute ones (four rows per hour instead of sixty, the same
    OHLCV since 15 divides 60 and both are binned from midnight UTC) while the pieces are still being built;
    their check compares them with the 15-minute rollup and the 1-minute bar counts (``stage_expected_rollup``).
    mx_evidence is the mean of the source bars' evidence, mx_confirm true when any source bar confirmed.
    """
    target = _bar_table(expected.target)
    if target not in ROLLUP_SOURCES:
        raise ValueError(f"{target} is not a rollup")
    from tis_pipeline.quality.rules import MARKET_TABLES
    from tis_pipeline.quality.sql import rollup_aggregate_sql

    window = {"start": start, "end": end}
    conn.execute(sa.text(f'DELETE FROM {target} WHERE "timestamp" >= :start AND "timestamp" < :end'), window)
    insert = (f"INSERT INTO {target} (symbol, \"timestamp\", open, high, low, close, volume, mx_evidence, mx_confirm) "
              "SELECT symbol, bucket, open, high, low, close, volume, mx_evidence, mx_confirm FROM ")
    if target != "market_data_15m":
        hours = rollup_aggregate_sql(ROLLUP_SOURCES[target], MARKET_TABLES[target])
        return conn.execute(sa.text(f"{insert}({hours}) AS hours"), window).rowcount
    table_of = dict(zip(expected.pieces, expected.tables, strict=True))
    written = 0
    for piece in as_completed(expected.pieces):
        piece.result()  # a failed piece raises here
        written += conn.execute(sa.text(insert + table_of[piece])).rowcount
    return written


def rollup_mismatches(conn: sa.Connection, expected: ExpectedRollup, start: pd.Timestamp,
                      end: pd.Timestamp) -> pd.DataFrame:
    """Bars of ``expected.target`` in [start, end) that differ from ``expected`` or are missing (the rule's SQL)."""
    from tis_pipeline.quality.rules import rule
    from tis_pipeline.quality.sql import rollup_compare_sql

    expected.ready()
    query = rollup_compare_sql(rule(f"{_bar_table(expected.target)}_rollup_consistent"), expected.relation)
    return pd.DataFrame(conn.execute(sa.text(query), {"start": start, "end": end}).mappings().all())


def days_with_bars(conn: sa.Connection, table: str, start: pd.Timestamp, end: pd.Timestamp) -> list[pd.Timestamp]:
    """The UTC days of [start, end) on which ``table`` has bars, in order.

    market_data_1m is partitioned by day, so each day is probed for one bar: run-time partition pruning sends the
    probe to that day's partition (or the DEFAULT one), where the first row answers it. Scanning every bar of the
    range took 18 ms a day of 50 symbols, 0.22 s for 30 days. The rollup tables are not partitioned and no index
    leads with the time, so a probe could read from the table's first row every time: there one scan of the range
    it is.
    """
    table = _bar_table(table)
    if table != "market_data_1m":
        rows = conn.execute(sa.text(
            f"SELECT DISTINCT date_trunc('day', \"timestamp\" AT TIME ZONE 'UTC') FROM {table} "
            'WHERE "timestamp" >= :a AND "timestamp" < :b ORDER BY 1'), {"a": start, "b": end}).scalars()
        return [pd.Timestamp(d, tz="UTC") for d in rows]
    days = pd.date_range(start.floor("D"), end, freq="D", inclusive="left")
    if not len(days):
        return []
    # each day's window as two bounds from here, so the session's time zone never moves a day boundary
    lows = [max(day, start).to_pydatetime() for day in days]
    highs = [min(day + pd.Timedelta(days=1), end).to_pydatetime() for day in days]
    found = conn.execute(sa.text(
        "SELECT w.n FROM unnest(CAST(:lows AS timestamptz[]), CAST(:highs AS timestamptz[])) "
        "WITH ORDINALITY AS w(lo, hi, n) "
        'WHERE EXISTS (SELECT FROM market_data_1m WHERE "timestamp" >= w.lo AND "timestamp" < w.hi) ORDER BY w.n'),
        {"lows": lows, "highs": highs}).scalars()
    return [days[n - 1] for n in found]


BAR_READ_COLUMNS = ("symbol", "timestamp", "open", "high", "low", "close", "volume")


def read_bars(conn: sa.Connection, table: str, start: pd.Timestamp, end: pd.Timestamp,
              columns: tuple[str, ...] = BAR_READ_COLUMNS, *, symbols_from: str | None = None,
              symbols_below: str | None = None) -> pd.DataFrame:
    """The window's bars, sorted by (symbol, timestamp): floats (NaN for NULL), UTC timestamps, ``mx_confirm`` as a
    nullable boolean. ``symbols_from`` / ``symbols_below`` keep the symbols in [from, below) (the table's order).

    Read as one array per column (``fetch_column_arrays``): numerics as float8, timestamps as microseconds,
    symbols padded to char(20) with their byte length beside them, in binary: nothing is formatted as text and
    parsed again on either side. A symbol longer than 20 bytes (non-ASCII) sends the window through the text COPY.
    """
    table = _bar_table(table)
    allowed = {"symbol", "timestamp", "open", "high", "low", "close", "volume", "mx_evidence", "mx_confirm"}
    if not set(columns) <= allowed:
        raise ValueError(f"unknown columns {set(columns) - allowed}")
    window = f'FROM {table} WHERE "timestamp" >= %(start)s AND "timestamp" < %(end)s'
    params = {"start": start.to_pydatetime(), "end": end.to_pydatetime()}
    if symbols_from is not None:
        window += " AND symbol >= %(symbols_from)s"
        params["symbols_from"] = symbols_from
    if symbols_below is not None:
        window += " AND symbol < %(symbols_below)s"
        params["symbols_below"] = symbols_below
    # symbol and timestamp are always read: they prove the order of the rows (below)
    fetched = ["symbol", "timestamp", *(c for c in columns if c not in ("symbol", "timestamp"))]
    select, kinds = [], []
    for c in fetched:
        if c == "symbol":
            select += ["symbol::char(20)", "octet_length(symbol)::int2"]
            kinds += ["S20", ">i2"]
        elif c == "timestamp":
            select.append('"timestamp"')
            kinds.append(">i8")
        elif c == "mx_confirm":
            select.append("coalesce(mx_confirm::int, -1)::int2")
            kinds.append(">i2")
        else:
            select.append(f"coalesce(\"{c}\"::float8, 'NaN')")  # a NULL element would change the layout
            kinds.append(">f8")
    # One ordered scan feeds every aggregate: an ORDER BY inside each array_agg made PostgreSQL < 16 sort the
    # window once per column (0.22 s of a day of 72k bars on 15, 0.11 s with this). All the aggregates of one
    # query take the same rows in the same order, so the arrays stay aligned; the order itself is checked here,
    # not trusted (PostgreSQL keeps a subquery's order for an aggregate in practice, not by the standard).
    inner = ", ".join(f"{expr} AS c{i}" for i, expr in enumerate(select))
    arrays = fetch_column_arrays(conn, "SELECT " + ", ".join(
        f"array_send(array_agg(c{i}))" for i in range(len(select))) +
        f' FROM (SELECT {inner} {window} ORDER BY symbol, "timestamp") AS bars', params, kinds)
    if arrays is None or not _grouped_in_time(arrays[0], arrays[2]):
        return _read_bars_text(conn, window + ' ORDER BY symbol, "timestamp"', params, columns)
    it = iter(arrays)
    frame = {}
    for c in fetched:
        values = next(it)
        if c == "symbol":
            frame[c] = _symbols(values, next(it))
        elif c == "timestamp":
            frame[c] = pd.to_datetime(values.astype("int64") + PG_EPOCH_US, unit="us", utc=True)
        elif c == "mx_confirm":
            frame[c] = pd.arrays.BooleanArray(values == 1, values < 0)
        else:
            frame[c] = values.astype("float64")
    return pd.DataFrame(frame, columns=list(columns))


def read_bars_in_two(engine: sa.Engine, conn: sa.Connection, start: pd.Timestamp, end: pd.Timestamp,
                     columns: tuple[str, ...] = BAR_READ_COLUMNS) -> pd.DataFrame:
    """``read_bars`` of market_data_1m over the window, as two halves of its symbols read at once, each on a
    connection of its own in one snapshot exported by ``conn``'s transaction: the same frame as ``read_bars`` on
    ``conn`` at that moment.

    Why: the server turns every numeric into a float8 and aggregates them on one core (about 0.1 s of a day of
    72k bars) while the rest of the process waits for the day; two backends take half each. A transaction that
    has written anything reads in one piece, since its own uncommitted rows are in no snapshot it can share;
    so does a window of fewer than two symbols.
    """
    symbols = [] if _has_written(conn) else window_symbols(conn, start, end)
    if len(symbols) < 2:
        return read_bars(conn, "market_data_1m", start, end, columns)
    middle = symbols[len(symbols) // 2]  # the lower half ends below it in the table's own order, whatever that is
    snapshot = export_snapshot(conn)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tis-read") as pool:
        upper = pool.submit(_read_in_snapshot, engine, snapshot, start, end, columns, symbols_from=middle)
        lower = _read_in_snapshot(engine, snapshot, start, end, columns, symbols_below=middle)
        return pd.concat([lower, upper.result()], ignore_index=True)


def _read_in_snapshot(engine: sa.Engine, snapshot: str, start: pd.Timestamp, end: pd.Timestamp,
                      columns: tuple[str, ...], **symbols: str) -> pd.DataFrame:
    with engine.begin() as side:
        in_snapshot(side, snapshot)
        return read_bars(side, "market_data_1m", start, end, columns, **symbols)


def _has_written(conn: sa.Connection) -> bool:
    """Whether the transaction of ``conn`` has a transaction id: it has written something."""
    return conn.execute(sa.text("SELECT pg_current_xact_id_if_assigned() IS NOT NULL")).scalar_one()


def window_symbols(conn: sa.Connection, start: pd.Timestamp, end: pd.Timestamp) -> list[str]:
    """The distinct symbols of market_data_1m's bars in [start, end), in the table's order, by skipping along the
    primary key (symbol, "timestamp") of the window's partitions: a probe per symbol, not a scan of every bar."""
    return list(conn.execute(sa.text("""
        WITH RECURSIVE s(symbol) AS (
            (SELECT symbol FROM market_data_1m WHERE "timestamp" >= :start AND "timestamp" < :end
             ORDER BY symbol LIMIT 1)
            UNION ALL
            SELECT (SELECT t.symbol FROM market_data_1m t
                    WHERE t."timestamp" >= :start AND t."timestamp" < :end AND t.symbol > s.symbol
                    ORDER BY t.symbol LIMIT 1)
            FROM s WHERE s.symbol IS NOT NULL)
        SELECT symbol FROM s WHERE symbol IS NOT NULL"""), {"start": start, "end": end}).scalars())


def _grouped_in_time(padded: np.ndarray, timestamps: np.ndarray) -> bool:
    """Whether the rows of each symbol are together and in time order (as ``ORDER BY symbol, "timestamp"`` leaves
    them, in whatever order the collation puts the symbols)."""
    if len(padded) < 2:
        return True
    change = padded[1:] != padded[:-1]
    firsts = padded[np.flatnonzero(np.r_[True, change])]
    return len(set(firsts.tolist())) == len(firsts) and bool(np.all(change | (timestamps[1:] >= timestamps[:-1])))


def _symbols(padded: np.ndarray, lengths: np.ndarray) -> pd.Series:
    """Symbols from char(20) values sorted by symbol: decoded once per run of equal values, then repeated."""
    starts = np.flatnonzero(np.r_[True, padded[1:] != padded[:-1]]) if len(padded) else np.zeros(0, "int64")
    counts = np.diff(np.r_[starts, len(padded)])
    names = np.array([bytes(padded[i])[: lengths[i]].decode("utf-8") for i in starts], dtype=object)
    return pd.Series(np.repeat(names, counts), dtype=str)


def _read_bars_text(conn: sa.Connection, window: str, params: dict, columns: tuple[str, ...]) -> pd.DataFrame:
    select = ", ".join(f'"{c}"' if c in ("symbol", "timestamp", "mx_confirm") else f'"{c}"::float8 AS "{c}"'
                       for c in columns)
    frame = fetch_frame(conn, f"SELECT {select} {window}", params)
    if frame.empty:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in columns}).assign(
            symbol=pd.Series(dtype="string"), timestamp=pd.Series(dtype="datetime64[us, UTC]"))[list(columns)]
    if "timestamp" in frame:
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True).astype("datetime64[us, UTC]")
    if "symbol" in frame:
        frame["symbol"] = frame["symbol"].astype(str)
    if "mx_confirm" in frame:  # COPY's text form of a boolean is t/f
        frame["mx_confirm"] = frame["mx_confirm"].map({"t": True, "f": False}).astype("boolean")
    for c in frame.columns.difference(["symbol", "timestamp", "mx_confirm"]):
        frame[c] = frame[c].astype("float64")  # the CSV reader makes a column of whole numbers int64
    return frame


def bucket_fill(conn: sa.Connection, expected: ExpectedRollup) -> pd.DataFrame:
    """Per symbol: buckets, buckets with fewer 1-minute bars than their width (gaps inside), missing minutes.

    Read from the staged expected rows (``stage_expected_rollup``), not from another scan.
    """
    from tis_pipeline.quality.rules import MARKET_TABLES

    minutes = MARKET_TABLES[_bar_table(expected.target)]
    expected.ready()
    return pd.DataFrame(conn.execute(sa.text(f"""
        SELECT symbol, count(*) AS buckets,
               count(*) FILTER (WHERE source_bars < {minutes}) AS partial_buckets,
               coalesce(sum({minutes} - source_bars), 0) AS missing_minutes
        FROM {expected.relation} AS expected GROUP BY symbol ORDER BY symbol""")).mappings().all())
