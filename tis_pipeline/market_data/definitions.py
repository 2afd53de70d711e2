"""The market-data domain's Definitions: the 1-minute ingest, its rollups, their checks (stale rollup days,
expected symbols, freshness and its sensor, Great Expectations' step over the 1-minute rows a run wrote) and
the bar source."""

import dagster as dg
import pandas as pd

from tis_pipeline.market_data.assets import market_data_1h, market_data_1m, market_data_15m
from tis_pipeline.market_data.checks import market_data_checks, market_data_freshness_sensor
from tis_pipeline.market_data.partitions import daily_partitions
from tis_pipeline.market_data.sources import BarSource
from tis_pipeline.market_data.store import BAR_READ_COLUMNS, read_bars
from tis_pipeline.quality.checks import CheckInput, build_checks
from tis_pipeline.quality.rules import rules_for

GX_PREFIX = "gx_"  # the GE step's checks beside the asset's own (pandas) checks of the same rules


def _rows_the_run_wrote(context: dg.AssetCheckExecutionContext) -> CheckInput:
    """The run's window of market_data_1m read back, limited to the symbols the run's materialization wrote
    (another source's symbols in the same days are not this run's); run on its own, the whole window."""
    window = context.partition_time_window
    start, end = pd.Timestamp(window.start), pd.Timestamp(window.end)
    with context.resources.db.connect() as conn:
        frame = read_bars(conn, "market_data_1m", start, end, (*BAR_READ_COLUMNS, "mx_evidence"))
    event = context.instance.get_latest_materialization_event(dg.AssetKey("market_data_1m"))
    materialization = event.asset_materialization if event is not None else None
    if event is not None and event.run_id == context.run.run_id and materialization is not None:
        symbols = materialization.metadata.get("symbols")
        if symbols is not None:
            written = [s for s in str(symbols.value).split(", ") if s]
            frame = frame[frame["symbol"].isin(written)].reset_index(drop=True)
    return CheckInput(frame=frame, partition_range=(start, end))


# GE judges the rows each run of market_data_1m wrote, as a step of that run beside the asset's own step
# (whose pandas checks block): GE inside the ingest's step would halve its rows per second (bench/RESULTS.md).
# Not blocking, so that the rollups do not wait for it; the rules whose columns the table does not keep (the
# files read, values beyond the scale) are judged in the asset's step only.
market_data_1m_gx_checks = build_checks(
    "market_data_1m",
    "market_data_1m",
    _rows_the_run_wrote,
    required_resource_keys={"db"},
    name="market_data_1m_gx_checks",
    partitions_def=daily_partitions,
    rules=[
        r
        for r in rules_for("market_data_1m")
        if r.name not in ("market_data_1m_source_files_readable", "market_data_1m_values_fit_scale")
    ],
    prefix=GX_PREFIX,
    blocking=False,
)

defs = dg.Definitions(
    assets=[market_data_1m, market_data_15m, market_data_1h],
    asset_checks=[*market_data_checks, *market_data_1m_gx_checks],
    sensors=[market_data_freshness_sensor],
    resources={"bars": BarSource()},
)
