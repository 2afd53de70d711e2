"""The DSI domain's Definitions: the MicroTape micro-expert ecosystem scoring every bar (``dsi_evidence``,
``anomaly_events`` and the ``mx_*`` columns of ``market_data_1m``) and the check that its days follow their
bars.

``TIS_SYMBOL_SHARDS`` (default 1) above 1 registers the sharded ``dsi`` (``assets.build_sharded_dsi``: a plan
step, that many symbol-shard steps, a finish step; the same keys, checks and tables) instead of the one-step
asset."""

import dagster as dg

from tis_pipeline.dsi.assets import build_sharded_dsi, dsi
from tis_pipeline.dsi.checks import dsi_checks
from tis_pipeline.dsi.shards import symbol_shards


def dsi_assets(shard_count: int) -> dg.AssetsDefinition:
    """The one-step ``dsi`` for one shard, else the sharded one."""
    return dsi if shard_count <= 1 else build_sharded_dsi(shard_count)


defs = dg.Definitions(assets=[dsi_assets(symbol_shards())], asset_checks=dsi_checks)
