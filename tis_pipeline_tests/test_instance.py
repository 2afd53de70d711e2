"""A real Dagster run on an instance configured by the repository's dagster.yaml (PostgreSQL storage).

Guards the known dagster-postgres 0.29 / SQLAlchemy 2.1 pitfall: with the driver left to SQLAlchemy, the event
log fails every run on `NOTIFY run_events`.
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


def test_run_is_recorded_in_postgres_storage(postgres_instance, database_url):
    instance, storage_url = postgres_instance
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
    result = dg.materialize(
        [market_data_1m],
        instance=instance,
        partition_key="2024-06-03",
        resources={
            "db": PostgresResource(url=database_url),
            "bars": BarSource(source="synthetic", symbols=["ZZZ"], seed=5),
        },
    )
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
