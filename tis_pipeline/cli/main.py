"""The ``tis`` entry point: the commands of every module, registered on one Typer app."""

from __future__ import annotations

import sys

from rich.markup import escape

# importing the command modules registers their commands on `app`
from tis_pipeline.cli import db, dev, runs  # noqa: F401
from tis_pipeline.cli import files as _files  # noqa: F401  (tis files)
from tis_pipeline.cli.app import app, err, options
from tis_pipeline.cli.failures import first_line
from tis_pipeline.pg.embedded import EmbeddedDatabaseError
from tis_pipeline.pg.errors import DatabaseConfigError


def main() -> None:
    """Entry point: every error ends in one line on stderr, not a traceback (`tis --verbose` shows those)."""
    try:
        app()
    except (DatabaseConfigError, EmbeddedDatabaseError) as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        sys.exit(1)
    except Exception as exc:  # a bug or an error nobody foresaw: its first line, the traceback on demand
        if options["verbose"]:
            raise
        message = f"{type(exc).__name__}: {first_line(str(exc))}".removesuffix(": ")
        err.print(f"[bold red]error:[/] {escape(message)} (`tis --verbose …` shows the traceback)")
        sys.exit(1)
