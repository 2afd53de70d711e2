"""The trading day: plans, approvals, simulated execution, module performance and the module ecosystem.

One multi-asset, because the day is a loop (modules → plans → performance → replication → modules) that an
asset graph cannot hold as separate assets without breaking "a range run equals day-by-day runs": see
``docs/ecosystem.md``. Each day of the range starts from the population stored at the end of the day before.
"""

import functools
import json
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from tis_pipeline import run_process
from tis_pipeline.market_data import store as bar_store
from tis_pipeline.market_data.partitions import daily_partitions
from tis_pipeline.quality.checks import check_specs_for, frame_check_results
from tis_pipeline.resources import PostgresResource
from tis_pipeline.trading_day import report, store
from tis_pipeline.trading_day.closes import DayCloses, reduce_pieces
from tis_pipeline.trading_day.day import (
    CONTEXT_BEFORE,
    HISTORY_DAYS,
    TABLES,
    WRITE_ORDER,
    concat_frames,
    config_fingerprint,
    plan_summary,
    pnl_plot,
    run_day,
)
from tis_pipeline.trading_day.ecosystem.common import (
    population_from_json,
    population_rows,
    population_to_json,
)
from tis_pipeline.trading_day.ecosystem.founders import founding_population
from tis_pipeline.trading_day.plans.generate import horizons_by_type

_DESCRIPTIONS = {
    "trading_plans": (
        "One row per plan an alpha module made from an anomaly event, with its simulated execution. Also "
        "links anomaly_events and dsi_evidence to their plan (trading_plan_id, plan_id and the plan's "
        "module, status, metrics and attribution on the event)."
    ),
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


def _rows_in_range(db: PostgresResource, start: pd.Timestamp, end: pd.Timestamp) -> dict[str, int]:
    """Each table's rows after the run: those in [start, end) of the tables cleared by range, every module of
    ``modules`` (it holds the ecosystem, not days)."""
    counts = " UNION ALL ".join(
        f'SELECT \'{t}\', count(*) FROM {t} WHERE "timestamp" >= :a AND "timestamp" < :b'
        for t in store.WINDOW_TABLES
    )
    with db.engine.connect() as conn:
        rows = conn.execute(
            sa.text(f"{counts} UNION ALL SELECT 'modules', count(*) FROM modules"), {"a": start, "b": end}
        )
        return {str(t): int(n) for t, n in rows}


def _read_day_closes(
    db: PostgresResource, day: pd.Timestamp, window: tuple[pd.Timestamp, pd.Timestamp]
) -> DayCloses:
    """The figures of every symbol's closes of ``window`` for ``day`` (``closes.DayCloses``), read a piece of
    symbols at a time (``store.read_day_closes_in_pieces``) and each piece reduced before the next is read,
    on a connection of its own (the run's transaction writes no bar's close, and writes the bars' notes only
    after its last day: a second connection reads the same closes)."""
    with db.engine.connect() as conn:
        return reduce_pieces(day, store.read_day_closes_in_pieces(conn, *window))


# a day of at least this many events allocates enough (its plans' and messages' JSON: hundreds of thousands of
# small dicts) that the collector's full passes over the whole heap cost more than the one pass the heap pays
# after it is unfrozen: what is alive then stays frozen until the run's end (``run_process``); and a range of
# at least this many plans writes long enough that its checks are better judged on a thread of their own
# beside the writes than after them (below it, the hand-offs of the interpreter's lock between the two threads
# cost more than the overlap saves)
MANY_EVENTS = 1_000
MANY_PLANS = 1_000

# what the day imports on first use (empyrical's import brings scipy.stats and scipy.optimize: ~0.5 s of CPU):
# imported on the run's warm-up thread while the GX step before waits for its rows (``run_process``; GX itself
# is that step's to warm)
run_process.warm_before("trading_day", functools.partial(run_process.import_heavy, "empyrical"))


def _md(frame: pd.DataFrame, rows: int = 10) -> dg.MetadataValue:
    return dg.MetadataValue.md(frame.head(rows).to_markdown(index=False) if len(frame) else "_none_")


@dg.multi_asset(
    name="trading_day",
    specs=[
        dg.AssetSpec(
            t,
            deps=_DEPS[t],
            group_name="trading_day",
            kinds={"postgres", "pandas"},
            description=_DESCRIPTIONS[t],
        )
        for t in TABLES
    ],
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    check_specs=[spec for t in TABLES for spec in check_specs_for(t)],
)
def trading_day(
    context: dg.AssetExecutionContext, db: PostgresResource
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Walks the range day by day: plans from anomaly events, approvals, honest execution, performance, the
    module ecosystem's messages, sharing, triggers and replications; everything of the range in one
    transaction.
    """
    # the checks run on a thread of their own from the moment the range's rows are known until their results
    # are yielded: through the last writes, the commit and the metadata (``_walk_range``)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="checks") as checker:
        yield from _walk_range(context, db, checker)


def _span(begin: pd.Timestamp, end: pd.Timestamp) -> str:
    """The run's days as the metadata names them: first..last (``end`` exclusive)."""
    return f"{begin.date()}..{(end - pd.Timedelta(days=1)).date()}"


def _walk_range(
    context: dg.AssetExecutionContext, db: PostgresResource, checker: ThreadPoolExecutor
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    window = context.partition_time_window
    start, end = pd.Timestamp(window.start).tz_convert("UTC"), pd.Timestamp(window.end).tz_convert("UTC")
    fingerprint = config_fingerprint()
    out: dict[str, list[pd.DataFrame]] = {t: [] for t in TABLES if t != "modules"}
    states, population, notes = [], None, []
    # every symbol's closes of a day (millions of bars) are read and reduced to a few figures per symbol on a
    # second connection while the day's plans are made from the plans' own bars: the scan runs in its server
    # process beside this one's work
    checking: Future[list[dg.AssetCheckResult]] | None = None
    plotting: Future[str] | None = None  # the P&L plot, drawn beside the writes with the checks
    with (
        db.begin() as conn,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="closes") as reader,
    ):
        previous = store.previous_population(conn, start, fingerprint)
        if previous is not None:
            begin, population = previous[0] + pd.Timedelta(days=1), population_from_json(previous[1])
        else:
            first = store.first_event_day(conn)
            begin = min(first, start) if first is not None else start
        if begin < start:
            context.log.info(
                f"no ecosystem state for the day before {start.date()}: running from {begin.date()}"
            )
        days = bar_store.days_with_bars(
            conn, "market_data_1h", begin, end
        )  # an hour per day with bars: cheaper
        if population is None:
            population = founding_population(days[0] if days else start)
        cleared = store.clear_window(conn, begin, end)
        written = dict.fromkeys(TABLES, 0)
        for k, day in enumerate(days):
            # the day costs in proportion to its plans: the OHLCV bars of the stretches its events' plans
            # read, and the figures of every symbol's closes for what needs them all (the day's and triggers'
            # regimes, the notes' last bars; first needed by the scores: run_day waits for them there)
            window = (day - CONTEXT_BEFORE, day + pd.Timedelta(days=1))
            closes = reader.submit(_read_day_closes, db, day, window)
            events = store.read_events(conn, day, day + pd.Timedelta(days=1))
            if len(events) >= MANY_EVENTS:
                run_process.freeze_alive_objects()
            # history as stored, written day by day below: a range run sees what day-by-day runs see
            history = store.read_history(conn, day - pd.Timedelta(days=HISTORY_DAYS), day)
            # what the bus left in flight at the end of the day before is carried into this one
            carried = store.read_carried_messages(conn, day)
            # the plans' bars handed over, no name kept here: run_day drops them once it prepared its copy
            rows = run_day(
                day,
                events,
                store.read_plan_bars(conn, events, *window, horizons_by_type(population)),
                population,
                history,
                carried,
                closes,
            )
            # the state goes through its stored form every day, for the same reason
            notes.append(rows.pop("bar_notes"))
            text = population_to_json(rows.pop("population"))
            population = population_from_json(text)
            states.append(
                {
                    "day": day.date(),
                    "config_fingerprint": fingerprint,
                    "modules": len(population),
                    "population": text,
                }
            )
            for table in WRITE_ORDER:
                out[table].append(rows[table])
            if k == len(days) - 1 and sum(len(p) for p in out["trading_plans"]) >= MANY_PLANS:
                # every row of the range is known: the checks judge the frames on a thread of their own while
                # the last day's rows, the links, notes and states are written (the server's work: this
                # thread mostly waits on it)
                frames = {t: concat_frames(f) for t, f in out.items()}
                checking = checker.submit(_check_results, frames, population, (start, end))
                plotting = checker.submit(pnl_plot, frames["trading_plans"], population, _span(begin, end))
            # parents before children: modules (children of the day included), plans, approvals, ...
            store.upsert_modules(conn, population_rows(population))
            for table in WRITE_ORDER:
                written[table] += store.write_rows(conn, table, rows[table])
        written["modules"] = len(population) if days else 0
        if checking is None:  # few plans (or no day with bars): judged after the writes, on this thread
            frames = {t: concat_frames(f) for t, f in out.items()}
        linked_events, linked_evidence = store.link_plans(conn, frames["trading_plans"])
        # where modules acted and learned; a window without plans before the run has no note to clear
        had_plans = cleared.get("trading_plans", 0) > 0
        store.write_bar_notes(conn, concat_frames(notes), begin, end, clear=had_plans)
        store.save_populations(conn, states)

    plans = frames["trading_plans"]
    in_table = _rows_in_range(db, begin, end)
    run_range = _span(begin, end)
    shared: dict[str, str | int] = {"range": run_range, "days": len(days)}
    summary = plan_summary(plans, population)
    metadata = {
        "trading_plans": {
            "execution_status": dg.MetadataValue.json(summary["execution_status"]),
            "events_linked": linked_events,
            "evidence_linked": linked_evidence,
            "total_pnl": summary["total_pnl"],
            "win_rate": summary["win_rate"],
            "pnl_by_module": _md(summary["pnl_by_module"], 50),
            "plot": dg.MetadataValue.md(
                plotting.result()
                if plotting is not None
                else (pnl_plot(plans, population, run_range) if len(plans) else "_no plans_")
            ),
            "preview": _md(
                plans[
                    [
                        "plan_id",
                        "module_id",
                        "symbol",
                        "timestamp",
                        "direction",
                        "entry_price",
                        "execution_status",
                        "pnl",
                    ]
                ]
                if len(plans)
                else plans
            ),
        },
        "modules": {
            "population": len(population),
            "by_stage": dg.MetadataValue.json(population["lifecycle_stage"].value_counts().to_dict()),
            "lineage": _md(
                population[
                    [
                        "name",
                        "module_type",
                        "module_version",
                        "generational_depth",
                        "lifecycle_stage",
                        "status",
                    ]
                ],
                50,
            ),
        },
        "module_replications": {"replications": written["module_replications"]},
    }
    for table in TABLES:
        yield dg.MaterializeResult(
            asset_key=table,
            metadata={
                **shared,
                # the table's rows for the range after the run (Dagster's "Row count"), the run's own beside
                "dagster/row_count": in_table[table],
                "rows_written_by_run": written[table],
                "rows_deleted_by_run": cleared.get(table, 0),  # the range's earlier rows, replaced by the run
                **metadata.get(table, {}),
            },
        )
    yield from (_check_results(frames, population, (start, end)) if checking is None else checking.result())


def _check_results(
    frames: dict[str, pd.DataFrame], population: pd.DataFrame, window: tuple[pd.Timestamp, pd.Timestamp]
) -> list[dg.AssetCheckResult]:
    """Every table's checks on the run's rows (``frames``; ``modules``: the population at the range's end),
    in ``TABLES`` order."""
    checked = {**frames, "modules": population_rows(population)}
    return [
        result
        for table in TABLES
        for result in frame_check_results(checked[table], table, window, asset=table)
    ]


REPORT_COLUMNS = [
    "name",
    "generation",
    "module_type",
    "born",
    "in_days",
    "in_trades",
    "in_pnl",
    "in_sharpe",
    "out_days",
    "out_trades",
    "out_pnl",
    "out_sharpe",
    "out_max_drawdown",
]


def _records(frame: pd.DataFrame) -> list[dict[str, object]]:
    """JSON-ready rows (NaN as null, numpy scalars as Python numbers)."""
    return list(json.loads(frame.to_json(orient="records", double_precision=15)))


def report_metadata(built: dict[str, object], span: str) -> dict[str, object]:
    """The metadata of ``ecosystem_report`` from ``report.build_report``: the figures as numbers and JSON
    (what tests and ``tis demo`` read), the tables as markdown and the plots as images (what the UI shows)."""
    modules = built["modules"]
    deflated = built["deflated"]
    assert isinstance(modules, pd.DataFrame) and isinstance(deflated, pd.DataFrame)
    summary = built["summary"]
    assert isinstance(summary, dict)
    return {
        "range": span,
        **summary,
        "modules_in_and_out_of_sample": _md(modules[REPORT_COLUMNS], 60),
        "modules_table": dg.MetadataValue.json(_records(modules)),
        "founders_vs_evolved": dg.MetadataValue.json(built["founders_vs_evolved"]),
        "deflated_sharpe_best": _md(deflated, 10),
        "deflated_sharpe_best_table": dg.MetadataValue.json(_records(deflated)),
        "equity_and_drawdown": dg.MetadataValue.md(str(built["equity_plot"])),
        "lineage": dg.MetadataValue.md(str(built["lineage_plot"])),
    }


@dg.asset(
    name="ecosystem_report",
    group_name="trading_day",
    deps=["module_performance", "trading_plans", "modules"],
    kinds={"pandas", "matplotlib"},
    owners=["team:trading-day"],
    tags={"domain": "trading_day", "layer": "report"},
    description=(
        "The ecosystem report over every stored day (a report: it writes no table, its figures are this "
        "asset's metadata): per module by name and generation, trades, P&L, Sharpe with its sample size "
        "and drawdown in sample (the days its genome was selected on) and out of sample (the days after), "
        "founders vs evolved modules on the same days, the Probabilistic and Deflated Sharpe Ratios of the "
        "best modules counting every variant tried, equity and drawdown curves, and the lineage tree "
        "(report.py). Materialized on demand or by ecosystem_report_schedule, never by the daily runs."
    ),
)
def ecosystem_report(context: dg.AssetExecutionContext, db: PostgresResource) -> dg.MaterializeResult:
    """Reads module_performance, trading_plans and modules as stored (``store.read_report_inputs``) and puts
    ``report.build_report``'s figures in the metadata."""
    with db.engine.connect() as conn:
        performance, plans, population = store.read_report_inputs(conn)
    if population.empty:
        context.log.info("no modules stored yet: run the trading day first")
        return dg.MaterializeResult(metadata={"modules": 0, "variants_tried": 0})
    span = f"{plans['timestamp'].min().date()}..{plans['timestamp'].max().date()}" if len(plans) else ""
    built = report.build_report(performance, plans, population, span)
    return dg.MaterializeResult(metadata=report_metadata(built, span))
