"""`tis backfill` with a dagster-daemon running on the instance: each chunk is a real Dagster backfill (the
UI's Backfills tab), its runs launched by the daemon from the code location, carrying the tis tags; the GE
step of market_data_1m runs in them; the same command again finds the chunk done."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from tis_pipeline.cli.backfills import daemon_runs_backfills
from tis_pipeline.ops.backfill import BACKFILL_TAG, CHUNK_TAG
from tis_pipeline.pg.engine import engine
from tis_pipeline.settings import PROJECT_ROOT
from tis_pipeline_tests.test_cli import cli_env, run_tis  # noqa: F401  (cli_env is a fixture)

pytestmark = [pytest.mark.pg, pytest.mark.slow]

DAEMON_START_S = 180.0


def _stop(proc: subprocess.Popen) -> None:
    for sig, wait_s in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture
def daemon(cli_env, tmp_path) -> Iterator[dg.DagsterInstance]:  # noqa: F811
    """dagster-daemon on the repository's workspace.yaml and the test's instance; yields the instance once the
    backfill daemon heartbeats."""
    exe = Path(sys.executable).with_name("dagster-daemon")
    log = tmp_path / "daemon.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(exe), "run", "-w", str(PROJECT_ROOT / "workspace.yaml")],
            cwd=PROJECT_ROOT,
            env=cli_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        with pytest.MonkeyPatch.context() as mp:
            for key in ("DAGSTER_HOME", "TIS_DAGSTER_PG_URL", "TIS_DATABASE_URL"):
                mp.setenv(key, cli_env[key])
            with dg.DagsterInstance.from_config(cli_env["DAGSTER_HOME"]) as instance:
                deadline = time.monotonic() + DAEMON_START_S
                while not daemon_runs_backfills(instance):
                    assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
                    assert time.monotonic() < deadline, "no backfill daemon heartbeat"
                    time.sleep(2)
                yield instance
    finally:
        _stop(proc)


def test_backfill_is_a_dagster_backfill_when_a_daemon_runs(cli_env, daemon):  # noqa: F811
    instance = daemon
    args = ["backfill", "--start", "2024-08-05", "--end", "2024-08-06", "--select", "market_data_1m"]
    proc = run_tis([*args, "--chunk-days", "2"], cli_env, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "a dagster-daemon is running: each chunk is a Dagster backfill" in proc.stdout
    backfills = instance.get_backfills()
    assert len(backfills) == 1
    backfill = backfills[0]
    assert backfill.status.value == "COMPLETED_SUCCESS"
    assert backfill.tags[CHUNK_TAG] == "2024-08-05...2024-08-06" and BACKFILL_TAG in backfill.tags
    assert backfill.title == "tis backfill 2024-08-05...2024-08-06"
    assert f"Dagster backfill {backfill.backfill_id}" in proc.stdout
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill.backfill_id}))
    assert len(runs) == 1 and runs[0].status == dg.DagsterRunStatus.SUCCESS
    run = runs[0]
    assert run.tags[BACKFILL_TAG] == backfill.tags[BACKFILL_TAG]
    assert run.remote_job_origin is not None  # launched from the code location, as UI runs are
    evaluations = {
        r.event_log_entry.dagster_event.event_specific_data.check_name
        for r in instance.get_records_for_run(
            run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
        ).records
    }
    assert "gx_market_data_1m_no_gaps" in evaluations and "market_data_1m_no_gaps" in evaluations
    # the daemon's run executes its steps in its worker process (ops.jobs.run_executor), not a process each
    pids = {
        kind: {
            r.event_log_entry.dagster_event.pid
            for r in instance.get_records_for_run(run.run_id, of_type=kind).records
        }
        for kind in (dg.DagsterEventType.RUN_START, dg.DagsterEventType.STEP_START)
    }
    assert len(pids[dg.DagsterEventType.RUN_START]) == 1
    assert pids[dg.DagsterEventType.STEP_START] == pids[dg.DagsterEventType.RUN_START]
    with engine(cli_env["TIS_DATABASE_URL"]).connect() as conn:
        days = conn.execute(
            sa.text("SELECT count(DISTINCT (\"timestamp\" AT TIME ZONE 'UTC')::date) FROM market_data_1m")
        ).scalar_one()
    assert days == 2

    again = run_tis([*args, "--chunk-days", "2"], cli_env, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "1 of 1 chunks already done" in again.stdout and "0 run(s)" in again.stdout
    assert len(instance.get_backfills()) == 1
