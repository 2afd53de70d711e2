"""Operations across the domains: the daily partitioned job and its schedule, the hourly stale-days checks,
the bar-file sensor, the dead-run sensor, retention, Dagster storage pruning, and the Celery scale-out job
when the ``scale-out`` extra is installed."""

import importlib.util

import dagster as dg

from tis_pipeline.dsi.shards import symbol_shards
from tis_pipeline.ops.jobs import (
    dagster_storage_prune_job,
    dagster_storage_prune_schedule,
    daily_partitioned_job,
    daily_partitioned_schedule,
    retention_job,
    retention_schedule,
    run_executor,
    stale_days_checks_job,
    stale_days_checks_schedule,
)
from tis_pipeline.ops.run_health import dead_run_sensor
from tis_pipeline.ops.sensors import market_data_files_sensor

# dagster-celery comes with the `scale-out` extra; without it the UI simply has no Celery job
scale_out_jobs = []
if importlib.util.find_spec("dagster_celery") is not None:
    from tis_pipeline.ops.scale_out import market_data_celery_asset_job

    scale_out_jobs.append(market_data_celery_asset_job())

defs = dg.Definitions(
    executor=run_executor(symbol_shards()),
    jobs=[
        daily_partitioned_job,
        stale_days_checks_job,
        retention_job,
        dagster_storage_prune_job,
        *scale_out_jobs,
    ],
    schedules=[
        daily_partitioned_schedule,
        stale_days_checks_schedule,
        retention_schedule,
        dagster_storage_prune_schedule,
    ],
    sensors=[market_data_files_sensor, dead_run_sensor],
)
