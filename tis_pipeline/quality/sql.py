"""The SQL form of the rules that compare tables, for checks that read PostgreSQL instead of a frame.

``rollup_mismatch_sql(rule)`` is the rollup rule of ``market_data_15m`` / ``market_data_1h`` as one query: the
rollup bars in ``[:start, :end)`` that differ from the rollup of their 1-minute source (first open, max high,
min low, last close, summed volume, buckets labelled by their open, UTC) or that have no source bars. The
comparison is exact: both sides are DECIMAL(20,8) in the database, so no tolerance is needed there.
"""

from __future__ import annotations

from tis_pipeline.quality.rules import Rule

_ROLLUP_SQL = """
WITH source AS (
    SELECT symbol,
           date_bin(INTERVAL '{minutes} minutes', "timestamp", TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,
           (array_agg(open ORDER BY "timestamp"))[1] AS open,
           max(high) AS high,
           min(low) AS low,
           (array_agg(close ORDER BY "timestamp" DESC))[1] AS close,
           sum(volume) AS volume,
           count(*) AS source_bars
    FROM {source}
    WHERE "timestamp" >= CAST(:start AS timestamptz)
      AND "timestamp" < CAST(:end AS timestamptz) + INTERVAL '{minutes} minutes'
    GROUP BY 1, 2
)
SELECT r.symbol, r."timestamp",
       r.open, r.high, r.low, r.close, r.volume,
       s.open AS expected_open, s.high AS expected_high, s.low AS expected_low,
       s.close AS expected_close, s.volume AS expected_volume, s.source_bars
FROM {table} AS r
LEFT JOIN source AS s ON s.symbol = r.symbol AND s.bucket = r."timestamp"
WHERE r."timestamp" >= CAST(:start AS timestamptz) AND r."timestamp" < CAST(:end AS timestamptz)
  AND (s.symbol IS NULL
       OR r.open IS DISTINCT FROM s.open OR r.high IS DISTINCT FROM s.high OR r.low IS DISTINCT FROM s.low
       OR r.close IS DISTINCT FROM s.close OR r.volume IS DISTINCT FROM s.volume)
ORDER BY r.symbol, r."timestamp"
"""


def rollup_mismatch_sql(rule: Rule) -> str:
    """A query with bind parameters ``:start`` and ``:end`` returning the rollup bars that fail ``rule``."""
    if rule.kind != "rollup_consistent":
        raise ValueError(f"rule {rule.name} is not a rollup rule")
    # table names and minutes come from the registry (code), never from input
    return _ROLLUP_SQL.format(
        minutes=int(rule.params["minutes"]), source=rule.params["source"], table=rule.table
    ).strip()
