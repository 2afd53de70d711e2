"""The one Definitions object: the domains' definitions merged with the shared resources.

The domains' modules are imported, not their ``defs``: Dagster's loader wants one Definitions at module scope.
"""

import dagster as dg

from tis_pipeline.dsi import definitions as dsi
from tis_pipeline.market_data import definitions as market_data
from tis_pipeline.ops import definitions as ops
from tis_pipeline.resources import shared_resources
from tis_pipeline.trading_day import definitions as trading_day

defs = dg.Definitions.merge(
    market_data.defs,
    dsi.defs,
    trading_day.defs,
    ops.defs,
    dg.Definitions(resources=shared_resources),
)
