"""What Great Expectations costs the asset checks: once per process, per run and per million rows.

    .venv/bin/python -m bench.ge_cost [--rows 1000000] [--repeat 2]

A GE-judged asset check (``quality.ge.judge``: the DSI and trading-day tables in their steps, a
``build_checks`` step) validates the pandas evaluator's report of the rows a run wrote again with the table's
suite, stores the result under ``TIS_GX_DIR`` and renders its Data Docs page. This prints, as one JSON line:

* ``once_per_process_s``: importing ``great_expectations``, opening the file-based context, building the
  suites (every process that yields checks pays it once; Dagster's multiprocess executor starts one process
  per step);
* ``fixed_per_validation_s``: one judged report of no rows, per table (what a run pays per table checked
  beyond the rows: suite lookup, validation, storing, rendering the page);
* per bar frame of ``--rows`` rows (synthetic bars, as ingest judges them): the pandas evaluator, GX's
  validation and the page, and their totals per million rows.

With ``--read-back``, also what a separate check step pays beyond that: the run's rows read back from
PostgreSQL (``market_data.store.read_bars``, a scratch database on the server of TIS_DATABASE_URL, the rows
written by one ``market_data_1m`` run first).

With ``--step SYMBOLS[xDAYS]`` (e.g. ``--step 5 --step 50x2``), instead: what the registered GE step of
``market_data_1m`` (``market_data_1m_gx_checks``: read back, pandas masks, GE, stored page) adds to a run of
the asset, in one process (``materialize``, in-process executor, as ``tis backfill`` runs): runs with and
without the step alternated on one instance over the same window (each run rewrites it: the asset is
idempotent), wall seconds and the step's own duration, medians of ``--repeat``. A run under the
multiprocess executor (the daemon's) also pays ``once_per_process_s`` in the step's own process.

Runs in a throwaway GX project (``TIS_GX_DIR`` is set to a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import pandas as pd


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--read-back", action="store_true", help="time reading a run's rows back too")
    parser.add_argument("--step", action="append", help="SYMBOLS[xDAYS]: time the GE step in runs")
    args = parser.parse_args(argv)
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    if args.step:
        with tempfile.TemporaryDirectory(prefix="tis_gx_bench_") as root:
            os.environ["TIS_GX_DIR"] = root
            sizes = [tuple(int(x) for x in [*s.split("x"), "1"][:2]) for s in args.step]
            out = {"step": [step_cost(n, days, args.repeat) for n, days in sizes]}
        out["load_average"] = [round(x, 2) for x in os.getloadavg()]
        print(json.dumps(out))
        return
    out: dict = {"rows": args.rows}
    with tempfile.TemporaryDirectory(prefix="tis_gx_bench_") as root:
        os.environ["TIS_GX_DIR"] = root
        t0 = time.perf_counter()
        import great_expectations  # noqa: F401

        out["import_s"] = round(time.perf_counter() - t0, 2)
        from bench.validation_frames import synthetic_bars
        from tis_pipeline.quality import ge
        from tis_pipeline.quality.evaluate import evaluate_frame
        from tis_pipeline.quality.rules import RULES

        t0 = time.perf_counter()
        ge.context()
        out["context_s"] = round(time.perf_counter() - t0, 2)
        tables = sorted({r.table for r in RULES})
        t0 = time.perf_counter()
        for table in tables:
            ge.suite_for(table)
        out["suites_s"] = round(time.perf_counter() - t0, 2)
        out["once_per_process_s"] = round(out["import_s"] + out["context_s"] + out["suites_s"], 2)

        fixed: dict[str, float] = {}
        for table in tables:
            columns = sorted({c for r in RULES if r.table == table for c in r.columns})
            empty = pd.DataFrame({c: pd.Series(dtype="float64") for c in columns})
            best = float("inf")
            for _ in range(args.repeat + 1):  # the first builds the validation definition
                report = evaluate_frame(empty, table)
                t0 = time.perf_counter()
                ge.judge(report)
                best = min(best, time.perf_counter() - t0)
            fixed[table] = round(best, 3)
        out["fixed_per_validation_s"] = fixed

        bars = synthetic_bars(args.rows)
        now = bars["timestamp"].max()
        runs = []
        for _ in range(args.repeat + 1):
            t0 = time.perf_counter()
            report = evaluate_frame(bars, "market_data_1m", now=now)
            pandas_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            judged = ge.judge(report)
            gx_s = time.perf_counter() - t0
            agree = all(
                p.unexpected_count == g.unexpected_count and p.passed == g.passed
                for p, g in zip(report.results, judged.results, strict=True)
            )
            runs.append(
                {
                    "pandas_s": round(pandas_s, 3),
                    "gx_validate_s": judged.gx["validate_s"],
                    "gx_total_s": round(gx_s, 3),
                    "agree": agree,
                }
            )
        warm = runs[1:]  # the first run of the bar suite builds its validation definition
        fastest = min(warm, key=lambda r: r["gx_total_s"])
        per_million = 1_000_000 / len(bars)
        out["bars"] = {
            "runs": runs,
            "pandas_s": min(r["pandas_s"] for r in warm),
            "gx_validate_s": fastest["gx_validate_s"],
            "gx_total_s": fastest["gx_total_s"],
            "gx_per_million_rows_s": round(fastest["gx_total_s"] * per_million, 2),
            "gx_vs_pandas": round(fastest["gx_total_s"] / max(min(r["pandas_s"] for r in warm), 1e-9), 2),
            "agree": all(r["agree"] for r in runs),
        }
        if args.read_back:
            out["read_back"] = read_back(args.rows, args.repeat)
    out["load_average"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(out))


def step_cost(symbols: int, days: int, repeat: int) -> dict:
    """Wall seconds of a ``market_data_1m`` run over ``days`` days of ``symbols`` synthetic symbols with and
    without the GE step (medians of ``repeat`` alternated pairs, after one warm-up pair), and the step's own
    duration."""
    import statistics

    import dagster as dg

    from bench.ingest import drop_database, scratch_database, synthetic_range
    from tis_pipeline.market_data.assets import market_data_1m
    from tis_pipeline.market_data.definitions import market_data_1m_gx_checks
    from tis_pipeline.pg import migrate

    server, url = scratch_database()
    try:
        migrate.upgrade(url)
        resources, tags = synthetic_range(url, symbols, "2024-01-01", days)
        with_step: list[float] = []
        without: list[float] = []
        step_s: list[float] = []
        rows = 0
        with dg.DagsterInstance.ephemeral() as instance:
            for i in range(repeat + 1):
                for gx in (True, False):
                    t0 = time.perf_counter()
                    result = dg.materialize(
                        [market_data_1m, *(market_data_1m_gx_checks if gx else [])],
                        resources=resources,
                        tags=tags,
                        instance=instance,
                    )
                    wall = time.perf_counter() - t0
                    assert result.success
                    mat = result.asset_materializations_for_node("market_data_1m")[0]
                    rows = int(mat.metadata["rows_written_by_run"].value)
                    if i == 0:
                        continue  # warm-up: GE's import, suites, validation definition
                    (with_step if gx else without).append(wall)
                    if gx:
                        done = [e for e in result.all_events if e.is_step_success]
                        step = next(e for e in done if e.step_key == "market_data_1m_gx_checks")
                        step_s.append(step.event_specific_data.duration_ms / 1000)
        added = statistics.median(with_step) - statistics.median(without)
        return {
            "symbols": symbols,
            "days": days,
            "rows": rows,
            "run_without_step_s": round(statistics.median(without), 3),
            "run_with_step_s": round(statistics.median(with_step), 3),
            "added_per_run_s": round(added, 3),
            "step_s": round(statistics.median(step_s), 3),
            "step_per_million_rows_s": round(statistics.median(step_s) * 1e6 / rows, 2),
            "runs_without": [round(x, 3) for x in without],
            "runs_with": [round(x, 3) for x in with_step],
        }
    finally:
        drop_database(server, url)


def read_back(rows: int, repeat: int) -> dict:
    """Seconds to read ``rows`` bars written by one market_data_1m run back from PostgreSQL (best of
    ``repeat``), the separate check step's extra work."""
    import math

    import dagster as dg

    from bench.ingest import drop_database, scratch_database, synthetic_range
    from tis_pipeline.market_data.assets import market_data_1m
    from tis_pipeline.market_data.store import read_bars
    from tis_pipeline.pg import migrate
    from tis_pipeline.pg.engine import engine

    symbols = 50
    days = max(1, math.ceil(rows / (symbols * 1440 * 0.995)))
    server, url = scratch_database()
    try:
        migrate.upgrade(url)
        resources, tags = synthetic_range(url, symbols, "2024-01-01", days)
        assert dg.materialize([market_data_1m], resources=resources, tags=tags).success
        start = pd.Timestamp("2024-01-01", tz="UTC")
        end = start + pd.Timedelta(days=days)
        best, n = float("inf"), 0
        for _ in range(repeat):
            t0 = time.perf_counter()
            with engine(url).connect() as conn:
                n = len(read_bars(conn, "market_data_1m", start, end))
            best = min(best, time.perf_counter() - t0)
        return {"rows": n, "read_s": round(best, 2), "per_million_rows_s": round(best * 1e6 / n, 2)}
    finally:
        drop_database(server, url)


if __name__ == "__main__":
    main()
