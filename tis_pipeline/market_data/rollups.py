"""The rollups of market_data_1m: 15-minute bars from the 1-minute ones, hourly bars from the 15-minute ones,
and the SQL that recomputes them for their checks.

The rollup rule of ``market_data_15m`` / ``market_data_1h`` in two parts:

* ``rollup_source_sql(rule)``: the rollup of the 1-minute source over ``[:start, :end)`` recomputed per symbol
  and bucket (first open, max high, min low, last close, summed volume, buckets labelled by their open, UTC),
  with ``source_bars``, the number of 1-minute bars in the bucket (for gap reporting). First and last come
  from the bars at the bucket's opening and closing slots in the same pass (no sort; only a bucket with a hole
  at an edge looks its bar up by key, see ``_AGGREGATE_SQL``); as a plain SELECT it runs with parallel
  workers.
* ``rollup_compare_sql(rule, expected)``: the rollup bars in ``[:start, :end)`` that differ from ``expected``
  (a table or a parenthesised query of ``rollup_source_sql``'s shape), plus the buckets that have source bars
  but no rollup bar. The comparison is exact: both sides are DECIMAL(20,8) in the database.

``rollup_mismatch_sql(rule)`` puts both together as one query (the independent check, straight from the
1-minute bars). ``rollup_via_sql`` is the cheaper expected rollup the hourly asset checks itself against.

The rollup assets' work (``roll_up``): the expected bars staged on connections of their own
(``stage_expected_rollup``), the table's bars replaced by them (``rebuild_rollup``), then compared with them
(``rollup_mismatches``) and their gaps counted (``bucket_fill``), in one transaction. No Dagster here.
"""

from __future__ import annotations

import uuid
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

import pandas as pd
import sqlalchemy as sa

from tis_pipeline.market_data.describe import price_volume_png
from tis_pipeline.market_data.store import bar_table, read_bars
from tis_pipeline.pg.buckets import BIN_ORIGIN, bucket_sql
from tis_pipeline.pg.day_partitions import export_snapshot, in_snapshot, mark_scratch
from tis_pipeline.pg.engine import raw_connection
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
    again; the independent check ``rollup_mismatch_sql`` recomputes from the 1-minute bars.
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


def rollup_compare_sql(rule: Rule, expected: str) -> str:
    """Rollup bars of ``[:start, :end)`` that differ from ``expected`` or are missing; ``expected`` is
    code."""
    return _COMPARE_SQL.format(table=_rollup_rule(rule).table, expected=expected).strip()


def rollup_mismatch_sql(rule: Rule) -> str:
    """A query with bind parameters ``:start`` and ``:end`` returning the rollup bars that fail ``rule``."""
    return rollup_compare_sql(rule, f"({rollup_source_sql(rule)})")


ROLLUP_SOURCES = {"market_data_15m": "market_data_1m", "market_data_1h": "market_data_15m"}
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
        side.execute(
            sa.text("SET LOCAL work_mem = '256MB'")
        )  # the hash aggregate fits in memory, no temp spill
        # the pieces already keep every core busy; parallel workers would only compete with the other piece
        side.execute(sa.text("SET LOCAL max_parallel_workers_per_gather = 0"))
        # a scratch table: a crash empties it anyway (unlogged), so its commit need not wait for the WAL flush
        side.execute(sa.text("SET LOCAL synchronous_commit = off"))
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

    15-minute: one pass over the 1-minute bars (``rollup_source_sql``, the rollup rule's own SQL).
    Hourly: from the 15-minute bars, whose own blocking check has just compared them with the 1-minute bars,
    plus a count of 1-minute bars per hour for the bucket set and gaps (``rollup_via_sql`` states
    why that is sound); it used to aggregate the numerics of every 1-minute bar a second time.
    The rows also hold ``source_bars`` per bucket, so gaps are counted from them without another scan.

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
    conn: sa.Connection, expected: ExpectedRollup, start: pd.Timestamp, end: pd.Timestamp
) -> pd.DataFrame:
    """Bars of ``expected.target`` in [start, end) that differ from ``expected`` or are missing (the rule's
    SQL)."""
    expected.ready()
    query = rollup_compare_sql(rule(f"{bar_table(expected.target)}_rollup_consistent"), expected.relation)
    return pd.DataFrame(conn.execute(sa.text(query), {"start": start, "end": end}).mappings().all())


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
    """What ``roll_up`` did: bars written, the bars that fail the rollup rule, the first days' bars (for the
    preview and the plot), buckets per symbol (``bucket_fill``) and the plot being drawn."""

    written: int
    mismatches: pd.DataFrame
    plot_frame: pd.DataFrame
    fill: pd.DataFrame
    drawing: Future

    @property
    def png(self) -> bytes:
        """The price and volume plot (empty without bars); a failed drawing raises here."""
        return self.drawing.result()


def roll_up(engine: sa.Engine, table: str, start: pd.Timestamp, end: pd.Timestamp) -> RolledUp:
    """Replace ``table``'s bars in [start, end) by the rollup of their source and check them against it, in
    one transaction; plot the first three days of the result."""
    title = f"{table} {start.date()}"
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tis-pyplot") as pool:
        pool.submit(pyplot)  # matplotlib's first import (a second) overlaps the SQL instead of following it
        expected = None
        try:
            with engine.begin() as conn:
                # the pieces start on their own connections, all reading this transaction's snapshot
                expected = stage_expected_rollup(engine, table, start, end, export_snapshot(conn))
                written = rebuild_rollup(conn, expected, start, end)
                plot_frame = read_bars(conn, table, start, min(end, start + pd.Timedelta(days=3)))
                # drawn on the thread (after the import) while PostgreSQL counts gaps, compares the bars and
                # commits: those queries wait without the GIL, so most of the figure's time hides behind them
                drawing = pool.submit(lambda: price_volume_png(plot_frame, title) if len(plot_frame) else b"")
                fill = bucket_fill(conn, expected)
                mismatches = rollup_mismatches(conn, expected, start, end)
        finally:
            if expected is not None:
                discard_expected(engine, expected)
    return RolledUp(written, mismatches, plot_frame, fill, drawing)
