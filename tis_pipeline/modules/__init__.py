"""The module ecosystem and its trading day: founders, plans, approvals, execution, performance, messages,
intelligence sharing, population update, replication triggers and replications.

``logic.py`` is pure (pandas/numpy/networkx in, pandas out); ``tis_pipeline.plans.logic`` holds the plans'
logic; ``assets.py`` runs both day by day as one multi-asset (see ``docs/ecosystem.md`` for why).
"""

import dagster as dg

from tis_pipeline.modules.assets import trading_day

defs = dg.Definitions(assets=[trading_day])
