import dagster as dg

market_data_daily_job = dg.define_asset_job(
    "market_data_daily_job",
    selection=dg.AssetSelection.groups("market_data", "dsi", "plans", "modules"),
    description="Ingest a day of 1-minute bars, roll it up to 15 minutes and 1 hour, score it with DSI, and run "
                "the trading day (plans, approvals, execution, performance, the module ecosystem).",
)

# Requests the UTC day that just closed, at 00:15 UTC; rollups run in the same run as their 1-minute source.
market_data_daily_schedule = dg.build_schedule_from_partitioned_job(
    market_data_daily_job, hour_of_day=0, minute_of_hour=15, name="market_data_daily_schedule",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
