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
    args = parser.parse_args(argv)
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
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
