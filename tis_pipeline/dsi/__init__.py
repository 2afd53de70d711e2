"""DSI: the MicroTape micro-expert ecosystem (logic.py), its database rows (frames.py, store.py), the asset."""

import dagster as dg

from tis_pipeline.dsi.assets import dsi

defs = dg.Definitions(assets=[dsi])
