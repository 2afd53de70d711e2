"""The trading day's Definitions: the module ecosystem and its plans, approvals, execution, performance,
messages, intelligence sharing, population update, replication triggers and replications, run day by day as
one multi-asset (see ``docs/ecosystem.md`` for why)."""

import dagster as dg

from tis_pipeline.trading_day.assets import trading_day

defs = dg.Definitions(assets=[trading_day])
