"""The DSI domain's Definitions: the MicroTape micro-expert ecosystem scoring every bar (``dsi_evidence``,
``anomaly_events`` and the ``mx_*`` columns of ``market_data_1m``) and the check that its days follow their
bars."""

import dagster as dg

from tis_pipeline.dsi.assets import dsi
from tis_pipeline.dsi.checks import dsi_checks

defs = dg.Definitions(assets=[dsi], asset_checks=dsi_checks)
