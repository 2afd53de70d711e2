"""Where Great Expectations keeps its state: a file-based GX project under ``TIS_GX_DIR``.

The suites, the validation result of every asset-check run and the Data Docs site live in
``TIS_GX_DIR`` (default ``$TIS_HOME/gx``; GX's own layout below it: ``gx/expectations``,
``gx/uncommitted/validations``, ``gx/uncommitted/data_docs/local_site``; and
``gx/uncommitted/jinja_bytecode``, the Data Docs templates compiled, which the next process loads instead of
compiling them again). Each check run stores its result and renders its own page, and only that page
(``quality.ge``); the site's index is rebuilt by ``tis docs`` and after pruning, so a run does not pay for an
index that grows with every result.

Nothing here imports ``great_expectations`` at module level: the paths and the pruning of old results are
plain files (``tis --help`` and the prune op stay fast); only ``build_index`` loads GX.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from pathlib import Path

from tis_pipeline.settings import tis_home

SITE = "local_site"
DEFAULT_PORT = 8765  # where `tis docs` serves the site; the checks' links point there


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def gx_dir() -> Path:
    """The GX project root (``TIS_GX_DIR``, default ``$TIS_HOME/gx``)."""
    return Path(_env("TIS_GX_DIR", str(tis_home() / "gx"))).resolve()


def docs_port() -> int:
    """The port `tis docs` serves on and the checks' links use (``TIS_GX_DOCS_PORT``, default 8765)."""
    return int(_env("TIS_GX_DOCS_PORT", str(DEFAULT_PORT)))


def uncommitted_dir(root: Path | None = None) -> Path:
    return (root or gx_dir()) / "gx" / "uncommitted"


def site_dir(root: Path | None = None) -> Path:
    return uncommitted_dir(root) / "data_docs" / SITE


def validations_dir(root: Path | None = None) -> Path:
    return uncommitted_dir(root) / "validations"


def page_url(page: Path, root: Path | None = None) -> str:
    """The http URL `tis docs` serves ``page`` (a file of the site) at."""
    relative = page.resolve().relative_to(site_dir(root).resolve()).as_posix()
    return f"http://127.0.0.1:{docs_port()}/{relative}"


def _run_time(name: str) -> datetime | None:
    """GX's run-time folder name (``20261206T220302.431952Z``) as a UTC datetime."""
    for fmt in ("%Y%m%dT%H%M%S.%fZ", "%Y%m%dT%H%M%SZ"):
        try:
            return datetime.strptime(name, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


def stored_results(root: Path | None = None) -> Iterator[tuple[Path, datetime]]:
    """(result file, run time) of every stored validation result."""
    base = validations_dir(root)
    if not base.is_dir():
        return
    for path in base.rglob("*.json"):
        when = _run_time(path.parent.name)
        if when is not None:
            yield path, when


def prune_results(cutoff: datetime, root: Path | None = None) -> int:
    """Delete the validation results run before ``cutoff`` and their Data Docs pages; the number deleted.

    Called by the storage-pruning op (``ops.jobs.prune_dagster_runs``) with the cutoff of the runs it
    deletes, so that a check's link lives as long as its run. Empty folders left behind are removed.
    """
    base, site = validations_dir(root), site_dir(root)
    deleted = 0
    for path, when in list(stored_results(root)):
        if when >= cutoff:
            continue
        relative = path.relative_to(base)
        path.unlink(missing_ok=True)
        (site / "validations" / relative).with_suffix(".html").unlink(missing_ok=True)
        deleted += 1
    for folder in (base, site / "validations"):
        if folder.is_dir():
            for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                if not any(sub.iterdir()):
                    sub.rmdir()
    return deleted


def build_index(root: Path | None = None) -> Path:
    """Rebuild the Data Docs index (and the suites' pages) from what is stored; the index file."""
    from tis_pipeline.quality.ge import context

    ctx = context(root)
    ctx.build_data_docs(site_names=[SITE])
    return site_dir(root) / "index.html"


def clear(root: Path | None = None) -> None:
    """Remove the whole GX project (tests)."""
    shutil.rmtree(root or gx_dir(), ignore_errors=True)


def make_server(port: int | None = None, root: Path | None = None) -> ThreadingHTTPServer:
    """An HTTP server of the Data Docs site on 127.0.0.1 (not started: ``serve_forever()``)."""
    import functools
    from http.server import SimpleHTTPRequestHandler

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(site_dir(root)))
    return ThreadingHTTPServer(("127.0.0.1", docs_port() if port is None else port), handler)
