"""Shared resources: the project's PostgreSQL. The one place that reads the database URL from the
environment."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.process
import os
import threading
from collections.abc import Iterator

import dagster as dg
import sqlalchemy as sa

from tis_pipeline import run_process
from tis_pipeline.pg import engine as pg

log = logging.getLogger(__name__)

_parent_watch_lock = threading.Lock()
_parent_watched_in: int | None = None  # pid of the process whose watcher runs (a forked child has none)


def exit_with_parent() -> None:
    """In a ``multiprocessing`` child (the multiprocess executor's step worker), start once a daemon thread
    that ends this process as soon as its parent is gone. Killing a run's worker would otherwise leave its
    step process running on, holding connections, with the run reading STARTED. PostgreSQL rolls back the
    open transaction of a process that dies, so the database holds the old day or the complete new one.
    Nothing happens in a process that is not a multiprocessing child (the ``tis`` command, a run worker)."""
    global _parent_watched_in  # noqa: PLW0603 - one watcher per process
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    with _parent_watch_lock:
        if _parent_watched_in == os.getpid():
            return
        _parent_watched_in = os.getpid()
    threading.Thread(target=_exit_when_gone, args=(parent,), name="tis-exit-with-parent", daemon=True).start()


def _exit_when_gone(parent: multiprocessing.process.BaseProcess) -> None:
    multiprocessing.connection.wait([parent.sentinel])
    log.error(
        "parent process (pid %s) is gone: step process %s exits now; PostgreSQL rolls back its transaction",
        parent.pid,
        os.getpid(),
    )
    logging.shutdown()
    os._exit(1)


def _plan_steps(context: dg.InitResourceContext) -> list[str] | None:
    """The step keys the run executes (its stored execution plan's; None when the run has no plan stored)."""
    run = context.dagster_run
    if run is None or run.execution_plan_snapshot_id is None:
        return None
    plan = context.instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
    return list(plan.step_keys_to_execute)


class PostgresResource(dg.ConfigurableResource):
    """The project's PostgreSQL (``TIS_DATABASE_URL``; ``tis`` sets it to the embedded server when unset)."""

    url: str

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # every step uses this resource: its setup and teardown are the run's start and end in the process
        # executing the run's steps (``run_process``: the start's heap frozen, heavy imports warmed)
        exit_with_parent()
        run = context.dagster_run
        # a step's own process (multiprocess executor, Celery) runs one step: it imports what that step needs
        own_process = multiprocessing.parent_process() is not None or (
            run is not None and run.job_name in run_process.STEP_PROCESS_JOBS
        )
        run_process.run_started(None if own_process else _plan_steps(context))

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        run_process.run_ended()

    @property
    def engine(self) -> sa.Engine:
        return pg.engine(self.url)

    @contextlib.contextmanager
    def begin(self) -> Iterator[sa.Connection]:
        """One transaction: everything inside commits together or not at all."""
        with self.engine.begin() as conn:
            yield conn

    @contextlib.contextmanager
    def connect(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as conn:
            yield conn


shared_resources = {"db": PostgresResource(url=dg.EnvVar("TIS_DATABASE_URL"))}
