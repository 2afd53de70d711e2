"""The ``tis`` entry point: the commands of every module, registered on one Typer app."""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from typing import NoReturn

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
        exit_now(1)
    except SystemExit as exc:  # every command ends here (Typer exits), with its code
        exit_now(exc.code)
    except Exception as exc:  # a bug or an error nobody foresaw: its first line, the traceback on demand
        if options["verbose"]:
            raise
        message = f"{type(exc).__name__}: {first_line(str(exc))}".removesuffix(": ")
        err.print(f"[bold red]error:[/] {escape(message)} (`tis --verbose …` shows the traceback)")
        exit_now(1)
    exit_now(0)


def exit_now(code: int | str | None) -> NoReturn:
    """End the process with ``code`` (as ``sys.exit`` reads it) without the interpreter's teardown.

    Why: after a run the process holds Dagster, pandas, scipy and Great Expectations (~5,000 modules), and
    Python's teardown frees them one by one: 1-1.5 s of every `tis backfill` spent after its last line (more
    on a loaded machine; bench/RESULTS.md). What the teardown would do that matters is done here: the
    ``atexit`` handlers run (logging's flush, ``weakref.finalize``'s, multiprocessing's children, the file
    locks' release), stdout and stderr are flushed. When a thread that is not a daemon is still running,
    Python's own exit waits for it, so then this is ``sys.exit``.
    """
    if isinstance(code, str):  # what sys.exit does with a message: print it, exit 1
        print(code, file=sys.stderr)
        code = 1
    status = 0 if code is None else int(code)
    current = threading.current_thread()
    if any(t is not current and not t.daemon and t.is_alive() for t in threading.enumerate()):
        sys.exit(status)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe: nothing left to say
            stream.flush()
    os._exit(status)
