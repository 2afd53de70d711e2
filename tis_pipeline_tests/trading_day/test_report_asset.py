"""The ecosystem report is its own asset (issue 17 §6): the daily trading-day runs no longer read everything
stored to build it, and what ``ecosystem_report`` shows equals a recomputation from the stored rows (plain SQL
and pandas over module_performance, trading_plans and modules, not the report's code)."""

from __future__ import annotations

import json
import math

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from scipy import stats

from tis_pipeline.pg.engine import engine
from tis_pipeline.trading_day.assets import ecosystem_report
from tis_pipeline.trading_day.plans.score import MIN_SHARPE_DAYS, risk_unit
from tis_pipeline.trading_day.report import SELECTION_DAYS
from tis_pipeline_tests.trading_day.test_assets import TABLES, resources, trading, upstream

pytestmark = pytest.mark.pg
FIRST, LAST = "2024-06-10", "2024-06-12"
GAMMA = 0.5772156649015329


def stored(url: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(daily returns per module and day, executed trades, modules) straight from the tables."""
    with engine(url).connect() as conn:
        modules = pd.read_sql_query(
            sa.text(
                "SELECT module_id::text AS module_id, module_type, generational_depth AS generation, "
                "parent_modules::text AS parents, created_at, learning_patterns::text AS lp FROM modules"
            ),
            conn,
        )
        perf = pd.read_sql_query(
            sa.text(
                'SELECT module_id::text AS module_id, "timestamp", risk_adjusted_returns::float8 AS rar '
                "FROM module_performance"
            ),
            conn,
        )
        trades = pd.read_sql_query(
            sa.text(
                'SELECT module_id::text AS module_id, "timestamp", pnl::float8 AS pnl FROM trading_plans '
                "WHERE pnl IS NOT NULL"
            ),
            conn,
        )
    lp = modules["lp"].map(json.loads)
    modules = modules.assign(
        name=lp.map(lambda x: x["name"]),
        unit=[risk_unit(t, p["genome"]) for t, p in zip(modules["module_type"], lp, strict=True)],
        parent=modules["parents"].map(lambda p: (json.loads(p or "[]") or [None])[0]),
        born=pd.to_datetime(modules["created_at"], utc=True).dt.floor("D"),
    ).drop(columns=["lp", "parents"])
    perf = perf.assign(day=pd.to_datetime(perf["timestamp"], utc=True).dt.floor("D")).merge(
        modules[["module_id", "unit"]], on="module_id"
    )
    perf["ret"] = perf["rar"] * perf["unit"]
    trades["day"] = pd.to_datetime(trades["timestamp"], utc=True).dt.floor("D")
    return perf, trades, modules


def test_the_report_is_its_own_asset_and_equals_the_stored_rows(migrated_database_url):
    url = migrated_database_url
    upstream(url, FIRST, LAST)
    daily = trading(url, FIRST, LAST)
    assert daily.success
    # the daily run carries no report any more (it used to read every stored day on every run)
    for event in daily.get_asset_materialization_events():
        assert not any(k.startswith("report") for k in event.materialization.metadata), event.asset_key
    assert {e.asset_key.to_user_string() for e in daily.get_asset_materialization_events()} == set(TABLES)

    result = dg.materialize([ecosystem_report], resources=resources(url))
    assert result.success
    (event,) = result.get_asset_materialization_events()
    md = {k: v.value for k, v in event.materialization.metadata.items()}

    perf, trades, modules = stored(url)
    assert md["variants_tried"] == len(modules) == md["modules"]
    assert md["range"] == f"{FIRST}..{LAST}"
    assert md["min_sharpe_days"] == MIN_SHARPE_DAYS
    assert (modules["generation"] > 0).any() and len(trades) > 0  # children and trades to report on

    # per module: out of sample = its own days from its birth on; in sample = its parent's SELECTION_DAYS
    # days before the birth (a founder has none)
    table = pd.DataFrame(md["modules_table"]).set_index("module_id")
    assert set(table.index) == set(modules["module_id"])
    for m in modules.itertuples(index=False):
        row = table.loc[m.module_id]
        own_days = perf[(perf["module_id"] == m.module_id) & (perf["day"] >= m.born)]
        own = trades[(trades["module_id"] == m.module_id) & (trades["day"] >= m.born)]
        assert (row["name"], row["generation"], row["born"]) == (
            m.name,
            m.generation,
            m.born.date().isoformat(),
        )
        assert row["out_days"] == len(own_days)
        assert row["out_trades"] == len(own)
        assert row["out_pnl"] == pytest.approx(round(own["pnl"].sum(), 2), abs=1e-9)
        if m.generation == 0:
            assert (row["in_days"], row["in_trades"], row["in_pnl"]) == (0, 0, 0.0)
        else:
            since = m.born - pd.Timedelta(days=SELECTION_DAYS)
            in_days = perf[(perf["module_id"] == m.parent) & perf["day"].between(since, m.born, "left")]
            parent = trades[(trades["module_id"] == m.parent) & trades["day"].between(since, m.born, "left")]
            assert row["in_days"] == len(in_days)
            assert row["in_trades"] == len(parent)
            assert row["in_pnl"] == pytest.approx(round(parent["pnl"].sum(), 2), abs=1e-9)
        # a Sharpe ratio only from its minimum sample (three days are below it)
        for side in ("in", "out"):
            if row[f"{side}_days"] < MIN_SHARPE_DAYS:
                assert row[f"{side}_sharpe"] is None, (m.name, side)
    evolved = table[table["generation"] > 0]
    assert md["evolved_in_sample_pnl"] == pytest.approx(round(evolved["in_pnl"].sum(), 2), abs=1e-9)
    assert md["evolved_out_of_sample_pnl"] == pytest.approx(round(evolved["out_pnl"].sum(), 2), abs=1e-9)

    # founders vs evolved alpha modules on the days both traded
    alpha = modules[modules["module_type"] == "alpha_detector"].set_index("module_id")["generation"]
    at = trades[trades["module_id"].isin(alpha.index)]
    at = at.assign(group=np.where(at["module_id"].map(alpha) > 0, "evolved", "founders"))
    per_day = at.pivot_table(index="day", columns="group", values="pnl", aggfunc=["sum", "count"]).dropna()
    fve = md["founders_vs_evolved"]
    if {"founders", "evolved"} <= set(at["group"]) and len(per_day):
        assert fve["days"] == len(per_day)
        for group in ("founders", "evolved"):
            assert fve[group]["trades"] == int(per_day[("count", group)].sum())
            assert fve[group]["pnl"] == pytest.approx(round(per_day[("sum", group)].sum(), 2), abs=1e-9)
            assert fve[group]["n"] == len(per_day)
    else:
        assert fve == {"days": 0}

    # PSR and DSR of the best alpha modules, deflated by every module ever held (the variants tried)
    g = perf.groupby("module_id")["ret"]
    sr = pd.DataFrame({"n": g.count(), "mean": g.mean(), "sd": g.std(ddof=1), "skew": g.skew()})
    sr["kurt"] = g.apply(lambda r: r.kurt() + 3.0 if len(r) > 3 else 3.0)
    sr = sr[(sr["n"] >= 3) & (sr["sd"] > 0)]
    sr["sr"] = sr["mean"] / sr["sd"]
    variance = sr["sr"].var(ddof=1) if len(sr) > 1 else 0.0
    trials = len(modules)
    sr0 = (
        math.sqrt(variance)
        * ((1 - GAMMA) * stats.norm.ppf(1 - 1 / trials) + GAMMA * stats.norm.ppf(1 - 1 / (trials * math.e)))
        if variance > 0
        else 0.0
    )

    def psr(r: pd.Series, star: float) -> float:
        v = 1 - r["skew"] * r["sr"] + (r["kurt"] - 1) / 4 * r["sr"] ** 2
        return float(stats.norm.cdf((r["sr"] - star) * math.sqrt(r["n"] - 1) / math.sqrt(v)))

    best = sr[sr.index.isin(alpha.index)].sort_values("sr", ascending=False).head(3)
    shown = md["deflated_sharpe_best_table"]
    assert [b["module_id"] for b in shown] == list(best.index)
    assert shown, "a module with 3 daily returns to deflate"
    for b, (_, r) in zip(shown, best.iterrows(), strict=True):
        assert b["trials"] == trials and b["n"] == r["n"]
        assert b["sr_daily"] == pytest.approx(r["sr"], abs=1e-4)
        assert b["sr0"] == pytest.approx(sr0, abs=1e-4)
        assert b["psr"] == pytest.approx(psr(r, 0.0), abs=1e-4)
        assert b["dsr"] == pytest.approx(psr(r, sr0), abs=1e-4)
        assert b["dsr"] <= b["psr"]  # deflating by the variants tried can only lower it

    # the pictures are images in the metadata
    assert (
        md["equity_and_drawdown"].startswith("![") and "data:image/png;base64," in md["equity_and_drawdown"]
    )
    assert md["lineage"].startswith("![") and "data:image/png;base64," in md["lineage"]
