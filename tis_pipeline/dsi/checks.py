"""The DSI domain's staleness check: ``scores_follow_their_bars`` on ``dsi_evidence`` (WARN, not blocking)
fails while a scored day (its evidence, events and the ``mx_*`` columns, ``dsi_day_versions``) is older than
the bars of a day up to it (``market_data_day_versions``; DSI carries state from day to day, so a corrected
day makes every later scored day stale too). The next DSI run for a day at or after the oldest stale one
re-scores from it. It runs with every DSI run and every hour in ``stale_days_checks_job``.
"""

from __future__ import annotations

import dagster as dg
import sqlalchemy as sa

from tis_pipeline.pg.day_partitions import versions_up_to
from tis_pipeline.resources import PostgresResource


def stale_scored_days(conn: sa.Connection) -> list:
    """Days DSI scored before the bars of a day up to them were last written, oldest first."""
    return list(
        conn.execute(
            sa.text(
                "SELECT d.day FROM dsi_day_versions d "
                f"WHERE d.version < {versions_up_to('d.day')} ORDER BY d.day"
            )
        ).scalars()
    )


@dg.asset_check(
    asset="dsi_evidence",
    name="scores_follow_their_bars",
    description="no day of dsi_evidence, anomaly_events or the mx_* columns is older than the bars it was "
    "scored from (day versions)",
)
def scores_follow_their_bars(db: PostgresResource) -> dg.AssetCheckResult:
    with db.connect() as conn:
        stale = stale_scored_days(conn)
    return dg.AssetCheckResult(
        passed=not stale,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"{len(stale)} scored day(s) older than their bars"
            + (f"; the next DSI run for {stale[0]} or later re-scores them" if stale else "")
        ),
        metadata={
            "stale_days": len(stale),
            "stale_days_sample": dg.MetadataValue.json([d.isoformat() for d in stale[:50]]),
        },
    )


dsi_checks = [scores_follow_their_bars]
