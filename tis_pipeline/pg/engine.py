"""Connections to PostgreSQL shared by every domain: URLs, engines, reads into pandas, errors that say what to
do.

No Dagster here: the CLI, the resources, the tests and the benchmarks all use these functions.
"""

from __future__ import annotations

import io
import os
import re
import shlex
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tis_pipeline.pg.errors import DatabaseConfigError

if TYPE_CHECKING:
    import psycopg
    from psycopg.rows import TupleRow
    from sqlalchemy.pool import ConnectionPoolEntry


def project_url() -> str:
    """``TIS_DATABASE_URL`` when set, else the embedded server's project database (started if needed)."""
    url = os.environ.get("TIS_DATABASE_URL")
    if url:
        return normalise_url(url)
    from tis_pipeline.pg import embedded

    return embedded.start().url(embedded.PROJECT_DATABASE)


def dagster_storage_url() -> str:
    """Where Dagster keeps runs, event logs and schedules (psycopg2 driver: see STYLE.md §6)."""
    explicit = os.environ.get("TIS_DAGSTER_DATABASE_URL")
    if explicit:
        return with_driver(explicit, "psycopg2")
    if os.environ.get("TIS_DATABASE_URL"):
        return with_driver(os.environ["TIS_DATABASE_URL"], "psycopg2")
    from tis_pipeline.pg import embedded

    return embedded.start().url(embedded.DAGSTER_DATABASE, driver="psycopg2")


def normalise_url(url: str) -> str:
    """Name the psycopg 3 driver explicitly: a bare ``postgresql://`` leaves the choice to SQLAlchemy."""
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise DatabaseConfigError(
            f"TIS_DATABASE_URL is not a valid SQLAlchemy URL ({exc}); "
            "expected postgresql+psycopg://user@host:5432/db"
        ) from exc
    if parsed.get_backend_name() != "postgresql":
        raise DatabaseConfigError(
            f"TIS_DATABASE_URL must point at PostgreSQL, not {parsed.get_backend_name()}"
        )
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def with_driver(url: str, driver: str) -> str:
    return make_url(url).set(drivername=f"postgresql+{driver}").render_as_string(hide_password=False)


def with_database(url: str, database: str) -> str:
    return make_url(url).set(database=database).render_as_string(hide_password=False)


def redacted(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


@lru_cache(maxsize=16)
def engine(url: str) -> sa.Engine:
    """The project's engine for ``url``: psycopg 3, pre-pinged pooled connections, sessions without JIT, wide
    socket buffers (``widen_socket_buffers``)."""
    created = sa.create_engine(
        normalise_url(url), pool_pre_ping=True, future=True, connect_args={"options": session_options(url)}
    )
    sa.event.listen(created, "connect", widen_socket_buffers)
    return created


# work_mem for one large set-based statement: a hash aggregate of millions of rows into a few hundred thousand
# groups needs about 100 MB, hashed in memory at this size instead of in batches spilled to temporary files at
# the server's default (4 MB)
LARGE_WORK_MEM = "256MB"


@contextmanager
def large_work_mem(conn: sa.Connection) -> Iterator[None]:
    """``LARGE_WORK_MEM`` as work_mem for the statements run inside, in the caller's transaction (``SET
    LOCAL``); the session's own work_mem again after them (``RESET``). On an error inside nothing is reset:
    the transaction is failed, and its end ends the ``SET LOCAL`` too."""
    conn.execute(sa.text(f"SET LOCAL work_mem = '{LARGE_WORK_MEM}'"))
    yield
    conn.execute(sa.text("RESET work_mem"))


# the kernel socket buffers asked for on each of the project's connections; the kernel grants at most
# net.core.wmem_max / rmem_max (and doubles what it grants, for its bookkeeping)
SOCKET_BUFFER_BYTES = 4 << 20


def widen_socket_buffers(
    dbapi_connection: psycopg.Connection[Any], _connection_record: ConnectionPoolEntry | None = None
) -> None:
    """Ask the kernel for ``SOCKET_BUFFER_BYTES`` send and receive buffers on a psycopg connection's socket.

    Why: psycopg writes a COPY through a non-blocking socket and needs the GIL back each time the kernel's
    buffer (about 200 KB by default) has drained, so while another thread of the process holds the GIL
    (scoring, validating, drawing a plot) the server waits for the next piece. A scored day's 21 MB COPY took
    0.33 s alone and 0.80 s beside a busy Python thread; with 4 MB buffers, 0.34 s (bench/RESULTS.md). Where
    the kernel caps the buffers lower, they are what it grants: nothing fails.
    """
    import contextlib
    import socket

    sock = socket.socket(fileno=dbapi_connection.fileno())
    # OSError: not an option this kind of connection takes, and the kernel's defaults stay
    with contextlib.suppress(OSError):
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_BYTES)
    sock.detach()  # the descriptor stays libpq's


def session_options(url: str) -> str:
    """libpq ``options`` for the project's sessions: the URL's own, plus ``-c jit=off`` unless it sets
    ``jit``.

    Why: on a server built with LLVM (Debian's and most packaged PostgreSQL, where ``jit`` is on by default)
    the planner compiles every query whose estimated cost passes ``jit_above_cost``, and the project's queries
    are either short probes or aggregations over a day or a range, which it never compiles back: on PostgreSQL
    15 here, the 15-minute rollup of 1M bars took 1.8 s with JIT and 0.6 s without, and a 30-day
    ``days_with_bars`` 0.24 s against 4 ms (bench/RESULTS.md). Only the project's sessions are affected;
    ``?options=-c%20jit%3Don`` in the URL turns it back on.
    """
    own = make_url(url).query.get("options", "")
    own = " ".join(own) if isinstance(own, tuple) else own
    return own if "jit=" in own.replace(" ", "") else f"{own} -c jit=off".strip()


# the server's answer to a connection asking for a database it does not have (SQLSTATE 3D000); libpq keeps
# no SQLSTATE for errors of the connection phase, so the message is what tells
_MISSING_DATABASE = re.compile(r'database "(?P<name>(?:[^"]|"")*)" does not exist')


def missing_database(error: BaseException | None) -> str | None:
    """The name of the database a failed connection asked for and the server does not have, else None."""
    if error is None:
        return None
    if getattr(error, "sqlstate", None) == "3D000":
        return ""
    match = _MISSING_DATABASE.search(str(error))
    return match["name"].replace('""', '"') if match else None


def server_address(url: str) -> str:
    """Where the URL's server is, as people write it: host:port, or the socket directory."""
    parsed = make_url(url)
    host = parsed.host or parsed.query.get("host") or "the local socket"
    host = host[0] if isinstance(host, tuple) else host
    return f"{host}:{parsed.port or 5432}" if not host.startswith("/") else f"{host} (socket)"


def create_database_command(url: str, name: str) -> str:
    """The ``createdb`` command that makes the database ``name`` on the URL's server."""
    parsed = make_url(url)
    host = parsed.host or parsed.query.get("host")
    host = host[0] if isinstance(host, tuple) else host
    parts = ["createdb"]
    if host:
        parts += ["-h", host]
    if parsed.port:
        parts += ["-p", str(parsed.port)]
    if parsed.username:
        parts += ["-U", parsed.username]
    return shlex.join([*parts, name])


def check_reachable(url: str) -> None:
    """Fail with one clear sentence when the server cannot be reached or does not have the database."""
    try:
        with engine(url).connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        missing = missing_database(exc.orig)
        if missing is not None:
            # libpq's default database is the user's name
            name = missing or make_url(url).database or make_url(url).username or "postgres"
            raise DatabaseConfigError(
                f"database {name} does not exist on server {server_address(url)}; create it with "
                f"`{create_database_command(url, name)}` or unset TIS_DATABASE_URL to use the embedded "
                "database"
            ) from exc
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseConfigError(
            f"cannot reach PostgreSQL at {redacted(url)}: {reason}. "
            "Check TIS_DATABASE_URL, or unset it to use the embedded database."
        ) from exc


def raw_connection(conn: sa.Connection) -> psycopg.Connection[TupleRow]:
    """The psycopg 3 connection under a SQLAlchemy connection (for COPY)."""
    # SQLAlchemy types the driver's connection as Optional[Any]: the project's engines are psycopg 3 ones,
    # with psycopg's default (tuple) rows
    return cast("psycopg.Connection[TupleRow]", conn.connection.driver_connection)


def fetch_frame(conn: sa.Connection, query: str, params: dict | None = None) -> pd.DataFrame:
    """Read a (parameterised) query into a DataFrame through ``COPY … TO STDOUT`` (3-4x ``read_sql``)."""
    import psycopg
    import pyarrow.csv as pacsv
    from psycopg import sql

    raw = raw_connection(conn)
    inner = psycopg.ClientCursor(raw).mogrify(query, params or {})
    with raw.cursor() as cur:
        statement = sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv, HEADER true)").format(sql.SQL(inner))
        buf = io.BytesIO()
        with cur.copy(statement) as copy:
            for chunk in copy:
                buf.write(chunk)
    if buf.tell() == 0:
        return pd.DataFrame()
    buf.seek(0)
    return pacsv.read_csv(buf).to_pandas()


def fetch_column_arrays(
    conn: sa.Connection, query: str, params: dict | None, kinds: Sequence[str]
) -> list[np.ndarray] | None:
    """Run a query that returns one row of ``array_send(array_agg(…))`` values and read each as a numpy array.

    ``kinds``: the numpy dtype of each array's elements as PostgreSQL sends them (``">i8"``, ``">i2"``,
    ``"S20"``). One row of a few bytea values crosses the wire instead of a message per row (psycopg's COPY TO
    reads each row with a Python call: 0.1-0.2 s of a day of 72k bars), and the bytes are viewed in place.
    Returns None when an array does not have that layout (a NULL element, elements of another width); an
    all-empty window gives empty arrays.
    """
    raw = raw_connection(conn)
    with raw.cursor(binary=True) as cur:
        cur.execute(query, params or {})
        row = cur.fetchone()
    assert row is not None  # aggregates without GROUP BY: always one row
    out = []
    for data, kind in zip(row, kinds, strict=True):
        if data is None:  # array_agg of no rows
            out.append(np.zeros(0, dtype=kind))
            continue
        ndim, has_null = int.from_bytes(data[0:4], "big"), int.from_bytes(data[4:8], "big")
        if ndim != 1 or has_null:
            return None
        count = int.from_bytes(data[12:16], "big")
        element = np.dtype([("len", ">i4"), ("value", kind)])
        if len(data) != 20 + count * element.itemsize:
            return None
        values = np.frombuffer(data, dtype=element, count=count, offset=20)
        if (values["len"] != np.dtype(kind).itemsize).any():
            return None
        out.append(values["value"])
    return out


def table_counts(url: str, tables: Iterable[str]) -> dict[str, int]:
    out = {}
    with engine(url).connect() as conn:
        for table in tables:
            out[table] = conn.execute(sa.select(sa.func.count()).select_from(sa.table(table))).scalar_one()
    return out
