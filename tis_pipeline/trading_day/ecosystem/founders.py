"""The founders: the five modules a population starts from, one per specialty."""

from __future__ import annotations

import copy

import pandas as pd

from tis_pipeline.trading_day.ecosystem.common import (
    SEED_DEFAULTS,
    population_frame,
)
from tis_pipeline.trading_day.population import (
    FOUNDERS,
    ecosystem_uuid,
)


def founding_population(start: pd.Timestamp) -> pd.DataFrame:
    """The five founders, born at ``start``.

    Output: the population frame (``POPULATION_COLUMNS``: every ``modules`` column plus ``name``, ``genome``).
    ``module_id = uuid5(ECOSYSTEM_NAMESPACE, "{module_type}:{name}")``: the same in every call and process.
    """
    ts = pd.Timestamp(start)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    rows = []
    for name, module_type, genome in FOUNDERS:
        rows.append(
            {
                **SEED_DEFAULTS,
                "module_id": ecosystem_uuid(f"{module_type}:{name}"),
                "module_type": module_type,
                "module_version": "1.0.0",
                "parent_modules": [],
                "offspring_modules": [],
                "performance_history": [],
                "learning_patterns": {"name": name, "genome": copy.deepcopy(dict(genome))},
                "peer_ratings": {},
                "parent_performance": {},
                "created_at": ts,
                "last_updated": ts,
                "name": name,
                "genome": copy.deepcopy(dict(genome)),
            }
        )
    return population_frame(rows)
