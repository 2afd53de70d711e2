"""Ingest benchmark: raw COPY (the limit) vs the project's ingest vs pandas ``to_sql``, same rows, same
server.

    python -m bench.ingest --rows 1000000

Runs in a scratch database on the server of TIS_DATABASE_URL (or the embedded one), dropped at the end.
Prints one JSON line last.

    python -m bench.ingest --step-alone 5000 --database postgresql+psycopg://root@127.0.0.1:5432/<copy>

The ``market_data_1m`` step and its ``expected_symbols_present`` check alone, in this process, on the given
database (a copy: it is written), for the synthetic day ``--day`` of N symbols S00000... (seed 42), as
``bench.scale`` runs it: the steps' spans, this process's CPU seconds and peak RSS (imports included; run it
under ``/usr/bin/time -v`` for the kernel's figure).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import time
import uuid
import warnings

import pandas as pd
import sqlalchemy as sa

from bench.steps import step_spans

warnings.filterwarnings("ignore")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")


def scratch_database() -> tuple[str, str]:
    from tis_pipeline import environment
    from tis_pipeline.pg.engine import with_database

    environment.prepare()
    server = with_database(os.environ["TIS_DATABASE_URL"], "postgres")
    name = f"tis_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    return server, with_database(server, name)


def drop_database(server: str, url: str) -> None:
    from sqlalchemy.engine import make_url

    from tis_pipeline.pg.engine import engine

    engine(url).dispose()
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))


def synthetic_range(url: str, n_symbols: int, first: str, days: int) -> tuple[dict, dict[str, str]]:
    """(resources on the synthetic source of ``n_symbols`` symbols, tags of one run over ``days`` days from
    ``first``), for benchmarks that materialize a range against the scratch database ``url``."""
    from tis_pipeline.market_data.partitions import range_tags
    from tis_pipeline.market_data.sources import BarSource
    from tis_pipeline.resources import PostgresResource

    symbols = [f"SYM{i:03d}" for i in range(n_symbols)]
    resources = {
        "db": PostgresResource(url=url),
        "bars": BarSource(source="synthetic", symbols=symbols, seed=1),
    }
    last = (pd.Timestamp(first) + pd.Timedelta(days=days - 1)).date().isoformat()
    return resources, range_tags(first, last)


STEPS = {  # module path -> functions whose wall time --steps reports (summed over calls and threads); each is
    # patched in the module that calls it (the callers import the names)
    "tis_pipeline.market_data.ingest": (
        "normalise_bars",
        "validate_bars",
        "evaluate_frame",
        "judge_in_pieces",  # the report over the spilled rows (evaluate_frame inside it)
        "swap_built_days",
    ),
    "tis_pipeline.pg.day_partitions": ("_build_day",),
    "tis_pipeline.market_data.rollups": (
        "stage_expected_rollup",
        "rebuild_rollup",
        "stale_days",
        "heal_days",
        "rollup_mismatches",
        "bucket_fill",
        "read_bars",
        "price_volume_png",
    ),
    "tis_pipeline.pg.copy_binary": ("encode_rows",),
}


def time_steps(timers: dict[str, float]) -> None:
    """Wrap the functions of ``STEPS`` so that their wall time adds up in ``timers`` (a bench-only patch)."""
    import functools
    import importlib

    def timed(name, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                timers[name] = timers.get(name, 0.0) + time.perf_counter() - t0

        return wrapper

    for module_name, names in STEPS.items():
        module = importlib.import_module(module_name)
        for name in names:
            setattr(module, name, timed(name, getattr(module, name)))


BARE = """CREATE TABLE {name} (symbol varchar(20) NOT NULL, "timestamp" timestamptz NOT NULL,
          open numeric(20,8) NOT NULL, high numeric(20,8) NOT NULL, low numeric(20,8) NOT NULL,
          close numeric(20,8) NOT NULL, volume numeric(20,8) NOT NULL)"""


def drop_day_partitions(eng: sa.Engine, start: pd.Timestamp, end: pd.Timestamp) -> None:
    """Detach and drop market_data_1m's day partitions of [start, end), so the next ingest writes into empty
    days."""
    from tis_pipeline.pg.day_partitions import lock_partition_changes, partition_name

    with eng.begin() as conn:
        lock_partition_changes(conn)  # as every changer of the partitions does (ingest, DSI, retention)
        for day in pd.date_range(start, end, freq="D", inclusive="left"):
            name = partition_name(day)  # built from a date, never from input
            if conn.execute(sa.text("SELECT to_regclass(:n)"), {"n": name}).scalar_one() is not None:
                conn.execute(sa.text(f'ALTER TABLE market_data_1m DETACH PARTITION "{name}"'))
                conn.execute(sa.text(f'DROP TABLE "{name}"'))


def step_alone(url: str, n_symbols: int, day: str) -> dict:
    """``--step-alone``: the ingest step of one synthetic day, alone (module docstring)."""
    os.environ.update(
        {
            "TIS_MARKET_SOURCE": "synthetic",
            "TIS_SYMBOLS": ",".join(f"S{i:05d}" for i in range(n_symbols)),
            "TIS_SYNTHETIC_SEED": "42",
            "TIS_PARTITION_START": "2024-01-01",
            "TIS_DATABASE_URL": url,
        }
    )
    os.environ.pop("TIS_MARKET_DATA_DIR", None)
    import dagster as dg

    from tis_pipeline.market_data.assets import market_data_1m
    from tis_pipeline.market_data.checks import expected_symbols_present
    from tis_pipeline.market_data.partitions import range_tags
    from tis_pipeline.market_data.sources import BarSource
    from tis_pipeline.resources import PostgresResource

    instance = dg.DagsterInstance.ephemeral()
    before = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    result = dg.materialize(
        [market_data_1m, expected_symbols_present],
        resources={"db": PostgresResource(url=url), "bars": BarSource()},
        tags=range_tags(day, day),
        instance=instance,
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_SELF)
    spans = step_spans(instance, result.run_id)
    return {
        "symbols": n_symbols,
        "day": day,
        "success": result.success,
        "wall_s": round(wall, 2),
        "steps_s": {step: round(b - a, 2) for step, (a, b) in spans.items()},
        "cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 2),
        "peak_rss_mb": round(after.ru_maxrss / 1024),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="(a) and (b) are taken in turns this many times; the medians are reported",
    )
    parser.add_argument("--skip-to-sql", action="store_true", help="to_sql is slow; skip it for quick runs")
    parser.add_argument(
        "--cold",
        action="store_true",
        help="no warm-up run first: the first ingest then also pays this process's one-time costs "
        "(lazy imports, first calls); a backfill pays them once for all its chunks",
    )
    parser.add_argument(
        "--steps",
        action="store_true",
        help="add seconds per step (first ingest, rollups; threads overlap) to the JSON line",
    )
    parser.add_argument("--step-alone", type=int, metavar="N", help="the ingest step alone, N symbols")
    parser.add_argument(
        "--database", metavar="URL", help="with --step-alone (required): the database it writes (a copy)"
    )
    parser.add_argument("--day", default="2024-01-08", help="with --step-alone: the synthetic day")
    args = parser.parse_args()
    if args.step_alone is not None:
        if args.step_alone < 1:
            parser.error("--step-alone needs N >= 1 symbols")
        if not args.database:
            # the step writes the database it is given: there is no scratch one to fall back on
            parser.error("--step-alone needs --database URL, a copy of a migrated database (it is written)")
        print(json.dumps(step_alone(args.database, args.step_alone, args.day)))
        return
    timers: dict[str, float] = {}
    if args.steps:
        time_steps(timers)

    import dagster as dg

    from tis_pipeline.market_data import synthetic
    from tis_pipeline.market_data.assets import market_data_1h, market_data_1m, market_data_15m
    from tis_pipeline.market_data.partitions import range_tags
    from tis_pipeline.market_data.sources import BarSource
    from tis_pipeline.pg import migrate
    from tis_pipeline.pg.copy import copy_frame, frame_to_csv_bytes
    from tis_pipeline.pg.engine import engine, raw_connection

    symbols = [f"SYM{i:03d}" for i in range(args.symbols)]
    days = max(1, math.ceil(args.rows / (args.symbols * 1440 * 0.995)))
    start = pd.Timestamp("2024-01-01", tz="UTC")
    end = start + pd.Timedelta(days=days)
    frame = synthetic.bars(start, end, symbols, seed=1)
    rows = len(frame)
    server, url = scratch_database()
    out: dict = {"rows": rows}
    try:
        migrate.upgrade(url)
        eng = engine(url)
        with eng.begin() as conn:
            conn.execute(sa.text(BARE.format(name="bench_copy")))
            conn.execute(sa.text(BARE.format(name="bench_to_sql")))
        # (a) raw COPY of ready CSV bytes into a bare table and (b) the project's ingest of the range (read,
        # normalise, validate, COPY, replace; one Dagster run), taken in turns, ``--repeat`` times each, both
        # into empty tables every time: on a shared machine the load drifts, and alternating keeps each pair
        # under the same load; medians are reported
        payload = frame_to_csv_bytes(frame)
        resources, tags = synthetic_range(url, args.symbols, start.date().isoformat(), days)
        # one instance for every run, as `tis backfill` and the daemon run on the one persistent instance:
        # materialize() without one builds a new ephemeral instance per run (about 50 ms, not the ingest's)
        instance = dg.DagsterInstance.ephemeral()
        if not args.cold:  # one small day outside the range through the same assets, so both runs are warm
            warm_day = (start - pd.Timedelta(days=1)).date().isoformat()
            warm = {"db": resources["db"], "bars": BarSource(source="synthetic", symbols=symbols[:2], seed=2)}
            assert dg.materialize(
                [market_data_1m, market_data_15m, market_data_1h],
                resources=warm,
                tags=range_tags(warm_day, warm_day),
                instance=instance,
            ).success
        out["warm"] = not args.cold
        copy_runs, ingest_runs = [], []
        for attempt in range(args.repeat):
            with eng.begin() as conn:
                conn.execute(sa.text("TRUNCATE bench_copy"))
            t0 = time.perf_counter()
            with (
                eng.begin() as conn,
                raw_connection(conn).cursor() as cur,
                cur.copy(
                    'COPY bench_copy (symbol, "timestamp", open, high, low, close, volume) '
                    "FROM STDIN (FORMAT csv)"
                ) as copy,
            ):
                copy.write(payload)
            copy_runs.append(round(rows / (time.perf_counter() - t0)))
            if attempt:
                drop_day_partitions(eng, start, end)
            timers.clear()
            t0 = time.perf_counter()
            result = dg.materialize([market_data_1m], resources=resources, tags=tags, instance=instance)
            ingest_s = time.perf_counter() - t0
            assert result.success
            ingest_runs.append(round(rows / ingest_s))
        del payload
        out["copy_rows_per_s"] = round(statistics.median(copy_runs))
        out["ingest_rows_per_s"] = round(statistics.median(ingest_runs))
        out["copy_runs"], out["ingest_runs"] = copy_runs, ingest_runs
        out["ingest_vs_copy_runs"] = [round(b / a, 3) for a, b in zip(copy_runs, ingest_runs, strict=True)]
        steps = {"ingest": {k: round(v, 2) for k, v in timers.items()}}
        t0 = time.perf_counter()
        result = dg.materialize([market_data_1m], resources=resources, tags=tags, instance=instance)
        out["ingest_rerun_rows_per_s"] = round(rows / (time.perf_counter() - t0))
        # rollups: 15m and 1h over the same range, in rows of 1-minute source per second
        timers.clear()
        t0 = time.perf_counter()
        result = dg.materialize(
            [market_data_1m.to_source_asset(), market_data_15m, market_data_1h],
            resources=resources,
            tags=tags,
            selection=[market_data_15m, market_data_1h],
            instance=instance,
        )
        assert result.success
        out["rollup_source_rows_per_s"] = round(2 * rows / (time.perf_counter() - t0))
        steps["rollups"] = {k: round(v, 2) for k, v in timers.items()}
        # each rollup again in a run of its own (a re-run: it replaces its bars), in 1-minute rows it covers
        # per second; the 15-minute one is the figure to hold against a plain date_bin GROUP BY of the
        # 1-minute bars
        upstream = [market_data_1m.to_source_asset()]
        for rollup, key in (
            (market_data_15m, "rollup_15m_source_rows_per_s"),
            (market_data_1h, "rollup_1h_source_rows_per_s"),
        ):
            t0 = time.perf_counter()
            result = dg.materialize(
                [*upstream, rollup], resources=resources, tags=tags, selection=[rollup], instance=instance
            )
            assert result.success
            out[key] = round(rows / (time.perf_counter() - t0))
            upstream.append(rollup.to_source_asset())
        # (c) pandas to_sql, default method
        if not args.skip_to_sql:
            t0 = time.perf_counter()
            with eng.begin() as conn:
                frame.to_sql("bench_to_sql", conn, if_exists="append", index=False, chunksize=50_000)
            out["to_sql_rows_per_s"] = round(rows / (time.perf_counter() - t0))
            out["ingest_vs_to_sql"] = round(out["ingest_rows_per_s"] / out["to_sql_rows_per_s"], 2)
        # the median of the pairs' ratios: each pair ran under the same load
        out["ingest_vs_copy"] = statistics.median(out["ingest_vs_copy_runs"])
        out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        out["load_average"] = [round(x, 2) for x in os.getloadavg()]
        if args.steps:
            out["steps_s"] = steps
        with eng.connect() as conn:
            assert (
                conn.execute(
                    sa.text('SELECT count(*) FROM market_data_1m WHERE "timestamp" >= :a'), {"a": start}
                ).scalar_one()
                == rows
            )
    finally:
        drop_database(server, url)
    del copy_frame
    print(json.dumps(out))


if __name__ == "__main__":
    main()
