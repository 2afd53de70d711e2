"""One synthetic day end to end at several sizes: wall, µs/bar by stage, peak RSS (issue 19).

    python -m bench.scale --symbols 50,500,2000 [--day 2024-01-08] [--server postgresql+psycopg://root@127.0.0.1:5432]

Per size, on a fresh database ``h_scale_<n>`` of the given server (dropped first, and again after unless
``--keep``; ``--db-prefix`` names it otherwise) and a fresh DAGSTER_HOME under /tmp: ``python -m
tis_pipeline.cli backfill --start D --end D --in-process`` (every daily-partitioned asset: ingest, rollups,
DSI, the trading day, one run) with TIS_MARKET_SOURCE=synthetic and TIS_SYMBOLS = n generated names. While it
runs, the RSS of the CLI's process tree (the run executes in it or in its children) is sampled every 0.1 s;
its peak is ``peak_rss_mib`` (and ``peak_rss_mib_by_stage`` / ``_by_step``: the peak of the samples taken
during each stage's / step's span; the steps run one after the other in one process, so a step's figure
includes the heap an earlier one left), and ``cli_maxrss_mib`` is the kernel's high-water mark of the largest
single process of the tree (wait4). The stages' seconds are the Dagster steps' STEP_START..STEP_SUCCESS spans
from the run's event log: ingest = market_data_1m, rollups = market_data_15m + market_data_1h, dsi,
trading_day = the trading day's steps, each with the check steps named after its assets (freshness checks
apart); ``other_s`` is the rest of the wall (process start, definitions, run launch, teardown). ``cli_cpu_s``:
CPU seconds of the CLI's tree (wait4; the server's backends not included), less sensitive than the wall to a
loaded machine. ``load_1m`` is the load average before and after (the machine is shared: note it beside the
figures).

Prints one JSON line per size. ``--warm``: before the timed run, the fresh database is migrated and Dagster's
storage created (what a database pays once, before its first run), so the figures are those of any later run;
the JSON line says ``"warm": true``.

``--run-worker``: the run as the daemon's run worker executes it (what a day materialized from the UI or by
the schedule costs): ``dagster job execute`` of ``daily_partitioned_job`` over the day, with the job's own
executor and the storage of the project's ``dagster.yaml``; implies ``--warm`` (a worker does not migrate);
the JSON line says ``"via": "run_worker"`` (else ``"tis_backfill"``).

    python -m bench.scale --symbols 500 --days 31 [--day 2024-01-08]

A range instead of one day: the N consecutive days from ``--day`` in one ``tis backfill`` (one run: the
default chunk is 31 days), on a database ``h_scale_<n>_<N>d`` of its own (so that a range and a single day of
the same size can run side by side); the JSON line gives ``days`` and ``last_day`` beside ``day``. Memory
should follow a day, not the range (issue 19): compare ``peak_rss_mib_by_stage`` of 7 and 31 days.

    python -m bench.scale --symbols 2000 --celery-workers 1,2 [--shards 2]

The Celery scale-out instead (``tis_pipeline.ops.scale_out``: ingest, rollups and DSI in ``--shards`` symbol
shards, each step a Celery task; the trading day is not in it): per worker count W, on a fresh database
``h_shards_<n>_<W>`` (project tables and Dagster's storage) and a fresh DAGSTER_HOME, W real workers (one
process each, ``dagster-celery worker start``) on the local Redis (databases 12/13, a queue of their own),
then one run of the job over the day, launched from a process of its own. ``wall_s`` is that run's launch to
its end; ``stage_s`` the steps' spans by stage (shards overlap: their sum exceeds the wall when they run side
by side), ``shard_s`` each DSI shard's; ``peak_rss_mib`` the peak RSS of the launcher's and the workers'
process trees together. The same shards for every W, so the tables are the same and only the workers
differ; the last line gives the speed-up of each W over the first.
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
from datetime import date, timedelta
from pathlib import Path

import psutil
import sqlalchemy as sa

from bench.table_digest import digest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# what market_data_celery_job writes: ingest, rollups, DSI
CELERY_JOB_TABLES = (
    "market_data_1m",
    "market_data_15m",
    "market_data_1h",
    "market_data_quarantine",
    "dsi_evidence",
    "anomaly_events",
    "dsi_state",
)
MIB = 1024 * 1024

WARM_UP = textwrap.dedent("""
    import os
    import dagster as dg
    from tis_pipeline import environment
    from tis_pipeline.pg.migrate import upgrade
    environment.prepare(start_embedded=False)
    upgrade(os.environ["TIS_DATABASE_URL"])
    dg.DagsterInstance.get()
""")

PREPARED = textwrap.dedent("""
    import json
    from tis_pipeline import environment
    print(json.dumps(environment.prepare(start_embedded=False)))
""")

STEP_TIMES = textwrap.dedent("""
    import json
    import dagster as dg
    from bench.steps import step_spans
    from tis_pipeline import environment
    environment.prepare(start_embedded=False)
    instance = dg.DagsterInstance.get()
    out = [{"run_id": run.run_id, "status": run.status.value, "steps": step_spans(instance, run.run_id)}
           for run in instance.get_runs()]
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


def last_day_of(day: str, days: int) -> str:
    """The last of ``days`` consecutive days from ``day`` (ISO dates)."""
    if days < 1:
        raise ValueError(f"--days must be at least 1, not {days}")
    return (date.fromisoformat(day) + timedelta(days=days - 1)).isoformat()


def run_size(
    n: int,
    day: str,
    server: str,
    keep: bool,
    days: int = 1,
    prefix: str = "h_scale",
    warm: bool = False,
    run_worker: bool = False,
) -> dict:
    last = last_day_of(day, days)
    name = f"{prefix}_{n}" if days == 1 else f"{prefix}_{n}_{days}d"
    url = fresh_database(server, name)
    home = Path(tempfile.mkdtemp(prefix=f"tis-scale-{n}-{days}d-"))
    env = {
        k: v
        for k, v in os.environ.items()
        # Dagster's instance as `tis` makes it (environment.prepare): the project's dagster.yaml under
        # TIS_HOME, run storage in the size's database; a bare DAGSTER_HOME would measure SQLite storage
        if k
        not in {
            "TIS_DAGSTER_DATABASE_URL",
            "TIS_DAGSTER_PG_URL",
            "DAGSTER_HOME",
            "TIS_MARKET_DATA_DIR",
            "TIS_ARCHIVE_DIR",
        }
    }
    env.update(
        {
            "TIS_HOME": str(home),
            "TIS_DATABASE_URL": url,
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
    warm = warm or run_worker
    command = [sys.executable, "-m", "tis_pipeline.cli", "backfill", "--start", day, "--end", last]
    command.append("--in-process")
    if run_worker:
        # the variables `tis` sets for every Dagster process (DAGSTER_HOME, TIS_DAGSTER_PG_URL), then the job
        prepare = [sys.executable, "-c", PREPARED]
        prepared = subprocess.check_output(prepare, env=env, cwd=PROJECT_ROOT, text=True)
        env.update(json.loads(prepared.strip().splitlines()[-1]))
        tags = {"dagster/asset_partition_range_start": day, "dagster/asset_partition_range_end": last}
        job = ["-m", "tis_pipeline.definitions", "-j", "daily_partitioned_job", "--tags", json.dumps(tags)]
        command = [str(Path(sys.executable).with_name("dagster")), "job", "execute", *job]
    if warm:
        # what a database pays once, before its first run: the project's migrations from base and Dagster's
        # storage tables; the timed run then pays what every later run pays
        warm_up = [sys.executable, "-c", WARM_UP]
        subprocess.run(warm_up, env=env, cwd=PROJECT_ROOT, check=True, capture_output=True)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    proc = subprocess.Popen(
        command,
        env=env,
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    root, peak = psutil.Process(proc.pid), 0
    output: list[str] = []
    stdout = proc.stdout
    assert stdout is not None  # stdout=PIPE
    reader = threading.Thread(target=lambda: output.extend(stdout), daemon=True)
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
        raise RuntimeError(f"backfill of {n} symbols x {days} days failed:\n{''.join(output)[-4000:]}")
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
    step_peak: dict[str, int] = {}
    for run in runs:
        for key, (a, b) in run["steps"].items():
            steps[key] = steps.get(key, 0.0) + b - a
            stages[stage_of(key)] += b - a
            during = [rss for t, rss in samples if a <= t <= b]
            stage_peak[stage_of(key)] = max(stage_peak[stage_of(key)], *during, 0)
            step_peak[key] = max(step_peak.get(key, 0), *during, 0)
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
        "days": days,
        "warm": warm,
        "via": "run_worker" if run_worker else "tis_backfill",
        "last_day": last,
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
        "peak_rss_mib_by_step": {k: round(v / MIB) for k, v in sorted(step_peak.items())},
        "cli_maxrss_mib": round(maxrss_kib / 1024),
        "cli_cpu_s": round(cpu_s, 2),
        "load_1m": [round(load_before, 2), round(load_after, 2)],
        "cores": os.cpu_count(),
    }


LAUNCH = textwrap.dedent("""
    import json, sys, time
    import dagster as dg
    from bench.steps import step_spans
    from tis_pipeline.market_data.partitions import range_tags
    day, queue, shards = sys.argv[1], sys.argv[2], int(sys.argv[3])
    job = dg.build_reconstructable_job(
        "tis_pipeline.ops.scale_out", "market_data_celery_job",
        reconstructable_kwargs={"broker": "redis://127.0.0.1:6379/12", "backend": "redis://127.0.0.1:6379/13",
                                "queue": queue, "shards": shards})
    with dg.DagsterInstance.get() as instance:
        started = time.time()
        tags = range_tags(day, day)
        with dg.execute_job(job, instance=instance, tags=tags, raise_on_error=False) as result:
            run_id, success = result.run_id, result.success
        ended = time.time()
        spans = step_spans(instance, run_id)
    print(json.dumps({"run_id": run_id, "success": success, "wall_s": ended - started, "steps": spans}))
""")
WORKER_YAML = textwrap.dedent("""
    execution:
      config:
        broker: redis://127.0.0.1:6379/12
        backend: redis://127.0.0.1:6379/13
        config_source:
          result_expires: 3600
          worker_prefetch_multiplier: 1
          task_acks_late: true
""")


def _start_workers(count: int, queue: str, env: dict, home: Path) -> list[subprocess.Popen]:
    """``count`` Celery workers of one process each on ``queue``, once each says it is ready."""
    yaml_path = home / "worker.yaml"
    yaml_path.write_text(WORKER_YAML)
    bin_dir = Path(sys.executable).parent
    env = {**env, "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", "PYTHONUNBUFFERED": "1"}
    workers = []
    for i in range(count):
        log = (home / f"worker{i}.log").open("wb")
        workers.append(
            subprocess.Popen(
                [str(bin_dir / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app", "-y",
                 str(yaml_path), "-n", f"bench{i}_{queue}", "-q", queue, "-l", "INFO", "--",
                 "--concurrency=1", "--without-gossip", "--without-mingle"],
                cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        )  # fmt: skip
    deadline = time.monotonic() + 120
    for i, proc in enumerate(workers):
        while " ready." not in (home / f"worker{i}.log").read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                _stop_workers(workers)
                raise RuntimeError(
                    f"worker {i} did not start: {(home / f'worker{i}.log').read_text()[-2000:]}"
                )
            time.sleep(0.5)
    return workers


def _stop_workers(workers: list[subprocess.Popen]) -> None:
    import signal

    for proc in workers:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    for proc in workers:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _forget_queue(queue: str) -> None:
    """The run's queue, its kombu bindings (Redis database 12) and its task results (13) off the broker."""
    import redis

    broker, backend = redis.Redis(db=12), redis.Redis(db=13)
    broker.delete(queue)
    for pattern in ("_kombu.binding.*", "_kombu.binding_permanent.*"):
        for key in broker.scan_iter(pattern):
            if key.decode().endswith(queue):
                broker.delete(key)
    for key in backend.scan_iter("celery-task-meta-*"):
        backend.delete(key)  # database 13 is the benchmark's own
    broker.close()
    backend.close()


def run_celery(n: int, workers: int, shards: int, day: str, server: str, keep: bool) -> dict:
    """The day of ``n`` symbols as one run of the Celery job on ``workers`` workers (module docstring)."""
    import uuid

    name = f"h_shards_{n}_{workers}"
    url = fresh_database(server, name)
    home = Path(tempfile.mkdtemp(prefix=f"tis-shards-{n}-{workers}-"))
    (home / "dagster").mkdir()
    (home / "dagster" / "dagster.yaml").symlink_to(PROJECT_ROOT / "dagster.yaml")
    from tis_pipeline.pg.engine import with_driver
    from tis_pipeline.pg.migrate import upgrade

    upgrade(url)
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in {"TIS_DAGSTER_DATABASE_URL", "TIS_MARKET_DATA_DIR", "TIS_ARCHIVE_DIR", "TIS_SYMBOL_SHARDS"}
    }
    env.update(
        {
            "TIS_HOME": str(home),
            "DAGSTER_HOME": str(home / "dagster"),
            "TIS_DATABASE_URL": url,
            "TIS_DAGSTER_PG_URL": with_driver(url, "psycopg2"),
            "TIS_MARKET_SOURCE": "synthetic",
            "TIS_SYMBOLS": ",".join(f"S{i:05d}" for i in range(n)),
            "TIS_SYNTHETIC_SEED": "42",
            "TIS_PARTITION_START": "2024-01-01",
            "DAGSTER_DISABLE_TELEMETRY": "1",
            "GX_ANALYTICS_ENABLED": "false",
            "PYTHONWARNINGS": "ignore",
        }
    )
    queue = f"bench_{uuid.uuid4().hex[:10]}"
    # Dagster's storage tables are created once, before the workers: workers starting together on a fresh
    # database would each create them, and one fails ("type run_tags already exists")
    subprocess.run(
        [sys.executable, "-c", "import dagster as dg; dg.DagsterInstance.get()"],
        env=env, cwd=PROJECT_ROOT, check=True, capture_output=True,
    )  # fmt: skip
    load_before = os.getloadavg()[0]
    procs = _start_workers(workers, queue, env, home)
    try:
        launcher = subprocess.Popen(
            [sys.executable, "-c", LAUNCH, day, queue, str(shards)],
            env=env, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        roots = [psutil.Process(p.pid) for p in (*procs, launcher)]
        peak = 0
        while launcher.poll() is None:
            peak = max(peak, sum(tree_rss(r) for r in roots))
            time.sleep(0.2)
        out, err = launcher.communicate()
    finally:
        _stop_workers(procs)
        _forget_queue(queue)
    load_after = os.getloadavg()[0]
    if launcher.returncode != 0 or not out.strip():
        raise RuntimeError(f"the Celery run failed to launch:\n{err[-4000:]}")
    run = json.loads(out.strip().splitlines()[-1])
    if not run["success"]:
        logs = "".join((home / f"worker{i}.log").read_text(errors="replace")[-2000:] for i in range(workers))
        raise RuntimeError(f"the Celery run {run['run_id']} failed; worker logs:\n{logs}")
    stages = dict.fromkeys(("ingest", "rollups", "dsi"), 0.0)
    for key, (a, b) in run["steps"].items():
        stage = stage_of(key)
        stages[stage] = stages.get(stage, 0.0) + b - a
    # every table the job writes, every column but the wall-clock ones (bench.table_digest): the same tables
    # for every worker count is the claim
    written = digest(url, CELERY_JOB_TABLES)
    bars, events = (int(written[t].split()[0]) for t in ("market_data_1m", "anomaly_events"))
    if not keep:
        fresh_database(server, name, create=False)
        shutil.rmtree(home, ignore_errors=True)
    shard_spans = {k: round(b - a, 2) for k, (a, b) in run["steps"].items() if "dsi_shard" in k}
    return {
        "symbols": n,
        "day": day,
        "celery_workers": workers,
        "shards": shards,
        "bars": bars,
        "anomaly_events": events,
        "tables_digest": written,
        "wall_s": round(run["wall_s"], 2),
        "us_per_bar": round(run["wall_s"] / bars * 1e6, 1),
        "stage_s": {k: round(v, 2) for k, v in stages.items()},
        "shard_s": shard_spans,
        "steps_s": {k: round(b - a, 2) for k, (a, b) in sorted(run["steps"].items())},
        # when each step ran, from the first step's start: which steps the workers ran side by side
        "steps_at_s": {
            k: [round(a - first, 1), round(b - first, 1)]
            for first in [min((a for a, _ in run["steps"].values()), default=0.0)]
            for k, (a, b) in sorted(run["steps"].items(), key=lambda kv: kv[1])
        },
        "peak_rss_mib": round(peak / MIB),
        "load_1m": [round(load_before, 2), round(load_after, 2)],
        "cores": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", default="50,500,2000")
    parser.add_argument("--day", default="2024-01-08")
    parser.add_argument(
        "--days", type=int, default=1, help="N consecutive days from --day in one backfill (not with Celery)"
    )
    parser.add_argument("--server", default="postgresql+psycopg://root@127.0.0.1:5432")
    parser.add_argument("--keep", action="store_true", help="keep each size's database and DAGSTER_HOME")
    parser.add_argument(
        "--db-prefix",
        default="h_scale",
        help="the single-process runs' databases are <prefix>_<n> (another leaves the kept ones alone)",
    )
    parser.add_argument(
        "--celery-workers", default="", help="e.g. 1,2: the Celery scale-out on that many workers instead"
    )
    parser.add_argument("--shards", type=int, default=2, help="DSI's symbol shards in the Celery runs")
    parser.add_argument(
        "--warm",
        action="store_true",
        help="migrate the fresh database and create Dagster's storage before the timed run (a later run's)",
    )
    parser.add_argument(
        "--run-worker",
        action="store_true",
        help="run the day as the daemon's run worker does (dagster job execute; implies --warm)",
    )
    args = parser.parse_args()
    sizes = [int(x) for x in args.symbols.split(",") if x.strip()]
    if args.days < 1:  # before any database is made
        parser.error(f"--days must be at least 1, not {args.days}")
    if args.celery_workers:
        if args.days != 1:
            parser.error("--days is for the single-process backfill, not the Celery runs")
        counts = [int(x) for x in args.celery_workers.split(",") if x.strip()]
        for n in sizes:
            found = [run_celery(n, w, args.shards, args.day, args.server, args.keep) for w in counts]
            for line in found:
                print(json.dumps(line), flush=True)
            print(
                json.dumps(
                    {
                        "symbols": n,
                        "same_tables": all(f["tables_digest"] == found[0]["tables_digest"] for f in found),
                        "speedup_over_first": {
                            f["celery_workers"]: round(found[0]["wall_s"] / f["wall_s"], 2) for f in found
                        },
                    }
                ),
                flush=True,
            )
        return
    for n in sizes:
        line = run_size(
            n, args.day, args.server, args.keep, args.days, args.db_prefix, args.warm, args.run_worker
        )
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
