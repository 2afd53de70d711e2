"""Shared resources: the project's PostgreSQL. The one place that reads the database URL from the environment."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import dagster as dg
import sqlalchemy as sa

from tis_pipeline.pg import engine as pg


class PostgresResource(dg.ConfigurableResource):
    """The project's PostgreSQL (``TIS_DATABASE_URL``; ``tis`` sets it to the embedded server when unset)."""

    url: str

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
