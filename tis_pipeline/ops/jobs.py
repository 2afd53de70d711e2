"""Jobs and schedules across the domains: the daily partitioned job (every daily-partitioned asset, in order),
the hourly checks of stale derived days, retention of the project's tables and pruning of Dagster's own
storage."""

import dagster as dg
import pandas as pd

from tis_pipeline.ops import retention
from tis_pipeline.pg.day_partitions import drop_dead_scratch_tables
from tis_pipeline.pg.memory import release_freed_memory
from tis_pipeline.resources import PostgresResource


# After every step of the daily job, the heap it freed goes back to the kernel: the run's steps share one
# process (the in-process executor, `run_executor`), and the next step would otherwise start from the last
# one's high-water mark (pg/memory.py).
@dg.success_hook(name="heap_released_after_step")
def heap_released_after_step(_context: dg.HookContext) -> None:
    release_freed_memory()


@dg.failure_hook(name="heap_released_after_failed_step")
def heap_released_after_failed_step(_context: dg.HookContext) -> None:
    release_freed_memory()


def run_executor(symbol_shards: int) -> dg.ExecutorDefinition:
    """The executor of the project's jobs (the Celery job has its own): every step of a run in the run's
    worker process when DSI is one step (``symbol_shards`` 1), else a process per step, forked from a server
    that imported the definitions and Great Expectations once, so that DSI's shard steps run side by side.

    Why not Dagster's default (a process spawned per step): each step then imports pandas, Dagster, the
    definitions and GE again (2-4 s on two cores) and the day's steps form a chain, so little runs side by
    side; a 50-symbol day from the UI took 39 s this way against 10 s in one process (bench/RESULTS.md)."""
    if symbol_shards <= 1:
        return dg.in_process_executor
    preload = ["tis_pipeline.definitions", "great_expectations"]
    return dg.multiprocess_executor.configured(
        {"start_method": {"forkserver": {"preload_modules": preload}}},
        name="preloaded_multiprocess_executor",
    )


# Every daily-partitioned asset: `tis backfill` runs ranges of it with an asset selection, the schedule runs
# the day that just closed, and the file sensor the days whose files changed.
daily_partitioned_job = dg.define_asset_job(
    "daily_partitioned_job",
    # the ecosystem report (unpartitioned, over every stored day) runs on its own: trading_day/definitions.py
    selection=dg.AssetSelection.groups("market_data", "dsi", "trading_day")
    - dg.AssetSelection.assets("ecosystem_report"),
    hooks={heap_released_after_step, heap_released_after_failed_step},
    description="Ingest 1-minute bars, roll them up to 15 minutes and 1 hour, score them with DSI, and "
    "run the trading day (plans, approvals, execution, performance, the module ecosystem).",
)

# Requests the UTC day that just closed, at 00:15 UTC; rollups run in the same run as their 1-minute source.
daily_partitioned_schedule = dg.build_schedule_from_partitioned_job(
    daily_partitioned_job,
    hour_of_day=0,
    minute_of_hour=15,
    name="daily_partitioned_schedule",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)


# The checks that compare derived days with the bars they were built from (rollups, DSI), every hour on their
# own: a day re-ingested with `--select market_data_1m` shows up without any derived asset running.
stale_days_checks_job = dg.define_asset_job(
    "stale_days_checks_job",
    selection=dg.AssetSelection.checks(
        dg.AssetCheckKey(dg.AssetKey("market_data_15m"), "source_changes_rolled_up"),
        dg.AssetCheckKey(dg.AssetKey("market_data_1h"), "source_changes_rolled_up"),
        dg.AssetCheckKey(dg.AssetKey("dsi_evidence"), "scores_follow_their_bars"),
    ),
    description="Compare the rollup days and the DSI days whose bars changed since they were built.",
    tags={"tis/kind": "housekeeping"},
)

stale_days_checks_schedule = dg.ScheduleDefinition(
    name="stale_days_checks_schedule",
    job=stale_days_checks_job,
    cron_schedule="5 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)


class RetentionConfig(dg.Config):
    as_of: str | None = None  # ISO timestamp; the reference time for tests and replays (default: now)
    # per-table overrides, e.g. {"market_data_1m": "90d"}; RUF012 is moot: pydantic copies field defaults
    periods: dict[str, str] = {}  # noqa: RUF012


@dg.op(
    description="Archive to Parquet (verified) and delete what has aged out of every table, children first."
)
def apply_retention(
    context: dg.OpExecutionContext, config: RetentionConfig, db: PostgresResource
) -> dg.Output:
    as_of = pd.Timestamp(config.as_of or pd.Timestamp.now(tz="UTC"))
    as_of = as_of.tz_localize("UTC") if as_of.tzinfo is None else as_of.tz_convert("UTC")
    with db.begin() as conn:
        outcomes = retention.apply(conn, as_of, config.periods)
        # runs drop dead runs' scratch tables when they start; this catches those left while no run started
        scratch = drop_dead_scratch_tables(conn)
    table = pd.DataFrame(
        [
            {
                "table": o.table,
                "cutoff": o.cutoff or "permanent",
                "archived": o.archived,
                "deleted": o.deleted,
                "kept (referenced)": o.kept_referenced,
                "kept (no rollup yet)": o.kept_without_rollup,
                "files": len(o.files),
            }
            for o in outcomes
        ]
    )
    for o in outcomes:
        context.log.info(f"{o.table}: archived {o.archived}, deleted {o.deleted}, cutoff {o.cutoff}")
    return dg.Output(
        {o.table: o.deleted for o in outcomes},
        metadata={
            "as_of": as_of.isoformat(),
            "tables": dg.MetadataValue.md(table.to_markdown(index=False)),
            "rows_deleted": int(table["deleted"].sum()),
            "archive_files": dg.MetadataValue.json({o.table: o.files for o in outcomes if o.files}),
            "stale_scratch_tables_dropped": dg.MetadataValue.json(scratch),
        },
    )


@dg.job(description="Daily retention (the seed's periods).", tags={"tis/kind": "housekeeping"})
def retention_job() -> None:
    apply_retention()


retention_schedule = dg.ScheduleDefinition(
    name="retention_schedule",
    job=retention_job,
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)


class PruneConfig(dg.Config):
    max_age_days: int = 90


@dg.op(
    description="Delete Dagster runs (and their event records) and the Great Expectations validation results "
    "(and Data Docs pages) older than max_age_days."
)
def prune_dagster_runs(context: dg.OpExecutionContext, config: PruneConfig) -> dg.Output:
    cutoff = pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=config.max_age_days)
    instance = context.instance
    deleted = 0
    while True:
        records = instance.get_run_records(
            filters=dg.RunsFilter(created_before=cutoff.to_pydatetime()), limit=500
        )
        records = [r for r in records if r.dagster_run.run_id != context.run_id]
        if not records:
            break
        for record in records:
            instance.delete_run(record.dagster_run.run_id)
            deleted += 1
    from tis_pipeline.quality.docs import prune_results  # the GX results and pages of the same age go too

    gx_deleted = prune_results(cutoff.to_pydatetime())
    return dg.Output(
        deleted,
        metadata={"runs_deleted": deleted, "gx_results_deleted": gx_deleted, "cutoff": cutoff.isoformat()},
    )


@dg.job(description="Prune Dagster's own run and event storage.", tags={"tis/kind": "housekeeping"})
def dagster_storage_prune_job() -> None:
    prune_dagster_runs()


dagster_storage_prune_schedule = dg.ScheduleDefinition(
    name="dagster_storage_prune_schedule",
    job=dagster_storage_prune_job,
    cron_schedule="30 2 * * 0",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
