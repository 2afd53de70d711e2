import dagster as dg

from tis_pipeline.ops.jobs import (
    dagster_storage_prune_job,
    dagster_storage_prune_schedule,
    retention_job,
    retention_schedule,
)

defs = dg.Definitions(
    jobs=[retention_job, dagster_storage_prune_job],
    schedules=[retention_schedule, dagster_storage_prune_schedule],
)
