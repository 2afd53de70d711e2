"""The rollups of market_data_1m: 15-minute bars from the 1-minute ones, hourly bars from the 15-minute ones,
the SQL that recomputes them for their checks, and the source versions that tell a rollup day out of date.

The rollup rule of ``market_data_15m`` / ``market_data_1h``:

* ``rollup_aggregate_sql(source, minutes)``: how the assets build the bars (first open, max high, min low,
  last close, summed volume, buckets labelled by their open, UTC), with ``source_bars``, the number of bars
  in the bucket. First and last come from the bars at the bucket's opening and closing slots in the same pass
  (no sort; only a bucket with a hole at an edge looks its bar up by key, see ``_AGGREGATE_SQL``).
  ``rollup_source_sql(rule)`` is it over the rule's 1-minute source.
* ``rollup_reference_sql(rule)``: the same rollup written out a second, plain way (ordered ``array_agg`` for
  first and last, epoch arithmetic for the bucket, no shared SQL text) straight from the 1-minute bars. The
  checks compare with this one, so a mistake in the building SQL cannot pass its own check.
* ``rollup_compare_sql(rule, expected)``: the rollup bars in ``[:start, :end)`` that differ from ``expected``
  (a parenthesised query of the reference's shape), plus the buckets that have source bars but no rollup bar,
  and the reverse. The comparison is exact: both sides are DECIMAL(20,8) in the database.

``rollup_mismatch_sql(rule)`` puts the reference and the comparison together: the blocking
``<table>_rollup_consistent`` checks run it over the window (and the healed days) in the transaction that
wrote them, and the ``source_changes_rolled_up`` checks over the days whose source changed.

Day versions: every rollup day records the 1-minute version it was built from (``rollup_source_versions``;
for the hourly bars the version their 15-minute bars were built from). A day whose 1-minute bars were
ingested again since (``market_data_day_versions`` higher) and that still has 1-minute bars is stale
(``stale_days``): the next run of the rollup, for any window, rebuilds it too (``roll_up``, at most
``HEAL_DAYS_PER_RUN`` days a run, oldest first). Retention forgets the versions of the rollup days it deletes,
so a deleted day is never stale and never brought back.

The rollup assets' work (``roll_up``): the expected bars staged on connections of their own
(``stage_expected_rollup``), the table's bars replaced by them (``rebuild_rollup``), stale days healed
(``heal_days``), the versions recorded, then the bars compared with the reference (``rollup_mismatches``) and
their gaps counted (``bucket_fill``), in one transaction. No Dagster here.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import date

import pandas as pd
import sqlalchemy as sa

from tis_pipeline.market_data.describe import price_volume_png
from tis_pipeline.market_data.store import bar_table, read_bars
from tis_pipeline.pg.buckets import BIN_ORIGIN, bucket_sql
from tis_pipeline.pg.day_partitions import export_snapshot, in_snapshot, mark_scratch
from tis_pipeline.pg.engine import large_work_mem, raw_connection
from tis_pipeline.plots import pyplot
from tis_pipeline.quality.rules import MARKET_TABLES, Rule, rule

# First and last without ordering: a bucket's first bar is the one at its opening slot whenever that slot has
# a bar, and its last the one at its closing slot, so `open`/`close` are min() over the one row that passes a
# timestamp FILTER (int64 comparisons), and only buckets with a hole at an edge look their bar up by key. The
# CASE tests first_at/last_at, not the FILTER's result, so a bar off the grid can never pass for the edge bar.
# It replaces min/max(ARRAY[epoch, price]), which built and compared an array per source row: half the CPU of
# the aggregation (1.07 -> 0.55 core-seconds for 1M bars into 15-minute buckets).
_AGGREGATE_SQL = """
SELECT a.symbol, a.bucket,
       CASE WHEN a.first_at = a.bucket THEN a.open_at_first_slot
            ELSE (SELECT e.open FROM {source} e WHERE e.symbol = a.symbol AND e."timestamp" = a.first_at) END AS open,
       a.high, a.low,
       CASE WHEN a.last_at = a.bucket + INTERVAL '{last_slot} minutes' THEN a.close_at_last_slot
            ELSE (SELECT e.close FROM {source} e WHERE e.symbol = a.symbol AND e."timestamp" = a.last_at) END AS close,
       a.volume, a.source_bars, a.mx_evidence, a.mx_confirm
FROM (SELECT symbol,
             {bucket} AS bucket,
             min("timestamp") AS first_at,
             max("timestamp") AS last_at,
             min(open) FILTER (WHERE "timestamp" = {bucket}) AS open_at_first_slot,
             min(close) FILTER (WHERE "timestamp" = {bucket} + INTERVAL '{last_slot} minutes') AS close_at_last_slot,
             max(high) AS high,
             min(low) AS low,
             sum(volume) AS volume,
             count(*) AS source_bars,
             round(avg(mx_evidence), 2) AS mx_evidence,
             bool_or(mx_confirm) AS mx_confirm
      FROM {source}
      WHERE "timestamp" >= CAST(:start AS timestamptz) AND "timestamp" < CAST(:end AS timestamptz)
      GROUP BY 1, 2) AS a
"""  # noqa: E501 (SQL text kept byte for byte)

_VIA_SQL = """
SELECT n.symbol, n.bucket, r.open, r.high, r.low, r.close, r.volume, n.source_bars, r.mx_evidence, r.mx_confirm
FROM (SELECT symbol, {bucket} AS bucket,
             count(*) AS source_bars
      FROM {source}
      WHERE "timestamp" >= CAST(:start AS timestamptz) AND "timestamp" < CAST(:end AS timestamptz)
      GROUP BY 1, 2) AS n
LEFT JOIN ({via}) AS r ON r.symbol = n.symbol AND r.bucket = n.bucket
"""  # noqa: E501 (SQL text kept byte for byte)

# The reference rollup for the checks, deliberately not derived from _AGGREGATE_SQL or pg.buckets: ordered
# aggregates pick first and last, the bucket is epoch arithmetic (minutes divide a day, so it equals date_bin
# from any midnight), every aggregate is spelled out again. Slower than the building SQL, independent of it.
_REFERENCE_SQL = """
SELECT symbol, bucket,
       (array_agg(open ORDER BY "timestamp"))[1] AS open,
       max(high) AS high,
       min(low) AS low,
       (array_agg(close ORDER BY "timestamp" DESC))[1] AS close,
       sum(volume) AS volume,
       count(*) AS source_bars
FROM (SELECT symbol, "timestamp", open, high, low, close, volume,
             to_timestamp(floor(extract(epoch FROM "timestamp") / {seconds}) * {seconds}) AS bucket
      FROM {source}
      WHERE "timestamp" >= {low} AND "timestamp" < {high}) AS m
GROUP BY symbol, bucket
"""
_START, _END = "CAST(:start AS timestamptz)", "CAST(:end AS timestamptz)"
# the middle of [:start, :end) rounded down to a bucket boundary (epoch arithmetic, as the reference bins),
# kept inside the window
_MIDDLE_SQL = (
    f"greatest({_START}, least({_END}, to_timestamp(floor((extract(epoch FROM {_START}) + "
    f"extract(epoch FROM {_END})) / {{twice}}) * {{seconds}})))"
)

_COMPARE_SQL = """
SELECT coalesce(r.symbol, s.symbol) AS symbol, coalesce(r."timestamp", s.bucket) AS "timestamp",
       r.open, r.high, r.low, r.close, r.volume,
       s.open AS expected_open, s.high AS expected_high, s.low AS expected_low,
       s.close AS expected_close, s.volume AS expected_volume, s.source_bars
FROM (SELECT symbol, "timestamp", open, high, low, close, volume FROM {table}
      WHERE "timestamp" >= CAST(:start AS timestamptz) AND "timestamp" < CAST(:end AS timestamptz)) AS r
FULL JOIN {expected} AS s ON s.symbol = r.symbol AND s.bucket = r."timestamp"
WHERE s.symbol IS NULL OR r.symbol IS NULL
   OR r.open IS DISTINCT FROM s.open OR r.high IS DISTINCT FROM s.high OR r.low IS DISTINCT FROM s.low
   OR r.close IS DISTINCT FROM s.close OR r.volume IS DISTINCT FROM s.volume
ORDER BY 1, 2
"""


def _rollup_rule(rule: Rule) -> Rule:
    if rule.kind != "rollup_consistent":
        raise ValueError(f"rule {rule.name} is not a rollup rule")
    return rule


def rollup_aggregate_sql(source: str, minutes: int) -> str:
    """``source``'s bars over ``[:start, :end)`` rolled up into ``minutes``-long buckets (one row per symbol
    and bucket, with ``source_bars``); ``source`` is a bar table of ``MARKET_TABLES`` chosen by the code,
    never input, whose bar width divides ``minutes``."""
    width = MARKET_TABLES[source]
    if int(minutes) % width:
        raise ValueError(f"{width}-minute bars do not tile {minutes}-minute buckets")
    return _AGGREGATE_SQL.format(
        bucket=bucket_sql(minutes), source=source, last_slot=int(minutes) - width
    ).strip()


def rollup_via_sql(rule: Rule, via: str) -> str:
    """The rule's expected rollup over ``[:start, :end)`` taken from ``via``, a finer rollup of the same
    source (a bar table of ``MARKET_TABLES`` whose width divides the rule's minutes, both binned from
    ``BIN_ORIGIN``), with the buckets and ``source_bars`` still counted from the 1-minute source: one row per
    bucket that has 1-minute bars, its prices NULL where ``via`` has no bar (so that the comparison reports it
    missing).

    Sound by transitivity when ``via`` equals the rollup of the 1-minute bars, which its own blocking check
    proves (``market_data_15m_rollup_consistent``) before the coarser rollup runs: first/max/min/last/sum of
    consecutive sub-buckets equal first/max/min/last/sum of the minutes. The count pass still ties the bucket
    set to the 1-minute bars without aggregating numerics: an hour with 1-minute bars but no rollup bar, or
    the reverse, is reported, and gap counts come from the 1-minute bars. What it does not see is a 1-minute
    bar changed, added or removed inside an hour that keeps bars, after ``via`` was checked and not rolled up
    again. The hourly asset stages it for its gap counts only; its checks compare with the independent
    ``rollup_mismatch_sql``.
    """
    rule = _rollup_rule(rule)
    minutes = int(rule.params["minutes"])  # rollup_aggregate_sql refuses a via whose bars do not tile it
    return _VIA_SQL.format(
        bucket=bucket_sql(minutes), source=rule.params["source"], via=rollup_aggregate_sql(via, minutes)
    ).strip()


def rollup_source_sql(rule: Rule) -> str:
    """The recomputed rollup of the rule's 1-minute source over ``[:start, :end)`` (one row per bucket)."""
    rule = _rollup_rule(rule)
    # minutes and the source table come from the registry (code), never from input
    return rollup_aggregate_sql(rule.params["source"], rule.params["minutes"])


def rollup_reference_sql(rule: Rule) -> str:
    """The rule's rollup of its 1-minute source over ``[:start, :end)`` computed independently of
    ``rollup_aggregate_sql`` (``_REFERENCE_SQL``): what the checks compare with."""
    return _reference_sql(_rollup_rule(rule), _START, _END)


def _reference_sql(rule: Rule, low: str, high: str) -> str:
    """``rollup_reference_sql`` over [low, high) (SQL expressions of the code)."""
    minutes = int(rule.params["minutes"])
    if (24 * 60) % minutes:
        raise ValueError(f"{minutes}-minute buckets do not tile a day")
    return _REFERENCE_SQL.format(
        seconds=minutes * 60, source=rule.params["source"], low=low, high=high
    ).strip()


def rollup_compare_sql(rule: Rule, expected: str) -> str:
    """Rollup bars of ``[:start, :end)`` that differ from ``expected`` or are missing; ``expected`` is
    code."""
    return _COMPARE_SQL.format(table=_rollup_rule(rule).table, expected=expected).strip()


def rollup_mismatch_sql(rule: Rule) -> str:
    """A query with bind parameters ``:start`` and ``:end`` returning the rollup bars that fail ``rule``: the
    rollup table compared with ``rollup_reference_sql``, recomputed from the 1-minute bars.

    The reference is written as its two halves of the window, cut on a bucket boundary (``_MIDDLE_SQL``),
    joined by UNION ALL: PostgreSQL aggregates them at once (a Parallel Append of the two, one per process),
    where the ordered aggregates of the one query ran in its leader alone (7.0-7.6 s -> 5.9-6.2 s for the
    hourly check of 5,000 symbols' day). No bucket straddles the cut, so the rows are those of the one query.
    """
    rule = _rollup_rule(rule)
    seconds = int(rule.params["minutes"]) * 60
    middle = _MIDDLE_SQL.format(twice=2 * seconds, seconds=seconds)
    halves = [_reference_sql(rule, _START, middle), _reference_sql(rule, middle, _END)]
    return rollup_compare_sql(rule, "(" + "\nUNION ALL\n".join(f"({half})" for half in halves) + ")")


ROLLUP_SOURCES = {"market_data_15m": "market_data_1m", "market_data_1h": "market_data_15m"}
# stale days outside the window one run of a rollup rebuilds, oldest first; the rest wait for the next runs
# (``RolledUp.left``, and the ``source_changes_rolled_up`` checks keep warning about them). About a day's
# aggregation and a day's reference recomputation each, in the run's one transaction: 31 keep a daily run
# within a minute or so at 50 symbols, where years of corrections healed at once would hold the rollup's lock
# (and its window's bars) for hours. Many stale days are a backfill's work: ``tis backfill`` of the rollups
# over those days rebuilds them in pieces, in parallel.
HEAL_DAYS_PER_RUN = 31
ROLLUP_CONNECTIONS = 2  # pieces of the expected rollup aggregated at once, each on a connection of its own
ROLLUP_PIECES = (
    4  # pieces per window: the 15-minute bars of the first ones are inserted while the last aggregate
)


@dataclass
class ExpectedRollup:
    """The expected bars of a rollup (``stage_expected_rollup``): one unlogged table per piece of the window,
    committed on a connection of its own (``pieces``: their futures, each returning its row count), read as
    one relation until ``discard_expected`` drops them."""

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
    boundary of ``target`` (binned like ``pg.buckets.bucket_sql``), so that no bucket straddles two pieces."""
    width = pd.Timedelta(minutes=MARKET_TABLES[target])
    origin = pd.Timestamp(BIN_ORIGIN)
    cuts = [start]
    for i in range(1, ROLLUP_PIECES):
        cut = origin + ((start + (end - start) * i / ROLLUP_PIECES - origin) // width) * width
        if cuts[-1] < cut < end:
            cuts.append(cut)
    return [*cuts, end]


def _stage_piece(
    engine: sa.Engine, name: str, query: str, start: pd.Timestamp, end: pd.Timestamp, snapshot: str | None
) -> int:
    with engine.begin() as side:
        if snapshot is not None:  # every piece reads the same committed data, whenever it starts
            in_snapshot(side, snapshot)
        # the pieces already keep every core busy; parallel workers would only compete with the other piece
        side.execute(sa.text("SET LOCAL max_parallel_workers_per_gather = 0"))
        # a scratch table: a crash empties it anyway (unlogged), so its commit need not wait for the WAL flush
        side.execute(sa.text("SET LOCAL synchronous_commit = off"))
        with large_work_mem(side):  # the hash aggregate fits in memory, no temp spill
            rows = side.execute(
                sa.text(f"CREATE UNLOGGED TABLE {name} AS {query}"), {"start": start, "end": end}
            ).rowcount
        with raw_connection(side).cursor() as cur:
            mark_scratch(cur, name)
        return rows


def stage_expected_rollup(
    engine: sa.Engine, target: str, start: pd.Timestamp, end: pd.Timestamp, snapshot: str | None = None
) -> ExpectedRollup:
    """Start building the expected bars of ``target`` over [start, end) apart from the transaction that
    replaces them; returns at once (``ExpectedRollup.ready`` waits).

    15-minute: one pass over the 1-minute bars (``rollup_source_sql``): the rows inserted.
    Hourly: from the 15-minute bars plus a count of 1-minute bars per hour (``rollup_via_sql``), for the gap
    counts. The rows hold ``source_bars`` per bucket, so gaps are counted from them without another scan. The
    checks do not compare with these rows (they are what was inserted) but with ``rollup_mismatch_sql``.

    The window is cut on bucket boundaries into ``ROLLUP_PIECES`` pieces aggregated ``ROLLUP_CONNECTIONS`` at
    a time, each into an unlogged table of its own on a connection of its own: every core aggregates, no
    partial groups are funnelled through one leader to be combined again (as one parallel query does), and the
    caller's transaction can insert a finished piece while the next ones aggregate. Call ``discard_expected``
    in a ``finally`` after that transaction, whatever happened: it waits for the pieces and drops their
    tables. ``snapshot`` (``export_snapshot`` of that transaction): the pieces read the data as it was when it
    was taken, so a write committed while they run (an ingest of a day in the window) is in none of them or
    all.
    """
    target = bar_table(target)
    if target not in ROLLUP_SOURCES:
        raise ValueError(f"{target} is not a rollup")
    consistency = rule(f"{target}_rollup_consistent")
    via = ROLLUP_SOURCES[target]
    query = (
        rollup_source_sql(consistency)
        if via == consistency.params["source"]
        else rollup_via_sql(consistency, via)
    )
    cuts = _rollup_cuts(target, start, end)
    tag = uuid.uuid4().hex[:8]  # two runs of the same rollup never collide on a name
    expected = ExpectedRollup(
        target,
        [f"rollup_expected_{tag}_{i}" for i in range(len(cuts) - 1)],
        ThreadPoolExecutor(max_workers=ROLLUP_CONNECTIONS, thread_name_prefix="tis-rollup"),
    )
    expected.pieces = [
        expected.pool.submit(_stage_piece, engine, name, query, cuts[i], cuts[i + 1], snapshot)
        for i, name in enumerate(expected.tables)
    ]
    return expected


def discard_expected(engine: sa.Engine, expected: ExpectedRollup) -> None:
    """Wait for the pieces of ``expected`` (one still running would create its table after the drop), then
    drop their tables. Only after the transaction that read them: DROP waits for its locks."""
    expected.pool.shutdown(wait=True, cancel_futures=True)
    with engine.begin() as side:
        side.execute(sa.text("SET LOCAL synchronous_commit = off"))  # see _stage_piece
        side.execute(sa.text(f"DROP TABLE IF EXISTS {', '.join(expected.tables)}"))


def rebuild_rollup(
    conn: sa.Connection, expected: ExpectedRollup, start: pd.Timestamp, end: pd.Timestamp
) -> int:
    """Replace the bars of ``expected.target`` over [start, end) with the rollup of their source; rows
    written.

    open = first, high = max, low = min, close = last, volume = sum per symbol and bucket; a bucket exists
    only where source bars do (no forward fill). 15-minute bars are the staged expected rows, each piece
    inserted as soon as it is built; hourly bars come from the 15-minute ones (four rows per hour instead of
    sixty, the same OHLCV since 15 divides 60 and both are binned from midnight UTC) while the pieces are
    still being built; their check compares them with the 15-minute rollup and the 1-minute bar counts
    (``stage_expected_rollup``). mx_evidence is the mean of the source bars' evidence, mx_confirm true when
    any source bar confirmed.
    """
    target = bar_table(expected.target)
    if target not in ROLLUP_SOURCES:
        raise ValueError(f"{target} is not a rollup")
    window = {"start": start, "end": end}
    conn.execute(sa.text(f'DELETE FROM {target} WHERE "timestamp" >= :start AND "timestamp" < :end'), window)
    insert = (
        f'INSERT INTO {target} (symbol, "timestamp", open, high, low, close, volume, '
        "mx_evidence, mx_confirm) "
        "SELECT symbol, bucket, open, high, low, close, volume, mx_evidence, mx_confirm FROM "
    )
    if target != "market_data_15m":
        hours = rollup_aggregate_sql(ROLLUP_SOURCES[target], MARKET_TABLES[target])
        return conn.execute(sa.text(f"{insert}({hours}) AS hours"), window).rowcount
    table_of = dict(zip(expected.pieces, expected.tables, strict=True))
    written = 0
    for piece in as_completed(expected.pieces):
        piece.result()  # a failed piece raises here
        written += conn.execute(sa.text(insert + table_of[piece])).rowcount
    return written


def rollup_mismatches(
    conn: sa.Connection, table: str, start: pd.Timestamp, end: pd.Timestamp
) -> pd.DataFrame:
    """Bars of ``table`` in [start, end) that differ from the independent recomputation from the 1-minute
    bars, or are missing on either side (``rollup_mismatch_sql``)."""
    query = rollup_mismatch_sql(rule(f"{bar_table(table)}_rollup_consistent"))
    return pd.DataFrame(conn.execute(sa.text(query), {"start": start, "end": end}).mappings().all())


# ------------------------------------------------------------------------------------------------------------
# Source versions: which rollup days are older than their 1-minute bars
# ------------------------------------------------------------------------------------------------------------


def _days(start: pd.Timestamp, end: pd.Timestamp) -> list[date]:
    return [d.date() for d in pd.date_range(start, end, freq="D", inclusive="left")]


def day_ranges(days: Iterable[date]) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """Sorted ``days`` as half-open UTC ranges ``[first, last + 1 day)`` of consecutive days."""
    ranges: list[tuple[pd.Timestamp, pd.Timestamp]] = []
    for d in sorted(set(days)):
        day = pd.Timestamp(d, tz="UTC")
        if ranges and ranges[-1][1] == day:
            ranges[-1] = (ranges[-1][0], day + pd.Timedelta(days=1))
        else:
            ranges.append((day, day + pd.Timedelta(days=1)))
    return ranges


def _has_rows_sql(table: str, day: str) -> str:
    """SQL: whether ``table`` (a bar table of the code, never input) has a bar on ``day`` (a date column)."""
    return (
        f'EXISTS (SELECT 1 FROM {bar_table(table)} b WHERE b."timestamp" >= {_day_start(day)} '
        f'AND b."timestamp" < {_day_start(f"{day} + 1")})'
    )


def _day_start(day: str) -> str:
    return f"(CAST({day} AS timestamp) AT TIME ZONE 'UTC')"


def stale_days(conn: sa.Connection, table: str) -> list[date]:
    """Days of ``table`` built from 1-minute bars that have been ingested again since
    (``rollup_source_versions`` below ``market_data_day_versions``) and that still have 1-minute bars, oldest
    first.

    A day without 1-minute bars is never stale: its bars were archived by retention (which drops them only
    once both rollups are up to date, and forgets the versions of the rollup days it deletes, so a deleted
    day is never rebuilt), or a re-ingest found none; its rollup bars stay as they were built, and only an
    explicit run of its window rebuilds them."""
    table = bar_table(table)
    if table not in ROLLUP_SOURCES:
        raise ValueError(f"{table} is not a rollup")
    return list(
        conn.execute(
            sa.text(
                "SELECT r.day FROM rollup_source_versions r "
                "JOIN market_data_day_versions v ON v.day = r.day "
                "WHERE r.rollup = :table AND r.source_version < v.version "
                f"AND {_has_rows_sql('market_data_1m', 'r.day')} ORDER BY r.day"
            ),
            {"table": table},
        ).scalars()
    )


def source_versions(conn: sa.Connection, table: str, days: list[date]) -> dict[date, int]:
    """The 1-minute version each of ``days`` of ``table`` is about to be built from (0: never ingested).

    15-minute: the 1-minute day's version. Hourly: the version its 15-minute bars were built from, since they
    are its input; a stale 15-minute day thus leaves the hourly day stale too; a day without 15-minute bars
    (retention deleted them) is healed from the 1-minute bars (``heal_days``): their version. Read before the
    bars are, so a day ingested in between is recorded older than it is (and rebuilt once more), never
    newer."""
    table = bar_table(table)
    if table == "market_data_15m":
        query = (
            "SELECT d.day, coalesce(v.version, 0) FROM unnest(CAST(:days AS date[])) AS d(day) "
            "LEFT JOIN market_data_day_versions v ON v.day = d.day"
        )
    elif table == "market_data_1h":
        query = (
            "SELECT d.day, "
            f"CASE WHEN {_has_rows_sql('market_data_15m', 'd.day')} THEN coalesce(r.source_version, 0) "
            "ELSE coalesce(v.version, 0) END "
            "FROM unnest(CAST(:days AS date[])) AS d(day) "
            "LEFT JOIN rollup_source_versions r ON r.rollup = 'market_data_15m' AND r.day = d.day "
            "LEFT JOIN market_data_day_versions v ON v.day = d.day"
        )
    else:
        raise ValueError(f"{table} is not a rollup")
    return {day: int(v) for day, v in conn.execute(sa.text(query), {"days": days}).all()}


def record_built(conn: sa.Connection, table: str, versions: dict[date, int]) -> None:
    """Record that ``table``'s days were built from these 1-minute versions (``source_versions``)."""
    if not versions:
        return
    conn.execute(
        sa.text(
            "INSERT INTO rollup_source_versions (rollup, day, source_version) "
            "SELECT :table, day, v "
            "FROM unnest(CAST(:days AS date[]), CAST(:versions AS bigint[])) AS u(day, v) "
            "ON CONFLICT (rollup, day) DO UPDATE "
            "SET source_version = EXCLUDED.source_version, built_at = now()"
        ),
        {"table": bar_table(table), "days": list(versions), "versions": list(versions.values())},
    )


def heal_days(conn: sa.Connection, table: str, days: list[date]) -> int:
    """Rebuild ``table``'s bars on ``days`` from their source in the caller's transaction (the same SQL as
    ``rebuild_rollup``, without staging: a few days); rows written.

    Hourly days without 15-minute bars (retention deleted them: the 15-minute period is shorter) are rolled
    up from the 1-minute bars instead (the same bars, since 15 divides 60; no 15-minute day is brought back).
    """
    table = bar_table(table)
    if table not in ROLLUP_SOURCES:
        raise ValueError(f"{table} is not a rollup")
    source = ROLLUP_SOURCES[table]
    by_source: dict[str, list[date]] = {source: list(days)}
    if source != "market_data_1m" and days:
        present = set(
            conn.execute(
                sa.text(
                    "SELECT d.day FROM unnest(CAST(:days AS date[])) AS d(day) "
                    f"WHERE {_has_rows_sql(source, 'd.day')}"
                ),
                {"days": list(days)},
            ).scalars()
        )
        by_source = {
            source: [d for d in days if d in present],
            "market_data_1m": [d for d in days if d not in present],
        }
    written = 0
    for origin, origin_days in by_source.items():
        aggregate = rollup_aggregate_sql(origin, MARKET_TABLES[table])
        for start, end in day_ranges(origin_days):
            window = {"start": start, "end": end}
            conn.execute(
                sa.text(f'DELETE FROM {table} WHERE "timestamp" >= :start AND "timestamp" < :end'), window
            )
            written += conn.execute(
                sa.text(
                    f'INSERT INTO {table} (symbol, "timestamp", open, high, low, close, volume, '
                    "mx_evidence, mx_confirm) "
                    "SELECT symbol, bucket, open, high, low, close, volume, mx_evidence, mx_confirm "
                    f"FROM ({aggregate}) AS a"
                ),
                window,
            ).rowcount
    return written


def changed_source_mismatches(conn: sa.Connection, table: str) -> tuple[list[date], pd.DataFrame]:
    """The stale days of ``table`` (``stale_days``) and their bars that differ from the reference recomputed
    from the 1-minute bars (``rollup_mismatches``): what the ``source_changes_rolled_up`` check reports."""
    days = stale_days(conn, table)
    frames = [rollup_mismatches(conn, table, start, end) for start, end in day_ranges(days)]
    found = [f for f in frames if len(f)]
    return days, (pd.concat(found, ignore_index=True) if found else pd.DataFrame())


def bucket_fill(conn: sa.Connection, expected: ExpectedRollup) -> pd.DataFrame:
    """Per symbol: buckets, buckets with fewer 1-minute bars than their width (gaps inside), missing minutes.

    Read from the staged expected rows (``stage_expected_rollup``), not from another scan.
    """
    minutes = MARKET_TABLES[bar_table(expected.target)]
    expected.ready()
    return pd.DataFrame(
        conn.execute(
            sa.text(f"""
        SELECT symbol, count(*) AS buckets,
               count(*) FILTER (WHERE source_bars < {minutes}) AS partial_buckets,
               coalesce(sum({minutes} - source_bars), 0) AS missing_minutes
        FROM {expected.relation} AS expected GROUP BY symbol ORDER BY symbol""")
        )
        .mappings()
        .all()
    )


@dataclass
class RolledUp:
    """What ``roll_up`` did: bars written, the bars that fail the rollup rule (window and healed days), the
    first days' bars (for the preview and the plot), buckets per symbol (``bucket_fill``), the plot being
    drawn, the stale days outside the window it rebuilt with the bars written there, and the stale days it
    left for the next runs (over ``HEAL_DAYS_PER_RUN``)."""

    written: int
    mismatches: pd.DataFrame
    plot_frame: pd.DataFrame
    fill: pd.DataFrame
    drawing: Future
    healed: list[date] = field(default_factory=list)
    healed_written: int = 0
    left: list[date] = field(default_factory=list)

    @property
    def png(self) -> bytes:
        """The price and volume plot (empty without bars); a failed drawing raises here."""
        return self.drawing.result()


def roll_up(engine: sa.Engine, table: str, start: pd.Timestamp, end: pd.Timestamp) -> RolledUp:
    """Replace ``table``'s bars in [start, end) by the rollup of their source, rebuild its stale days outside
    the window (``stale_days``; the oldest ``HEAL_DAYS_PER_RUN`` of them), record the source versions of all
    of them, and check them against the 1-minute bars, in one transaction; plot the first three days of the
    window.

    Runs of the same rollup take turns (a transaction-level advisory lock): healing writes days outside the
    window, which another run may be writing too."""
    title = table  # plot_title adds the days drawn
    table = bar_table(table)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tis-pyplot") as pool:
        pool.submit(pyplot)  # matplotlib's first import (a second) overlaps the SQL instead of following it
        expected = None
        try:
            with engine.begin() as conn:
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"tis {table}"})
                window_days = _days(start, end)
                stale = [d for d in stale_days(conn, table) if d not in set(window_days)]
                healed, left = stale[:HEAL_DAYS_PER_RUN], stale[HEAL_DAYS_PER_RUN:]
                versions = source_versions(conn, table, window_days + healed)  # before the bars are read
                # the pieces start on their own connections, all reading this transaction's snapshot
                expected = stage_expected_rollup(engine, table, start, end, export_snapshot(conn))
                written = rebuild_rollup(conn, expected, start, end)
                healed_written = heal_days(conn, table, healed)
                record_built(conn, table, versions)
                plot_frame = read_bars(conn, table, start, min(end, start + pd.Timedelta(days=3)))
                # drawn on the thread (after the import) while PostgreSQL counts gaps, compares the bars and
                # commits: those queries wait without the GIL, so most of the figure's time hides behind them
                drawing = pool.submit(lambda: price_volume_png(plot_frame, title) if len(plot_frame) else b"")
                fill = bucket_fill(conn, expected)
                found = [rollup_mismatches(conn, table, a, b) for a, b in [(start, end), *day_ranges(healed)]]
                mismatches = pd.concat([f for f in found if len(f)] or [found[0]], ignore_index=True)
        finally:
            if expected is not None:
                discard_expected(engine, expected)
    return RolledUp(written, mismatches, plot_frame, fill, drawing, healed, healed_written, left)
