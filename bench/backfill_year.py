"""One-year backfill through the real CLI, on a fresh embedded server, with wall time, memory and Dagster's
storage.

    python -m bench.backfill_year                      # 2024-01-01..2024-12-30, 50 symbols, group:market_data

What it does, all under a scratch TIS_HOME in /tmp (so /work/main/.tis and TIS_DATABASE_URL are never
touched):

1. ``tis db up`` starts a fresh embedded PostgreSQL there (timed apart: not part of the backfill);
2. ``python -m tis_pipeline.cli backfill --start … --end … --select 'group:market_data'`` runs as a subprocess
   with TIS_MARKET_SOURCE=synthetic and TIS_SYMBOLS = 50 names; every second the script samples the RSS of the
   CLI's process tree, and the RSS and PSS of the scratch server's processes (postmaster and every backend;
   PSS counts shared buffers once instead of once per backend); the CLI's own peak comes from wait4's rusage;
   It also splits the machine's busy CPU time during the run into ours (CLI + scratch server) and the rest,
   since other processes may load the machine;
3. it counts the rows written and measures Dagster's tables (pg_total_relation_size and rows of every table
   that is not the project's, in the database TIS_DAGSTER_PG_URL names — with the embedded server that is
   currently the project database ``tis`` itself, see ``dagster_storage_database`` in the output) before and
   after ``dagster_storage_prune_job`` with max_age_days=0, run in-process against the same instance, then
   after VACUUM and after VACUUM FULL of those tables;
4. it stops the scratch server and removes the scratch directory (``--keep`` keeps both).

Prints one JSON line last.
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
import time
from pathlib import Path

import psutil

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MB = 1024 * 1024


def scratch_env(home: Path, symbols: list[str]) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in {
            "TIS_DATABASE_URL",
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
            "TIS_MARKET_SOURCE": "synthetic",
            "TIS_SYMBOLS": ",".join(symbols),
            "TIS_SYNTHETIC_SEED": "42",
            "CI": "true",
            "DAGSTER_DISABLE_TELEMETRY": "1",
            "GX_ANALYTICS_ENABLED": "false",
            "PYTHONWARNINGS": "ignore",
        }
    )
    return env


def tis(args: list[str], env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "tis_pipeline.cli", *args],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"tis {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done


def postmaster_pid(home: Path) -> int:
    return int((home / "pgdata" / "postmaster.pid").read_text().splitlines()[0])


def server_processes(pid: int) -> list[psutil.Process]:
    master = psutil.Process(pid)
    return [master, *master.children(recursive=True)]


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def busy_cpu_s() -> float:
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def memory(procs: list[psutil.Process], pss: bool) -> tuple[int, int, int]:
    """(sum of RSS, sum of PSS or 0, largest single RSS) in bytes over the processes still alive."""
    rss_sum = pss_sum = biggest = 0
    for proc in procs:
        try:
            if pss:
                info = proc.memory_full_info()
                pss_sum += info.pss
            else:
                info = proc.memory_info()
            rss_sum += info.rss
            biggest = max(biggest, info.rss)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return rss_sum, pss_sum, biggest


DAGSTER_SIZES = textwrap.dedent("""
    import json, re, sys
    import sqlalchemy as sa
    from tis_pipeline import environment
    env = environment.prepare()
    url = env["TIS_DAGSTER_PG_URL"]
    project = set(json.loads(sys.argv[1]))  # the project's tables (present before Dagster first ran)
    vacuum = sys.argv[2] if len(sys.argv) > 2 else ""
    eng = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with eng.connect() as conn:
        names = [n for n in conn.execute(sa.text(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')")).scalars()
            if n not in project and not re.fullmatch(r"market_data_1m_p[0-9]{8}(_new)?", n)]
        for name in names if vacuum else []:
            conn.execute(sa.text(f'{vacuum} "{name}"'))
        out = {name: {"bytes": conn.execute(sa.text("SELECT pg_total_relation_size(CAST(:n AS regclass))"),
                                            {"n": f'"{name}"'}).scalar_one(),
                      "rows": conn.execute(sa.text(f'SELECT count(*) FROM "{name}"')).scalar_one()}
               for name in names}
        out["_database"] = conn.execute(sa.text("SELECT current_database()")).scalar_one()
        out["_database_bytes"] = conn.execute(
            sa.text("SELECT pg_database_size(current_database())")).scalar_one()
        out["_project_url_is_dagster_url"] = (sa.engine.make_url(env["TIS_DATABASE_URL"]).database
                                              == sa.engine.make_url(url).database)
    print(json.dumps(out))
""")

PROJECT_TABLES = textwrap.dedent("""
    import json
    import sqlalchemy as sa
    from tis_pipeline import environment
    env = environment.prepare()
    eng = sa.create_engine(env["TIS_DATABASE_URL"], poolclass=sa.pool.NullPool)
    with eng.connect() as conn:
        print(json.dumps(sa.inspect(conn).get_table_names()))
""")

PRUNE = textwrap.dedent("""
    import json, time
    from tis_pipeline import environment
    environment.prepare()
    import dagster as dg
    from tis_pipeline.ops.jobs import dagster_storage_prune_job
    instance = dg.DagsterInstance.get()
    runs_before = instance.get_runs_count()
    t0 = time.perf_counter()
    result = dagster_storage_prune_job.execute_in_process(
        instance=instance, run_config={"ops": {"prune_dagster_runs": {"config": {"max_age_days": 0}}}})
    print(json.dumps({"success": result.success, "runs_before": runs_before,
                      "runs_deleted": result.output_for_node("prune_dagster_runs"),
                      "runs_after": instance.get_runs_count(),
                      "prune_s": round(time.perf_counter() - t0, 2)}))
""")

PROJECT_ROWS = textwrap.dedent("""
    import json
    import sqlalchemy as sa
    from tis_pipeline import environment
    env = environment.prepare()
    eng = sa.create_engine(env["TIS_DATABASE_URL"], poolclass=sa.pool.NullPool)
    with eng.connect() as conn:
        out = {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
               for t in ("market_data_1m", "market_data_15m", "market_data_1h", "market_data_quarantine")}
        out["partitions_1m"] = conn.execute(sa.text(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'market_data_1m'::regclass")).scalar_one()
        out["database_bytes"] = conn.execute(
            sa.text("SELECT pg_database_size(current_database())")).scalar_one()
    print(json.dumps(out))
""")


def python_json(code: str, env: dict[str, str], *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def sizes_summary(sizes: dict) -> dict:
    """Dagster's tables only: total MB, and MB and rows of every table that holds something."""
    tables = {k: v for k, v in sizes.items() if not k.startswith("_")}
    return {
        "dagster_tables_mb": round(sum(v["bytes"] for v in tables.values()) / MB, 2),
        "dagster_rows": sum(v["rows"] for v in tables.values()),
        "database": sizes["_database"],
        "database_mb": round(sizes["_database_bytes"] / MB, 1),
        "tables": {
            k: {"mb": round(v["bytes"] / MB, 2), "rows": v["rows"]}
            for k, v in sorted(tables.items(), key=lambda kv: -kv[1]["bytes"])
            if v["rows"] or v["bytes"] > 64 * 1024
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--start", default="2024-01-01")
    parser.add_argument("--end", default="2024-12-30")
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--select", default="group:market_data")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between memory samples")
    parser.add_argument("--keep", action="store_true", help="keep the scratch server and directory")
    args = parser.parse_args()

    symbols = [f"SYM{i:03d}" for i in range(args.symbols)]
    home = Path(tempfile.mkdtemp(prefix="tis_backfill_", dir="/tmp"))
    home.chmod(0o755)  # as root, the embedded server runs as its own user and must reach pgdata
    env = scratch_env(home, symbols)
    out: dict = {
        "start": args.start,
        "end": args.end,
        "symbols": args.symbols,
        "select": args.select,
        "tis_home": str(home),
    }
    started_server = False
    try:
        t0 = time.perf_counter()
        tis(["db", "up"], env)
        started_server = True
        out["db_up_s"] = round(time.perf_counter() - t0, 1)
        master = postmaster_pid(home)
        project = json.dumps(python_json(PROJECT_TABLES, env))
        first = python_json(DAGSTER_SIZES, env, project)
        out["dagster_storage_database"] = first["_database"]
        out["dagster_storage_shares_project_database"] = first["_project_url_is_dagster_url"]

        load_start = os.getloadavg()
        used_start = psutil.virtual_memory().used
        with open(home / "backfill.log", "w") as log:  # the child writes it through its own copy
            t0 = time.perf_counter()
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tis_pipeline.cli",
                    "backfill",
                    "--start",
                    args.start,
                    "--end",
                    args.end,
                    "--select",
                    args.select,
                ],
                env=env,
                cwd=PROJECT_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        peak = {
            "cli_tree_rss": 0,
            "cli_largest_rss": 0,
            "pg_rss_sum": 0,
            "pg_pss_sum": 0,
            "pg_largest_rss": 0,
            "total_pss": 0,
            "system_used_delta": 0,
        }
        max_load, samples, status, rusage = 0.0, 0, None, None
        busy_start, pg_cpu = busy_cpu_s(), {}
        for p in server_processes(master):
            pg_cpu[p.pid] = (sum(p.cpu_times()[:2]), 0.0)  # (at start, latest)
        while True:
            waited, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if waited:
                break
            cli_rss, cli_pss, cli_big = memory(tree(proc.pid), pss=True)
            server = server_processes(master)
            pg_rss, pg_pss, pg_big = memory(server, pss=True)
            for p in server:
                try:
                    cpu = sum(p.cpu_times()[:2])
                except psutil.NoSuchProcess:
                    continue
                first = pg_cpu.get(p.pid, (0.0, 0.0))[0]
                pg_cpu[p.pid] = (first, cpu)
            for key, value in (
                ("cli_tree_rss", cli_rss),
                ("cli_largest_rss", cli_big),
                ("pg_rss_sum", pg_rss),
                ("pg_pss_sum", pg_pss),
                ("pg_largest_rss", pg_big),
                ("total_pss", cli_pss + pg_pss),
                ("system_used_delta", psutil.virtual_memory().used - used_start),
            ):
                peak[key] = max(peak[key], value)
            max_load = max(max_load, os.getloadavg()[0])
            samples += 1
            time.sleep(args.interval)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out["wall_s"] = round(time.perf_counter() - t0, 1)
        busy = busy_cpu_s() - busy_start
        text = (home / "backfill.log").read_text()
        out["exit_code"] = proc.returncode
        out["cli_last_line"] = text.strip().splitlines()[-1] if text.strip() else ""
        if proc.returncode != 0:
            raise RuntimeError(f"backfill failed:\n{text[-5000:]}")
        out["cli_maxrss_mb_wait4"] = round(rusage.ru_maxrss / 1024)  # KiB on Linux
        out.update({f"peak_{k}_mb": round(v / MB) for k, v in peak.items()})
        out["samples"] = samples
        cli_cpu = rusage.ru_utime + rusage.ru_stime
        server_cpu = sum(max(last - first, 0.0) for first, last in pg_cpu.values())
        out["cpu_s"] = {
            "machine_busy": round(busy, 1),
            "cli": round(cli_cpu, 1),
            "server": round(server_cpu, 1),
            "others": round(busy - cli_cpu - server_cpu, 1),
        }
        out["load_at_start"] = [round(x, 2) for x in load_start]
        out["load_at_end"] = [round(x, 2) for x in os.getloadavg()]
        out["max_load1"] = round(max_load, 2)
        out["rows"] = python_json(PROJECT_ROWS, env)
        out["rows_1m_per_s"] = round(out["rows"]["market_data_1m"] / out["wall_s"])

        before = python_json(DAGSTER_SIZES, env, project)
        out["prune"] = python_json(PRUNE, env)
        after = python_json(DAGSTER_SIZES, env, project)
        vacuumed = python_json(DAGSTER_SIZES, env, project, "VACUUM ANALYZE")
        full = python_json(DAGSTER_SIZES, env, project, "VACUUM FULL")
        out["dagster_storage"] = {
            "before_prune": sizes_summary(before),
            "after_prune": sizes_summary(after),
            "after_vacuum": sizes_summary(vacuumed),
            "after_vacuum_full": sizes_summary(full),
        }
    finally:
        if not args.keep:
            if started_server or (home / "pgdata" / "postmaster.pid").exists():
                tis(["db", "stop"], env, check=False)
            shutil.rmtree(home, ignore_errors=True)
            out["cleaned_up"] = not home.exists()
        print(json.dumps(out))


if __name__ == "__main__":
    main()
