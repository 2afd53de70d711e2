"""DSI (microstructure evidence) scoring: pure numpy/pandas logic, no Dagster and no database.

See :mod:`tis_pipeline.dsi.logic` for the definitions.
"""
