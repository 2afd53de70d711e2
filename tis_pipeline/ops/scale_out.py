"""Scale-out: the market-data assets as one job whose steps run on Celery workers (dagster-celery).

Each step (market_data_1m, market_data_15m, market_data_1h) becomes a Celery task that a worker picks up and
runs against the project's Definitions, which it imports from this module. Start a worker on every machine
with the same ``execution: config:`` block in ``worker.yaml`` as ``celery_config`` below::

    dagster-celery worker start -A dagster_celery.app -y worker.yaml -n w1 [-q QUEUE]

The run and the workers must share one persistent Dagster instance (``DAGSTER_HOME`` with PostgreSQL storage,
``TIS_DAGSTER_PG_URL``) and the project's ``TIS_*`` environment. Launch a partition range from Python::

    job = dg.build_reconstructable_job("tis_pipeline.ops.scale_out", "market_data_celery_job",
                                       reconstructable_kwargs={"queue": "dagster"})
    dg.execute_job(job, instance=instance, tags=range_tags("2024-01-01", "2024-01-31"))  # from
    market_data.partitions

The job is built by a function so that broker, backend and queue can differ per deployment (or per test); the
worker rebuilds it with the same arguments, which travel with each task.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg
from dagster_celery import celery_executor

from tis_pipeline.market_data import definitions as market_data
from tis_pipeline.resources import shared_resources

if TYPE_CHECKING:  # define_asset_job's return type is public only through this module
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

JOB_NAME = "market_data_celery_job"
MARKET_DATA_ASSETS = ("market_data_1m", "market_data_15m", "market_data_1h")
DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
DEFAULT_BACKEND = "redis://127.0.0.1:6379/1"
DEFAULT_QUEUE = "dagster"  # the queue a worker started without -q listens on


def celery_config(
    broker: str = DEFAULT_BROKER, backend: str = DEFAULT_BACKEND, queue: str = DEFAULT_QUEUE
) -> dict:
    """The celery executor's config; workers need the same broker and backend (and ``-q queue``)."""
    return {"broker": broker, "backend": backend, "config_source": {"task_default_queue": queue}}


def market_data_celery_asset_job(
    broker: str = DEFAULT_BROKER, backend: str = DEFAULT_BACKEND, queue: str = DEFAULT_QUEUE
) -> UnresolvedAssetJobDefinition:
    """The 1m ingest and its 15m/1h rollups, every step a Celery task (registered in the Definitions)."""
    return dg.define_asset_job(
        JOB_NAME,
        selection=dg.AssetSelection.assets(*MARKET_DATA_ASSETS),
        executor_def=celery_executor.configured(celery_config(broker, backend, queue)),
        description="market_data_1m, _15m and _1h with every step on a Celery worker.",
    )


def market_data_celery_job(
    broker: str = DEFAULT_BROKER, backend: str = DEFAULT_BACKEND, queue: str = DEFAULT_QUEUE
) -> dg.JobDefinition:
    """The same job resolved against the market-data Definitions and the shared resources, for
    ``build_reconstructable_job`` (a worker rebuilds it from these arguments)."""
    job = market_data_celery_asset_job(broker, backend, queue)
    return dg.Definitions.merge(
        market_data.defs, dg.Definitions(resources=shared_resources, jobs=[job])
    ).resolve_job_def(JOB_NAME)
