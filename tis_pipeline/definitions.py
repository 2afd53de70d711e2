"""The one Definitions object: the domains' definitions merged with the shared resources."""

import dagster as dg

from tis_pipeline.dsi.definitions import defs as dsi_defs
from tis_pipeline.market_data.definitions import defs as market_data_defs
from tis_pipeline.ops.definitions import defs as ops_defs
from tis_pipeline.resources import shared_resources
from tis_pipeline.trading_day.definitions import defs as trading_day_defs

defs = dg.Definitions.merge(
    market_data_defs,
    dsi_defs,
    trading_day_defs,
    ops_defs,
    dg.Definitions(resources=shared_resources),
)
