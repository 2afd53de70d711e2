"""Issue 17 §6: the ecosystem report puts a child's out-of-sample days beside the in-sample days its genome
was selected on, founders beside evolved modules on the same days, and deflates the best Sharpe ratios by
every variant tried."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tis_pipeline.trading_day import report

DAY0 = pd.Timestamp("2024-01-01", tz="UTC")
FOUNDER, CHILD, DESK = "00000000-0000-0000-0000-000000000001", "00000000-0000-0000-0000-000000000002", "d"
BIRTH = DAY0 + pd.Timedelta(days=25)  # selected at the end of day 24, trades from day 25


def _population() -> pd.DataFrame:
    genome = {"style": "momentum", "risk_pct": 0.05}
    return pd.DataFrame(
        [
            {
                "module_id": FOUNDER,
                "module_type": "alpha_detector",
                "generational_depth": 0,
                "created_at": DAY0,
                "parent_modules": [],
                "name": "momentum",
                "genome": genome,
            },
            {
                "module_id": CHILD,
                "module_type": "alpha_detector",
                "generational_depth": 1,
                "created_at": BIRTH,
                "parent_modules": [FOUNDER],
                "name": "momentum~kid",
                "genome": dict(genome, risk_pct=0.1),
            },
            {
                "module_id": DESK,
                "module_type": "decision_maker",
                "generational_depth": 0,
                "created_at": DAY0,
                "parent_modules": [],
                "name": "risk_desk",
                "genome": {"max_daily_loss_pct": 1.0},
            },
        ]
    )


def _returns(seed: int, n: int, mean: float) -> np.ndarray:
    return np.round(np.random.default_rng(seed).normal(mean, 0.002, n), 6)


FOUNDER_RET = _returns(1, 50, 0.0004)  # days 0..49
CHILD_RET = _returns(2, 25, -0.0002)  # days 25..49
DESK_RET = _returns(3, 50, 0.0)


def _performance() -> pd.DataFrame:
    rows = []
    for mid, rets, start, unit in (
        (FOUNDER, FOUNDER_RET, 0, 0.0005),
        (CHILD, CHILD_RET, 25, 0.001),
        (DESK, DESK_RET, 0, 0.01),
    ):
        for k, r in enumerate(rets):
            rows.append(
                {
                    "module_id": mid,
                    "timestamp": DAY0 + pd.Timedelta(days=start + k, hours=23, minutes=59),
                    "risk_adjusted_returns": r / unit,  # as score_modules stores them: R / risk unit
                    "asset_class": "crypto",
                }
            )
    return pd.DataFrame(rows)


def _plans() -> pd.DataFrame:
    rows = []
    for mid, start, days in ((FOUNDER, 0, 50), (CHILD, 25, 25)):
        for k in range(days):
            rows.append(
                {
                    "module_id": mid,
                    "plan_id": f"{mid}-{k}",
                    "timestamp": DAY0 + pd.Timedelta(days=start + k, hours=9),
                    "pnl": 10.0,
                }
            )
    return pd.DataFrame(rows)


def test_in_sample_is_the_parents_selection_window_and_out_of_sample_the_childs_days():
    table = report.module_table(_performance(), _plans(), _population()).set_index("module_id")
    child, founder = table.loc[CHILD], table.loc[FOUNDER]
    # in sample: the parent's 25 days before the birth (all of them inside the 30-day selection window)
    assert (child["in_days"], child["in_trades"], child["in_pnl"]) == (25, 25, 250.0)
    parent_window = FOUNDER_RET[:25]
    expected = np.mean(parent_window) / np.std(parent_window, ddof=1) * math.sqrt(365)
    assert child["in_sharpe"] == pytest.approx(expected, abs=1e-4)
    # out of sample: its own 25 days
    assert (child["out_days"], child["out_trades"], child["out_pnl"]) == (25, 25, 250.0)
    own = CHILD_RET
    assert child["out_sharpe"] == pytest.approx(np.mean(own) / np.std(own, ddof=1) * math.sqrt(365), abs=1e-4)
    # a founder was selected on nothing
    assert founder["in_days"] == 0 and pd.isna(founder["in_sharpe"]) and founder["out_days"] == 50
    assert child["out_max_drawdown"] <= 0


def test_sharpe_needs_its_minimum_sample():
    assert report.sharpe(np.full(19, 0.001) + np.arange(19) * 1e-5, "crypto") is None
    r = np.arange(20) * 1e-4 - 5e-4
    assert report.sharpe(r, "equity") == round(np.mean(r) / np.std(r, ddof=1) * math.sqrt(252), 4)


def test_probabilistic_and_deflated_sharpe_follow_bailey_and_lopez_de_prado():
    sr, n, g3, g4 = 0.1, 250, -0.5, 5.0
    psr = report.probabilistic_sharpe(sr, n, g3, g4)
    assert psr == pytest.approx(
        stats.norm.cdf(sr * math.sqrt(n - 1) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr**2))
    )
    v, trials = 0.01, 100
    sr0 = report.expected_max_sharpe(v, trials)
    e = 0.5772156649015329
    assert sr0 == pytest.approx(
        math.sqrt(v)
        * ((1 - e) * stats.norm.ppf(1 - 1 / trials) + e * stats.norm.ppf(1 - 1 / (trials * math.e)))
    )
    assert report.probabilistic_sharpe(sr, n, g3, g4, sr0) < psr  # more variants tried: less confidence
    best = report.deflated_best(_performance(), _population())
    assert list(best["module_id"]) == [FOUNDER, CHILD]  # alpha modules only, best daily Sharpe first
    assert (best["trials"] == 3).all() and (best["dsr"] <= best["psr"]).all()
    founder = best.iloc[0]
    r = FOUNDER_RET
    assert founder["n"] == 50 and founder["sr_daily"] == pytest.approx(
        np.mean(r) / np.std(r, ddof=1), abs=1e-4
    )


def test_founders_vs_evolved_on_the_same_days_and_the_pictures():
    out = report.founders_vs_evolved(_performance(), _plans(), _population())
    assert out["days"] == 25 and out["first_day"] == BIRTH.date().isoformat()
    assert out["founders"]["trades"] == 25 and out["evolved"]["trades"] == 25
    built = report.build_report(_performance(), _plans(), _population(), "2024")
    assert built["summary"]["variants_tried"] == 3 and built["summary"]["min_sharpe_days"] == 20
    assert built["equity_plot"].startswith("![founders vs evolved alpha modules 2024](data:image/png;base64,")
    assert built["lineage_plot"].startswith("![lineage](data:image/png;base64,")
