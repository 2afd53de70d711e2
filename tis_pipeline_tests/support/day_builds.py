"""Day partitions of market_data_1m built and swapped from one frame, for tests and benchmarks (the ingest
builds its days piece by piece: ``market_data.ingest``)."""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa

from tis_pipeline.pg.day_partitions import BuiltDays, DayBuilds, discard, swap_built_days


def build_days(engine: sa.Engine, frame: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> BuiltDays:
    """Build one new table per UTC day of [start, end) that has rows (``DayBuilds`` over one frame).

    Call ``discard`` in a ``finally`` after the transaction of ``swap_built_days``.
    """
    builds = DayBuilds(engine, start, end)
    try:
        builds.add(frame)
    except BaseException:
        builds.abandon()
        raise
    return builds.finish()


def write_days(
    engine: sa.Engine, frame: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp, symbols: list[str]
) -> tuple[int, int]:
    """``build_days`` + ``swap_built_days`` in a transaction of its own + ``discard``; (replaced, written)."""
    built = build_days(engine, frame, start, end)
    try:
        with engine.begin() as conn:
            return swap_built_days(conn, built, start, end, symbols)
    finally:
        discard(engine, built)
