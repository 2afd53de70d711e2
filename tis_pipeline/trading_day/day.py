"""One trading day in the contract's order (``docs/ecosystem.md``), and what the asset reports about a range.

Pure: no Dagster, no SQL. The asset reads the day's inputs, calls ``run_day`` and writes what it returns.
"""

from __future__ import annotations

import hashlib
import time

import pandas as pd

from tis_pipeline import plots
from tis_pipeline.trading_day.ecosystem.common import population_to_json
from tis_pipeline.trading_day.ecosystem.founders import founding_population
from tis_pipeline.trading_day.ecosystem.messages import build_messages
from tis_pipeline.trading_day.ecosystem.replicate import replicate
from tis_pipeline.trading_day.ecosystem.sharing import share_intelligence
from tis_pipeline.trading_day.ecosystem.triggers import replication_triggers
from tis_pipeline.trading_day.ecosystem.update import update_population
from tis_pipeline.trading_day.plans.approve import approve_plans
from tis_pipeline.trading_day.plans.execute import simulate_execution
from tis_pipeline.trading_day.plans.generate import generate_plans
from tis_pipeline.trading_day.plans.score import score_modules

# in dependency order: a multi-asset yields its outputs topologically
TABLES = (
    "trading_plans",
    "trading_plan_approvals",
    "module_performance",
    "module_messages",
    "module_intelligence_sharing",
    "module_replication_triggers",
    "module_replications",
    "modules",
)
WRITE_ORDER = (
    "trading_plans",
    "trading_plan_approvals",
    "module_performance",
    "module_messages",
    "module_intelligence_sharing",
    "module_replications",
    "module_replication_triggers",
)
HISTORY_DAYS = 30
CONTEXT_BEFORE = pd.Timedelta(hours=2)


def config_fingerprint() -> str:
    """Which logic made the stored populations: a day continues only from a state of the same logic."""
    founders = founding_population(pd.Timestamp("2000-01-01", tz="UTC"))
    return hashlib.sha256(population_to_json(founders).encode()).hexdigest()[:16]


def run_day(
    day: pd.Timestamp,
    events: pd.DataFrame,
    bars: pd.DataFrame,
    population: pd.DataFrame,
    history: pd.DataFrame,
) -> dict[str, pd.DataFrame]:
    """One trading day, in the contract's order; returns every table's rows and the population at day end."""
    day_end = day + pd.Timedelta(days=1)
    plans = generate_plans(day, events, bars, population)
    plans = plans[plans["timestamp"] < day_end].reset_index(
        drop=True
    )  # an event in the last minute: no time left
    plans, approvals = approve_plans(day, plans, population)
    plans = simulate_execution(day, plans, bars, population)
    performance = score_modules(day, plans, approvals, population, history, bars)
    messages = build_messages(day, plans, approvals, population)
    sharing = share_intelligence(day, performance, population)
    population = update_population(day, population, performance, messages)
    triggers = replication_triggers(day, population, performance, bars)
    started = time.perf_counter_ns()
    replications, triggers, population = replicate(day, triggers, population)
    if len(replications):
        # measured, so the one thing a replay changes (as DSI latency): the cost of creating each child.
        # Validation and initialization are not separate steps here, so their columns stay NULL (not measured)
        spent_ms = max(1, round((time.perf_counter_ns() - started) / 1e6 / len(replications)))
        replications = replications.assign(creation_time_ms=spent_ms)
    return {
        "trading_plans": plans,
        "trading_plan_approvals": approvals,
        "module_performance": performance,
        "module_messages": messages,
        "module_intelligence_sharing": sharing,
        "module_replication_triggers": triggers,
        "module_replications": replications,
        "population": population,
    }


def concat_frames(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The non-empty frames one after the other (an empty frame without columns when there is none)."""
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def plan_summary(plans: pd.DataFrame, population: pd.DataFrame | None = None) -> dict:
    """The range's plans in figures: execution_status counts, total P&L, win rate and (trades, pnl) per
    module, with the module's name and generation from ``population`` beside its id."""
    status = plans["execution_status"].value_counts().to_dict() if len(plans) else {}
    executed = plans[plans["pnl"].notna()] if len(plans) else plans
    by_module = (
        executed.groupby("module_id")["pnl"]
        .agg(["count", "sum"])
        .reset_index()
        .rename(columns={"count": "trades", "sum": "pnl"})
        if len(executed)
        else pd.DataFrame()
    )
    if len(by_module) and population is not None:
        by_module = _named(by_module, population)
    return {
        "execution_status": {k: int(v) for k, v in status.items()},
        "total_pnl": float(executed["pnl"].astype(float).sum()) if len(executed) else 0.0,
        "win_rate": float((executed["pnl"].astype(float) > 0).mean()) if len(executed) else 0.0,
        "pnl_by_module": by_module,
    }


def _named(frame: pd.DataFrame, population: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the module's name and generation (``generational_depth``) after its ``module_id``."""
    modules = population[["module_id", "name", "generational_depth"]].rename(
        columns={"generational_depth": "generation"}
    )
    named = frame.merge(modules, on="module_id", how="left")
    first = ["module_id", "name", "generation"]
    return named[first + [c for c in named.columns if c not in first]]


PLOT_MODULES = 8  # modules drawn in the P&L plot: more make an unreadable legend


def pnl_plot(plans: pd.DataFrame, population: pd.DataFrame, days: str = "") -> str:
    """Markdown with a PNG of each module's cumulative P&L over its executed plans, titled with ``days``
    (the run's range); the ``PLOT_MODULES`` modules of largest final |P&L| are drawn, and a caption says how
    many of how many."""
    done = plans[plans["pnl"].notna()].sort_values("timestamp")
    if done.empty:
        return "_no executed plans_"
    names = dict(zip(population["module_id"], population["name"], strict=True))
    final = done.groupby("module_id", sort=True)["pnl"].sum().astype(float)
    drawn = set(final.abs().sort_values(ascending=False, kind="stable").index[:PLOT_MODULES])
    shown = f"{len(drawn)} of {len(final)} modules with executed plans shown"
    if len(drawn) < len(final):
        shown += " (largest |P&L|)"
    fig, ax = plots.pyplot().subplots(figsize=(8, 3.5))
    for module_id, part in done.groupby("module_id", sort=True):
        if module_id not in drawn:
            continue
        ax.step(
            part["timestamp"],
            part["pnl"].astype(float).cumsum(),
            where="post",
            linewidth=0.8,
            label=names.get(module_id, str(module_id)[:8]),
        )
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.set_ylabel("cumulative P&L")
    title = f"cumulative P&L by module {days}".strip()
    ax.set_title(f"{title}\n{shown}" if len(drawn) < len(final) else title, fontsize=10)
    ax.legend(loc="upper left", fontsize=7)
    fig.autofmt_xdate()
    return f"{plots.markdown_image(plots.figure_png(fig), title)}\n\n{title}: {shown}."
