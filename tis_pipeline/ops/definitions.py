"""Operations across the domains: the daily partitioned job and its schedule, the bar-file sensor, retention,
Dagster storage pruning."""

import dagster as dg

from tis_pipeline.ops.jobs import (
    daily_partitioned_job,
    daily_partitioned_schedule,
    dagster_storage_prune_job,
    dagster_storage_prune_schedule,
    retention_job,
    retention_schedule,
)
from tis_pipeline.ops.sensors import market_data_files_sensor

defs = dg.Definitions(
    jobs=[daily_partitioned_job, retention_job, dagster_storage_prune_job],
    schedules=[daily_partitioned_schedule, retention_schedule, dagster_storage_prune_schedule],
    sensors=[market_data_files_sensor],
)
