"""Every trading-day test charges the cost model's documented defaults, whatever the environment says."""

import pytest

from tis_pipeline.trading_day.plans import costs


@pytest.fixture(autouse=True)
def default_costs(monkeypatch):
    """The documented cost defaults, whatever the environment says (costs are charged, not replayed)."""
    for name in [
        "TIS_COST_SPREAD_FLOOR_BPS",
        "TIS_COST_IMPACT_COEF",
        "TIS_COST_UNKNOWN_VOLUME_IMPACT_BPS",
        *(f"TIS_COST_FEE_BPS_{k.upper()}" for k in costs.ASSET_CLASSES),
    ]:
        monkeypatch.delenv(name, raising=False)
