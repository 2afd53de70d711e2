"""Point the process at the project's database and Dagster instance before anything Dagster is imported.

``TIS_DATABASE_URL`` unset -> the embedded server (started if needed). ``DAGSTER_HOME`` unset ->
``$TIS_HOME/dagster`` holding a link to the repository's ``dagster.yaml``; ``TIS_DAGSTER_PG_URL`` is derived
for dagster-postgres (its sessions' commits not waiting for the WAL flush: ``DAGSTER_SESSION_OPTIONS``).
"""

from __future__ import annotations

import os
from pathlib import Path

from tis_pipeline.pg import engine as pg
from tis_pipeline.settings import PROJECT_ROOT, tis_home

# Dagster stores every event of a run in a transaction of its own: a day's run of every asset commits ~800
# times (each event, each asset check's planned and evaluated rows), and with the server's default each commit
# waits for its WAL flush (3 ms a commit at load 5 on this machine, 0.13 ms without: bench/RESULTS.md). Off
# for Dagster's sessions, a server crash may lose the last ~0.6 s of them (3 x wal_writer_delay; always the
# last commits, never half of one), as the project's scratch tables and bus consumers already accept (``SET
# synchronous_commit = off``); a run so cut short is resumed like any failed one. Only on the URL `tis`
# derives: a TIS_DAGSTER_PG_URL set by hand is used as it is.
DAGSTER_SESSION_OPTIONS = "-c synchronous_commit=off"


def prepare(start_embedded: bool = True) -> dict[str, str]:
    """Set the variables every command and Dagster process needs; returns what was set."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    if not os.environ.get("TIS_DATABASE_URL"):
        if not start_embedded:
            return {}
        from tis_pipeline.pg import embedded

        os.environ["TIS_DATABASE_URL"] = embedded.start().url(embedded.PROJECT_DATABASE)
    else:
        os.environ["TIS_DATABASE_URL"] = pg.normalise_url(os.environ["TIS_DATABASE_URL"])
    if not os.environ.get("TIS_DAGSTER_PG_URL"):
        os.environ["TIS_DAGSTER_PG_URL"] = with_session_options(pg.dagster_storage_url())
    if not os.environ.get("DAGSTER_HOME"):
        os.environ["DAGSTER_HOME"] = str(dagster_home())
    return {k: os.environ[k] for k in ("TIS_DATABASE_URL", "TIS_DAGSTER_PG_URL", "DAGSTER_HOME")}


def with_session_options(url: str, options: str = DAGSTER_SESSION_OPTIONS) -> str:
    """``url`` whose connections start their sessions with ``options`` (libpq's ``options``, after any the URL
    has)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    existing = parsed.query.get("options")
    if isinstance(existing, tuple):  # the parameter given twice: libpq reads the last
        existing = existing[-1]
    if existing and options in existing:
        return url
    joined = f"{existing} {options}" if existing else options
    return parsed.update_query_dict({"options": joined}).render_as_string(hide_password=False)


def dagster_home() -> Path:
    home = tis_home() / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    link = home / "dagster.yaml"
    target = PROJECT_ROOT / "dagster.yaml"
    if not link.exists() or link.resolve() != target:
        link.unlink(missing_ok=True)
        link.symlink_to(target)
    return home
