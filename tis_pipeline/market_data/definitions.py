"""The market-data domain's Definitions: the 1-minute ingest, its rollups, their checks (stale rollup days,
expected symbols, freshness and its sensor) and the bar source."""

import dagster as dg

from tis_pipeline.market_data.assets import market_data_1h, market_data_1m, market_data_15m
from tis_pipeline.market_data.checks import market_data_checks, market_data_freshness_sensor
from tis_pipeline.market_data.sources import BarSource

defs = dg.Definitions(
    assets=[market_data_1m, market_data_15m, market_data_1h],
    asset_checks=market_data_checks,
    sensors=[market_data_freshness_sensor],
    resources={"bars": BarSource()},
)
