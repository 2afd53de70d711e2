"""Every 1-minute file of the shared real data set through the real ingest, rollups checked against pandas."""

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from tis_pipeline.market_data import validate
from tis_pipeline.market_data.assets import market_data_1h, market_data_1m, market_data_15m
from tis_pipeline.market_data.bars import normalise_bars
from tis_pipeline.market_data.partitions import range_tags
from tis_pipeline.market_data.readers import catalog
from tis_pipeline.market_data.sources import BarSource
from tis_pipeline.pg.engine import engine
from tis_pipeline.resources import PostgresResource

pytestmark = [pytest.mark.pg, pytest.mark.slow]
FIRST, LAST = (
    "2015-01-01",
    "2022-02-01",
)  # the partitions that hold shared data (TIS_PARTITION_START 2015-01-01)


def stored(url, table):
    with engine(url).connect() as conn:
        return pd.read_sql(
            sa.text(
                'SELECT symbol, "timestamp", open::float8, high::float8, low::float8, close::float8, '
                "volume::float8 "
                f'FROM {table} ORDER BY symbol, "timestamp"'
            ),
            conn,
        )


def test_shared_files_load_and_rollups_match_pandas_resample(
    migrated_database_url, shared_market_dir, tmp_path
):
    url = migrated_database_url
    source = BarSource(
        source="csv", data_dir=str(shared_market_dir), tz="UTC", manifest_path=str(tmp_path / "m.json")
    )
    result = dg.materialize(
        [market_data_1m, market_data_15m, market_data_1h],
        resources={"db": PostgresResource(url=url), "bars": source},
        tags=range_tags(FIRST, LAST),
    )
    assert result.success
    skipped = result.asset_materializations_for_node("market_data_1m")[0].metadata["skipped_files"].value
    for name, interval in (("ETH_BTC-5m.feather", "5m"), ("EURUSD.csv", "1h"), ("yahoofinance-SPY", "1d")):
        assert name in skipped and interval in skipped
    # the independent expectation: the readers' rows in the window, resampled by pandas
    read = catalog.read_bar_files(
        shared_market_dir,
        pd.Timestamp(FIRST, tz="UTC"),
        pd.Timestamp("2022-02-02", tz="UTC"),
        manifest_path=str(tmp_path / "m.json"),
    )
    bars = validate.validate_bars(normalise_bars(read.frame)).clean
    one_minute = stored(url, "market_data_1m")
    assert len(one_minute) == len(bars)
    counts = one_minute.groupby(["symbol", one_minute["timestamp"].dt.date]).size()
    expected_counts = bars.groupby(["symbol", bars["timestamp"].dt.date]).size()
    assert counts.to_dict() == expected_counts.to_dict()
    # files whose day is inside the partitions, each with its own shape
    assert {"BTCUSD", "BTC-PERP", "UNITTEST_BTC", "XRP_ETH", "SP500"} <= set(one_minute["symbol"])
    for table, rule in (("market_data_15m", "15min"), ("market_data_1h", "1h")):
        expected = (
            bars.set_index("timestamp")
            .groupby("symbol")
            .resample(rule)
            .agg({"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})
            .dropna(subset=["open"])
            .reset_index()
        )
        got = stored(url, table)
        assert len(got) == len(expected), table
        assert (got["symbol"].to_numpy() == expected["symbol"].to_numpy()).all()
        assert (got["timestamp"].to_numpy() == expected["timestamp"].to_numpy()).all()
        for column in ("open", "high", "low", "close"):
            np.testing.assert_allclose(got[column].to_numpy(), expected[column].to_numpy(), rtol=0, atol=5e-9)
        np.testing.assert_allclose(
            got["volume"].to_numpy(), expected["volume"].to_numpy(), rtol=1e-12, atol=5e-8
        )
    checks = result.get_asset_check_evaluations()
    assert all(c.passed for c in checks if c.severity == dg.AssetCheckSeverity.ERROR)
