"""Checks of the market-data domain that read the database again, apart from the assets' own:

* ``source_changes_rolled_up`` on ``market_data_15m`` and ``market_data_1h`` (WARN, not blocking): the days
  whose 1-minute bars were ingested again after the rollup day was built (``rollups.stale_days``) are
  compared with an independent recomputation from the 1-minute bars; it fails while one differs. It runs with
  every run of its rollup (after it, so it sees the healed days) and every hour in ``stale_days_checks_job``,
  so a day corrected with ``--select market_data_1m`` shows up without any rollup running.
* ``expected_symbols_present`` on ``market_data_1m`` (WARN): symbols with bars in the days before a day of the
  run but none on it (``completeness``); a day with no file at all fails it too.
* ``source_files_recognised`` on ``market_data_1m`` (WARN): the findings of ``tis files`` on the bar files
  of the data directory (``readers.survey``, through the ingest's manifest): symbols that differ only by a
  date-like or interval-like token, files of one symbol with overlapping days, names no source profile knows,
  zones a file does not state, unreadable files.
* ``market_data_1m_freshness_checks``: Dagster's time-partition freshness check (the day that closed must be
  materialized by 03:00 UTC) and ``market_data_freshness_sensor`` that evaluates it (on by default).
"""

import warnings
from datetime import date

import dagster as dg
import pandas as pd

from tis_pipeline.market_data import completeness, rollups
from tis_pipeline.market_data.sources import BarSource
from tis_pipeline.quality.checks import table_metadata
from tis_pipeline.resources import PostgresResource

SAMPLE_ROWS = 20


def _rolled_up_result(db: PostgresResource, table: str) -> dg.AssetCheckResult:
    with db.connect() as conn:
        days, mismatches = rollups.changed_source_mismatches(conn, table)
    differing = sorted({pd.Timestamp(t).date().isoformat() for t in mismatches.get("timestamp", [])})
    return dg.AssetCheckResult(
        passed=mismatches.empty,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"{len(differing)} of {len(days)} day(s) whose 1-minute bars changed since {table} was built "
            "differ from them"
            + ("; the next run of the rollup, for any day, rebuilds them" if differing else "")
        ),
        metadata={
            "changed_days": dg.MetadataValue.json([d.isoformat() for d in days]),
            "differing_days": dg.MetadataValue.json(differing),
            "failing_rows": len(mismatches),
            **(
                {"failing_rows_sample": table_metadata(mismatches.head(SAMPLE_ROWS).astype(str))}
                if len(mismatches)
                else {}
            ),
        },
    )


@dg.asset_check(
    asset="market_data_15m",
    name="source_changes_rolled_up",
    description="15-minute bars of days whose 1-minute bars changed since they were built equal the rollup "
    "of the 1-minute bars (recomputed independently)",
)
def market_data_15m_source_changes_rolled_up(db: PostgresResource) -> dg.AssetCheckResult:
    return _rolled_up_result(db, "market_data_15m")


@dg.asset_check(
    asset="market_data_1h",
    name="source_changes_rolled_up",
    description="hourly bars of days whose 1-minute bars changed since they were built equal the rollup "
    "of the 1-minute bars (recomputed independently)",
)
def market_data_1h_source_changes_rolled_up(db: PostgresResource) -> dg.AssetCheckResult:
    return _rolled_up_result(db, "market_data_1h")


def _days_of_run(context: dg.AssetCheckExecutionContext, db: PostgresResource) -> list[date]:
    """The run's partition days, or without partitions (the check run on its own) the last day with bars."""
    op_context = context.op_execution_context
    if op_context.has_partition_key_range:
        window = op_context.partition_time_window
        return [d.date() for d in pd.date_range(window.start, window.end, freq="D", inclusive="left")]
    with db.connect() as conn:
        last = completeness.last_bar_day(conn)
    return [] if last is None else [last]


@dg.asset_check(
    asset="market_data_1m",
    name="expected_symbols_present",
    description=f"every symbol with bars in the {completeness.LOOKBACK_DAYS} days before a day has bars on "
    "it (a day without bars whose weekday had none a week earlier is a closed venue)",
)
def expected_symbols_present(
    context: dg.AssetCheckExecutionContext, db: PostgresResource
) -> dg.AssetCheckResult:
    days = _days_of_run(context, db)
    with db.connect() as conn:
        missing = completeness.missing_in(conn, days)
    by_day = missing.groupby("day")["symbol"].apply(", ".join).to_dict() if len(missing) else {}
    return dg.AssetCheckResult(
        passed=missing.empty,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"{len(missing)} expected (symbol, day) pair(s) without bars in {len(days)} day(s)",
        metadata={
            "days_checked": len(days),
            "lookback_days": completeness.LOOKBACK_DAYS,
            "missing_pairs": len(missing),
            "missing_by_day": dg.MetadataValue.json({d.isoformat(): v for d, v in list(by_day.items())[:50]}),
        },
    )


@dg.asset_check(
    asset="market_data_1m",
    name="source_files_recognised",
    description="the bar files of the data directory are recognised: no symbols that differ only by a date "
    "or interval token, no overlapping files of one symbol, no naming no source profile knows (tis files)",
)
def source_files_recognised(bars: BarSource) -> dg.AssetCheckResult:
    if bars.source != "csv":
        return dg.AssetCheckResult(
            passed=True,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"source {bars.source}: no bar files to judge",
        )
    from tis_pipeline.market_data.readers.survey import survey

    infos = bars.scan()
    result = survey(infos, bars.data_dir)
    table = result.table
    return dg.AssetCheckResult(
        passed=not result.findings,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"{len(result.findings)} finding(s) on {len(table)} bar file(s) (`tis files` lists them)",
        metadata={
            "files": len(table),
            "files_by_profile": dg.MetadataValue.json(table["profile"].value_counts().sort_index().to_dict()),
            "findings": len(result.findings),
            "findings_list": dg.MetadataValue.md(
                "\n".join(f"- {line}" for line in result.findings[:SAMPLE_ROWS]) or "_none_"
            ),
            "flagged_files": table_metadata(table[table["flags"] != ""].head(SAMPLE_ROWS).astype(str))
            if (table["flags"] != "").any()
            else 0,
        },
    )


# The day that closed at 00:00 UTC is ingested at 00:15 (daily_partitioned_schedule): late by 03:00.
# Dagster 1.13 marks these builders superseded by FreshnessPolicy on the asset; they are kept because they
# fit a daily-partitioned asset exactly (the latest partition whose deadline passed must be materialized)
# and their results are ordinary asset checks, with history, in any deployment.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.SupersessionWarning)
    market_data_1m_freshness_checks = dg.build_time_partition_freshness_checks(
        assets=["market_data_1m"],
        deadline_cron="0 3 * * *",
        timezone="UTC",
        severity=dg.AssetCheckSeverity.WARN,
    )
    market_data_freshness_sensor = dg.build_sensor_for_freshness_checks(
        freshness_checks=market_data_1m_freshness_checks,
        name="market_data_freshness_sensor",
        default_status=dg.DefaultSensorStatus.RUNNING,
    )

rollup_checks = [market_data_15m_source_changes_rolled_up, market_data_1h_source_changes_rolled_up]
market_data_checks = [
    *rollup_checks,
    expected_symbols_present,
    source_files_recognised,
    *market_data_1m_freshness_checks,
]
