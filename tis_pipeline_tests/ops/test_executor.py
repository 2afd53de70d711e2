"""The executor of the project's jobs (``ops.jobs.run_executor``), in runs launched the way the daemon's
worker runs them: one process for every step when DSI is one step; with ``TIS_SYMBOL_SHARDS`` above 1, a
process per step forked from a preloaded server, DSI's shards each in its own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from tis_pipeline.market_data.partitions import range_tags
from tis_pipeline.ops.jobs import run_executor
from tis_pipeline.pg.engine import engine
from tis_pipeline.settings import PROJECT_ROOT
from tis_pipeline_tests.test_cli import cli_env  # noqa: F401  (a fixture)

pytestmark = pytest.mark.pg

DAY = "2024-03-04"


def test_one_shard_runs_in_the_worker_and_more_fork_from_a_preloaded_server():
    assert run_executor(1) is dg.in_process_executor
    assert run_executor(2).name == "preloaded_multiprocess_executor"


@pytest.mark.slow
def test_sharded_dsi_steps_run_side_by_side_in_forked_processes(cli_env, monkeypatch):  # noqa: F811
    """``dagster job execute`` runs the job as a run worker does (the job's own executor, the instance of
    ``DAGSTER_HOME``): the day succeeds, DSI's two shard steps run in two processes other than the run's, and
    every bar of the day is scored."""
    env = {**cli_env, "TIS_SYMBOL_SHARDS": "2", "TIS_PARTITION_START": "2024-01-01"}
    cli = Path(sys.executable).with_name("dagster")
    job = ["-m", "tis_pipeline.definitions", "-j", "daily_partitioned_job"]
    proc = subprocess.run(
        [str(cli), "job", "execute", *job, "--tags", json.dumps(range_tags(DAY, DAY))],
        check=False,
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    monkeypatch.setenv("TIS_DAGSTER_PG_URL", env["TIS_DAGSTER_PG_URL"])
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        (run,) = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.SUCCESS
        starts = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.STEP_START).records
        run_start = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.RUN_START).records
    pid_of = {r.event_log_entry.step_key: r.event_log_entry.dagster_event.pid for r in starts}
    run_pid = run_start[0].event_log_entry.dagster_event.pid
    shard_pids = {pid for step, pid in pid_of.items() if step and step.startswith("dsi.dsi_shard[")}
    assert len(shard_pids) == 2 and run_pid not in shard_pids
    assert {"dsi.dsi_plan", "dsi.dsi_finish", "trading_day"} <= set(pid_of)
    with engine(env["TIS_DATABASE_URL"]).connect() as conn:
        bars, scored = conn.execute(
            sa.text(
                "SELECT (SELECT count(*) FROM market_data_1m), "
                "(SELECT count(*) FROM market_data_1m WHERE mx_evidence IS NOT NULL)"
            )
        ).one()
    assert bars > 2000 and scored == bars
