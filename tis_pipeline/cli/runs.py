"""``tis backfill``, ``tis demo`` and ``tis archive restore``: Dagster runs over partition ranges, in chunks
that resume, with one clear line when they fail."""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from tis_pipeline import run_process
from tis_pipeline.cli.app import app, archive_app, console, err, fail, migrate_schema, options, prepared
from tis_pipeline.cli.backfills import (
    backfills_done,
    daemon_runs_backfills,
    submit_backfill,
    wait_for_backfill,
)
from tis_pipeline.cli.failures import error_line, first_line
from tis_pipeline.pg.errors import DatabaseConfigError
from tis_pipeline.settings import settings

if TYPE_CHECKING:
    from dagster import AssetKey, DagsterInstance, ExecuteInProcessResult
    from rich.console import Console

    from tis_pipeline.ops.backfill import Chunk


# the tables `tis demo` counts, in the order of the data flow
SHOWN_TABLES = [
    "market_data_1m", "market_data_15m", "market_data_1h", "market_data_quarantine", "anomaly_events",
    "dsi_evidence", "modules", "module_performance", "trading_plans", "trading_plan_approvals",
    "module_messages", "module_intelligence_sharing", "module_replication_triggers", "module_replications",
]  # fmt: skip


def _load_defs():
    from tis_pipeline.definitions import defs

    return defs


@functools.cache
def _instance() -> DagsterInstance:
    """The persistent Dagster instance of this command (one, not one per call). Its storage, as
    ``dagster.yaml`` configures it for every process, keeps its PostgreSQL connections and remembers the
    event log's schema probes (``ops.instance_storage``)."""
    import dagster as dg

    return dg.DagsterInstance.get()


def _run_log_level() -> str:
    """Dagster's console log of the runs `tis` starts: TIS_LOG_LEVEL when set; else WARNING with --verbose and
    nothing without (a failed run is summed up in one line instead of Dagster's tracebacks)."""
    return os.environ.get("TIS_LOG_LEVEL") or ("WARNING" if options["verbose"] else "CRITICAL")


def _partition_bounds() -> tuple[date, date]:
    """The first and the last daily partition: TIS_PARTITION_START and yesterday (UTC; today is not over)."""
    start = settings().partition_start
    try:
        first = date.fromisoformat(start)
    except ValueError:
        fail(f"TIS_PARTITION_START must be a date like 2015-01-01, not {start!r}")
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    if first > yesterday:
        fail(f"TIS_PARTITION_START={first} is after yesterday ({yesterday} UTC): there is no partition yet")
    return first, yesterday


def _check_market_source() -> None:
    """The market data the runs will read exists (checked before any run, not by a failing one)."""
    s = settings()
    if s.market_source == "synthetic":
        return
    if s.market_source != "csv":
        fail(f"TIS_MARKET_SOURCE={s.market_source!r} is not a source: use 'csv' or 'synthetic'")
    if not s.market_data_dir:
        fail("TIS_MARKET_SOURCE=csv needs TIS_MARKET_DATA_DIR, the directory of bar files")
    path = os.path.abspath(s.market_data_dir)
    unset = "unset it and TIS_MARKET_SOURCE" if os.environ.get("TIS_MARKET_SOURCE") else "unset it"
    if not os.path.exists(path):
        fail(
            f"TIS_MARKET_DATA_DIR={s.market_data_dir} does not exist: point it at a directory of bar files, "
            f"or {unset} to use the synthetic source"
        )
    if not os.path.isdir(path):
        fail(
            f"TIS_MARKET_DATA_DIR={s.market_data_dir} is not a directory: point it at a directory of bar "
            f"files, or {unset} to use the synthetic source"
        )


def _resolve_selection(selection: str) -> list[AssetKey]:
    """The daily-partitioned assets ``selection`` names, or one line on why it names none."""
    import dagster as dg

    defs = _load_defs()
    partitioned = defs.resolve_job_def("daily_partitioned_job").asset_layer.executable_asset_keys
    graph = defs.resolve_asset_graph()
    try:
        keys = dg.AssetSelection.from_string(selection).resolve(graph)
    except dg.DagsterInvalidSubsetError:  # a key that no asset has
        keys = set()
    except dg.DagsterError as exc:  # not the selection syntax
        fail(f"--select {selection!r} is not an asset selection: {first_line(str(exc))}")
    # an asset written by one step with others (the trading day's eight tables) runs with all of them: the
    # step cannot write some only, and Dagster refuses a run of part of it
    together = {k for key in keys if graph.has(key) for k in graph.get(key).execution_set_asset_keys}
    if together - keys:
        added = ", ".join(sorted(k.to_user_string() for k in together - keys))
        console.print(f"selected with them (one step writes them together): {added}")
        keys |= together
    others = sorted(k.to_user_string() for k in keys if k not in partitioned)
    if others and not keys & partitioned:
        fail(f"--select {selection!r} matches assets without daily partitions: {', '.join(others)}")
    if others:  # e.g. '*' or 'group:trading_day' also names the ecosystem report, which has no days
        console.print(f"left out (no daily partitions; materialize on its own): {', '.join(others)}")
        keys = {k for k in keys if k in partitioned}
    if not keys:
        names = ", ".join(sorted(k.to_user_string() for k in partitioned))
        fail(f"--select {selection!r} matches no asset; the daily-partitioned assets are {names}")
    return sorted(keys, key=lambda k: k.to_user_string())


def _run_range(keys: list[AssetKey], first: date, last: date, tags: dict[str, str]) -> ExecuteInProcessResult:
    """One Dagster run over first..last (inclusive) for the selected assets, on the persistent instance."""

    from tis_pipeline.market_data.partitions import range_tags

    defs = _load_defs()
    job = defs.resolve_job_def("daily_partitioned_job")
    instance = _instance()
    run_tags = {**range_tags(first.isoformat(), last.isoformat()), "tis/host": socket.gethostname(), **tags}
    # the start's objects stay frozen through the run (``run_process``, from the db resource's setup)
    return job.execute_in_process(
        instance=instance,
        asset_selection=keys,
        raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": _run_log_level()}}}},
        tags=run_tags,
    )


@contextlib.contextmanager
def startup_without_collector() -> Iterator[None]:
    """A command's start (imports of SQLAlchemy, Dagster, pandas and the definitions, the instance) without
    the cyclic garbage collector, whose objects are then frozen (``gc.freeze``: left out of its passes until
    a run's end unfreezes them, ``run_process.run_ended``) and the collector enabled again.

    Why: the start makes ~400,000 objects and almost no garbage; the collector's full passes over the
    growing heap cost ~0.4 s of it (5 passes), and every pass after it would walk those objects again."""
    with run_process.collector_paused(freeze=True):
        yield


def _rows_written(result: ExecuteInProcessResult) -> int:
    """1-minute rows the run wrote (a range run repeats its metadata on every partition's materialization)."""
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        if mat.asset_key.to_user_string() == "market_data_1m":
            value = mat.metadata.get("rows_written_by_run")
            return int(value.value) if value is not None else 0
    return 0


def _failures(result: ExecuteInProcessResult) -> list[tuple[str, str]]:
    """What failed in a run, each as (its first meaningful line, its full text with tracebacks)."""
    import dagster as dg

    out, run_failure = [], None
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data is not None:
            error = event.step_failure_data.error
            out.append(
                (
                    f"{event.step_key}: {error_line(error)}",
                    f"{event.step_key}: {error.to_string() if error else 'failed'}",
                )
            )
        elif isinstance(evaluation := event.event_specific_data, dg.AssetCheckEvaluation):
            if not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR:
                line = (
                    f"blocking check {evaluation.check_name} on "
                    f"{evaluation.asset_key.to_user_string()} failed"
                )
                out.append((line, line))
        elif event.is_run_failure and event.job_failure_data.error is not None:
            error = event.job_failure_data.error
            run_failure = (error_line(error), error.to_string())
    if not out and run_failure is not None:
        out.append(run_failure)
    return out or [("the run failed", "the run failed")]


def _fail_run(result: ExecuteInProcessResult, what: str) -> None:
    """Say what failed, the tracebacks with --verbose, and last the first line of why; exits 1."""
    failures = _failures(result)
    verbose = options["verbose"]
    err.print(what if verbose else f"{what} (`tis --verbose …` shows the traceback)", markup=False)
    if verbose:
        for _, full in failures:
            err.print(full.rstrip(), markup=False, highlight=False)
    more = f" (and {len(failures) - 1} more failure(s))" if len(failures) > 1 else ""
    fail(failures[0][0] + more)


def _run_succeeded(result: ExecuteInProcessResult) -> bool:
    """A run reads as a success only when it succeeded and no blocking check failed."""
    if not result.success:
        return False
    return all(e.passed for e in result.get_asset_check_evaluations() if e.severity.value == "ERROR")


def _chunk_via_daemon(
    instance: DagsterInstance, keys: list[AssetKey], chunk: Chunk, tags: dict[str, str], out: Console
) -> tuple[str, int, int, list[str]]:
    """One chunk as a Dagster backfill, waited for: (its id, runs, rows written, what failed)."""
    import dagster as dg

    graph = _load_defs().resolve_asset_graph()
    submitted = submit_backfill(instance, graph, keys, chunk.first, chunk.last, tags)
    out.print(f"chunk {chunk.key}: Dagster backfill {submitted} (the daemon runs it)", markup=False)
    succeeded, failed, rows = wait_for_backfill(instance, submitted)
    runs = len(instance.get_run_ids(filters=dg.RunsFilter(tags={"dagster/backfill": submitted})))
    return submitted, runs, rows, [] if succeeded else failed


def _fail_backfill(what: str, failed: list[str]) -> None:
    """Say what failed and, last, the first line of why; exits 1."""
    err.print(what, markup=False)
    more = f" (and {len(failed) - 1} more failure(s))" if len(failed) > 1 else ""
    fail(failed[0] + more)


def backfill_range(
    first: date,
    last: date,
    selection: str,
    chunk_days: int,
    resume: bool = True,
    keys: list[AssetKey] | None = None,
    via_daemon: bool = False,
) -> tuple[int, int]:
    """Run first..last in chunks, resuming after the chunks that already succeeded; returns (runs, rows).

    ``keys``: the assets ``selection`` resolves to, when the caller resolved it already. ``via_daemon``: each
    chunk is a Dagster backfill that the running daemon executes (``daemon_runs_backfills``), waited for in
    turn; otherwise each chunk is one run in this process. Either way the runs carry ``tis/backfill`` and
    ``tis/chunk``, and a chunk done either way is not done again."""
    import dagster as dg

    from tis_pipeline.ops.backfill import BACKFILL_TAG, CHUNK_TAG, backfill_id, plan_chunks

    keys = keys if keys is not None else _resolve_selection(selection)
    chunks = plan_chunks(first, last, chunk_days)
    ident = backfill_id(first, last, selection, chunk_days)
    instance = _instance()
    done = {
        run.tags.get(CHUNK_TAG)
        for run in instance.get_runs(
            filters=dg.RunsFilter(tags={BACKFILL_TAG: ident}, statuses=[dg.DagsterRunStatus.SUCCESS])
        )
        if run.tags.get("tis/checks_passed") != "false" and "dagster/backfill" not in run.tags
    } | backfills_done(instance, ident)
    todo = [c for c in chunks if not resume or c.key not in done]
    if len(todo) < len(chunks):
        console.print(
            f"resuming backfill {ident}: {len(chunks) - len(todo)} of {len(chunks)} chunks already done"
        )
    total_days = sum(c.days for c in chunks)
    days_done = total_days - sum(c.days for c in todo)
    rows_total, started, runs = 0, time.monotonic(), 0
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} days"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal and os.environ.get("CI") == "true",
    ) as progress:
        task = progress.add_task(f"backfill {selection}", total=total_days, completed=days_done, rate="")
        for chunk in todo:
            tags = {BACKFILL_TAG: ident, CHUNK_TAG: chunk.key}
            if via_daemon:
                submitted, backfill_runs, rows, failed = _chunk_via_daemon(
                    instance, keys, chunk, tags, progress.console
                )
                runs += backfill_runs
                if failed:
                    progress.stop()
                    resumes = "; once the cause is fixed, the same command resumes from this chunk"
                    _fail_backfill(
                        f"chunk {chunk.key} failed (Dagster backfill {submitted}); {days_done} of "
                        f"{total_days} days done" + (resumes if resume else ""),
                        failed,
                    )
                rows_total += rows
                days_done += chunk.days
                rate = rows_total / max(time.monotonic() - started, 1e-9)
                progress.update(task, completed=days_done, rate=f"{rate:,.0f} 1-minute rows/s")
                continue
            result = _run_range(keys, chunk.first, chunk.last, tags)
            runs += 1
            if not _run_succeeded(result):
                if result.success:
                    instance.add_run_tags(result.run_id, {"tis/checks_passed": "false"})
                progress.stop()
                resumes = (
                    "; once the cause is fixed, the same command resumes from this chunk" if resume else ""
                )
                _fail_run(
                    result,
                    f"chunk {chunk.key} failed (run {result.run_id}); {days_done} of {total_days} days done"
                    + resumes,
                )
            rows_total += _rows_written(result)
            days_done += chunk.days
            rate = rows_total / max(time.monotonic() - started, 1e-9)
            progress.update(task, completed=days_done, rate=f"{rate:,.0f} 1-minute rows/s")
            if not console.is_terminal:
                console.print(
                    f"chunk {chunk.key}: done ({days_done}/{total_days} days, {rate:,.0f} 1-minute rows/s)"
                )
    return runs, rows_total


def parse_day(value: str, name: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        fail(f"--{name} must be a date like 2024-01-31, not {value!r}")
    raise AssertionError("unreachable")


@app.command("backfill")
def backfill(
    start: str = typer.Option(..., help="First partition day, YYYY-MM-DD."),
    end: str = typer.Option(..., help="Last partition day (inclusive), YYYY-MM-DD."),
    select: str = typer.Option(
        "*", help="Dagster asset selection, e.g. 'market_data_1m' or 'group:market_data'."
    ),
    chunk_days: int = typer.Option(None, help="Days per run (default TIS_BACKFILL_CHUNK_DAYS or 31)."),
    in_process: bool = typer.Option(
        False,
        "--in-process",
        help="Run the chunks in this process even when a dagster-daemon is running (by default a running "
        "daemon gets each chunk as a Dagster backfill, listed in the UI's Backfills tab).",
    ),
) -> None:
    """Materialize the daily-partitioned assets over a range, as few Dagster runs as the chunk size allows.

    With a dagster-daemon running on the same instance (`tis dev`), each chunk is submitted as a Dagster
    backfill and waited for; without one, the chunks run in this process. The runs carry the tags
    tis/backfill and tis/chunk either way (filter the UI's Runs page by them)."""
    # everything that can be checked is, before the database is started or any run launched
    first, last = parse_day(start, "start"), parse_day(end, "end")
    if last < first:
        fail(f"--end {last} is before --start {first}")
    lowest, highest = _partition_bounds()
    if first < lowest:
        fail(
            f"--start {first} is before TIS_PARTITION_START={lowest}, the first partition: "
            "start on or after it, or set TIS_PARTITION_START earlier"
        )
    if last > highest:
        fail(f"--end {last} is after yesterday ({highest} UTC), the last partition: end on or before it")
    if chunk_days is not None and chunk_days < 1:
        fail(f"--chunk-days must be at least 1, not {chunk_days}")
    chunk = chunk_days or settings().backfill_chunk_days
    if chunk < 1:
        fail(f"TIS_BACKFILL_CHUNK_DAYS must be at least 1, not {chunk}")
    with startup_without_collector():
        _check_market_source()
        env = prepared()
        keys = _resolve_selection(select)
        migrate_schema(env["TIS_DATABASE_URL"])

        from tis_pipeline.ops.backfill import BACKFILL_TAG, backfill_id

        via_daemon = not in_process and daemon_runs_backfills(_instance())
    console.print(
        "a dagster-daemon is running: each chunk is a Dagster backfill (the UI's Backfills tab)"
        if via_daemon
        else "running in this process (no dagster-daemon on this instance, or --in-process); the runs are "
        f"tagged {BACKFILL_TAG}={backfill_id(first, last, select, chunk)}",
        markup=False,
    )
    started = time.monotonic()
    runs, rows = backfill_range(first, last, select, chunk, keys=keys, via_daemon=via_daemon)
    elapsed = time.monotonic() - started
    console.print(
        f"[green]backfill done[/]: {first}..{last}, {runs} run(s), {rows:,} 1-minute rows in "
        f"{elapsed:,.1f} s ({rows / max(elapsed, 1e-9):,.0f} rows/s)"
    )


DEMO_MAX_GAP_DAYS = 3  # a weekend or holiday between two days of data does not split the demo's runs


def _demo_ranges() -> list[tuple[date, date]]:
    """The day ranges the demo materializes: the last three days for the synthetic source; for files, the days
    their 1-minute bars cover (from the manifest, within the partitions and before today), joined across short
    gaps, so that files of a few days scattered over years make a few small runs instead of one over the
    span."""
    from tis_pipeline.ops.backfill import covering_ranges

    s = settings()
    start, yesterday = _partition_bounds()
    if s.market_source != "csv":
        return [(max(start, yesterday - timedelta(days=2)), yesterday)]
    import pandas as pd

    from tis_pipeline.market_data.sources import scan_data_dir

    minute = [i for i in scan_data_dir() if i.holds_minute_bars]
    if not minute:
        fail(f"no 1-minute bar files under {s.market_data_dir}")
    days = {
        d.date()
        for i in minute
        for d in pd.date_range(i.first.normalize(), i.last.normalize(), freq="D")
        if start <= d.date() <= yesterday
    }
    if not days:
        fail(
            f"the files' days {min(i.first for i in minute).date()}.."
            f"{max(i.last for i in minute).date()} lie "
            f"outside the partitions (TIS_PARTITION_START={s.partition_start}, up to yesterday)"
        )
    early = [i for i in minute if i.first.date() < start]
    if early:
        console.print(
            f"{len(early)} file(s) hold bars before TIS_PARTITION_START={s.partition_start}; those days "
            "are not loaded (set TIS_PARTITION_START earlier to include them)"
        )
    return [(c.first, c.last) for c in covering_ranges(sorted(days), DEMO_MAX_GAP_DAYS)]


def _shown_counts(url: str) -> dict[str, int]:
    from tis_pipeline.pg import engine as pg
    from tis_pipeline.pg.migrate import project_tables

    existing = set(project_tables(url))
    return pg.table_counts(url, [t for t in SHOWN_TABLES if t in existing])


def _empty_project_tables(url: str) -> None:
    """Every project table dropped and made again (Alembic down to base, up to head); Dagster's own tables,
    even in the same database, are not the project's migrations' to touch."""
    import sqlalchemy as sa

    from tis_pipeline.pg import engine as pg
    from tis_pipeline.pg import migrate

    try:
        if "market_data_1m" in migrate.project_tables(url):
            # the downgrade copies market_data_1m out of its partitions: emptied, nothing is copied
            with pg.engine(url).begin() as conn:
                conn.execute(sa.text("TRUNCATE market_data_1m"))
        migrate.downgrade(url, "base")
        migrate.upgrade(url, "head")
    except DatabaseConfigError as exc:
        fail(str(exc))


def _say_what_is_there(url: str) -> None:
    """Before the demo adds its rows: what earlier runs left, so that the counts printed after are not a
    surprise."""
    counts = _shown_counts(url)
    bars, others = counts.get("market_data_1m", 0), sum(counts.values()) - counts.get("market_data_1m", 0)
    if bars == 0 and others == 0:
        return
    held = f"{bars:,} 1-minute bars" + (f" (and {others:,} rows in the other tables)" if others else "")
    console.print(
        f"the database already holds {held} from earlier runs; the counts below include them; "
        "`tis demo --fresh` starts from empty tables",
        markup=False,
    )


def print_counts(url: str) -> None:
    counts = _shown_counts(url)
    table = Table(title="rows per table")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, count in counts.items():
        table.add_row(name, f"{count:,}")
    console.print(table)


@app.command("demo")
def demo(
    fresh: bool = typer.Option(
        False,
        "--fresh",
        help="Empty the project's tables first (schema down to base and up to head; Dagster's run history "
        "is kept), so the counts are those of this demo alone.",
    ),
) -> None:
    """Start the database, migrate, materialize every asset on the demo range and print what was made."""
    _partition_bounds()
    _check_market_source()
    with startup_without_collector():
        env = prepared()
        migrate_schema(env["TIS_DATABASE_URL"])
        _load_defs()
    if fresh:
        _empty_project_tables(env["TIS_DATABASE_URL"])
        console.print("--fresh: emptied the project's tables (schema down to base and up to head)")
    else:
        _say_what_is_there(env["TIS_DATABASE_URL"])
    s = settings()
    if s.market_source == "csv":
        console.print(f"market data: files under [bold]{s.market_data_dir}[/] (TIS_MARKET_DATA_DIR)")
    else:
        console.print(
            f"market data: the synthetic source (seed {s.synthetic_seed}, symbols {', '.join(s.symbols)}); "
            "set TIS_MARKET_DATA_DIR=/path/to/bars to load real files"
        )
    ranges = _demo_ranges()
    # every daily-partitioned asset ("*" would name the ecosystem report too, materialized after the days)
    job = _load_defs().resolve_job_def("daily_partitioned_job")
    keys = sorted(job.asset_layer.executable_asset_keys, key=lambda k: k.to_user_string())
    for first, last in ranges:
        console.print(f"materializing {first}..{last} (one run)")
        backfill_range(first, last, "*", (last - first).days + 1, resume=False, keys=keys)
    report = _materialize_unpartitioned()
    if report is not None:
        console.print(report, markup=False)
    print_counts(env["TIS_DATABASE_URL"])
    console.print("open the UI: [bold]make dev[/] (or `tis dev`), then http://127.0.0.1:3000")


def _materialize_unpartitioned() -> str | None:
    """Assets without partitions (the ecosystem report), if any exist yet; returns the report's line."""

    defs = _load_defs()
    graph = defs.resolve_asset_graph()
    keys = [
        k
        for k in graph.get_all_asset_keys()
        if graph.get(k).partitions_def is None and graph.get(k).is_materializable
    ]
    if not keys:
        return None
    console.print(f"materializing {', '.join(sorted(k.to_user_string() for k in keys))} (no partitions)")
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=_instance(),
        asset_selection=keys,
        raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": _run_log_level()}}}},
    )
    if not _run_succeeded(result):
        _fail_run(result, f"the run of the assets without partitions failed (run {result.run_id})")
    for event in result.get_asset_materialization_events():
        materialization = event.materialization
        if materialization.asset_key.to_user_string() == "ecosystem_report":
            return report_line({k: v.value for k, v in materialization.metadata.items()})
    return None


def report_line(metadata: dict[str, Any]) -> str:
    """One line of the ecosystem report's metadata: the best module by daily Sharpe with its PSR and DSR (and
    the variants they count), its in-sample and out-of-sample P&L, and the evolved modules' totals."""
    best = metadata.get("deflated_sharpe_best_table") or []
    modules = {m["module_id"]: m for m in metadata.get("modules_table") or []}
    totals = (
        f"evolved modules in sample {metadata.get('evolved_in_sample_pnl', 0.0):,.2f}, "
        f"out of sample {metadata.get('evolved_out_of_sample_pnl', 0.0):,.2f}"
    )
    if not best:
        count = metadata.get("modules", 0)
        return f"ecosystem report: {count} modules, none with 3 daily returns; {totals}"
    top = best[0]
    row = modules.get(top["module_id"], {})
    psr, dsr = (f"{v:.3f}" if isinstance(v, (int, float)) else "n/a" for v in (top["psr"], top["dsr"]))
    return (
        f"ecosystem report ({metadata.get('range', '')}): best module {top['name']} (generation "
        f"{top['generation']}, {top['n']} days) PSR {psr}, DSR {dsr} over "
        f"{top['trials']} variants; P&L in sample {row.get('in_pnl', 0.0):,.2f} ({row.get('in_trades', 0)} "
        f"trades), out of sample {row.get('out_pnl', 0.0):,.2f} ({row.get('out_trades', 0)} trades); {totals}"
    )


@archive_app.command("restore")
def archive_restore(
    table: str = typer.Option(..., help="Table whose archive to restore, e.g. market_data_1m."),
    start: str = typer.Option(..., help="First archived day, YYYY-MM-DD."),
    end: str = typer.Option(..., help="Last archived day (inclusive), YYYY-MM-DD."),
) -> None:
    """Copy archived rows back into their table (rows already present are left alone)."""
    from tis_pipeline.ops import retention
    from tis_pipeline.pg import engine as pg

    first, last = parse_day(start, "start"), parse_day(end, "end")
    env = prepared()
    migrate_schema(env["TIS_DATABASE_URL"])
    try:
        with pg.engine(env["TIS_DATABASE_URL"]).begin() as conn:
            inserted, files = retention.restore(conn, table, first.isoformat(), last.isoformat())
    except ValueError as exc:
        fail(str(exc))
    console.print(
        f"restored {inserted:,} rows of {table} from {len(files)} file(s) under {retention.archive_dir()}"
    )
