import dagster as dg

from tis_pipeline.settings import settings

# UTC days: bars are stored in UTC whatever the venue
daily_partitions = dg.DailyPartitionsDefinition(start_date=settings().partition_start, timezone="UTC")

# the tags of a single-run backfill over a partition range; Dagster keeps these names in a private module
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def range_tags(first: str, last: str) -> dict[str, str]:
    """Tags of one run over the partitions ``first``..``last`` (keys, both included)."""
    return {RANGE_START: first, RANGE_END: last}
