"""``tis db …`` and ``tis env``: the project's PostgreSQL, and the environment of plain ``dagster``
commands."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import typer

from tis_pipeline.cli.app import app, console, db_app, fail, migrate_schema, prepared
from tis_pipeline.pg.errors import DatabaseConfigError

if TYPE_CHECKING:
    pass


@db_app.command("up")
def db_up() -> None:
    """Start the database (the embedded one when TIS_DATABASE_URL is unset; idempotent) and migrate it."""
    from tis_pipeline.pg import engine as pg

    env = prepared()
    migrate_schema(env["TIS_DATABASE_URL"])
    console.print(f"database ready at [bold]{pg.redacted(env['TIS_DATABASE_URL'])}[/] (schema at head)")


def _migrate(step: str, revision: str) -> None:
    """Migrate the schema ``step`` ("upgrade" or "downgrade") to ``revision`` and say where it is."""
    from tis_pipeline.pg import migrate

    env = prepared()
    try:
        getattr(migrate, step)(env["TIS_DATABASE_URL"], revision)
    except DatabaseConfigError as exc:
        fail(str(exc))
    console.print(f"schema at {migrate.current_revision(env['TIS_DATABASE_URL']) or 'base (empty)'}")


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="Alembic revision to upgrade to.")) -> None:
    """Migrate the schema up (to head by default)."""
    _migrate("upgrade", revision)


@db_app.command("downgrade")
def db_downgrade(revision: str = typer.Argument("base", help="Alembic revision to go down to.")) -> None:
    """Migrate the schema down (to base by default: every project table dropped)."""
    _migrate("downgrade", revision)


@db_app.command("status")
def db_status() -> None:
    """Say which database is used, whether it runs, and the schema revision."""
    from tis_pipeline.pg import embedded, migrate
    from tis_pipeline.pg import engine as pg

    configured = os.environ.get("TIS_DATABASE_URL")
    server = embedded.running()
    if configured:
        console.print(f"TIS_DATABASE_URL: {pg.redacted(pg.normalise_url(configured))}")
    else:
        console.print("TIS_DATABASE_URL unset: using the embedded PostgreSQL")
        if server is None:
            console.print(
                f"embedded server: [yellow]not running[/] (data in {embedded.pgdata_dir()}); `tis db up`"
            )
            return
        console.print(f"embedded server: running, pid {server.pid}, socket {server.socket_dir}")
    url = pg.normalise_url(configured) if configured else server.url()
    try:
        pg.check_reachable(url)
    except DatabaseConfigError as exc:
        fail(str(exc))
    console.print(
        f"schema revision: {migrate.current_revision(url) or 'none (run `tis db upgrade`)'} "
        f"(head is {migrate.head_revision()})"
    )
    from tis_pipeline.pg.day_partitions import scratch_tables

    with pg.engine(url).connect() as conn:
        scratch = scratch_tables(conn)
    console.print(f"scratch tables: {len(scratch) or 'none'}")
    for t in scratch:  # a dead owner's tables go when the next ingest or DSI run starts
        owner = (
            "owner unknown (made before owners; dropped by retention once a day old)"
            if t.owner is None
            else f"owner {t.owner} {'alive' if t.alive else '[yellow]dead[/] (dropped by the next run)'}"
        )
        created = t.created.isoformat() if t.created is not None else "?"
        console.print(f"  {t.name}: created {created}, {owner}")


@db_app.command("url")
def db_url(
    show_password: bool = typer.Option(
        False, "--show-password", help="Print the password in clear (masked as *** by default)."
    ),
) -> None:
    """Print the project database's SQLAlchemy URL (starting the embedded server if needed)."""
    from tis_pipeline.pg import engine as pg

    env = prepared()
    url = env["TIS_DATABASE_URL"]
    print(url if show_password else pg.redacted(url))


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded server (a configured TIS_DATABASE_URL is never touched)."""
    from tis_pipeline.pg import embedded

    console.print("embedded server stopped" if embedded.stop() else "embedded server was not running")


@app.command("env")
def env_command() -> None:
    """Print `export` lines for the shell, so that plain `dagster` commands use the same database:
    eval "$(tis env)"."""
    env = prepared()
    for key, value in env.items():
        print(f"export {key}='{value}'")
