"""Time buckets in SQL: the one bucket expression of the rollups, their checks, DSI and retention.

No Dagster here.
"""

from __future__ import annotations

# date_bin's origin: a Monday 00:00 UTC keeps 15-minute and hourly buckets on the clock
BIN_ORIGIN = "2000-01-03 00:00:00+00"


def bucket_sql(minutes: int, column: str = '"timestamp"') -> str:
    """The ``minutes``-long bucket (labelled by its open, binned from ``BIN_ORIGIN``) of ``column``, a column
    reference written by the code."""
    return f"date_bin(INTERVAL '{int(minutes)} minutes', {column}, TIMESTAMPTZ '{BIN_ORIGIN}')"
