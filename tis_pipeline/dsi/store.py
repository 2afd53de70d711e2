"""SQL of the DSI domain: carried state, scored day partitions, events and their evidence rows."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import sqlalchemy as sa
from psycopg import sql as psql

from tis_pipeline.dsi import frames
from tis_pipeline.dsi.frames import BAR_UPDATE_COLUMNS
from tis_pipeline.market_data import store as bar_store
from tis_pipeline.pg import day_partitions
from tis_pipeline.pg.buckets import BIN_ORIGIN, bucket_sql
from tis_pipeline.pg.copy import copy_frame, frame_to_csv_bytes
from tis_pipeline.pg.engine import large_work_mem, raw_connection


def previous_state(
    conn: sa.Connection, before: pd.Timestamp, fingerprint: str
) -> tuple[pd.Timestamp, bytes] | None:
    """The latest stored end-of-day state before ``before`` for this configuration that is still valid, if
    any.

    Valid: no day up to the state's own has been written since it was saved (``market_data_day_versions``). A
    corrected past day thus invalidates the states from that day on, and the run re-scores from it.
    """
    row = conn.execute(
        sa.text(
            "SELECT s.day, s.state FROM dsi_state s WHERE s.day < :d AND s.config_fingerprint = :f "
            f"AND s.source_version >= {day_partitions.versions_up_to('s.day')} ORDER BY s.day DESC LIMIT 1"
        ),
        {"d": before.date(), "f": fingerprint},
    ).first()
    return None if row is None else (pd.Timestamp(row.day, tz="UTC"), bytes(row.state))


def first_bar_day(conn: sa.Connection) -> pd.Timestamp | None:
    first = conn.execute(sa.text('SELECT min("timestamp") FROM market_data_1m')).scalar_one()
    return None if first is None else pd.Timestamp(first).tz_convert("UTC").normalize()


def lock_days(conn: sa.Connection) -> set[str]:
    """Take the partition-change lock for the caller's transaction; the names of market_data_1m's day
    partitions.

    The DSI asset replaces the day partitions it scores, so it serialises with every other changer of them
    (ingest, retention, another DSI run) from before its first read to its commit.
    """
    day_partitions.lock_partition_changes(conn)
    return day_partitions.day_partitions(conn)


def lock_day(conn: sa.Connection, day: pd.Timestamp, partitions: set[str]) -> tuple[str, bool]:
    """Block writes to the day's rows until commit (SHARE: readers go on); (its partition's name, whether it
    exists). Without a partition of its own the day's rows live in the DEFAULT partition.

    Taken before the day is read, so the rows the new partition is built from stay the rows of the table.
    """
    name = day_partitions.partition_name(day)  # built from a date, never from input
    exists = name in partitions
    conn.execute(sa.text(f'LOCK TABLE ONLY "{name if exists else "market_data_1m_default"}" IN SHARE MODE'))
    return name, exists


def has_written(conn: sa.Connection) -> bool:
    """Whether the transaction of ``conn`` has written anything (then its rows are in no snapshot another
    connection can share)."""
    return conn.execute(sa.text("SELECT pg_current_xact_id_if_assigned() IS NOT NULL")).scalar_one()


def symbol_counts(conn: sa.Connection, day: pd.Timestamp) -> list[tuple[str, int]]:
    """(symbol, bars) of the day in the table's order of the symbols (``market_data.store.symbol_counts``)."""
    return bar_store.symbol_counts(conn, "market_data_1m", day, day + pd.Timedelta(days=1))


day_pieces = bar_store.symbol_pieces  # the symbols cut into pieces of whole symbols of about a target of bars


def rows_with_module_columns(conn: sa.Connection, day: pd.Timestamp) -> int:
    """Rows of the day whose module columns (not DSI's to write) hold values: the rebuilt day must carry
    them."""
    return conn.execute(
        sa.text(
            'SELECT count(*) FROM market_data_1m WHERE "timestamp" >= :a AND "timestamp" < :b '
            "AND (module_intelligence IS NOT NULL OR module_learning_updates IS NOT NULL)"
        ),
        {"a": day, "b": day + pd.Timedelta(days=1)},
    ).scalar_one()


@dataclass
class EncodedRows:
    """A slice of a scored day as its build takes it: binary COPY rows (no signature or trailer), the rows the
    binary form left out (for the text COPY), and whether every OHLCV float proves its numeric
    (``exact_scale8``)."""

    body: memoryview
    left_out: pd.DataFrame
    exact: bool
    rows: int


def encode_scored(scores: pd.DataFrame) -> EncodedRows:
    """The scored bars (columns ``frames.BAR_UPDATE_INPUTS``) as the rows of their new day partition.

    Python work (JSON text, encoding) done by the thread that scores, before it hands the slice over: done on
    the build's thread it waited for the GIL behind the scoring, and PostgreSQL waited for it.
    """
    from tis_pipeline.pg.copy_binary import SIGNATURE, TRAILER, encode_rows, exact_scale8

    rows = frames.bar_updates(scores)
    numerics = [rows[c].to_numpy(dtype="float64") for c in BAR_UPDATE_COLUMNS[2:8]]  # OHLCV and mx_evidence
    payload, encoded = encode_rows(
        rows["symbol"],
        rows["timestamp"],
        numerics,
        flags=[rows["mx_confirm"].to_numpy(dtype=bool)],
        json_text=pa.array(rows["mx_expert_contributions"].array),
    )
    return EncodedRows(
        body=memoryview(payload)[len(SIGNATURE) : len(payload) - len(TRAILER)],
        left_out=rows[~encoded],
        exact=all(exact_scale8(v).all() for v in numerics[:5]),
        rows=len(rows),
    )


# Encoded slices of a day handed from the scoring thread to its build while they are made: the pg toolbox's
# bounded stream of a day's parts (leaving its ``with`` block ends it, an exception fails the build)
RowStream = day_partitions.DayRows[EncodedRows]


def _copy_stream(
    cur: Any, statement: psql.Composed, stream: RowStream
) -> tuple[int, bool, list[pd.DataFrame]]:
    """COPY the stream's encoded slices (binary, one COPY): (rows written, every slice exact, the rows left
    out of the binary encoding, to be written as text)."""
    from tis_pipeline.pg.copy_binary import SIGNATURE, TRAILER

    written, exact, left_out = 0, True, []
    with cur.copy(statement) as copy:
        copy.write(SIGNATURE)
        for part in stream:
            copy.write(part.body)
            written += part.rows
            exact &= part.exact
            if len(part.left_out):
                left_out.append(part.left_out)
        copy.write(TRAILER)
    return written, exact, left_out


def build_scored_day(
    engine: sa.Engine, day: pd.Timestamp, staging: str, stream: RowStream, carry_from_source: bool
) -> int:
    """A new table of the day's bars with their scores, to replace the day partition (``attach_scored_days``).

    On a connection of its own, committed, invisible until attached: rows as binary COPY (FREEZE), sent as
    their slices arrive from ``stream``, then the primary key and statistics, as the ingest builds a day. This
    replaces an ``UPDATE … FROM`` of every bar, which wrote a second version of each row with its index entry
    and WAL (0.8-1.0 s a day of 72k bars, plus the dead rows left to vacuum), by writing each row once.

    The OHLCV values are the floats the bars were read as; the numeric(20,8) each came from is the float's
    only 8-decimal neighbour when ``exact_scale8`` holds. Where it does not for some value, where a row had to
    go through the text COPY, or when ``carry_from_source`` (module columns hold values), the rows are made
    equal to the day's rows in market_data_1m in every column DSI does not write, from the table itself.
    """
    try:
        return _build_scored_day(engine, day, staging, stream, carry_from_source)
    finally:
        stream.close()


def _build_scored_day(
    engine: sa.Engine, day: pd.Timestamp, staging: str, stream: RowStream, carry_from_source: bool
) -> int:
    repair = carry_from_source
    statement = psql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary, FREEZE)").format(
        psql.Identifier(staging), psql.SQL(", ").join(psql.Identifier(c) for c in BAR_UPDATE_COLUMNS)
    )
    with engine.connect() as conn:
        raw = raw_connection(conn)
        with raw.cursor() as cur:
            day_partitions.create_day_table(cur, day, staging)
            # PostgreSQL parses one slice (its JSON above all) while the next is scored and encoded
            written, exact, left_out = _copy_stream(cur, statement, stream)
            repair |= not exact
        if left_out:
            copy_frame(raw, staging, pd.concat(left_out), BAR_UPDATE_COLUMNS, freeze=True)
            repair = True
        with raw.cursor() as cur:
            if repair:
                cur.execute(
                    psql.SQL(_CARRY).format(psql.Identifier(staging)),
                    {"a": day.to_pydatetime(), "b": (day + pd.Timedelta(days=1)).to_pydatetime()},
                )
            day_partitions.finish_day_table(cur, staging)
        raw.commit()
    return written


def fill_scored_rows(
    engine: sa.Engine,
    day: pd.Timestamp,
    staging: str,
    stream: RowStream,
    symbols_from: str | None,
    symbols_below: str | None,
) -> int:
    """One shard's scored rows of the day (its symbols in [from, below), the table's order) COPYed into the
    day's table ``staging``, which the run's planning step created and other shards fill at the same time
    (``dsi.shards``); rows written. In one transaction of its own: the shard's earlier rows there are deleted
    first (a shard run again writes its rows once), and where a float does not prove its numeric or a row
    went through the text COPY, the shard's rows are made equal to market_data_1m's in every column DSI does
    not write (``_CARRY``, limited to the shard's symbols). Not FREEZE: the table was created in another
    transaction. The primary key and statistics come after every shard (``finish_day_table``)."""
    try:
        return _fill_scored_rows(engine, day, staging, stream, symbols_from, symbols_below)
    finally:
        stream.close()


def _symbol_range_sql(alias: str, symbols_from: str | None, symbols_below: str | None) -> str:
    return "".join(
        (
            f" AND {alias}symbol >= %(symbols_from)s" if symbols_from is not None else "",
            f" AND {alias}symbol < %(symbols_below)s" if symbols_below is not None else "",
        )
    )


def _fill_scored_rows(
    engine: sa.Engine,
    day: pd.Timestamp,
    staging: str,
    stream: RowStream,
    symbols_from: str | None,
    symbols_below: str | None,
) -> int:
    bounds = {"symbols_from": symbols_from, "symbols_below": symbols_below}
    repair = False
    statement = psql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(
        psql.Identifier(staging), psql.SQL(", ").join(psql.Identifier(c) for c in BAR_UPDATE_COLUMNS)
    )
    with engine.connect() as conn:
        raw = raw_connection(conn)
        with raw.cursor() as cur:
            cur.execute(
                psql.SQL(
                    "DELETE FROM {} WHERE TRUE" + _symbol_range_sql("", symbols_from, symbols_below)
                ).format(psql.Identifier(staging)),
                bounds,
            )
            written, exact, left_out = _copy_stream(cur, statement, stream)
            repair |= not exact
        if left_out:
            copy_frame(raw, staging, pd.concat(left_out), BAR_UPDATE_COLUMNS)
            repair = True
        if repair:
            with raw.cursor() as cur:
                cur.execute(
                    psql.SQL(_CARRY + _symbol_range_sql("n.", symbols_from, symbols_below)).format(
                        psql.Identifier(staging)
                    ),
                    {
                        "a": day.to_pydatetime(),
                        "b": (day + pd.Timedelta(days=1)).to_pydatetime(),
                        **bounds,
                    },
                )
        raw.commit()
    return written


def carry_source_columns(conn: sa.Connection, staging: str, day: pd.Timestamp) -> None:
    """In the caller's transaction (holding the day): make the rows of ``staging`` equal to the day's rows
    of market_data_1m in every column DSI does not write (``_CARRY``), e.g. the module columns written since
    the shards read the day."""
    with raw_connection(conn).cursor() as cur:
        cur.execute(
            psql.SQL(_CARRY).format(psql.Identifier(staging)),
            {"a": day.to_pydatetime(), "b": (day + pd.Timedelta(days=1)).to_pydatetime()},
        )


# every column DSI does not write, from the day's rows in market_data_1m (the same rows: the caller holds them
# locked), where the built row differs
_KEPT = ("open", "high", "low", "close", "volume", "module_intelligence", "module_learning_updates")
_CARRY = (
    "UPDATE {{}} n SET {sets} FROM market_data_1m o "
    'WHERE o."timestamp" >= %(a)s AND o."timestamp" < %(b)s AND n.symbol = o.symbol '
    'AND n."timestamp" = o."timestamp" AND ({new}) IS DISTINCT FROM ({old})'
).format(
    sets=", ".join(f"{c} = o.{c}" for c in _KEPT),
    new=", ".join(f"n.{c}" for c in _KEPT),
    old=", ".join(f"o.{c}" for c in _KEPT),
)


def attach_scored_days(conn: sa.Connection, built: list[tuple[pd.Timestamp, str, str, bool]]) -> None:
    """Swap the built days in, in the caller's transaction (which holds ``lock_days``): (day, partition,
    staging table, whether the partition exists). A day without a partition of its own leaves the DEFAULT
    partition."""
    for day, name, staging, exists in built:
        if not exists:
            conn.execute(
                sa.text('DELETE FROM market_data_1m_default WHERE "timestamp" >= :a AND "timestamp" < :b'),
                {"a": day, "b": day + pd.Timedelta(days=1)},
            )
        with raw_connection(conn).cursor() as cur:
            day_partitions.attach_day(cur, day, name, staging, replace=exists)


@dataclass(frozen=True)
class _EvidenceSource:
    """Where a rollup's evidence per bucket is aggregated from: SQL of the code's own (never input) over
    ``table``: a row's ``time`` (kept to the window), its ``bucket`` (the open of the rollup bar it goes to),
    and per bucket the ``evidence`` and ``confirm`` aggregates."""

    table: str
    time: str
    bucket: str
    evidence: str
    confirm: str


def _bars_evidence(table: str, minutes: int) -> _EvidenceSource:
    """The evidence of ``table``'s bars per bucket of ``minutes``: round(avg(mx_evidence), 2) and
    bool_or(mx_confirm)."""
    return _EvidenceSource(
        table, '"timestamp"', bucket_sql(minutes), "round(avg(mx_evidence), 2)", "bool_or(mx_confirm)"
    )


def _update_evidence(
    conn: sa.Connection, target: str, source: _EvidenceSource, start: pd.Timestamp, end: pd.Timestamp
) -> None:
    """``target``'s evidence in [start, end) from ``source``'s rows in [start, end), bucket by bucket.

    ``start`` and ``end`` are whole hours (the callers' days), so a source row of the window goes to a bucket
    of the window: the target's rows are kept to it as well only so that the planner reads no others."""
    conn.execute(
        sa.text(f"""
        UPDATE {target} r SET mx_evidence = a.e, mx_confirm = a.c
        FROM (SELECT symbol, {source.bucket} b, {source.evidence} e, {source.confirm} c
              FROM {source.table} WHERE {source.time} >= :a AND {source.time} < :b GROUP BY 1, 2) a
        WHERE r.symbol = a.symbol AND r."timestamp" = a.b AND r."timestamp" >= :a AND r."timestamp" < :b"""),
        {"a": start, "b": end},
    )


_BUCKET_NS = 15 * 60 * 10**9
_BIN_ORIGIN_NS = pd.Timestamp(BIN_ORIGIN).value


def rollup_bucket_rows(scores: pd.DataFrame) -> bytes:
    """The 15-minute buckets of scored bars (``symbol, timestamp, mx_evidence, mx_confirm``, sorted by symbol
    and time, as ``logic.score`` returns them) as CSV rows for ``update_rollup_evidence_from``: per symbol
    and bucket, its open (microseconds since the epoch), the sum of the evidence in hundredths (mx_evidence
    is k / 100, exactly), the bars and whether one is confirmed.

    What an aggregate of the written day per bucket would read back, taken from the scores while they are in
    memory: sums and counts, so a bucket seen in two pieces (or two shards) adds up."""
    n = len(scores)
    if not n:
        return b""
    ts = pd.DatetimeIndex(scores["timestamp"]).as_unit("ns").asi8
    bucket = ts - (ts - _BIN_ORIGIN_NS) % _BUCKET_NS
    codes, names = pd.factorize(scores["symbol"], sort=False)
    starts = np.flatnonzero(np.r_[True, (codes[1:] != codes[:-1]) | (bucket[1:] != bucket[:-1])])
    hundredths = np.rint(scores["mx_evidence"].to_numpy(np.float64) * 100.0).astype(np.int64)
    confirmed = scores["mx_confirm"].to_numpy(bool)
    return frame_to_csv_bytes(
        pd.DataFrame(
            {
                "symbol": np.asarray(names, dtype=object)[codes[starts]],
                "bucket_us": bucket[starts] // 1000,
                "evidence": np.add.reduceat(hundredths, starts),
                "bars": np.diff(np.r_[starts, n]),
                "confirmed": np.logical_or.reduceat(confirmed, starts),
            }
        )
    )


def update_rollup_evidence_from(
    conn: sa.Connection, buckets: Iterable[IO[bytes]], start: pd.Timestamp, end: pd.Timestamp
) -> None:
    """The rollups' evidence as the rollups themselves are built: round(avg(mx_evidence), 2) and
    bool_or(mx_confirm) of the 1-minute bars of each 15-minute bucket, the hourly one from the 15-minute bars.

    The 15-minute values come from the buckets of the bars scored (``rollup_bucket_rows``, written to the
    files ``buckets``: one per shard of symbols, or one) instead of a scan of the 1-minute days just written:
    the same values, round(sum / bars, 2) being round(avg, 2) of the bucket's numeric(3,2) evidence."""
    conn.execute(
        sa.text(
            "CREATE TEMP TABLE tis_dsi_buckets (symbol text, bucket_us bigint, evidence bigint, bars bigint, "
            "confirmed boolean) ON COMMIT DROP"
        )
    )
    with (
        raw_connection(conn).cursor() as cur,
        cur.copy("COPY tis_dsi_buckets FROM STDIN (FORMAT csv)") as copy,
    ):
        for rows in buckets:
            rows.seek(0)
            while block := rows.read(1 << 20):
                copy.write(block)
    with large_work_mem(conn):
        _update_evidence(conn, "market_data_15m", _SCORED_BUCKETS, start, end)
        _update_evidence(conn, "market_data_1h", _bars_evidence("market_data_15m", 60), start, end)
    conn.execute(sa.text("DROP TABLE tis_dsi_buckets"))


# the rows of ``rollup_bucket_rows`` in tis_dsi_buckets: round(sum / bars, 2) is round(avg, 2) of the
# bucket's bars, whose evidence is numeric(3,2)
_BUCKET_OPEN = "TIMESTAMPTZ 'epoch' + bucket_us * INTERVAL '1 microsecond'"
_SCORED_BUCKETS = _EvidenceSource(
    "tis_dsi_buckets",
    _BUCKET_OPEN,
    _BUCKET_OPEN,
    "round(sum(evidence) / (100.0 * sum(bars)), 2)",
    "bool_or(confirmed)",
)


def replace_events(
    conn: sa.Connection, evidence: pd.DataFrame, events: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp
) -> tuple[int, int]:
    """Replace the window's anomaly events and the evidence rows they point at."""
    old = (
        conn.execute(
            sa.text(
                'DELETE FROM anomaly_events WHERE "timestamp" >= :a AND "timestamp" < :b '
                "RETURNING dsi_evidence_id"
            ),
            {"a": start, "b": end},
        )
        .scalars()
        .all()
    )
    old = [e for e in old if e is not None]
    if old:
        conn.execute(sa.text("DELETE FROM dsi_evidence WHERE evidence_id = ANY(:ids)"), {"ids": old})
    raw = raw_connection(conn)
    written_evidence = copy_frame(raw, "dsi_evidence", evidence) if len(evidence) else 0
    written_events = copy_frame(raw, "anomaly_events", events) if len(events) else 0
    return written_evidence, written_events


class SpilledBytes:
    """Bytes kept in a temporary file until they are written (``bytes(x)`` reads them back): the day states of
    a long range wait there, not in memory."""

    def __init__(self, file: IO[bytes], data: bytes) -> None:
        file.seek(0, 2)
        self._file, self._at, self._size = file, file.tell(), len(data)
        file.write(data)

    def __bytes__(self) -> bytes:
        self._file.seek(self._at)
        return self._file.read(self._size)


def save_states(conn: sa.Connection, states: list[dict]) -> None:
    """Each day's state (``state``: bytes, or ``SpilledBytes`` read back one day at a time)."""
    if not states:
        return
    conn.execute(
        sa.text("DELETE FROM dsi_state WHERE day = ANY(:days)"), {"days": [s["day"] for s in states]}
    )
    insert = sa.text(
        "INSERT INTO dsi_state (day, config_fingerprint, symbols, bars, state, source_version) "
        "VALUES (:day, :config_fingerprint, :symbols, :bars, :state, "
        f"{day_partitions.versions_up_to('CAST(:day AS date)')})"
    )
    for state in states:
        conn.execute(insert, {**state, "state": bytes(state["state"])})
    # the trading day's states computed from these days' events are out of date now
    day_partitions.bump_day_versions(conn, [s["day"] for s in states], "dsi_day_versions")
