"""COPY of DataFrames into PostgreSQL: CSV text (pyarrow) and the binary format for bar rows.

No Dagster here: assets, the CLI, the tests and the benchmarks all use these functions.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from psycopg import Connection, Cursor
    from psycopg.abc import Query


def frame_to_csv_bytes(frame: pd.DataFrame) -> bytes:
    """CSV bytes for COPY, written by pyarrow (pandas' to_csv is slower than the COPY itself)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    # pyarrow formats zone-aware timestamps 25x slower than naive ones: write UTC wall time and let the
    # session (SET LOCAL TIME ZONE 'UTC' in copy_frame) read it back as UTC
    naive = {
        c: frame[c].dt.tz_convert("UTC").dt.tz_localize(None)
        for c in frame.columns
        if isinstance(frame[c].dtype, pd.DatetimeTZDtype)
    }
    # one chunk per column: a column pandas concatenated from pieces (pyarrow-backed strings) keeps their
    # chunks, and pyarrow 26's writer, given an empty first chunk, writes 512 kB of NUL bytes before the rows
    # (the quarantine of a window whose first piece had none broke its COPY)
    table = pa.Table.from_pandas(
        frame.assign(**naive) if naive else frame, preserve_index=False
    ).combine_chunks()
    sink = io.BytesIO()
    pacsv.write_csv(
        table,
        sink,
        write_options=pacsv.WriteOptions(include_header=False, quoting_style="needed", batch_size=65536),
    )
    return sink.getvalue()


def copy_frame(
    dbapi_conn: Connection[Any],
    table: str,
    frame: pd.DataFrame,
    columns: Sequence[str] | None = None,
    schema: str | None = None,
    freeze: bool = False,
) -> int:
    """COPY ``frame`` into ``table`` over a psycopg 3 connection; returns the rows written.

    ``table`` and ``columns`` are identifiers chosen by the code (never input) and are quoted anyway.
    Empty strings in the CSV are NULLs (pyarrow writes nulls as empty fields). ``freeze``: COPY FREEZE, for a
    table created in the caller's transaction (rows written frozen: nobody else can see the table yet).
    """
    from psycopg import sql

    columns = list(columns or frame.columns)
    if frame.empty:
        return 0
    target = sql.Identifier(schema, table) if schema else sql.Identifier(table)
    statement = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv{})").format(
        target, sql.SQL(", ").join(sql.Identifier(c) for c in columns), sql.SQL(", FREEZE" if freeze else "")
    )
    payload = frame_to_csv_bytes(frame[columns])
    with dbapi_conn.cursor() as cur:
        cur.execute("SET LOCAL TIME ZONE 'UTC'")
        copy_payload(cur, statement, payload)
    return len(frame)


def copy_payload(cur: Cursor[Any], statement: Query, payload: bytes) -> None:
    """Send ``payload`` through ``COPY … FROM STDIN`` in 1 MiB writes (no copy of the bytes)."""
    with cur.copy(statement) as copy:
        view = memoryview(payload)
        for start in range(0, len(view), 1 << 20):
            copy.write(view[start : start + (1 << 20)])


ENCODE_SLICE_ROWS = 250_000  # rows encoded at a time: the payload in memory is one slice's, not the day's


def copy_bars_binary(
    dbapi_conn: Connection[Any],
    table: str,
    frame: pd.DataFrame | Iterable[pd.DataFrame],
    columns: Sequence[str],
    freeze: bool = False,
) -> int:
    """COPY bar rows into ``table`` in PostgreSQL's binary format; returns the rows written.

    ``frame``: the rows, or their parts one after the other (a day's pieces as they are made: each is encoded
    and sent as it comes, the rows in that order, as one frame of them all would be). ``columns``: a text
    column, a timestamptz column, then numeric(20,8) columns (float64 in ``frame``). The rows are encoded
    ``ENCODE_SLICE_ROWS`` at a time into one COPY (each slice's body between one signature and one trailer),
    so the bytes held are a slice's. Rows that ``copy_binary.encode_rows`` cannot encode exactly (see there)
    go through ``copy_frame``'s text COPY in the same transaction, after every part, so every value lands, or
    fails, as the text path makes it. ``freeze`` as in ``copy_frame``.
    """
    from psycopg import sql

    from tis_pipeline.pg.copy_binary import SIGNATURE, TRAILER, encode_rows

    columns = list(columns)
    if isinstance(frame, pd.DataFrame):
        if frame.empty:
            return 0
        parts: Iterable[pd.DataFrame] = [frame]
    else:
        parts = frame
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary{})").format(
        sql.Identifier(table),
        sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        sql.SQL(", FREEZE" if freeze else ""),
    )
    left_out, written = [], 0
    with dbapi_conn.cursor() as cur, cur.copy(statement) as copy:
        copy.write(SIGNATURE)
        for rows in parts:
            written += len(rows)
            for start in range(0, len(rows), ENCODE_SLICE_ROWS):
                part = rows.iloc[start : start + ENCODE_SLICE_ROWS]
                payload, encoded = encode_rows(
                    part[columns[0]],
                    part[columns[1]],
                    [part[c].to_numpy(dtype="float64", na_value=np.nan) for c in columns[2:]],
                )
                view = memoryview(payload)[len(SIGNATURE) : len(payload) - len(TRAILER)]
                for at in range(0, len(view), 1 << 20):
                    copy.write(view[at : at + (1 << 20)])
                if not encoded.all():
                    left_out.append(part[~encoded])
                del payload, view, part
            del rows  # not kept while the next part comes: it is the part's only reference here
        copy.write(TRAILER)
    if left_out:
        copy_frame(dbapi_conn, table, pd.concat(left_out), columns, freeze=freeze)
    return written
