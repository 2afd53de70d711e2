"""Day partitions of a table keyed by (symbol, "timestamp"), replaced by swapping, not by deleting rows.

Each UTC day's rows are COPYed into a new table of their own (on connections of their own, while the caller
works on the next day), which the caller's transaction then attaches in place of the old day: readers see the
old day or the new one, never half. Also here: the scratch tables such builds make, who owns them and how
those a dead process left are found and dropped, the advisory lock every change of the partitions takes, the
day versions that tell derived states they are out of date, and exported snapshots for reading one
transaction's data on several connections.

Table names come from the code, never from input; every value is a bound parameter. No Dagster here.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import secrets
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np
import pandas as pd
import sqlalchemy as sa

from tis_pipeline.pg.copy import copy_bars_binary
from tis_pipeline.pg.engine import raw_connection

Part = TypeVar("Part")

if TYPE_CHECKING:
    from psycopg import Cursor

# The schema's one day-partitioned table (its DEFAULT partition is "<parent>_default") and the columns its
# days are COPYed with: the defaults of the functions below, so that the DSI store's calls name no table
PARENT = "market_data_1m"
BUILD_COLUMNS = ("symbol", "timestamp", "open", "high", "low", "close", "volume")


def partition_name(day: pd.Timestamp, parent: str = PARENT) -> str:
    return f"{parent}_p{day:%Y%m%d}"


# Scratch tables (day partitions built for a swap, pieces of an expected rollup: market_data.rollups, scored
# days: dsi.store) carry in their comment their creation time and their owner: a random key of the process
# (one per database) that made them, which holds a session-level advisory lock on it for as long as it lives,
# on a connection of its own. A table whose owner's lock can be taken was left by a dead process (killed
# between building and swapping or discarding it) and is dropped by the next run that starts
# (``drop_dead_scratch_tables``); a live run's tables are never touched, however old. The pattern names every
# kind the code makes (domain words: written out, not built from PARENT, so that it reads as the names it
# matches)
SCRATCH_TABLE_PATTERN = r"^(market_data_1m_p[0-9]{8}_[0-9a-f]{8}|rollup_expected_[0-9a-f]{8}_[0-9]+)$"
SCRATCH_COMMENT_PREFIX = "tis scratch table, created "
SCRATCH_OWNER_MARK = ", owner "
# a scratch table that outlives the process that made it (the day tables a sharded run's planning step creates
# and its shard steps fill, each step a process of its own, perhaps on another machine) names its Dagster run
# instead of an owner process: it is dropped once that run has ended (``drop_dead_scratch_tables``'
# ``run_alive``), or by anyone once it is ``LEGACY_SCRATCH_AGE`` old (longer than a run may last)
SCRATCH_RUN_MARK = ", run "
# first key of the owners' advisory locks (the two-int4 form: a key space apart from the bigint keys such as
# PARTITION_CHANGE_LOCK); the second is the owner
SCRATCH_OWNER_LOCK_CLASS = 730_601_102
# tables of versions before owners (their comment has no owner, or there is no comment) are dropped once this
# old: no run kept a scratch table for a day
LEGACY_SCRATCH_AGE = pd.Timedelta(days=1)


def scratch_comment(now: pd.Timestamp | None = None, owner: int | None = None, run: str | None = None) -> str:
    created = (now if now is not None else pd.Timestamp.now(tz="UTC")).isoformat()
    return (
        SCRATCH_COMMENT_PREFIX
        + created
        + (f"{SCRATCH_OWNER_MARK}{owner}" if owner is not None else "")
        + (f"{SCRATCH_RUN_MARK}{run}" if run is not None else "")
    )


def scratch_run(comment: str | None) -> str | None:
    """The run id of a run-owned scratch table's comment (``scratch_comment(run=...)``), else None."""
    if not comment or not comment.startswith(SCRATCH_COMMENT_PREFIX) or SCRATCH_RUN_MARK not in comment:
        return None
    return comment.rpartition(SCRATCH_RUN_MARK)[2] or None


def parse_scratch_comment(comment: str | None) -> tuple[pd.Timestamp | None, int | None]:
    """(creation time, owner key) of a scratch table's comment; None for what it does not say (a run-owned
    table has no owner: ``scratch_run``)."""
    if not comment or not comment.startswith(SCRATCH_COMMENT_PREFIX):
        return None, None
    comment = comment.partition(SCRATCH_RUN_MARK)[0]
    created, _, owner = comment.removeprefix(SCRATCH_COMMENT_PREFIX).partition(SCRATCH_OWNER_MARK)
    try:
        when = pd.Timestamp(created)
    except ValueError:
        when = None
    return when, int(owner) if owner.isdigit() else None


@dataclass
class _Owner:
    key: int
    conn: Any  # psycopg.Connection holding the lock (autocommit, used for nothing else)


_owners: dict[tuple, _Owner] = {}
_owners_guard = threading.Lock()


def scratch_owner(raw: Any) -> int:
    """This process's owner key on the database of ``raw`` (a psycopg connection), its advisory lock taken
    on a connection of its own the first time (again if that connection was lost). Thread-safe; a forked
    child gets a key of its own."""
    import psycopg

    info = raw.info
    ident = (os.getpid(), info.host, info.port, info.dbname, info.user)
    with _owners_guard:
        owner = _owners.get(ident)
        if owner is not None and not owner.conn.closed and not owner.conn.broken:
            return owner.key
        params = info.get_parameters()
        if info.password:
            params["password"] = info.password
        params["application_name"] = "tis scratch owner"
        conn = psycopg.connect(autocommit=True, **params)
        key = owner.key if owner is not None else secrets.randbelow(2**31 - 2) + 1
        while not conn.execute(
            "SELECT pg_try_advisory_lock(%s, %s)", (SCRATCH_OWNER_LOCK_CLASS, key)
        ).fetchone()[0]:  # type: ignore[index]
            key = secrets.randbelow(2**31 - 2) + 1  # taken by a live process: another key
        _owners[ident] = _Owner(key, conn)
        return key


def release_scratch_owners() -> None:
    """Close this process's owner connections (their locks go with them): its scratch tables count as dead."""
    with _owners_guard:
        for ident in [i for i in _owners if i[0] == os.getpid()]:
            conn = _owners.pop(ident).conn
            # released before the connection goes: closing returns before the server's backend has ended
            # and let its locks go, so a reader right after could still see the tables alive
            with contextlib.suppress(Exception):
                conn.execute("SELECT pg_advisory_unlock_all()")
            conn.close()


def mark_scratch(cur: Cursor[Any], name: str, run: str | None = None) -> None:
    """Write the creation time and this process's owner key (or, given ``run``, that run's id: the table
    outlives this process) into the comment of the scratch table ``name`` (``cur``: a psycopg cursor in the
    transaction that created it, so that the table is never seen without them)."""
    from psycopg import sql

    comment = (
        scratch_comment(run=run) if run is not None else scratch_comment(owner=scratch_owner(cur.connection))
    )
    cur.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(sql.Identifier(name), sql.Literal(comment)))


@dataclass
class ScratchTable:
    name: str
    created: pd.Timestamp | None
    owner: int | None  # None: made by a version before owners, or run-owned
    alive: bool | None  # whether its owner's process lives; None without an owner
    run: str | None = None  # the Dagster run of a run-owned table (``scratch_run``)


def owner_alive(conn: sa.Connection, owner: int) -> bool:
    """Whether the process ``owner`` lives: its lock cannot be taken (taken and given back at once if so)."""
    free = conn.execute(
        sa.text("SELECT pg_try_advisory_lock(:c, :k)"), {"c": SCRATCH_OWNER_LOCK_CLASS, "k": owner}
    ).scalar_one()
    if free:
        conn.execute(
            sa.text("SELECT pg_advisory_unlock(:c, :k)"), {"c": SCRATCH_OWNER_LOCK_CLASS, "k": owner}
        )
    return not free


def scratch_tables(conn: sa.Connection, pattern: str = SCRATCH_TABLE_PATTERN) -> list[ScratchTable]:
    """The scratch tables (names matching ``pattern``) of the current schema, by name, with their owner and
    whether it lives."""
    rows = conn.execute(
        sa.text(
            "SELECT c.relname, obj_description(c.oid, 'pg_class') FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relkind = 'r' AND NOT c.relispartition "
            "AND c.relname ~ :pattern ORDER BY 1"
        ),
        {"pattern": pattern},
    ).all()
    found = []
    for name, comment in rows:
        created, owner = parse_scratch_comment(comment)
        found.append(
            ScratchTable(
                name,
                created,
                owner,
                owner_alive(conn, owner) if owner is not None else None,
                scratch_run(comment),
            )
        )
    return found


def drop_dead_scratch_tables(
    conn: sa.Connection,
    now: pd.Timestamp | None = None,
    legacy_older_than: pd.Timedelta = LEGACY_SCRATCH_AGE,
    pattern: str = SCRATCH_TABLE_PATTERN,
    run_alive: Callable[[str], bool] | None = None,
) -> list[str]:
    """Drop the scratch tables whose owner is dead (its lock free), whatever their age, those of a run that
    ``run_alive`` says has ended, and those without an owner (versions before owners, run-owned ones)
    created before ``now - legacy_older_than`` or without a comment; never one of a live process. Returns
    them, by name."""
    from psycopg import sql

    now = now if now is not None else pd.Timestamp.now(tz="UTC")
    dead = [
        t.name
        for t in scratch_tables(conn, pattern)
        if t.alive is False
        or (t.run is not None and run_alive is not None and not run_alive(t.run))
        or (t.owner is None and (t.created is None or t.created < now - legacy_older_than))
    ]
    with raw_connection(conn).cursor() as cur:
        for name in dead:  # names from the catalogue that matched the pattern, quoted anyway
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
    return dead


def drop_dead_scratch_tables_of(
    engine: sa.Engine, run_alive: Callable[[str], bool] | None = None
) -> list[str]:
    """``drop_dead_scratch_tables`` in a transaction of its own: what a run that makes scratch tables calls
    first, so that the tables of runs that were killed go before they pile up."""
    with engine.begin() as conn:
        return drop_dead_scratch_tables(conn, run_alive=run_alive)


BUILD_CONNECTIONS = 2  # day partitions built at once, each on its own connection (one per core here)


def create_day_table(
    cur: Cursor[Any], day: pd.Timestamp, staging: str, parent: str = PARENT, run: str | None = None
) -> None:
    """A new, empty table shaped like ``parent`` for the rows of one UTC day, marked as scratch until swapped
    in (owned by this process, or by the Dagster run ``run`` when other processes fill it).

    The bound CHECK exists before the rows arrive, so they are checked on their way in (no scan to validate it
    afterwards) and ATTACH PARTITION trusts it. Autovacuum is told not to vacuum it for inserts: a COPY FREEZE
    leaves every page all-visible, and the caller analyses it (``finish_day_table``).
    """
    from psycopg import sql

    bound = sql.SQL('CONSTRAINT {} CHECK ("timestamp" >= {} AND "timestamp" < {})').format(
        sql.Identifier(f"{staging}_bound"),
        sql.Literal(day.to_pydatetime()),
        sql.Literal((day + pd.Timedelta(days=1)).to_pydatetime()),
    )
    cur.execute(
        sql.SQL(
            "CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS, {}) "
            "WITH (autovacuum_vacuum_insert_threshold = -1)"
        ).format(sql.Identifier(staging), sql.Identifier(parent), bound)
    )
    mark_scratch(cur, staging, run)


def finish_day_table(cur: Cursor[Any], staging: str) -> None:
    """Primary key and statistics of a day table filled after ``create_day_table``."""
    from psycopg import sql

    cur.execute(
        sql.SQL('ALTER TABLE {} ADD PRIMARY KEY (symbol, "timestamp")').format(sql.Identifier(staging))
    )
    # statistics of every column from a tenth of the default sample (10 ms a day instead of 110): the planner
    # needs the row counts and the keys' spread, or it guesses a few thousand rows of a time range and sorts
    # for every rollup. Analysed here, the day leaves autovacuum nothing to do (no insert vacuum either:
    # FREEZE has set every page all-visible); left to autovacuum, its work on each new day competed with the
    # next steps, and a re-ingest then waited 1 s (deadlock_timeout) per day it was on
    cur.execute("SET LOCAL default_statistics_target = 10")
    cur.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(staging)))


def _build_day(
    engine: sa.Engine,
    day: pd.Timestamp,
    staging: str,
    rows: DayRows[pd.DataFrame],
    parent: str = PARENT,
    columns: Sequence[str] = BUILD_COLUMNS,
) -> int:
    """A new table of one day's rows (its parts as they come: ``DayRows``): created with its bound
    CHECK, COPYed (binary, FREEZE), primary key, statistics.

    Runs on a connection of its own and commits: the table is invisible to readers until the caller's
    transaction attaches it, and the caller drops it if anything fails before that. FREEZE: the table was
    created in this transaction, so its rows are written frozen and all-visible, and neither the key build nor
    the rollups' scans stop to set hint bits. A stream that fails (``DayRows.fail``) aborts the COPY, and with
    it the transaction that created the table.
    """
    try:
        with engine.connect() as conn:
            raw = raw_connection(conn)
            with raw.cursor() as cur:
                create_day_table(cur, day, staging, parent)
            written = copy_bars_binary(raw, staging, rows, list(columns), freeze=True)
            with raw.cursor() as cur:
                finish_day_table(cur, staging)
            # on the driver connection: SQLAlchemy did not see the transaction these statements opened
            raw.commit()
    finally:
        rows.close()
    return written


class DayRows(Generic[Part]):
    """A day's rows handed to its build in parts while they are made (``put``), up to ``end`` (or ``fail``:
    the build then fails instead of waiting); as a context manager, leaving the block ends the rows, or on an
    exception fails them. The parts are whatever the build reads: frames (``_build_day``), or encoded
    COPY payloads (DSI's scored days).

    At most ``depth`` parts wait (``put`` blocks while the build is behind), so the rows in memory are those
    of a few parts, not of the day; a build that stopped reading (it failed) makes ``put`` raise instead of
    blocking for ever."""

    _END, _FAILED = object(), object()

    def __init__(self, depth: int = 2) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._closed = False  # the build stopped reading
        self._ended = False

    def __enter__(self) -> DayRows[Part]:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if kind is None:
            self.end()
        else:
            self.fail()

    def put(self, rows: Part) -> None:
        if self._ended:
            raise ValueError("this day's rows have ended")
        self._put(rows)

    def end(self) -> None:
        """No more rows: the build goes on to the key and statistics."""
        if not self._ended:
            self._ended = True
            self._put(self._END)

    def fail(self) -> None:
        """The rows will not be complete: the build fails (if it still reads)."""
        if not self._ended:
            self._ended = True
            with contextlib.suppress(RuntimeError):  # the build has stopped already
                self._put(self._FAILED)

    def _put(self, item: object) -> None:
        while True:
            if self._closed:
                raise RuntimeError("the build of this day stopped reading its rows")
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        """The build reads no more (called when it ends, however it ends); what waits is let go."""
        self._closed = True
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return

    def __iter__(self) -> Iterator[Part]:
        while (item := self._queue.get()) is not self._END:
            if item is self._FAILED:
                raise RuntimeError("the rows of this day did not all come: its build is abandoned")
            yield item
            del item


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
    """Day partitions of ``parent`` built in the background as their rows arrive (``add``),
    ``BUILD_CONNECTIONS`` at a time.

    Each day is built by ``_build_day`` on a connection of its own, so that PostgreSQL COPYs and indexes one
    day while this process reads and validates the next; a day may come in parts (``add(..., whole=False)``,
    one after the other), each sent to its build as it comes (``DayRows``), so that the rows in memory are
    a few parts' whatever the size of a day. ``add`` waits while ``BUILD_CONNECTIONS`` days are being built,
    so that the days waiting stay few however long the range. Nothing is visible to readers until
    ``swap_built_days`` attaches the tables in the caller's transaction. ``finish`` waits for every build and
    gives the ``BuiltDays``; ``abandon`` (or a failed build inside ``finish``) drops whatever was built.
    """

    def __init__(
        self,
        engine: sa.Engine,
        start: pd.Timestamp,
        end: pd.Timestamp,
        parent: str = PARENT,
        columns: Sequence[str] = BUILD_COLUMNS,
    ):
        self.engine, self.start, self.end = engine, start, end
        self.parent, self.columns = parent, columns
        self.built = BuiltDays(
            tag=uuid.uuid4().hex[:8]
        )  # two runs building the same day never collide on a name
        self._pool = ThreadPoolExecutor(max_workers=BUILD_CONNECTIONS, thread_name_prefix="tis-partition")
        self._builds: list = []
        # the day whose rows are still coming: its stream and its build
        self._open: tuple[pd.Timestamp, DayRows[pd.DataFrame], Future] | None = None

    def add(self, frame: pd.DataFrame, whole: bool = True) -> None:
        """Build the days of ``frame`` inside [start, end). Days come in order; a day may come in parts, one
        after the other: ``whole`` says that the rows of ``frame``'s days are all there (a day is also
        complete once rows of another day come). A day that came whole is not taken again."""
        for day, rows in _by_day(frame) if not frame.empty else ():
            if not (self.start <= day < self.end) or rows.empty:
                continue
            if self._open is not None and self._open[0] == day:
                self._put(rows)
                continue
            self._end_open()
            if day in {d for d, _, _ in self.built.jobs}:
                raise ValueError(
                    f"the rows of {day.date()} came in two parts: a day is built from all its rows"
                )
            self._wait_for_room()
            partition = partition_name(day, self.parent)
            staging = f"{partition}_{self.built.tag}"
            stream: DayRows[pd.DataFrame] = DayRows()
            self.built.jobs.append((day, partition, staging))
            build = self._pool.submit(
                _build_day, self.engine, day, staging, stream, self.parent, self.columns
            )
            self._builds.append(build)
            self._open = (day, stream, build)
            self._put(rows)
        if whole:
            self._end_open()

    def _put(self, rows: pd.DataFrame) -> None:
        """Hand ``rows`` to the open day's build; if that build has failed, its error."""
        assert self._open is not None
        _, stream, build = self._open
        try:
            stream.put(rows)
        except RuntimeError:
            build.result()  # the build's own error, if it stopped on one
            raise

    def _end_open(self) -> None:
        if self._open is not None:
            _, stream, build = self._open
            self._open = None
            try:
                stream.end()
            except RuntimeError:
                build.result()
                raise

    def _wait_for_room(self) -> None:
        """Hold the caller while ``BUILD_CONNECTIONS`` builds are waiting or running: each holds its day's
        rows, so a source faster than PostgreSQL would otherwise pile the window up in memory (memory follows
        a few days, not the range). A build that failed raises here, before more days are read."""
        pending = [build for build in self._builds if not build.done()]
        if len(pending) >= BUILD_CONNECTIONS:
            wait(pending, return_when=FIRST_COMPLETED)
        for build in self._builds:
            if build.done():
                build.result()

    def finish(self) -> BuiltDays:
        try:
            self._end_open()
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
        if self._open is not None:
            _, stream, build = self._open
            self._open = None
            if not build.cancelled():
                stream.fail()  # the build stops waiting for rows
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


def discard(engine: sa.Engine, built: BuiltDays) -> None:
    """Drop the staging tables of ``built`` that were not swapped in (none after a committed swap)."""
    _drop_tables(engine, [staging for _, _, staging in built.jobs])


# key of the transaction-level advisory lock that every change to the day partitions takes first
PARTITION_CHANGE_LOCK = 7_306_011_001


def lock_partition_changes(conn: sa.Connection) -> None:
    """Serialise changes to the day partitions until the caller's transaction ends.

    Swapping or dropping a day partition takes ACCESS EXCLUSIVE locks on the parent and on the DEFAULT
    partition, after statements that hold weaker locks on the DEFAULT partition: two such transactions (two
    ingests of different days, an ingest and retention) could each hold what the other waits for. Taking this
    one lock before anything else makes the second wait for the first to commit instead of deadlocking.
    """
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": PARTITION_CHANGE_LOCK})


def window_symbols(
    conn: sa.Connection, start: pd.Timestamp, end: pd.Timestamp, parent: str = PARENT
) -> list[str]:
    """The distinct symbols of ``parent``'s rows in [start, end), in the table's order, by skipping along the
    primary key (symbol, "timestamp") of the window's partitions: a probe per symbol, not a scan of every
    row."""
    return list(
        conn.execute(
            sa.text(f"""
        WITH RECURSIVE s(symbol) AS (
            (SELECT symbol FROM {parent} WHERE "timestamp" >= :start AND "timestamp" < :end
             ORDER BY symbol LIMIT 1)
            UNION ALL
            SELECT (SELECT t.symbol FROM {parent} t
                    WHERE t."timestamp" >= :start AND t."timestamp" < :end AND t.symbol > s.symbol
                    ORDER BY t.symbol LIMIT 1)
            FROM s WHERE s.symbol IS NOT NULL)
        SELECT symbol FROM s WHERE symbol IS NOT NULL"""),
            {"start": start, "end": end},
        ).scalars()
    )


def swap_built_days(
    conn: sa.Connection,
    built: BuiltDays,
    start: pd.Timestamp,
    end: pd.Timestamp,
    symbols: list[str],
    parent: str = PARENT,
) -> tuple[int, int]:
    """Replace ``parent``'s rows of ``symbols`` in [start, end) by the built days; (replaced, written).

    In the caller's transaction: the rows of symbols this source does not own are carried over from the old
    partition and the DEFAULT one, the old partitions are detached and dropped and the new ones attached, so
    readers see the old days or the new ones, never half. The days' versions are bumped
    (``market_data_day_versions``: the versions of this table's days).
    """
    lock_partition_changes(conn)
    bump_day_versions(conn, [d.date() for d in pd.date_range(start, end, freq="D", inclusive="left")])
    existing = day_partitions(conn, parent)
    window = {"a": start, "b": end, "s": list(symbols)}
    # rows of the source's symbols in the DEFAULT partition are replaced whatever the day
    replaced = conn.execute(
        sa.text(
            f'DELETE FROM {parent}_default WHERE "timestamp" >= :a AND "timestamp" < :b AND symbol = ANY(:s)'
        ),
        window,
    ).rowcount
    built_days = {day for day, _, _ in built.jobs}
    for day in pd.date_range(start, end, freq="D", inclusive="left"):
        name = partition_name(day, parent)
        if day not in built_days and name in existing:  # the source has nothing that day any more
            replaced += conn.execute(
                sa.text(f'DELETE FROM "{name}" WHERE symbol = ANY(:s)'), {"s": list(symbols)}
            ).rowcount
    for day, name, staging in built.jobs:
        bounds = {"a": day, "b": day + pd.Timedelta(days=1), "s": list(symbols)}
        # rows of symbols this source does not own are carried over, from the DEFAULT partition (normally
        # empty) or the old partition
        conn.execute(
            sa.text(
                f'INSERT INTO "{staging}" SELECT * FROM {parent}_default '
                'WHERE "timestamp" >= :a AND "timestamp" < :b AND NOT (symbol = ANY(:s))'
            ),
            bounds,
        )
        if name in existing:
            # the old day's symbols from its primary key, one probe per symbol: usually all of them are the
            # source's, and then nothing is carried and no row is compared with the source's symbol list (two
            # scans of every old row did that, 1.3 s of a 14-day re-ingest)
            others = sorted(set(window_symbols(conn, day, day + pd.Timedelta(days=1), parent)) - set(symbols))
            carried = (
                conn.execute(
                    sa.text(f'INSERT INTO "{staging}" SELECT * FROM "{name}" WHERE symbol = ANY(:o)'),
                    {"o": others},
                ).rowcount
                if others
                else 0
            )
            replaced += conn.execute(sa.text(f'SELECT count(*) FROM "{name}"')).scalar_one() - carried
        conn.execute(
            sa.text(f'DELETE FROM {parent}_default WHERE "timestamp" >= :a AND "timestamp" < :b'), bounds
        )
    with raw_connection(conn).cursor() as cur:
        for day, name, staging in built.jobs:
            attach_day(cur, day, name, staging, replace=name in existing, parent=parent)
    return replaced, built.written


# Tables of day versions (one sequence for all): the bars' days, written by the ingest, and the days DSI
# scored. Named here (domain words) because their names are inlined into SQL: only these are accepted
DAY_VERSION_TABLES = ("market_data_day_versions", "dsi_day_versions")


def bump_day_versions(conn: sa.Connection, days: list, table: str = "market_data_day_versions") -> None:
    """Give each of ``days`` (dates) a new version in ``table``, in the caller's transaction.

    Whatever was computed from these days before (DSI's and the trading day's carried states) can then tell
    that it is out of date (``versions_up_to``)."""
    if table not in DAY_VERSION_TABLES:
        raise ValueError(f"{table} is not a table of day versions")
    conn.execute(
        sa.text(
            f"INSERT INTO {table} (day, version) "
            "SELECT day, nextval('market_data_day_version_seq') "
            "FROM unnest(CAST(:days AS date[])) AS day ORDER BY day "
            "ON CONFLICT (day) DO UPDATE SET version = EXCLUDED.version, written_at = now()"
        ),
        {"days": list(days)},
    )


def versions_up_to(day: str, tables: tuple[str, ...] = ("market_data_day_versions",)) -> str:
    """SQL for the highest version in ``tables`` of the days up to ``day`` (an SQL date expression), 0 if
    none: what a state saved for ``day`` was computed from. A state is out of date once this exceeds its
    record."""
    if not set(tables) <= set(DAY_VERSION_TABLES):
        raise ValueError(f"{tables} are not tables of day versions")
    return (
        "greatest("
        + ", ".join(f"coalesce((SELECT max(v.version) FROM {t} v WHERE v.day <= {day}), 0)" for t in tables)
        + ")"
    )


def attach_day(
    cur: Cursor[Any], day: pd.Timestamp, name: str, staging: str, replace: bool, parent: str = PARENT
) -> None:
    """In the caller's transaction (holding ``lock_partition_changes``): the built table ``staging`` becomes
    the day partition ``name`` of ``parent``, replacing the old one when ``replace``. Readers see the old day
    or the new one."""
    from psycopg import sql

    if replace:
        cur.execute(
            sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(sql.Identifier(parent), sql.Identifier(name))
        )
        cur.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
    cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(staging), sql.Identifier(name)))
    cur.execute(
        sql.SQL("ALTER INDEX {} RENAME TO {}").format(
            sql.Identifier(f"{staging}_pkey"), sql.Identifier(f"{name}_pkey")
        )
    )
    cur.execute(
        sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
            sql.Identifier(parent),
            sql.Identifier(name),
            sql.Literal(day.to_pydatetime()),
            sql.Literal((day + pd.Timedelta(days=1)).to_pydatetime()),
        )
    )


def day_partitions(conn: sa.Connection, parent: str = PARENT) -> set[str]:
    """Names of ``parent``'s partitions."""
    return set(
        conn.execute(
            sa.text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = CAST(:parent AS regclass)"
            ),
            {"parent": parent},
        ).scalars()
    )


_SNAPSHOT_ID = re.compile(r"^[0-9A-F]+-[0-9A-F]+-[0-9]+$")


def export_snapshot(conn: sa.Connection) -> str:
    """The snapshot of ``conn``'s transaction, for other connections to read with (``pg_export_snapshot``); it
    can be imported until that transaction ends."""
    return conn.execute(sa.text("SELECT pg_export_snapshot()")).scalar_one()


def in_snapshot(side: sa.Connection, snapshot: str) -> None:
    """Make the transaction just begun on ``side`` read in ``snapshot`` (``export_snapshot``); before any
    query."""
    if not _SNAPSHOT_ID.match(snapshot):  # it is inlined: SET TRANSACTION SNAPSHOT takes no parameters
        raise ValueError(f"unexpected snapshot id {snapshot!r}")
    side.execute(sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
    side.execute(sa.text(f"SET TRANSACTION SNAPSHOT '{snapshot}'"))
