"""The trading day's Definitions: the module ecosystem and its plans, approvals, execution, performance,
messages, intelligence sharing, population update, replication triggers and replications, run day by day as
one multi-asset (see ``docs/ecosystem.md`` for why); and the ecosystem report, an unpartitioned asset over
every stored day, materialized on demand (the UI's Materialize) or each Monday by
``ecosystem_report_schedule`` (running by default: it reads the three tables once a week, not on every daily
run)."""

import dagster as dg

from tis_pipeline.trading_day.assets import ecosystem_report, trading_day

ecosystem_report_job = dg.define_asset_job(
    "ecosystem_report_job",
    selection=dg.AssetSelection.assets(ecosystem_report),
    description="The ecosystem report over every stored day: in sample vs out of sample per module, founders "
    "vs evolved, PSR/DSR with the number of variants tried, equity, drawdown and lineage plots.",
)

# Mondays at 03:30 UTC: after the daily run of Sunday (00:15) and retention (02:00)
ecosystem_report_schedule = dg.ScheduleDefinition(
    name="ecosystem_report_schedule",
    job=ecosystem_report_job,
    cron_schedule="30 3 * * 1",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

defs = dg.Definitions(
    assets=[trading_day, ecosystem_report],
    jobs=[ecosystem_report_job],
    schedules=[ecosystem_report_schedule],
)
