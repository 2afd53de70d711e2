"""A real Dagster run on an instance configured by the repository's dagster.yaml (PostgreSQL storage).

Guards the known dagster-postgres 0.29 / SQLAlchemy 2.1 pitfall: with the driver left to SQLAlchemy, the event
log fails every run on `NOTIFY run_events`; and that the storage keeps its connections (ops.instance_storage).
"""

import os

import dagster as dg
import pytest
import sqlalchemy as sa

from tis_pipeline.market_data.assets import market_data_1m
from tis_pipeline.market_data.sources import BarSource
from tis_pipeline.pg.engine import engine, with_driver
from tis_pipeline.resources import PostgresResource
from tis_pipeline.settings import PROJECT_ROOT

pytestmark = pytest.mark.pg


@pytest.fixture
def postgres_instance(tmp_path, empty_database_url, monkeypatch):
    (tmp_path / "dagster.yaml").symlink_to(PROJECT_ROOT / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.setenv("TIS_DAGSTER_PG_URL", with_driver(empty_database_url, "psycopg2"))
    with dg.DagsterInstance.get() as instance:
        yield instance, empty_database_url


def _ingest_day(instance: dg.DagsterInstance, database_url: str, day: str) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [market_data_1m],
        instance=instance,
        partition_key=day,
        resources={
            "db": PostgresResource(url=database_url),
            "bars": BarSource(source="synthetic", symbols=["ZZZ"], seed=5),
        },
    )


def test_run_is_recorded_in_postgres_storage(postgres_instance, database_url):
    instance, storage_url = postgres_instance
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
    result = _ingest_day(instance, database_url, "2024-06-03")
    assert result.success
    run = instance.get_run_by_id(result.run_id)
    assert run.status == dg.DagsterRunStatus.SUCCESS
    materialization = instance.get_latest_materialization_event(dg.AssetKey("market_data_1m"))
    assert materialization.asset_materialization.partition == "2024-06-03"
    with engine(storage_url).connect() as conn:
        stored_runs = conn.execute(sa.text("SELECT count(*) FROM runs")).scalar_one()
        events = conn.execute(
            sa.text("SELECT count(*) FROM event_logs WHERE run_id = :r"), {"r": result.run_id}
        ).scalar_one()
    assert stored_runs == 1
    assert events > 5
    assert os.environ["TIS_DAGSTER_PG_URL"].startswith("postgresql+psycopg2://")


def test_a_run_stores_its_events_on_kept_connections(postgres_instance, database_url):
    """dagster-postgres alone opens a server connection per statement: one per event (40+ in this run). The
    project's storage keeps one per storage (and a few more only while threads share it)."""
    instance, storage_url = postgres_instance
    storage_db = sa.make_url(storage_url).database
    opened: list[str] = []

    def count(dbapi_connection, _record) -> None:
        if dbapi_connection.get_dsn_parameters().get("dbname") == storage_db:  # psycopg2: Dagster's driver
            opened.append(storage_db)

    sa.event.listen(sa.engine.Engine, "connect", count)
    try:
        result = _ingest_day(instance, database_url, "2024-06-04")
    finally:
        sa.event.remove(sa.engine.Engine, "connect", count)
    assert result.success
    with engine(storage_url).connect() as conn:
        events = conn.execute(
            sa.text("SELECT count(*) FROM event_logs WHERE run_id = :r"), {"r": result.run_id}
        ).scalar_one()
    assert events >= 40
    assert 1 <= len(opened) <= 6, f"{len(opened)} connections opened for {events} events"
