"""Great Expectations over the staged rows in PostgreSQL (its SQL datasource) vs over the DataFrame (its
pandas datasource) vs the project's pandas evaluator: the market_data_1m error rules, the same bars, the same
answers.

    python -m bench.validation_sql [--rows 1000000] [--repeat 2]

The bars are COPYed into a staging table of a scratch database (the ingest stages them the same way, so that
cost is shown apart); GE's postgres datasource then reads a query asset over that table which adds the derived
columns the error rules need (row-wise min and max, nanoseconds past the minute) in SQL. Each way reports the
failing rows (GE: result format COMPLETE, keyed by (symbol, timestamp) on SQL, by row index on pandas), and
the script checks that the three agree rule for rule. Prints one JSON line last.
"""

from __future__ import annotations

import json
import os
import time
import warnings

import pandas as pd
import sqlalchemy as sa

warnings.filterwarnings("ignore")

STAGING = "bench_staged_bars"
COLUMNS = ["symbol", "timestamp", "open", "high", "low", "close", "volume", "mx_evidence"]


def derived_sql(rule) -> dict[str, str]:
    """SQL expressions of the derived columns ``quality.ge.expectation_for`` reads for ``rule`` (error
    rules)."""
    from tis_pipeline.quality.ge import _derived_name

    quoted = [f'"{c}"' for c in rule.columns]
    if rule.kind in ("positive", "nonnegative") and len(rule.columns) > 1:
        return {_derived_name(rule, "min_value"): f"least({', '.join(quoted)})"}
    if rule.kind == "ohlc_high":
        return {_derived_name(rule, "max_of_others"): f"greatest({', '.join(quoted[1:])})"}
    if rule.kind == "ohlc_low":
        return {_derived_name(rule, "min_of_others"): f"least({', '.join(quoted[1:])})"}
    if rule.kind == "on_minute":
        # nanoseconds past the minute: timestamptz has microseconds, so whole microseconds times 1000
        return {
            _derived_name(
                rule, "ns_past_boundary"
            ): 'mod((extract(epoch FROM "timestamp") * 1000000)::bigint, 60000000) * 1000'
        }
    return {}


def sql_datasource_run(url: str, rules, now: pd.Timestamp) -> tuple[float, dict[str, int]]:
    """Validate the staged rows with GE's postgres datasource; (seconds, unexpected rows per rule)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    from tis_pipeline.quality.ge import LATEST_ALLOWED, expectation_for

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    extra = {name: expr for r in rules for name, expr in derived_sql(r).items()}
    select = ", ".join([f'"{c}"' for c in COLUMNS] + [f'{expr} AS "{name}"' for name, expr in extra.items()])
    # add_sql: add_postgres rejects a Unix-socket URL (no host), which the embedded server uses
    source = ctx.data_sources.add_sql("staged", connection_string=url)
    asset = source.add_query_asset("market_data_1m_staged", query=f"SELECT {select} FROM {STAGING}")
    batch_definition = asset.add_batch_definition_whole_table("whole")
    suite = ctx.suites.add(gx.ExpectationSuite(name="market_data_1m_sql"))
    for rule in rules:
        suite.add_expectation(expectation_for(rule))
    parameters = {
        f"{LATEST_ALLOWED}_{r.name}": (now + pd.Timedelta(minutes=1)).to_pydatetime()
        for r in rules
        if r.kind == "not_future"
    }
    started = time.perf_counter()
    result = batch_definition.get_batch().validate(
        suite,
        result_format={
            "result_format": "COMPLETE",
            "unexpected_index_column_names": ["symbol", "timestamp"],
            "include_unexpected_rows": False,
        },
        expectation_parameters=parameters or None,
    )
    seconds = time.perf_counter() - started
    counts = {}
    for r in result.results:
        info = r.exception_info or {}
        # one dict, or one per metric GX tried to compute
        failures = [i for i in (info, *info.values()) if isinstance(i, dict) and i.get("raised_exception")]
        if failures:
            raise RuntimeError(
                f"GX (SQL) failed on {r.expectation_config.meta['rule']}: "
                f"{failures[0].get('exception_message')}"
            )
        counts[r.expectation_config.meta["rule"]] = int(r.result.get("unexpected_count", 0) or 0)
    return seconds, counts


def main(argv: list[str] | None = None) -> None:
    from bench.validation_frames import arguments, broken, synthetic_bars

    args = arguments(argv, __doc__.splitlines()[0])
    from bench.ingest import drop_database, scratch_database
    from tis_pipeline.pg.copy import copy_frame
    from tis_pipeline.pg.engine import engine, raw_connection
    from tis_pipeline.quality.evaluate import evaluate_frame
    from tis_pipeline.quality.ge import validate_frame
    from tis_pipeline.quality.rules import rules_for

    rules = rules_for("market_data_1m", severity="error")
    bars = synthetic_bars(args.rows)
    now = bars["timestamp"].max()
    server, url = scratch_database()
    table: list[dict] = []
    try:
        eng = engine(url)
        validate_frame(bars.head(1000), "market_data_1m", severity="error", now=now)  # GX import and context
        for label, frame in (("clean", bars), ("1% broken", broken(bars))):
            with eng.begin() as conn:
                conn.execute(sa.text(f"DROP TABLE IF EXISTS {STAGING}"))
                conn.execute(
                    sa.text(
                        f'CREATE TABLE {STAGING} (symbol varchar(20), "timestamp" timestamptz, '
                        "open numeric(20,8), "
                        "high numeric(20,8), low numeric(20,8), close numeric(20,8), volume numeric(20,8), "
                        "mx_evidence numeric(3,2))"
                    )
                )
                started = time.perf_counter()
                copy_frame(raw_connection(conn), STAGING, frame, COLUMNS)
                stage_s = time.perf_counter() - started
            with eng.begin() as conn:
                conn.execute(sa.text(f"ANALYZE {STAGING}"))
            timings: dict[str, list[float]] = {"pandas evaluator": [], "GE pandas": [], "GE SQL": []}
            counts: dict[str, dict[str, int]] = {}
            for _ in range(args.repeat):
                for name, fn in (("pandas evaluator", evaluate_frame), ("GE pandas", validate_frame)):
                    started = time.perf_counter()
                    report = fn(frame, "market_data_1m", severity="error", now=now)
                    timings[name].append(time.perf_counter() - started)
                    counts[name] = {r.rule.name: r.unexpected_count for r in report.results}
                seconds, counts["GE SQL"] = sql_datasource_run(url, rules, now)
                timings["GE SQL"].append(seconds)
            agree = counts["pandas evaluator"] == counts["GE pandas"] == counts["GE SQL"]
            table.append(
                {
                    "frame": label,
                    "rows": len(frame),
                    "failing_rows": sum(counts["GE SQL"].values()),
                    "stage_copy_s": round(stage_s, 2),
                    **{f"{k.replace(' ', '_')}_s": round(min(v), 2) for k, v in timings.items()},
                    "agree": agree,
                }
            )
            if not agree:
                print("disagreement:", json.dumps(counts, indent=1))
    finally:
        drop_database(server, url)
    print(
        f"{'frame':<10} {'failing':>8} {'stage COPY s':>12} {'pandas eval s':>13} {'GE pandas s':>11} "
        f"{'GE SQL s':>9} agree"
    )
    for row in table:
        print(
            f"{row['frame']:<10} {row['failing_rows']:>8,} {row['stage_copy_s']:>12.2f} "
            f"{row['pandas_evaluator_s']:>13.2f} {row['GE_pandas_s']:>11.2f} "
            f"{row['GE_SQL_s']:>9.2f} {row['agree']}"
        )
    print(json.dumps({"rows": len(bars), "load_average": os.getloadavg()[0], "results": table}))


if __name__ == "__main__":
    main()
