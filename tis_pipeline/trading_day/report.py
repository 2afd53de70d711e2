"""The ecosystem report: what each module made in sample and out of sample, founders against evolved modules
on the same days, and the Probabilistic and Deflated Sharpe Ratios of the best modules (Bailey & López de
Prado), counting every variant the population tried. Pure pandas/numpy/scipy (matplotlib and networkx for
the pictures); the ``ecosystem_report`` asset reads the tables and calls ``build_report``.

Daily returns
-------------
A module's daily return is its ``module_performance.risk_adjusted_returns`` times its risk unit
(``plans.score.risk_unit``), i.e. the day's return on capital the score computed. Sharpe ratios are the
mean over the standard deviation (ddof 1) of those daily returns, annualised with ``trading_days`` of the
module's asset class (365 crypto, 252 otherwise), and shown only from ``MIN_SHARPE_DAYS`` returns on, always
beside their sample size ``n``.

In sample and out of sample
---------------------------
A child is born at the end of the day its parent was selected (``created_at`` = that day + 1 day) on the
parent's record of the ``SELECTION_DAYS`` (30) days up to it: those days are the child's genome's *in
sample* (the parent's daily returns, trades and P&L), and the child's own days from its birth on are its *out
of sample*. A founder was selected on nothing: it has no in-sample days, and all its days are out of sample.

Founders vs evolved: the days on which at least one evolved (generation > 0) alpha module and one founder
alpha module traded; per group the daily P&L summed, its trades, total, and Sharpe with n.

Probabilistic and Deflated Sharpe Ratio (daily, not annualised, with skewness ``g3`` and kurtosis ``g4`` of
the module's daily returns over its ``n`` days):
``PSR(SR*) = Phi((SR - SR*) sqrt(n - 1) / sqrt(1 - g3 SR + (g4 - 1) / 4 SR^2))``; ``PSR`` is PSR(0);
``DSR = PSR(SR0)`` with ``SR0 = sqrt(V) ((1 - e) Phi^-1(1 - 1/N) + e Phi^-1(1 - 1/(N exp(1))))``, ``e`` the
Euler-Mascheroni constant, ``N`` every module the population ever held (founders and all their offspring:
every variant tried) and ``V`` the variance of the daily Sharpe ratios of the modules with at least 3 daily
returns. Shown for the ``BEST`` alpha modules of highest daily Sharpe among those with at least 3 returns.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from tis_pipeline import plots
from tis_pipeline.trading_day.plans.score import MIN_SHARPE_DAYS, risk_unit, trading_days
from tis_pipeline.trading_day.population import genome_of

SELECTION_DAYS = 30
BEST = 3
MIN_PSR_DAYS = 3  # skewness and kurtosis need a few returns
EULER_GAMMA = 0.5772156649015329
DAY = pd.Timedelta(days=1)


def daily_returns(performance: pd.DataFrame, population: pd.DataFrame) -> pd.DataFrame:
    """module_id, day (00:00 UTC), ret, asset_class: one row per module_performance row."""
    if performance is None or performance.empty:
        return pd.DataFrame(
            {"module_id": [], "day": pd.to_datetime([], utc=True), "ret": [], "asset_class": []}
        )
    units = {
        str(r.module_id): risk_unit(str(r.module_type), genome_of(r.genome))
        for r in population.itertuples(index=False)
    }
    perf = performance.reset_index(drop=True)
    unit = perf["module_id"].astype(str).map(units).fillna(0.01).to_numpy(dtype="float64")
    return pd.DataFrame(
        {
            "module_id": perf["module_id"].astype(str),
            "day": pd.to_datetime(perf["timestamp"], utc=True).dt.floor("D"),
            "ret": perf["risk_adjusted_returns"].to_numpy(dtype="float64") * unit,
            "asset_class": perf.get("asset_class", pd.Series([None] * len(perf))),
        }
    ).sort_values(["module_id", "day"], kind="stable", ignore_index=True)


def sharpe(returns: np.ndarray, asset_class: str | None) -> float | None:
    """Annualised Sharpe ratio of daily returns (``empyrical.sharpe_ratio``: mean over the standard deviation,
    ddof 1, times sqrt of the asset class's trading days), as ``plans.score`` stores it in
    ``module_performance.sharpe_ratio``; None below ``MIN_SHARPE_DAYS`` or without variance."""
    import empyrical  # empyrical imports pandas-datareader machinery: only when a report is built

    r = np.asarray(returns, dtype="float64")
    r = r[np.isfinite(r)]
    if len(r) < MIN_SHARPE_DAYS:
        return None
    value = float(empyrical.sharpe_ratio(r, annualization=trading_days(asset_class)))
    return round(value, 4) if math.isfinite(value) else None


def max_drawdown(returns: np.ndarray) -> float | None:
    """The largest fall of the compounded equity from a peak (<= 0; ``empyrical.max_drawdown``, as
    ``module_performance.max_drawdown``), None without returns."""
    import empyrical

    r = np.asarray(returns, dtype="float64")
    r = r[np.isfinite(r)]
    if not len(r):
        return None
    return round(float(empyrical.max_drawdown(r)), 6)


def _mode(values: pd.Series) -> str | None:
    values = values.dropna()
    return None if values.empty else str(values.value_counts().sort_index().idxmax())


def _figures(ret: pd.DataFrame, trades: pd.DataFrame, ids: set[str], start: Any, end: Any) -> dict[str, Any]:
    r = ret[ret["module_id"].isin(ids) & (ret["day"] >= start) & (ret["day"] < end)]
    t = trades[trades["module_id"].isin(ids) & (trades["day"] >= start) & (trades["day"] < end)]
    asset = _mode(r["asset_class"])
    return {
        "days": len(r),
        "trades": len(t),
        "pnl": round(float(t["pnl"].sum()), 2),
        "sharpe": sharpe(r["ret"].to_numpy(), asset),
        "max_drawdown": max_drawdown(r["ret"].to_numpy()),
    }


def _trades(plans: pd.DataFrame) -> pd.DataFrame:
    if plans is None or plans.empty:
        return pd.DataFrame({"module_id": [], "day": pd.to_datetime([], utc=True), "pnl": []})
    done = plans[plans["pnl"].notna()]
    return pd.DataFrame(
        {
            "module_id": done["module_id"].astype(str),
            "day": pd.to_datetime(done["timestamp"], utc=True).dt.floor("D"),
            "pnl": done["pnl"].astype("float64"),
        }
    )


def module_table(performance: pd.DataFrame, plans: pd.DataFrame, population: pd.DataFrame) -> pd.DataFrame:
    """One row per module: name, generation, type, born, parent, and in-sample / out-of-sample days, trades,
    pnl, Sharpe (None below the minimum sample) and max drawdown."""
    ret = daily_returns(performance, population)
    trades = _trades(plans)
    rows = []
    never = pd.Timestamp.max.tz_localize("UTC")
    for m in population.sort_values(["generational_depth", "module_id"], kind="stable").itertuples(
        index=False
    ):
        mid = str(m.module_id)
        born = pd.Timestamp(m.created_at).tz_convert("UTC").floor("D")
        parents = [str(p) for p in (m.parent_modules if isinstance(m.parent_modules, (list, tuple)) else [])]
        founder = int(m.generational_depth) == 0 or not parents
        ins = (
            _figures(ret, trades, set(parents[:1]), born - SELECTION_DAYS * DAY, born)
            if not founder
            else {"days": 0, "trades": 0, "pnl": 0.0, "sharpe": None, "max_drawdown": None}
        )
        out = _figures(ret, trades, {mid}, born, never)
        rows.append(
            {
                "module_id": mid,
                "name": str(m.name),
                "generation": int(m.generational_depth),
                "module_type": str(m.module_type),
                "born": born.date().isoformat(),
                "parent": parents[0] if parents else None,
                **{f"in_{k}": v for k, v in ins.items()},
                **{f"out_{k}": v for k, v in out.items()},
            }
        )
    return pd.DataFrame(rows)


def founders_vs_evolved(
    performance: pd.DataFrame, plans: pd.DataFrame, population: pd.DataFrame
) -> dict[str, Any]:
    """The alpha modules' daily P&L, founders against evolved, on the days both traded."""
    alphas = population[population["module_type"] == "alpha_detector"]
    generation = dict(
        zip(alphas["module_id"].astype(str), alphas["generational_depth"].astype(int), strict=True)
    )
    trades = _trades(plans)
    trades = trades[trades["module_id"].isin(generation)]
    trades = trades.assign(group=np.where(trades["module_id"].map(generation) > 0, "evolved", "founders"))
    per_day = trades.groupby(["day", "group"])["pnl"].agg(["sum", "count"]).unstack("group")
    if per_day.empty or not {"evolved", "founders"} <= set(per_day.columns.get_level_values(1)):
        return {"days": 0}
    both = per_day.dropna()
    capital = 1_000_000.0
    out: dict[str, Any] = {"days": len(both), "first_day": both.index.min().date().isoformat()}
    for group in ("founders", "evolved"):
        daily = both[("sum", group)].to_numpy(dtype="float64")
        out[group] = {
            "trades": int(both[("count", group)].sum()),
            "pnl": round(float(daily.sum()), 2),
            "sharpe": sharpe(daily / capital, None),
            "n": len(daily),
        }
    return out


def probabilistic_sharpe(sr: float, n: int, skew: float, kurt: float, sr_star: float = 0.0) -> float:
    """PSR(SR*) of a daily Sharpe ratio ``sr`` over ``n`` returns with skewness and (non-excess) kurtosis."""
    from scipy import stats  # ~1 s to import: only when the weekly report is built

    var = 1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr**2
    if n < 2 or var <= 0:
        return float("nan")
    return float(stats.norm.cdf((sr - sr_star) * math.sqrt(n - 1) / math.sqrt(var)))


def expected_max_sharpe(variance: float, trials: int) -> float:
    """SR0: the Sharpe ratio the best of ``trials`` skill-less variants is expected to reach."""
    from scipy import stats

    if trials < 2 or variance <= 0:
        return 0.0
    return math.sqrt(variance) * (
        (1 - EULER_GAMMA) * stats.norm.ppf(1 - 1 / trials)
        + EULER_GAMMA * stats.norm.ppf(1 - 1 / (trials * math.e))
    )


def deflated_best(performance: pd.DataFrame, population: pd.DataFrame, best: int = BEST) -> pd.DataFrame:
    """The ``best`` alpha modules by daily Sharpe (n >= MIN_PSR_DAYS): n, daily SR, skewness, kurtosis, PSR,
    DSR, and the trials N and SR0 the deflation used."""
    from scipy import stats

    ret = daily_returns(performance, population)
    names = dict(zip(population["module_id"].astype(str), population["name"].astype(str), strict=True))
    types = dict(zip(population["module_id"].astype(str), population["module_type"].astype(str), strict=True))
    gens = dict(
        zip(population["module_id"].astype(str), population["generational_depth"].astype(int), strict=True)
    )
    rows = []
    for mid, part in ret.groupby("module_id", sort=True):
        r = part["ret"].to_numpy(dtype="float64")
        r = r[np.isfinite(r)]
        sd = float(np.std(r, ddof=1)) if len(r) >= MIN_PSR_DAYS else 0.0
        if sd <= 0:
            continue
        rows.append(
            {
                "module_id": mid,
                "name": names.get(mid),
                "generation": gens.get(mid),
                "module_type": types.get(mid),
                "n": len(r),
                "sr_daily": float(np.mean(r)) / sd,
                "skew": float(stats.skew(r, bias=False)) if len(r) > 2 else 0.0,
                "kurtosis": float(stats.kurtosis(r, fisher=False, bias=False)) if len(r) > 3 else 3.0,
            }
        )
    columns = [
        "module_id",
        "name",
        "generation",
        "n",
        "sr_daily",
        "skew",
        "kurtosis",
        "psr",
        "dsr",
        "trials",
        "sr0",
    ]
    if not rows:
        return pd.DataFrame(columns=columns)
    table = pd.DataFrame(rows)
    trials = len(population)
    sr0 = expected_max_sharpe(float(np.var(table["sr_daily"], ddof=1)) if len(table) > 1 else 0.0, trials)
    top = (
        table[table["module_type"] == "alpha_detector"]
        .sort_values(["sr_daily", "module_id"], ascending=[False, True], kind="stable")
        .head(best)
        .reset_index(drop=True)
    )
    top["psr"] = [
        probabilistic_sharpe(r.sr_daily, r.n, r.skew, r.kurtosis) for r in top.itertuples(index=False)
    ]
    top["dsr"] = [
        probabilistic_sharpe(r.sr_daily, r.n, r.skew, r.kurtosis, sr0) for r in top.itertuples(index=False)
    ]
    top["trials"], top["sr0"] = trials, sr0
    return top[columns].round({"sr_daily": 4, "skew": 4, "kurtosis": 4, "psr": 4, "dsr": 4, "sr0": 4})


def equity_plot(plans: pd.DataFrame, population: pd.DataFrame, title: str) -> str:
    """Markdown with a PNG of the cumulative P&L and the drawdown of founders and evolved alpha modules."""
    trades = _trades(plans)
    gen = dict(
        zip(population["module_id"].astype(str), population["generational_depth"].astype(int), strict=True)
    )
    if trades.empty:
        return "_no executed plans_"
    done = plans[plans["pnl"].notna()].sort_values(["timestamp", "plan_id"], kind="stable")
    group = np.where(done["module_id"].astype(str).map(gen).fillna(0) > 0, "evolved", "founders")
    fig, (ax, dd) = plots.pyplot().subplots(2, 1, figsize=(8, 5), sharex=True)
    for name in ("founders", "evolved"):
        part = done[group == name]
        if part.empty:
            continue
        equity = part["pnl"].astype(float).cumsum()
        ax.step(part["timestamp"], equity, where="post", linewidth=0.8, label=name)
        dd.step(part["timestamp"], equity - equity.cummax(), where="post", linewidth=0.8, label=name)
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.set_ylabel("cumulative P&L")
    dd.set_ylabel("drawdown")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", fontsize=7)
    fig.autofmt_xdate()
    return plots.markdown_image(plots.figure_png(fig), title)


def lineage_plot(population: pd.DataFrame) -> str:
    """Markdown with a PNG of the lineage tree (parent -> child), generations top to bottom."""
    import networkx as nx

    graph = nx.DiGraph()
    for m in population.itertuples(index=False):
        graph.add_node(
            str(m.module_id), label=f"{m.name}\ng{int(m.generational_depth)}", gen=int(m.generational_depth)
        )
        for p in m.parent_modules if isinstance(m.parent_modules, (list, tuple)) else []:
            graph.add_edge(str(p), str(m.module_id))
    if not graph.number_of_nodes():
        return "_no modules_"
    by_gen: dict[int, list[str]] = {}
    for node, data in sorted(graph.nodes(data=True)):
        by_gen.setdefault(int(data.get("gen", 0)), []).append(node)
    pos = {n: (i - (len(ns) - 1) / 2, -g) for g, ns in by_gen.items() for i, n in enumerate(ns)}
    fig, ax = plots.pyplot().subplots(figsize=(9, 1.2 + 1.2 * len(by_gen)))
    nx.draw_networkx(
        graph,
        pos,
        ax=ax,
        labels={n: d.get("label", n[:6]) for n, d in graph.nodes(data=True)},
        node_size=300,
        font_size=6,
        arrowsize=8,
        node_color="#cfe2f3",
    )
    ax.set_title("lineage: parents above their children", fontsize=10)
    ax.axis("off")
    return plots.markdown_image(plots.figure_png(fig), "lineage")


def build_report(
    performance: pd.DataFrame, plans: pd.DataFrame, population: pd.DataFrame, span: str = ""
) -> dict[str, Any]:
    """Every figure of the report: the module table, founders vs evolved, the deflated best, and the
    pictures (markdown)."""
    table = module_table(performance, plans, population)
    evolved = table[table["generation"] > 0]
    summary: Mapping[str, Any] = {
        "modules": len(table),
        "variants_tried": len(population),
        "min_sharpe_days": MIN_SHARPE_DAYS,
        "sharpe_in_sample_shown": int(table["in_sharpe"].notna().sum()) if len(table) else 0,
        "sharpe_out_of_sample_shown": int(table["out_sharpe"].notna().sum()) if len(table) else 0,
        "evolved_in_sample_pnl": round(float(evolved["in_pnl"].sum()), 2) if len(evolved) else 0.0,
        "evolved_out_of_sample_pnl": round(float(evolved["out_pnl"].sum()), 2) if len(evolved) else 0.0,
    }
    return {
        "modules": table,
        "summary": dict(summary),
        "founders_vs_evolved": founders_vs_evolved(performance, plans, population),
        "deflated": deflated_best(performance, population),
        "equity_plot": equity_plot(plans, population, f"founders vs evolved alpha modules {span}".strip()),
        "lineage_plot": lineage_plot(population),
    }
