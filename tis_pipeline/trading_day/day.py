"""One trading day in the contract's order (``docs/ecosystem.md``), and what the asset reports about a range.

Pure: no Dagster, no SQL. The asset reads the day's inputs, calls ``run_day`` and writes what it returns.
"""

from __future__ import annotations

import hashlib
import math
import time
from concurrent.futures import Future

import pandas as pd

from tis_pipeline import plots
from tis_pipeline.trading_day.closes import DayCloses
from tis_pipeline.trading_day.ecosystem.common import (
    BASE_LATENCY_MS,
    population_frame,
    population_records,
    population_to_json,
)
from tis_pipeline.trading_day.ecosystem.failures import (
    Rehearsal,
    fail_raising_modules,
    rehearse,
    same_frame,
)
from tis_pipeline.trading_day.ecosystem.founders import founding_population
from tis_pipeline.trading_day.ecosystem.messages import (
    bus_policy,
    carry_messages,
    replication_messages,
    run_bus,
)
from tis_pipeline.trading_day.ecosystem.notes import bar_notes
from tis_pipeline.trading_day.ecosystem.replicate import initialize_child, replicate, validate_child
from tis_pipeline.trading_day.ecosystem.routing import closing_messages, concat_messages, route_plans
from tis_pipeline.trading_day.ecosystem.sharing import share_intelligence
from tis_pipeline.trading_day.ecosystem.triggers import replication_triggers
from tis_pipeline.trading_day.ecosystem.update import update_population
from tis_pipeline.trading_day.plans.approve import approve_plans
from tis_pipeline.trading_day.plans.execute import simulate_execution
from tis_pipeline.trading_day.plans.generate import generate_plans
from tis_pipeline.trading_day.plans.market import DayBars
from tis_pipeline.trading_day.plans.score import score_modules
from tis_pipeline.trading_day.population import ALPHA

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
LOGIC = "bus-4"
CONTEXT_BEFORE = pd.Timedelta(hours=2)


def config_fingerprint() -> str:
    """Which logic made the stored populations: a day continues only from a state of the same logic."""
    founders = founding_population(pd.Timestamp("2000-01-01", tz="UTC"))
    # LOGIC names what the founders' rows cannot show: the day's rules (the bus) changed
    return hashlib.sha256(f"{population_to_json(founders)}|{LOGIC}".encode()).hexdigest()[:16]


def run_day(
    day: pd.Timestamp,
    events: pd.DataFrame,
    bars: pd.DataFrame,
    population: pd.DataFrame,
    history: pd.DataFrame,
    carried: pd.DataFrame | None = None,
    closes: pd.DataFrame | DayCloses | Future[pd.DataFrame] | Future[DayCloses] | None = None,
) -> dict[str, pd.DataFrame]:
    """One trading day, in the contract's order; returns every table's rows and the population at day end.

    ``bars``: the OHLCV bars of ``[day - CONTEXT_BEFORE, day + 1 day)``, whole or only the stretches the
    day's plans read (``store.read_plan_bars``: the same tables, bit for bit); ``closes``: symbol, timestamp,
    close of every symbol over that window (the day's regime, the market regime of the triggers, the bar
    notes), or their figures per symbol (``closes.DayCloses``: the same tables, bit for bit; the asset reads
    and reduces them a piece of symbols at a time), None when ``bars`` is the whole window; or a ``Future``
    of either (the asset reads them on a second connection while the plans are made: first needed by the
    scores). Both are prepared once (``DayBars``) for every stage.

    The day flows through the in-process bus (``ecosystem/messages.py``): a plan is decided only when its
    ``trading_plan`` message reached the decision maker, and executed only when the decision reached the
    trader; the others keep their plan row with the reason in ``execution_notes`` (``_held``). ``carried``:
    the messages the day before left pending (module_messages rows), re-offered today.
    """
    day_end = day + pd.Timedelta(days=1)
    carried = carry_messages(day, carried if carried is not None else pd.DataFrame())
    prepared = DayBars(bars, closes)  # sorted, indexed and costed once for every stage below
    del bars  # the bars as read: the caller hands them over (a day of thousands of symbols: 100 MB or more)
    rehearsal: Rehearsal | None = None
    try:
        plans = generate_plans(day, events, prepared, population)
        # the acting decision maker's and trader's steps, dry; kept: when the bus hands a step the same plans
        # (every message delivered, the usual day), the real pass takes the rehearsal's output, not a rerun
        rehearsal = rehearse(day, plans, prepared, population)
    except Exception:  # a module's step raised: find it, mark it failed, and the day goes on without it
        population = _fail_raising_modules(day, events, prepared, population)
        plans = generate_plans(day, events, prepared, population)
    policy = bus_policy(population, day)  # a failed module receives nothing
    plans = plans[plans["timestamp"] < day_end].reset_index(
        drop=True
    )  # an event in the last minute: no time left
    # the plans travel to the decision maker, the decisions to the trader: only what the bus delivered is
    # decided, then executed (ecosystem/routing.py, the one wiring)
    plans, approvals, messages = route_plans(
        day,
        plans,
        population,
        policy,
        carried,
        decide=lambda reached: (
            (rehearsal.decided, rehearsal.approvals)
            if rehearsal is not None and same_frame(reached, rehearsal.plans)
            else approve_plans(day, reached, population, prepared)
        ),
        execute=lambda reached: (
            rehearsal.executed
            if rehearsal is not None and same_frame(reached, rehearsal.decided)
            else simulate_execution(day, reached, prepared, population)
        ),
    )
    performance = score_modules(day, plans, approvals, population, history, prepared)
    messages = concat_messages(messages, closing_messages(day, plans, population, policy))
    sharing = share_intelligence(day, performance, population)
    population = update_population(day, population, performance, messages, sharing)
    triggers = replication_triggers(day, population, performance, prepared.day_closes(day))
    started = time.perf_counter_ns()
    replications, triggers, population = replicate(day, triggers, population)
    if len(replications):
        # measured, so the one thing a replay changes (as DSI latency): the cost of creating each child
        spent_ms = math.ceil((time.perf_counter_ns() - started) / 1e6 / len(replications))
        replications = replications.assign(creation_time_ms=spent_ms)
        replications, population = _validate_and_initialize(day, replications, population, events, prepared)
    # the children are announced to themselves: born at midnight, they take the signal tomorrow (carried)
    signals = run_bus(day, replication_messages(day, replications, population), bus_policy(population, day))
    messages = concat_messages(messages, signals)
    notes = bar_notes(day, plans, approvals, sharing, population, prepared.day_closes(day))
    return {
        "trading_plans": plans,
        "trading_plan_approvals": approvals,
        "module_performance": performance,
        "module_messages": messages,
        "module_intelligence_sharing": sharing,
        "module_replication_triggers": triggers,
        "module_replications": replications,
        "population": population,
        "bar_notes": notes,
    }


def _fail_raising_modules(
    day: pd.Timestamp, events: pd.DataFrame, bars: pd.DataFrame | DayBars, population: pd.DataFrame
) -> pd.DataFrame:
    """The population with every module whose step raises set to status 'failed' (it stops taking part), the
    error kept in its ``learning_patterns`` (``ecosystem/failures.py``: alphas, the acting decision maker and
    trader)."""
    return fail_raising_modules(day, events, bars, population)


def _validate_and_initialize(
    day: pd.Timestamp,
    replications: pd.DataFrame,
    population: pd.DataFrame,
    events: pd.DataFrame,
    bars: DayBars,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each child validated (``validate_child``, with a dry run of its genome on the day's events for an
    alpha: the plans it alone would make), then initialized (``initialize_child``); both steps timed
    (``validation_time_ms``, ``initialization_time_ms``: wall clock, rounded up to whole ms, like
    ``creation_time_ms`` the columns a replay changes). An invalid child's replication is 'failed' and the
    child 'failed' (it never trades)."""
    recs = population_records(population)
    by_id = {str(r["module_id"]): r for r in recs}
    others = population[population["module_type"] != ALPHA]
    validation, initialization, status = [], [], []
    for rep in replications.to_dict("records"):
        started = time.perf_counter_ns()
        child = by_id[str(rep["child_module_id"])]
        parents = [by_id[p] for p in child["parent_modules"] if p in by_id]
        trial = None
        if child["module_type"] == ALPHA:
            alone = pd.concat([population[population["module_id"] == child["module_id"]], others])
            trial = generate_plans(day, events, bars, alone, text=False)  # validate_child reads numbers
        problems = validate_child(child, parents, trial)
        validation.append(math.ceil((time.perf_counter_ns() - started) / 1e6))
        started = time.perf_counter_ns()
        if problems:
            child.update(status="failed", learning_patterns={"name": child["name"], "invalid": problems})
            initialization.append(None)
            status.append("failed")
            continue
        by_id[child["module_id"]].update(
            initialize_child(child, parents, BASE_LATENCY_MS.get(child["module_type"], 0))
        )
        initialization.append(math.ceil((time.perf_counter_ns() - started) / 1e6))
        status.append("completed")
    replications = replications.assign(
        validation_time_ms=pd.array(validation, dtype="Int64"),
        initialization_time_ms=pd.array(initialization, dtype="Int64"),
        replication_status=status,
    )
    return replications, population_frame(recs)


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
