"""The market-data domain's Definitions: the 1-minute ingest, its rollups and the bar source."""

import dagster as dg

from tis_pipeline.market_data.assets import market_data_1h, market_data_1m, market_data_15m
from tis_pipeline.market_data.sources import BarSource

defs = dg.Definitions(
    assets=[market_data_1m, market_data_15m, market_data_1h],
    resources={"bars": BarSource()},
)
