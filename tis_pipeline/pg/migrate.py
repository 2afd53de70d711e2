"""Alembic, driven from Python (the ``tis db`` commands and the tests)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from tis_pipeline.pg.engine import engine, redacted
from tis_pipeline.pg.errors import DatabaseConfigError
from tis_pipeline.settings import PROJECT_ROOT

# Dagster's storage keeps its own `alembic_version` table, possibly in the same database: ours is separate.
VERSION_TABLE = "tis_alembic_version"


def alembic_config(url: str) -> Config:
    cfg = Config(str(PROJECT_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    cfg.attributes["url"] = url
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("postgresql+psycopg://x@/x")).get_current_head()


def current_revision(url: str) -> str | None:
    with engine(url).connect() as conn:
        return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()


def _check_known_revision(url: str) -> None:
    current = current_revision(url)
    script = ScriptDirectory.from_config(alembic_config(url))
    if current is not None and current not in {r.revision for r in script.walk_revisions()}:
        raise DatabaseConfigError(
            f"the database at {redacted(url)} is at schema revision {current!r}, "
            "which this checkout does not "
            "know: it was migrated by a newer version of tis-pipeline. Update your checkout, or point "
            "TIS_DATABASE_URL at another database."
        )


def upgrade(url: str, revision: str = "head") -> None:
    _check_known_revision(url)
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    _check_known_revision(url)
    command.downgrade(alembic_config(url), revision)


def project_tables(url: str) -> list[str]:
    with engine(url).connect() as conn:
        return sorted(sa.inspect(conn).get_table_names())
