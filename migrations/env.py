"""Alembic environment: migrations own every table the project writes."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from tis_pipeline.pg.engine import normalise_url, project_url
from tis_pipeline.pg.migrate import VERSION_TABLE

config = context.config
url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url") or project_url()


def run_migrations_offline() -> None:
    context.configure(url=normalise_url(url), literal_binds=True, version_table=VERSION_TABLE)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is not None:
        context.configure(connection=connectable, version_table=VERSION_TABLE, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(normalise_url(url), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, version_table=VERSION_TABLE, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
