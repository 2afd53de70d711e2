"""The trading day: plans, approvals, simulated execution, module performance and the module ecosystem.

One multi-asset, because the day is a loop (modules → plans → performance → replication → modules) that an
asset graph cannot hold as separate assets without breaking "a range run equals day-by-day runs": see
``docs/ecosystem.md``. Each day of the range starts from the population stored at the end of the day before.
"""

import hashlib
import time

import dagster as dg
import pandas as pd

from tis_pipeline import plots
from tis_pipeline.market_data import store as bar_store
from tis_pipeline.market_data.partitions import daily_partitions
from tis_pipeline.trading_day import ecosystem
from tis_pipeline.trading_day import store
from tis_pipeline.trading_day import plans as plans_logic
from tis_pipeline.quality.checks import check_specs_for, frame_check_results
from tis_pipeline.resources import PostgresResource

# in dependency order: a multi-asset yields its outputs topologically
TABLES = ("trading_plans", "trading_plan_approvals", "module_performance", "module_messages",
          "module_intelligence_sharing", "module_replication_triggers", "module_replications", "modules")
_DESCRIPTIONS = {
    "trading_plans": "One row per plan an alpha module made from an anomaly event, with its simulated execution.",
    "trading_plan_approvals": "One row per decision of the decision-maker module on a plan.",
    "module_performance": "One row per module and UTC day: its scores and trading performance.",
    "modules": "One row per module of the ecosystem (founders and their offspring), in its latest state.",
    "module_messages": "One row per message between modules (plans, execution feedback, broadcasts).",
    "module_intelligence_sharing": "One row per piece of intelligence a module shared.",
    "module_replication_triggers": "One row per condition that called for a replication.",
    "module_replications": "One row per replication: parent, child, trigger, what was inherited and mutated.",
}
_DEPS = {
    "trading_plans": ["anomaly_events", "dsi_evidence", "market_data_1m"],
    "trading_plan_approvals": ["trading_plans"],
    "module_performance": ["trading_plans", "trading_plan_approvals"],
    "modules": ["module_performance", "module_replications"],
    "module_messages": ["trading_plans", "trading_plan_approvals"],
    "module_intelligence_sharing": ["module_performance"],
    "module_replication_triggers": ["module_performance"],
    "module_replications": ["module_replication_triggers"],
}
WRITE_ORDER = ("trading_plans", "trading_plan_approvals", "module_performance", "module_messages",
               "module_intelligence_sharing", "module_replications", "module_replication_triggers")
_HISTORY_DAYS = 30
_CONTEXT_BEFORE = pd.Timedelta(hours=2)


def config_fingerprint() -> str:
    """Which logic made the stored populations: a day continues only from a state of the same logic."""
    founders = ecosystem.founding_population(pd.Timestamp("2000-01-01", tz="UTC"))
    return hashlib.sha256(ecosystem.population_to_json(founders).encode()).hexdigest()[:16]


def run_day(day: pd.Timestamp, events: pd.DataFrame, bars: pd.DataFrame, population: pd.DataFrame,
            history: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """One trading day, in the contract's order; returns every table's rows and the population at day end."""
    day_end = day + pd.Timedelta(days=1)
    plans = plans_logic.generate_plans(day, events, bars, population)
    plans = plans[plans["timestamp"] < day_end].reset_index(drop=True)  # an event in the last minute: no time left
    plans, approvals = plans_logic.approve_plans(day, plans, population)
    plans = plans_logic.simulate_execution(day, plans, bars, population)
    performance = plans_logic.score_modules(day, plans, approvals, population, history, bars)
    messages = ecosystem.build_messages(day, plans, approvals, population)
    sharing = ecosystem.share_intelligence(day, performance, population)
    population = ecosystem.update_population(day, population, performance, messages)
    triggers = ecosystem.replication_triggers(day, population, performance, bars)
    started = time.perf_counter_ns()
    replications, triggers, population = ecosystem.replicate(day, triggers, population)
    if len(replications):
        # measured, so the one thing a replay changes (as DSI latency): the cost of creating each child.
        # Validation and initialization are not separate steps here, so their columns stay NULL (not measured)
        spent_ms = max(1, round((time.perf_counter_ns() - started) / 1e6 / len(replications)))
        replications = replications.assign(creation_time_ms=spent_ms)
    return {"trading_plans": plans, "trading_plan_approvals": approvals, "module_performance": performance,
            "module_messages": messages, "module_intelligence_sharing": sharing,
            "module_replication_triggers": triggers, "module_replications": replications, "population": population}


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _pnl_plot(plans: pd.DataFrame, population: pd.DataFrame) -> str:
    done = plans[plans["pnl"].notna()].sort_values("timestamp")
    if done.empty:
        return "_no executed plans_"
    names = dict(zip(population["module_id"], population["name"], strict=True))
    fig, ax = plots.pyplot().subplots(figsize=(8, 3.5))
    for module_id, part in done.groupby("module_id", sort=True):
        ax.step(part["timestamp"], part["pnl"].astype(float).cumsum(), where="post", linewidth=0.8,
                label=names.get(module_id, str(module_id)[:8]))
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.set_ylabel("cumulative P&L")
    ax.legend(loc="upper left", fontsize=7)
    fig.autofmt_xdate()
    return plots.markdown_image(plots.figure_png(fig), "pnl")


def _md(frame: pd.DataFrame, rows: int = 10) -> dg.MetadataValue:
    return dg.MetadataValue.md(frame.head(rows).to_markdown(index=False) if len(frame) else "_none_")


@dg.multi_asset(
    name="trading_day",
    specs=[dg.AssetSpec(t, deps=_DEPS[t], group_name="trading_day",
                        kinds={"postgres", "pandas"}, description=_DESCRIPTIONS[t]) for t in TABLES],
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    check_specs=[spec for t in TABLES for spec in check_specs_for(t)],
)
def trading_day(context: dg.AssetExecutionContext, db: PostgresResource):
    """Walks the range day by day: plans from anomaly events, approvals, honest execution, performance, the
    module ecosystem's messages, sharing, triggers and replications; everything of the range in one transaction.
    """
    window = context.partition_time_window
    start, end = pd.Timestamp(window.start).tz_convert("UTC"), pd.Timestamp(window.end).tz_convert("UTC")
    fingerprint = config_fingerprint()
    out: dict[str, list[pd.DataFrame]] = {t: [] for t in TABLES if t != "modules"}
    states, population = [], None
    with db.begin() as conn:
        previous = store.previous_population(conn, start, fingerprint)
        if previous is not None:
            begin, population = previous[0] + pd.Timedelta(days=1), ecosystem.population_from_json(previous[1])
        else:
            first = store.first_event_day(conn)
            begin = min(first, start) if first is not None else start
        if begin < start:
            context.log.info(f"no ecosystem state for the day before {start.date()}: running from {begin.date()}")
        days = bar_store.days_with_bars(conn, "market_data_1h", begin, end)  # an hour per day with bars: cheaper
        if population is None:
            population = ecosystem.founding_population(days[0] if days else start)
        cleared = store.clear_window(conn, begin, end)
        written = dict.fromkeys(TABLES, 0)
        for day in days:
            events = store.read_events(conn, day, day + pd.Timedelta(days=1))
            bars = bar_store.read_bars(conn, "market_data_1m", day - _CONTEXT_BEFORE, day + pd.Timedelta(days=1))
            # history as stored, written day by day below: a range run sees what day-by-day runs see
            history = store.read_history(conn, day - pd.Timedelta(days=_HISTORY_DAYS), day)
            rows = run_day(day, events, bars, population, history)
            # the state goes through its stored form every day, for the same reason
            text = ecosystem.population_to_json(rows.pop("population"))
            population = ecosystem.population_from_json(text)
            states.append({"day": day.date(), "config_fingerprint": fingerprint, "modules": len(population),
                           "population": text})
            # parents before children: modules (children of the day included), plans, approvals, ...
            store.upsert_modules(conn, ecosystem.population_rows(population))
            for table in WRITE_ORDER:
                written[table] += store.write_rows(conn, table, rows[table])
                out[table].append(rows[table])
        written["modules"] = len(population) if days else 0
        frames = {t: _concat(f) for t, f in out.items()}
        linked_events, linked_evidence = store.link_plans(conn, frames["trading_plans"])
        store.save_populations(conn, states)

    plans = frames["trading_plans"]
    shared = {"range": f"{begin.date()}..{(end - pd.Timedelta(days=1)).date()}", "days": len(days)}
    status = plans["execution_status"].value_counts().to_dict() if len(plans) else {}
    executed = plans[plans["pnl"].notna()] if len(plans) else plans
    by_module = (executed.groupby("module_id")["pnl"].agg(["count", "sum"]).reset_index()
                 .rename(columns={"count": "trades", "sum": "pnl"}) if len(executed) else pd.DataFrame())
    metadata = {
        "trading_plans": {"execution_status": dg.MetadataValue.json({k: int(v) for k, v in status.items()}),
                          "events_linked": linked_events, "evidence_linked": linked_evidence,
                          "total_pnl": float(executed["pnl"].astype(float).sum()) if len(executed) else 0.0,
                          "win_rate": float((executed["pnl"].astype(float) > 0).mean()) if len(executed) else 0.0,
                          "pnl_by_module": _md(by_module, 50),
                          "plot": dg.MetadataValue.md(_pnl_plot(plans, population) if len(plans) else "_no plans_"),
                          "preview": _md(plans[["plan_id", "module_id", "symbol", "timestamp", "direction",
                                                "entry_price", "execution_status", "pnl"]] if len(plans) else plans)},
        "modules": {"population": len(population),
                    "by_stage": dg.MetadataValue.json(population["lifecycle_stage"].value_counts().to_dict()),
                    "lineage": _md(population[["name", "module_type", "module_version", "generational_depth",
                                               "lifecycle_stage", "status"]], 50)},
        "module_replications": {"replications": written["module_replications"]},
    }
    for table in TABLES:
        yield dg.MaterializeResult(asset_key=table, metadata={
            **shared, "dagster/row_count": written[table], "rows_replaced": cleared.get(table, 0),
            **metadata.get(table, {})})
    checked = {**frames, "modules": ecosystem.population_rows(population)}
    for table in TABLES:
        yield from frame_check_results(checked[table], table, (start, end), asset=table)

