"""One synthetic day end to end at several sizes: wall, µs/bar by stage, peak RSS (issue 19).

    python -m bench.scale --symbols 50,500,2000 [--day 2024-01-08] [--server postgresql+psycopg://root@127.0.0.1:5432]

Per size, on a fresh database ``h_scale_<n>`` of the given server (dropped first, and again after unless
``--keep``) and a fresh DAGSTER_HOME under /tmp: ``python -m tis_pipeline.cli backfill --start D --end D
--in-process`` (every daily-partitioned asset: ingest, rollups, DSI, the trading day, one run) with
TIS_MARKET_SOURCE=synthetic and TIS_SYMBOLS = n generated names. While it runs, the RSS of the CLI's process
tree (the run executes in it or in its children) is sampled every 0.1 s; its peak is ``peak_rss_mib`` (and
``peak_rss_mib_by_stage``: the peak of the samples taken during each stage's steps), and
``cli_maxrss_mib`` is the kernel's high-water mark of the largest single process of the tree (wait4). The
stages' seconds are the Dagster steps' STEP_START..STEP_SUCCESS spans from the run's event log: ingest =
market_data_1m, rollups = market_data_15m + market_data_1h, dsi, trading_day = the trading day's steps, each
with the check steps named after its assets (freshness checks apart); ``other_s`` is the rest of the wall
(process start, definitions, run launch, teardown). ``cli_cpu_s``: CPU seconds of the CLI's tree (wait4; the
server's backends not included), less sensitive than the wall to a loaded machine. ``load_1m`` is the load
average before and after (the machine is shared: note it beside the figures).

Prints one JSON line per size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import psutil
import sqlalchemy as sa

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024

STEP_TIMES = textwrap.dedent("""
    import json
    import dagster as dg
    from tis_pipeline import environment
    environment.prepare(start_embedded=False)
    instance = dg.DagsterInstance.get()
    out = []
    for run in instance.get_runs():
        spans = {}
        for record in instance.all_logs(run.run_id):
            event = record.dagster_event
            if event is None or record.step_key is None:
                continue
            kind = event.event_type_value
            span = spans.setdefault(record.step_key, [None, None])
            if kind == "STEP_START":
                span[0] = record.timestamp
            elif kind in ("STEP_SUCCESS", "STEP_FAILURE"):
                span[1] = record.timestamp
        out.append({"run_id": run.run_id, "status": run.status.value,
                    "steps": {k: [a, b] for k, (a, b) in spans.items() if a is not None and b is not None}})
    print(json.dumps(out))
""")


def stage_of(step: str) -> str:
    """The stage of a step: an asset's step or one of its check steps (named after the asset)."""
    if step.startswith("market_data_1m"):
        return "ingest"
    if step.startswith(("market_data_15m", "market_data_1h")):
        return "rollups"
    if step.startswith(("dsi", "anomaly_events")):
        return "dsi"
    if step.startswith("freshness_check"):
        return "freshness_checks"
    return "trading_day"


def tree_rss(root: psutil.Process) -> int:
    total = 0
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def fresh_database(server: str, name: str, create: bool = True) -> str:
    admin = sa.create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        if create:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return f"{server}/{name}"


def run_size(n: int, day: str, server: str, keep: bool) -> dict:
    name = f"h_scale_{n}"
    url = fresh_database(server, name)
    home = Path(tempfile.mkdtemp(prefix=f"tis-scale-{n}-"))
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"TIS_DAGSTER_DATABASE_URL", "TIS_MARKET_DATA_DIR", "TIS_ARCHIVE_DIR"}
    }
    env.update(
        {
            "TIS_HOME": str(home),
            "DAGSTER_HOME": str(home / "dagster"),
            "TIS_DATABASE_URL": url,
            "TIS_DAGSTER_PG_URL": url,
            "TIS_MARKET_SOURCE": "synthetic",
            "TIS_SYMBOLS": ",".join(f"S{i:05d}" for i in range(n)),
            "TIS_SYNTHETIC_SEED": "42",
            "TIS_PARTITION_START": "2024-01-01",
            "CI": "true",
            "DAGSTER_DISABLE_TELEMETRY": "1",
            "GX_ANALYTICS_ENABLED": "false",
            "PYTHONWARNINGS": "ignore",
        }
    )
    (home / "dagster").mkdir(parents=True)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tis_pipeline.cli", "backfill", "--start", day, "--end", day, "--in-process"],
        env=env,
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    root, peak, output = psutil.Process(proc.pid), 0, []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True)
    reader.start()
    samples: list[tuple[float, int]] = []  # (epoch s, RSS of the tree)
    while True:
        done, status, usage = os.wait4(proc.pid, os.WNOHANG)  # wait4: the tree's high-water mark too
        if done:
            proc.returncode = os.waitstatus_to_exitcode(status)
            break
        samples.append((time.time(), tree_rss(root)))
        peak = max(peak, samples[-1][1])
        time.sleep(0.1)
    wall = time.perf_counter() - started
    reader.join()
    maxrss_kib = usage.ru_maxrss  # the largest single process of the tree (the CLI waits for its children)
    cpu_s = usage.ru_utime + usage.ru_stime  # the tree's CPU time (PostgreSQL's backends not included)
    load_after = os.getloadavg()[0]
    if proc.returncode != 0:
        raise RuntimeError(f"backfill of {n} symbols failed:\n{''.join(output)[-4000:]}")
    steps_out = subprocess.run(
        [sys.executable, "-c", STEP_TIMES],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    runs = json.loads(steps_out.stdout.strip().splitlines()[-1])
    steps: dict[str, float] = {}
    stages = dict.fromkeys(("ingest", "rollups", "dsi", "trading_day", "freshness_checks"), 0.0)
    stage_peak = dict.fromkeys(stages, 0)
    for run in runs:
        for key, (a, b) in run["steps"].items():
            steps[key] = steps.get(key, 0.0) + b - a
            stages[stage_of(key)] += b - a
            during = [rss for t, rss in samples if a <= t <= b]
            stage_peak[stage_of(key)] = max(stage_peak[stage_of(key)], *during, 0)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        bars = conn.execute(sa.text("SELECT count(*) FROM market_data_1m")).scalar_one()
        events = conn.execute(sa.text("SELECT count(*) FROM anomaly_events")).scalar_one()
    engine.dispose()
    if not keep:
        fresh_database(server, name, create=False)
        shutil.rmtree(home, ignore_errors=True)
    return {
        "symbols": n,
        "day": day,
        "bars": bars,
        "anomaly_events": events,
        "runs": len(runs),
        "wall_s": round(wall, 2),
        "us_per_bar": round(wall / bars * 1e6, 1),
        "stage_s": {k: round(v, 2) for k, v in stages.items()},
        "us_per_bar_by_stage": {k: round(v / bars * 1e6, 1) for k, v in stages.items()},
        "other_s": round(wall - sum(stages.values()), 2),
        "steps_s": {k: round(v, 2) for k, v in sorted(steps.items())},
        "peak_rss_mib": round(peak / MIB),
        "peak_rss_mib_by_stage": {k: round(v / MIB) for k, v in stage_peak.items()},
        "cli_maxrss_mib": round(maxrss_kib / 1024),
        "cli_cpu_s": round(cpu_s, 2),
        "load_1m": [round(load_before, 2), round(load_after, 2)],
        "cores": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", default="50,500,2000")
    parser.add_argument("--day", default="2024-01-08")
    parser.add_argument("--server", default="postgresql+psycopg://root@127.0.0.1:5432")
    parser.add_argument("--keep", action="store_true", help="keep each size's database and DAGSTER_HOME")
    args = parser.parse_args()
    for n in (int(x) for x in args.symbols.split(",") if x.strip()):
        print(json.dumps(run_size(n, args.day, args.server, args.keep)), flush=True)


if __name__ == "__main__":
    main()
