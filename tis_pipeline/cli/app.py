"""The ``tis`` command's Typer apps, its consoles and what every command shares: the global options, one-line
failures, a prepared and migrated database."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from tis_pipeline.pg.embedded import EmbeddedDatabaseError
from tis_pipeline.pg.errors import DatabaseConfigError

if TYPE_CHECKING:
    pass


# Dagster marks BackfillPolicy and friends beta; the CLI's users need not see that on every command
warnings.filterwarnings("ignore", message=".*is currently in (beta|preview).*")
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")

app = typer.Typer(
    help="tis-pipeline: the Trading Intelligence System on Dagster.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="The project's PostgreSQL: start, migrate, inspect, stop.", no_args_is_help=True)
app.add_typer(db_app, name="db")
archive_app = typer.Typer(help="Parquet archives written by the retention job.", no_args_is_help=True)
app.add_typer(archive_app, name="archive")
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


# set by the global --verbose option (`_global_options`): tracebacks and Dagster's own log of failed runs
options = {"verbose": False}


@app.callback()
def _global_options(
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="On failure, show tracebacks and Dagster's log of the run too."
    ),
) -> None:
    options["verbose"] = verbose


def fail(message: str) -> NoReturn:
    err.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code=1)


def prepared() -> dict[str, str]:
    from tis_pipeline import environment
    from tis_pipeline.pg import engine as pg

    try:
        env = environment.prepare()
        pg.check_reachable(env["TIS_DATABASE_URL"])
        return env
    except (DatabaseConfigError, EmbeddedDatabaseError) as exc:
        fail(str(exc))
    raise AssertionError("unreachable")


def migrate_schema(url: str) -> None:
    from tis_pipeline.pg import migrate

    try:
        migrate.upgrade(url)
    except DatabaseConfigError as exc:
        fail(str(exc))
