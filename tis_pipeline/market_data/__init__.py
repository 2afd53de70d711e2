import dagster as dg

from tis_pipeline.market_data.assets import market_data_1h, market_data_1m, market_data_15m
from tis_pipeline.market_data.resources import BarSource
from tis_pipeline.market_data.schedules import market_data_daily_job, market_data_daily_schedule
from tis_pipeline.market_data.sensors import market_data_files_sensor

defs = dg.Definitions(
    assets=[market_data_1m, market_data_15m, market_data_1h],
    jobs=[market_data_daily_job],
    schedules=[market_data_daily_schedule],
    sensors=[market_data_files_sensor],
    resources={"bars": BarSource()},
)
