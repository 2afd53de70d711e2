"""Peak memory of the DSI asset against the length of its range and the size of its pieces (issue 19).

    python -m bench.dsi_memory --symbols 200 --days 1,5 [--chunk 250000,50000] [--code /path/to/checkout]

On a fresh database ``h_dsi_memory`` of the server (``--server``): the market data of the longest range is
ingested once (synthetic source), then for each range length and piece size the ``dsi`` asset alone is
materialized over the first ``days`` days in a process of its own, fresh each time (DSI scores every bar
again: no state of an earlier run is used, the tables are replaced). Per run: wall, the process's peak RSS
(the kernel's high-water mark, wait4) and the bars scored. ``--code`` runs the same from another checkout
(e.g. a ``git archive`` of the commit before), for figures before and after on the same minutes. One JSON
line per run.

    python -m bench.dsi_memory --template h_scale_5000 [--first 2024-01-08] [--code ...] [--keep]

The ``dsi`` step alone on a copy of a kept day instead: the database ``--template`` (a ``bench.scale
--keep`` database, every asset materialized) is copied to ``--database`` (``createdb -T``; nobody may be
connected to the template), then in a process of its own, with Dagster, scipy, matplotlib and Great
Expectations imported first (in a run the earlier steps have imported them): ``pipeline.score_range`` of the
day ``--first`` and ``assets.dsi_results`` (the metadata and checks), as the step runs them. Figures: wall;
CPU seconds of the process (user, system); CPU seconds of the database's backends still open at the end (the
pooled connections: the build, the reads, the transaction); the process's RSS before the step and its peak
during it (sampled every 10 ms) and their difference, the step's own memory; glibc's thresholds as in a run
(``pg.memory.retain_freed_memory``). ``--keep`` keeps the copy (to digest it: ``bench.table_digest``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time
from datetime import date, timedelta
from pathlib import Path

import sqlalchemy as sa

PROJECT_ROOT = Path(__file__).resolve().parent.parent

RUN = textwrap.dedent("""
    import sys
    import dagster as dg
    from tis_pipeline.market_data.assets import market_data_1h, market_data_1m, market_data_15m
    from tis_pipeline.market_data.partitions import range_tags
    from tis_pipeline.market_data.sources import BarSource
    from tis_pipeline.resources import PostgresResource
    url, what, first, last, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
    market = [market_data_1m, market_data_15m, market_data_1h]
    resources = {"db": PostgresResource(url=url),
                 "bars": BarSource(source="synthetic", symbols=[f"S{i:05d}" for i in range(n)], seed=42)}
    if what == "market":
        assets = market
    else:
        from tis_pipeline.dsi.assets import dsi
        assets = [*(a.to_source_assets()[0] for a in market), dsi]
    result = dg.materialize(assets, resources=resources, tags=range_tags(first, last), raise_on_error=True)
    if what == "dsi":
        meta = next(m.metadata for m in result.asset_materializations_for_node("dsi")
                    if m.asset_key.to_user_string() == "dsi_evidence")
        print("BARS", meta["bars_scored"].value)
""")


STEP = textwrap.dedent("""
    import json, resource, sys, threading, time, warnings
    warnings.filterwarnings("ignore")
    import dagster as dg, great_expectations, matplotlib, pandas as pd, scipy.stats, sqlalchemy as sa  # noqa
    from tis_pipeline.dsi import pipeline
    from tis_pipeline.dsi.assets import dsi_results
    from tis_pipeline.dsi.logic.config import DsiConfig
    from tis_pipeline.pg.engine import engine
    from tis_pipeline.pg.memory import retain_freed_memory
    from tis_pipeline.quality import ge  # noqa
    url, day = sys.argv[1], pd.Timestamp(sys.argv[2], tz="UTC")
    retain_freed_memory()
    import psutil
    def rss():
        return psutil.Process().memory_info().rss
    db = engine(url)
    with db.connect():
        pass
    start = rss()
    peak, sampling = [start], [True]
    def sample():
        while sampling[0]:
            peak[0] = max(peak[0], rss())
            time.sleep(0.01)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    run = pipeline.score_range(db, day, day + pd.Timedelta(days=1), DsiConfig(), lambda _: None)
    list(dsi_results(run, day, day + pd.Timedelta(days=1)))
    wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    sampling[0] = False
    sampler.join()
    backend_s = 0.0
    with db.connect() as conn:
        pids = conn.execute(sa.text(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        )).scalars().all()
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
            backend_s += times.user + times.system
        except psutil.Error:
            pass
    print(json.dumps({
        "bars": run.bars_scored, "wall_s": round(wall, 2),
        "cpu_user_s": round(r1.ru_utime - r0.ru_utime, 2), "cpu_sys_s": round(r1.ru_stime - r0.ru_stime, 2),
        "backend_cpu_s": round(backend_s, 2), "backends": len(pids),
        "rss_start_mib": round(start / 2**20), "rss_peak_mib": round(peak[0] / 2**20),
        "own_mib": round((peak[0] - start) / 2**20),
        "seconds_by_step": {k: round(v, 2) for k, v in run.steps.items()},
        "out_of_sample": run.quality,
    }))
""")


def run(code: Path, env: dict[str, str], *args: str) -> tuple[float, int, str]:
    """(wall s, peak RSS bytes, stdout) of RUN in a fresh process."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN, *args],
        env={**env, "PYTHONPATH": str(code)},
        cwd=code,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"{args} failed")
    return time.perf_counter() - started, usage.ru_maxrss * 1024, out


def step_alone(args: argparse.Namespace) -> None:
    """The ``dsi`` step alone on a copy of ``args.template`` (the module docstring); one JSON line."""
    admin = sa.create_engine(
        f"{args.server}/postgres", isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
    )
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{args.database}" TEMPLATE "{args.template}"'))
    code = Path(args.code)
    env = {
        **os.environ,
        "PYTHONPATH": str(code),
        "DAGSTER_DISABLE_TELEMETRY": "1",
        "GX_ANALYTICS_ENABLED": "false",
    }
    try:
        out = subprocess.run(
            [sys.executable, "-c", STEP, f"{args.server}/{args.database}", args.first],
            env=env,
            cwd=code,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        figures = json.loads(out.strip().splitlines()[-1])
        print(
            json.dumps(
                {
                    "code": str(code),
                    "template": args.template,
                    **figures,
                    "load_1m": round(os.getloadavg()[0], 2),
                }
            )
        )
    finally:
        if not args.keep:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)'))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=200)
    parser.add_argument("--days", default="1,5")
    parser.add_argument("--chunk", default="250000")
    parser.add_argument("--first", default="2024-01-08")
    parser.add_argument("--code", default=str(PROJECT_ROOT))
    parser.add_argument("--server", default="postgresql+psycopg://root@127.0.0.1:5432")
    parser.add_argument("--database", default="h_dsi_memory")
    parser.add_argument("--template", help="a kept database: the dsi step alone on a copy of it")
    parser.add_argument("--keep", action="store_true", help="with --template: keep the copy")
    args = parser.parse_args()
    if args.template:
        step_alone(args)
        return
    days = [int(x) for x in args.days.split(",")]

    def last(n: int) -> str:
        return (date.fromisoformat(args.first) + timedelta(days=n - 1)).isoformat()

    admin = sa.create_engine(
        f"{args.server}/postgres", isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
    )
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{args.database}"'))
    url = f"{args.server}/{args.database}"
    env = {**os.environ, "DAGSTER_DISABLE_TELEMETRY": "1", "GX_ANALYTICS_ENABLED": "false"}
    code = Path(args.code)
    subprocess.run(
        [sys.executable, "-c", f"from tis_pipeline.pg import migrate; migrate.upgrade({url!r})"],
        env={**env, "PYTHONPATH": str(code)},
        cwd=code,
        check=True,
        capture_output=True,
    )
    run(code, env, url, "market", args.first, last(max(days)), str(args.symbols))
    for n_days in days:
        for chunk in args.chunk.split(","):
            wall, peak, out = run(
                code,
                {**env, "TIS_DSI_CHUNK_BARS": chunk},
                url,
                "dsi",
                args.first,
                last(n_days),
                str(args.symbols),
            )
            bars = int(next(line for line in out.splitlines() if line.startswith("BARS")).split()[1])
            print(
                json.dumps(
                    {
                        "code": str(code),
                        "symbols": args.symbols,
                        "days": n_days,
                        "chunk_bars": int(chunk),
                        "bars": bars,
                        "wall_s": round(wall, 1),
                        "peak_rss_mib": round(peak / 2**20),
                        "load_1m": round(os.getloadavg()[0], 2),
                    }
                ),
                flush=True,
            )
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
