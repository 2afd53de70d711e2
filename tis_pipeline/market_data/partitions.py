import dagster as dg

from tis_pipeline.settings import settings

# UTC days: bars are stored in UTC whatever the venue
daily_partitions = dg.DailyPartitionsDefinition(start_date=settings().partition_start, timezone="UTC")
