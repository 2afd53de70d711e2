"""Trading-day benchmark: plans, approvals, execution, performance and the ecosystem over synthetic days.

    python -m bench.trading_day [--days 5] [--symbols 50]

Loads the bars, DSI and then times ``trading_day`` alone over the range (one run), in a scratch database.
Prints one JSON line last: days, events, plans, rows written per table, seconds, and events per second.

    python -m bench.trading_day --database postgresql+psycopg://root@127.0.0.1:5432/h_scale_2000 \
        --day 2024-01-08 [--repeat 2] [--rerun]

The trading day's step alone on a database that already holds the day's bars and DSI (e.g. one
``python -m bench.scale --symbols 2000 --keep`` left): before each repeat the day's trading-day rows are taken
back (plans, approvals, performance, messages, sharing, triggers, replications, their links on events and
evidence, the bars' notes, the modules and the ecosystem states), so each repeat is the day's first run, as in
a backfill (``--rerun``: they are left, each repeat replaces the previous one's rows). The process is first
made as the steps before the trading day leave it in a ``tis backfill`` (glibc's thresholds of
``pg.memory``, Great Expectations and scipy imported: ``--cold`` leaves it fresh). One JSON line per repeat:
``step_s`` (the materialization's wall, the asset checks included), ``cpu_s`` (this process's CPU seconds:
less sensitive to a shared machine), ``server_cpu_s`` (the CPU seconds of the database's server processes
serving the step's connections: the server runs on this machine), ``rss_before_mib`` and ``peak_rss_mib``
(resident memory before the step and its high-water mark during it, reset before each repeat), and
``own_peak_mib`` (their difference: what the step itself added), the plans and the 1-minute load average.
Old code against new: run it from each tree (``cd <tree> && python -m bench.trading_day --database ...``)
back to back.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings

import sqlalchemy as sa

warnings.filterwarnings("ignore")


def _before_the_trading_day(url: str, day: str) -> None:
    """The day's trading-day rows, links and notes removed, and every module and ecosystem state."""
    import pandas as pd

    from tis_pipeline.pg.engine import engine
    from tis_pipeline.trading_day import store

    start = pd.Timestamp(day, tz="UTC")
    with engine(url).begin() as conn:
        store.clear_window(conn, start, start + pd.Timedelta(days=1))
        conn.execute(
            sa.text(
                "UPDATE market_data_1m SET module_intelligence = NULL, module_learning_updates = NULL "
                "WHERE module_intelligence IS NOT NULL OR module_learning_updates IS NOT NULL"
            )
        )
        conn.execute(sa.text("DELETE FROM modules"))
        conn.execute(sa.text("DELETE FROM ecosystem_state"))


def _status_mib(key: str) -> int:
    """A figure of /proc/self/status in MiB (VmRSS: resident now; VmHWM: the high-water mark)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) // 1024
    return 0


def _reset_high_water_mark() -> None:
    """VmHWM back to the resident set now (Linux: ``echo 5 > /proc/PID/clear_refs``), so the next figure is
    the peak of what follows, not of anything before it."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def _backend_cpu_s(url: str) -> dict[int, float]:
    """CPU seconds (user + system) so far of each PostgreSQL client backend connected to ``url``'s database
    (the server runs on this machine; the engine's pool keeps the step's connections, so their backends
    outlive the step and the difference of two readings is the step's)."""
    import psutil

    from tis_pipeline.pg.engine import engine

    with engine(url).connect() as conn:
        pids = conn.execute(
            sa.text(
                "SELECT pid FROM pg_stat_activity "
                "WHERE datname = current_database() AND backend_type = 'client backend'"
            )
        ).scalars()
        spent = {}
        for pid in pids:
            try:
                times = psutil.Process(pid).cpu_times()
            except psutil.Error:
                continue
            spent[int(pid)] = times.user + times.system
        return spent


def _as_in_a_backfill() -> None:
    """The process as the steps before the trading day leave it in a ``tis backfill``: glibc's thresholds set
    (the ingest: ``pg.memory``) and Great Expectations imported (the GE step; it imports scipy.stats, which
    the scores' empyrical needs), so the step's figures hold neither (seconds on a first import)."""
    import great_expectations  # noqa: F401

    from tis_pipeline.pg.memory import retain_freed_memory

    retain_freed_memory()


def step_alone(url: str, day: str, repeat: int, rerun: bool, cold: bool = False) -> None:
    import dagster as dg

    from tis_pipeline.dsi.assets import dsi
    from tis_pipeline.market_data.assets import market_data_1h, market_data_1m, market_data_15m
    from tis_pipeline.pg.engine import engine
    from tis_pipeline.resources import PostgresResource
    from tis_pipeline.trading_day.assets import trading_day

    if not cold:
        _as_in_a_backfill()

    upstream = (market_data_1m, market_data_15m, market_data_1h, dsi)
    sources = [spec for a in upstream for spec in a.to_source_assets()]
    for _ in range(repeat):
        if not rerun:
            _before_the_trading_day(url, day)
        load = os.getloadavg()[0]
        _reset_high_water_mark()
        rss_before = _status_mib("VmRSS")
        server_before = _backend_cpu_s(url)
        t0, c0 = time.perf_counter(), time.process_time()
        assert dg.materialize(
            [*sources, trading_day], partition_key=day, resources={"db": PostgresResource(url=url)}
        ).success
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        peak = _status_mib("VmHWM")
        server_after = _backend_cpu_s(url)
        server_cpu = sum(s - server_before.get(pid, 0.0) for pid, s in server_after.items())
        with engine(url).connect() as conn:
            plans = conn.execute(sa.text("SELECT count(*) FROM trading_plans")).scalar_one()
        print(
            json.dumps(
                {
                    "day": day,
                    "plans": plans,
                    "step_s": round(seconds, 2),
                    "cpu_s": round(cpu, 2),
                    "server_cpu_s": round(server_cpu, 2),
                    "rss_before_mib": rss_before,
                    "peak_rss_mib": peak,
                    "own_peak_mib": peak - rss_before,
                    "load_1m": [round(load, 2), round(os.getloadavg()[0], 2)],
                }
            ),
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=5)
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--database", help="a database holding the day's bars and DSI: the step alone")
    parser.add_argument("--day", default="2024-01-08", help="with --database: the day to run")
    parser.add_argument("--repeat", type=int, default=1, help="with --database: runs of the step")
    parser.add_argument("--rerun", action="store_true", help="with --database: keep the previous rows")
    parser.add_argument(
        "--cold",
        action="store_true",
        help="with --database: a fresh process (GE not imported, glibc's defaults), not as in a backfill",
    )
    args = parser.parse_args()
    if args.database:
        step_alone(args.database, args.day, args.repeat, args.rerun, args.cold)
        return
    import dagster as dg

    from bench.ingest import drop_database, scratch_database, synthetic_range
    from tis_pipeline.dsi.assets import dsi
    from tis_pipeline.market_data.assets import market_data_1h, market_data_1m, market_data_15m
    from tis_pipeline.pg import migrate
    from tis_pipeline.pg.engine import engine
    from tis_pipeline.trading_day.assets import TABLES, trading_day

    server, url = scratch_database()
    try:
        migrate.upgrade(url)
        resources, tags = synthetic_range(url, args.symbols, "2024-03-04", args.days)
        upstream = [market_data_1m, market_data_15m, market_data_1h, dsi]
        assert dg.materialize(upstream, resources=resources, tags=tags).success
        sources = [spec for a in upstream for spec in a.to_source_assets()]
        t0 = time.perf_counter()
        assert dg.materialize([*sources, trading_day], resources=resources, tags=tags).success
        seconds = time.perf_counter() - t0
        with engine(url).connect() as conn:
            rows = {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one() for t in TABLES}
            events = conn.execute(sa.text("SELECT count(*) FROM anomaly_events")).scalar_one()
        print(
            json.dumps(
                {
                    "days": args.days,
                    "symbols": args.symbols,
                    "events": events,
                    "rows": rows,
                    "run_s": round(seconds, 2),
                    "events_per_s": round(events / seconds),
                    "plans_per_s": round(rows["trading_plans"] / seconds),
                }
            )
        )
    finally:
        drop_database(server, url)


if __name__ == "__main__":
    main()
