"""Scale-out: the bar-level assets as one job whose steps run on Celery workers (dagster-celery), DSI split
into symbol shards that run side by side.

The job materializes market_data_1m, its 15m/1h rollups and DSI (``dsi_evidence``, ``anomaly_events`` and
the ``mx_*`` columns), DSI as the sharded asset (``dsi.assets.build_sharded_dsi``): a plan step, one step per
symbol shard (each scores its symbols of the range into the run's day tables: the work a second worker
takes), and a finish step that swaps every day in at once. The trading day, which couples the symbols, is
not in it: it runs once after (``daily_partitioned_job``). Each step becomes a Celery task that a worker
picks up and runs against the job rebuilt from this module. Start workers on every machine with the same
``execution: config:`` block in ``worker.yaml`` as ``celery_config`` below::

    dagster-celery worker start -A dagster_celery.app -y worker.yaml -n w1 [-q QUEUE] -- --concurrency=1

The run and the workers must share one persistent Dagster instance (``DAGSTER_HOME`` with PostgreSQL
storage, ``TIS_DAGSTER_PG_URL``), its storage directory (the shard steps hand their results over there:
``dsi.assets.HandoffIOManager``) and the project's ``TIS_*`` environment. Launch a partition range from
Python::

    job = dg.build_reconstructable_job("tis_pipeline.ops.scale_out", "market_data_celery_job",
                                       reconstructable_kwargs={"queue": "dagster", "shards": 2})
    dg.execute_job(job, instance=instance, tags=range_tags("2024-01-01", "2024-01-31"))  # from
    market_data.partitions

The job is built by a function so that broker, backend, queue and shards can differ per deployment (or per
test); the worker rebuilds it with the same arguments, which travel with each task.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg
from dagster_celery import celery_executor

from tis_pipeline.dsi import checks as dsi_checks
from tis_pipeline.dsi import definitions as dsi
from tis_pipeline.dsi.shards import symbol_shards
from tis_pipeline.market_data import definitions as market_data
from tis_pipeline.resources import shared_resources

if TYPE_CHECKING:  # define_asset_job's return type is public only through this module
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

JOB_NAME = "market_data_celery_job"
MARKET_DATA_ASSETS = ("market_data_1m", "market_data_15m", "market_data_1h")
DSI_ASSETS = ("dsi_evidence", "anomaly_events")
DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
DEFAULT_BACKEND = "redis://127.0.0.1:6379/1"
DEFAULT_QUEUE = "dagster"  # the queue a worker started without -q listens on
DEFAULT_SHARDS = 2  # one per worker of the two this machine runs; TIS_SYMBOL_SHARDS above 1 overrides it


def celery_config(
    broker: str = DEFAULT_BROKER, backend: str = DEFAULT_BACKEND, queue: str = DEFAULT_QUEUE
) -> dict:
    """The celery executor's config; workers need the same broker and backend (and ``-q queue``).

    A worker takes a task only when it has a free process, and acknowledges it when done: the shards of a run
    go to different workers (one prefetching both would score them one after the other), and a task of a
    worker killed mid-step is not lost silently."""
    return {
        "broker": broker,
        "backend": backend,
        "config_source": {
            "task_default_queue": queue,
            "worker_prefetch_multiplier": 1,
            "task_acks_late": True,
        },
    }


def market_data_celery_asset_job(
    broker: str = DEFAULT_BROKER, backend: str = DEFAULT_BACKEND, queue: str = DEFAULT_QUEUE
) -> UnresolvedAssetJobDefinition:
    """The 1m ingest, its 15m/1h rollups and DSI, every step a Celery task (registered in the Definitions,
    where DSI is sharded when ``TIS_SYMBOL_SHARDS`` is above 1)."""
    return dg.define_asset_job(
        JOB_NAME,
        selection=dg.AssetSelection.assets(*MARKET_DATA_ASSETS, *DSI_ASSETS),
        executor_def=celery_executor.configured(celery_config(broker, backend, queue)),
        description="market_data_1m, _15m, _1h and DSI with every step on a Celery worker; DSI in symbol "
        "shards (TIS_SYMBOL_SHARDS).",
    )


def market_data_celery_job(
    broker: str = DEFAULT_BROKER,
    backend: str = DEFAULT_BACKEND,
    queue: str = DEFAULT_QUEUE,
    shards: int | None = None,
) -> dg.JobDefinition:
    """The same job resolved against the market-data Definitions, the sharded DSI (``shards`` symbol shards;
    default ``TIS_SYMBOL_SHARDS`` when above 1, else ``DEFAULT_SHARDS``) and the shared resources, for
    ``build_reconstructable_job`` (a worker rebuilds it from these arguments)."""
    if shards is None:
        shards = symbol_shards() if symbol_shards() > 1 else DEFAULT_SHARDS
    job = market_data_celery_asset_job(broker, backend, queue)
    return dg.Definitions.merge(
        market_data.defs,
        dg.Definitions(
            assets=[dsi.dsi_assets(shards)],
            asset_checks=dsi_checks.dsi_checks,
            resources=shared_resources,
            jobs=[job],
        ),
    ).resolve_job_def(JOB_NAME)
