"""Shared fixtures: every test session gets its own fresh, migrated PostgreSQL database.

The server is ``TIS_TEST_DATABASE_URL`` when set (CI points it at the machine's PostgreSQL 15), else the
project's embedded server, so that a machine with only Python passes too.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tis_pipeline_tests.support.shared import shared_dir

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")

SHARED_MARKET_DIR = shared_dir() / "data" / "market"


# whether the embedded server was running when this test session began (None: TIS_TEST_DATABASE_URL is set,
# or this is a pytest-xdist worker, whose controller decides)
_embedded_was_running: list[bool] = []


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.environ.get("TIS_TEST_DATABASE_URL") or _is_xdist_worker(session.config):
        return
    from tis_pipeline.pg import embedded

    _embedded_was_running.append(embedded.running() is not None)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop the embedded server if this session started it (with `-n`, one of its workers did), unless another
    client is connected to it: a server that was running before the session is never stopped."""
    if _embedded_was_running != [False]:
        return
    from tis_pipeline.pg import embedded

    server = embedded.running()
    if server is None:
        return
    import gc

    for obj in gc.get_objects():  # this process's own pooled connections are not "another client"
        if isinstance(obj, sa.Engine):
            obj.dispose()
    admin = sa.create_engine(server.url("postgres"), poolclass=sa.pool.NullPool)
    try:
        with admin.connect() as conn:
            others = conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
    finally:
        admin.dispose()
    if others:
        return  # someone else started using it meanwhile: theirs to stop (`tis db stop`)
    embedded.stop()


def _server_url() -> str:
    from tis_pipeline.pg.engine import normalise_url

    explicit = os.environ.get("TIS_TEST_DATABASE_URL")
    if explicit:
        return normalise_url(explicit)
    from tis_pipeline.pg import embedded

    return embedded.start().url("postgres")


def _create_database(server_url: str, prefix: str) -> str:
    from tis_pipeline.pg.engine import with_database

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))  # generated name, not input
    admin.dispose()
    return with_database(server_url, name)


def _drop_database(server_url: str, url: str) -> None:
    from sqlalchemy.engine import make_url

    from tis_pipeline.pg.engine import engine

    name = make_url(url).database
    engine(url).dispose()
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def server_url() -> str:
    return _server_url()


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    """A fresh database migrated to head, shared by the session (tests clean up what they write)."""
    from tis_pipeline.pg import migrate

    url = _create_database(server_url, "tis_test")
    migrate.upgrade(url)
    os.environ["TIS_DATABASE_URL"] = url
    try:
        yield url
    finally:
        _drop_database(server_url, url)


@pytest.fixture
def empty_database_url(server_url: str) -> Iterator[str]:
    """A fresh database with nothing in it, dropped after the test."""
    url = _create_database(server_url, "tis_empty")
    try:
        yield url
    finally:
        _drop_database(server_url, url)


@pytest.fixture
def migrated_database_url(server_url: str) -> Iterator[str]:
    """A fresh database migrated to head for one test, for tests that need a table to themselves."""
    from tis_pipeline.pg import migrate

    url = _create_database(server_url, "tis_fn")
    migrate.upgrade(url)
    try:
        yield url
    finally:
        _drop_database(server_url, url)


@pytest.fixture(scope="session")
def shared_market_dir() -> Path:
    if not SHARED_MARKET_DIR.is_dir():
        pytest.skip(f"the shared real market data is absent: {SHARED_MARKET_DIR} does not exist")
    return SHARED_MARKET_DIR
