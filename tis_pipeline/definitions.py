"""The one Definitions object: the domains' definitions merged."""

import dagster as dg

from tis_pipeline import dsi, market_data, modules, ops
from tis_pipeline.resources import shared_resources

# every daily-partitioned asset, for ranges run by `tis backfill` and the UI's backfill dialog
daily_partitioned_job = dg.define_asset_job(
    "daily_partitioned_job",
    selection=dg.AssetSelection.groups("market_data", "dsi", "plans", "modules"),
    description="All daily-partitioned assets; `tis backfill` runs ranges of it with an asset selection.",
)

defs = dg.Definitions.merge(
    market_data.defs,
    dsi.defs,
    modules.defs,
    ops.defs,
    dg.Definitions(resources=shared_resources, jobs=[daily_partitioned_job]),
)
