"""Market-data assets: 1-minute bars and their 15-minute and 1-hour rollups, one UTC day per partition."""

from collections.abc import Iterator

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from tis_pipeline.market_data import describe, ingest, rollups
from tis_pipeline.market_data.bars import BAR_COLUMNS
from tis_pipeline.market_data.partitions import daily_partitions
from tis_pipeline.market_data.readers.survey import applied_markdown
from tis_pipeline.market_data.sources import BarSource
from tis_pipeline.market_data.validate import QuarantineShareExceeded
from tis_pipeline.pg.memory import retain_freed_memory
from tis_pipeline.plots import markdown_image
from tis_pipeline.quality.checks import check_results, check_specs_for, table_metadata
from tis_pipeline.quality.rules import rule
from tis_pipeline.resources import PostgresResource
from tis_pipeline.settings import settings


def window_of(context: dg.AssetExecutionContext) -> tuple[pd.Timestamp, pd.Timestamp]:
    window = context.partition_time_window
    return pd.Timestamp(window.start).tz_convert("UTC"), pd.Timestamp(window.end).tz_convert("UTC")


def _rows_in_window(db: PostgresResource, table: str, start: pd.Timestamp, end: pd.Timestamp) -> int:
    """The table's rows in [start, end) after the run, whoever wrote them (``dagster/row_count``: the UI's
    "Row count" of the asset); ``table`` is one of this module's fixed names."""
    with db.engine.connect() as conn:
        return conn.execute(
            sa.text(f'SELECT count(*) FROM {table} WHERE "timestamp" >= :a AND "timestamp" < :b'),
            {"a": start, "b": end},
        ).scalar_one()


def _run_range(start: pd.Timestamp, end: pd.Timestamp) -> str:
    return describe.day_range(start.date(), (end - pd.Timedelta(days=1)).date())


def _plot_md(png: bytes, table: str, plotted: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> str:
    """The rollup's plot with a caption of what it leaves out: the days of the run not drawn, symbols."""
    if not png:
        return "_no rows_"
    alt = describe.plot_title(table, plotted).replace("\n", " ")
    return (
        f"{markdown_image(png, alt)}\n\nDays {describe.days_drawn(plotted)} of the run's "
        f"{_run_range(start, end)}; {describe.symbols_drawn(plotted)}."
    )


def _preview(frame: pd.DataFrame, rows: int = 10) -> dg.MetadataValue:
    return dg.MetadataValue.md(frame.head(rows).to_markdown(index=False) if len(frame) else "_no rows_")


@dg.asset(
    name="market_data_1m",
    group_name="market_data",
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    kinds={"postgres", "pandas"},
    check_specs=check_specs_for("market_data_1m"),
)
def market_data_1m(
    context: dg.AssetExecutionContext, bars: BarSource, db: PostgresResource
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """One-minute OHLCV bars, one row per (symbol, minute the bar opens), UTC; bad rows go to quarantine."""
    retain_freed_memory()
    start, end = window_of(context)
    limit = settings().max_quarantine_share
    try:
        ingested = ingest.build_window(db.engine, bars.read_pieces(start, end), start, end, limit)
    except QuarantineShareExceeded as exceeded:
        raise dg.Failure(
            description=exceeded.description, metadata={"quarantine_by_rule": exceeded.counts}
        ) from None
    deleted, written, quarantined = ingest.write_window(db.engine, ingested, start, end)
    facts = ingested.facts
    yield dg.MaterializeResult(
        metadata={
            # the table's rows for the range (all sources): Dagster's "Row count"; the run's own work beside
            "dagster/row_count": _rows_in_window(db, "market_data_1m", start, end),
            "rows_written_by_run": written,
            "rows_deleted_by_run": deleted,  # this source's earlier rows of the range, replaced by the run
            "range": _run_range(start, end),
            "symbols": ", ".join(facts["symbols"]),
            "first_timestamp": facts["first_timestamp"] or "",
            "last_timestamp": facts["last_timestamp"] or "",
            "missing_minutes_by_symbol": dg.MetadataValue.json(facts["missing_by_symbol"]),
            "quarantined_rows": quarantined,
            "quarantine_by_rule": dg.MetadataValue.json(ingested.counts),
            "rows_without_volume": ingested.rows_without_volume,
            "source": dg.MetadataValue.json(bars.describe()),
            "bar_label": bars.bar_label,
            "notes": dg.MetadataValue.md(describe.bullet_list(ingested.notes)),
            "skipped_files": dg.MetadataValue.md(
                describe.bullet_list(f"`{p}`: {why}" for p, why in ingested.skipped)
            ),
            "unreadable_files": dg.MetadataValue.md(
                describe.bullet_list(f"`{p}`: {why}" for p, why in ingested.unreadable)
            ),
            "rows_outside_partitions": ingested.outside_rows,
            "source_profiles": dg.MetadataValue.md(applied_markdown(ingested.applied)),  # per file read
            "preview": _preview(ingested.preview[BAR_COLUMNS]),
        }
    )
    files = check_results(ingested.files_report, (start, end), gx=False) if ingested.files_report else []
    named = {f.check_name for f in files}  # the bars' report skips the files rule: its result is this one
    yield from [
        *(r for r in check_results(ingested.report, (start, end), gx=False) if r.check_name not in named),
        *files,
    ]


def _rollup(
    context: dg.AssetExecutionContext, db: PostgresResource, table: str
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Rebuild the window and the days whose 1-minute bars changed since they were built (``healed_days``,
    outside the window; at most ``rollups.HEAL_DAYS_PER_RUN``, the rest in ``stale_days_left`` for the next
    runs), check them all against the 1-minute bars."""
    start, end = window_of(context)
    consistency = rule(f"{table}_rollup_consistent")
    rolled = rollups.roll_up(db.engine, table, start, end)
    mismatches = rolled.mismatches
    checked = rolled.written + rolled.healed_written
    yield dg.AssetCheckResult(
        check_name=consistency.name,
        passed=mismatches.empty,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(
            f"{len(mismatches)} of {checked} bars differ from the rollup of their 1-minute source "
            "(recomputed independently of the rollup's SQL)"
        ),
        metadata={
            "partition_start": start.isoformat(),
            "partition_end": end.isoformat(),
            "healed_days": dg.MetadataValue.json([d.isoformat() for d in rolled.healed]),
            "bars_checked": checked,
            "failing_rows": len(mismatches),
            **(
                {"failing_rows_sample": table_metadata(mismatches.head(20).astype(str))}
                if len(mismatches)
                else {}
            ),
        },
    )
    png = rolled.png
    facts = describe.rollup_facts(rolled.plot_frame, rolled.fill)
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": _rows_in_window(db, table, start, end),
            "rows_written_by_run": rolled.written,
            "range": _run_range(start, end),
            "symbols": facts["symbols"],
            "first_timestamp": facts["first_timestamp"],
            "last_timestamp": facts["last_timestamp"],
            "buckets_by_symbol": dg.MetadataValue.md(facts["buckets_by_symbol"]),
            "partial_buckets": facts["partial_buckets"],
            "missing_minutes": facts["missing_minutes"],
            "healed_days": dg.MetadataValue.json([d.isoformat() for d in rolled.healed]),
            "healed_rows": rolled.healed_written,
            "stale_days_left": dg.MetadataValue.json([d.isoformat() for d in rolled.left]),
            "preview": _preview(rolled.plot_frame),
            "plot": dg.MetadataValue.md(_plot_md(png, table, rolled.plot_frame, start, end)),
        }
    )


@dg.asset(
    name="market_data_15m",
    group_name="market_data",
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=["market_data_1m"],
    kinds={"postgres"},
    check_specs=[
        dg.AssetCheckSpec(
            "market_data_15m_rollup_consistent",
            asset="market_data_15m",
            blocking=True,
            description="every bar written (window and healed days) equals the rollup of its 1-minute "
            "source, recomputed independently",
        )
    ],
)
def market_data_15m(
    context: dg.AssetExecutionContext, db: PostgresResource
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """15-minute bars rolled up from market_data_1m: open first, high max, low min, close last, volume sum."""
    yield from _rollup(context, db, "market_data_15m")


@dg.asset(
    name="market_data_1h",
    group_name="market_data",
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=["market_data_15m"],
    kinds={"postgres"},
    check_specs=[
        dg.AssetCheckSpec(
            "market_data_1h_rollup_consistent",
            asset="market_data_1h",
            blocking=True,
            description="every bar written (window and healed days) equals the rollup of its 1-minute "
            "source, recomputed independently",
        )
    ],
)
def market_data_1h(
    context: dg.AssetExecutionContext, db: PostgresResource
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """1-hour bars (from the 15-minute ones, checked against the 1-minute bars): open first, high max, low
    min, close last, volume sum."""
    yield from _rollup(context, db, "market_data_1h")
