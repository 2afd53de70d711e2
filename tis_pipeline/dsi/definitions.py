"""The DSI domain's Definitions: the MicroTape micro-expert ecosystem scoring every bar (``dsi_evidence``,
``anomaly_events`` and the ``mx_*`` columns of ``market_data_1m``)."""

import dagster as dg

from tis_pipeline.dsi.assets import dsi

defs = dg.Definitions(assets=[dsi])
