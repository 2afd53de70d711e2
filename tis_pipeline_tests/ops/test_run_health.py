"""Killed runs: the dead-run sensor frees their queue slot, and a step process whose parent dies exits.

The end-to-end tests use real processes, a real PostgreSQL and a real ``dagster-daemon``: a run whose process
is killed with SIGKILL, a second run queued behind it, and a multiprocessing child holding a transaction.
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import psutil
import pytest
import sqlalchemy as sa

from tis_pipeline.ops.run_health import (
    HOST_TAG,
    ProcessFacts,
    RunFacts,
    dead_run_sensor,
    dead_runs,
    process_facts,
    worker_pid,
)
from tis_pipeline.pg.engine import engine, with_driver
from tis_pipeline.resources import PostgresResource, exit_with_parent
from tis_pipeline.settings import PROJECT_ROOT

THIS_MODULE = "tis_pipeline_tests.ops.test_run_health"


# -- a code location for the end-to-end test: the daemon and the run's process load this module


@dg.op
def sleep_long() -> None:
    time.sleep(600)


@dg.op
def finish_quickly() -> int:
    return 1


@dg.job
def sleepy_job() -> None:
    sleep_long()


@dg.job
def quick_job() -> None:
    finish_quickly()


defs = dg.Definitions(jobs=[sleepy_job, quick_job])


def hold_transaction_in_child(url: str, pid_file: str) -> None:
    """A multiprocessing child, as the multiprocess executor's step worker: the resource set up for execution,
    a transaction open (a table created, not committed), then a long sleep."""
    with dg.build_resources({"db": PostgresResource(url=url)}) as resources, resources.db.begin() as conn:
        conn.execute(sa.text("CREATE TABLE orphan_probe (x int)"))
        conn.execute(sa.text("INSERT INTO orphan_probe VALUES (1)"))
        Path(pid_file).write_text(str(os.getpid()))
        time.sleep(600)


# -- the pure decision


def test_dead_run_decision():
    t0 = 1_700_000_000.0
    runs = [
        RunFacts("dead", None, 101, t0),
        RunFacts("live", None, 102, t0),
        RunFacts("reused", "here", 103, t0),
        RunFacts("other-host", "elsewhere", 104, t0),
        RunFacts("exited", "here", 105, t0),
        RunFacts("no-pid-yet", None, None, None),
        RunFacts("live-tagged", "here", 106, t0),
    ]
    processes = {
        102: ProcessFacts(102, t0 - 5, zombie=False),
        103: ProcessFacts(103, t0 + 60, zombie=False),  # a newer process got the pid
        105: ProcessFacts(105, t0 - 5, zombie=True),
        106: ProcessFacts(106, t0 + 0.5, zombie=False),  # clock-tick rounding of create_time
    }
    dead = {d.run_id: d for d in dead_runs(runs, processes, "here")}
    assert set(dead) == {"dead", "reused", "exited"}
    assert dead["dead"].pid == 101
    assert "no longer exists" in dead["dead"].reason
    assert "started after" in dead["reused"].reason
    assert dead["exited"].reason == "has exited"


def test_process_facts_sees_this_process_and_not_a_reaped_one():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    facts = process_facts([os.getpid(), child.pid])
    assert facts[os.getpid()].create_time <= time.time()
    assert not facts[os.getpid()].zombie
    assert child.pid not in facts or facts[child.pid].create_time > time.time() - 5  # reaped (or reused)


def test_no_watcher_outside_a_multiprocessing_child():
    exit_with_parent()
    assert not any(t.name == "tis-exit-with-parent" for t in threading.enumerate())


# -- end to end

QUEUE_OF_ONE = """
storage:
  postgres:
    postgres_url:
      env: TIS_DAGSTER_PG_URL
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 1
    dequeue_interval_seconds: 1
telemetry:
  enabled: false
"""


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def stop(proc: subprocess.Popen) -> None:
    """Stop a process and what it started (the daemon's code server and run workers) before the test's
    database is dropped: a code server whose instance database is gone never shuts down."""
    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
    for member in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.terminate()
    _, alive = psutil.wait_procs(family, timeout=10)
    for member in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()


@pytest.fixture
def queue_of_one(tmp_path, empty_database_url, monkeypatch):
    """A persistent instance (PostgreSQL storage) whose queue launches one run at a time, and the environment
    for processes that share it."""
    (tmp_path / "dagster.yaml").write_text(QUEUE_OF_ONE)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path),
        "PYTHONPATH": str(PROJECT_ROOT),
        "TIS_DAGSTER_PG_URL": with_driver(empty_database_url, "psycopg2"),
        "DAGSTER_DISABLE_TELEMETRY": "1",
        "GX_ANALYTICS_ENABLED": "false",
    }
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
    monkeypatch.setenv("TIS_DAGSTER_PG_URL", env["TIS_DAGSTER_PG_URL"])
    with dg.DagsterInstance.get() as instance:
        yield instance, env


def failure_message(instance: dg.DagsterInstance, run_id: str) -> str:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
    return records[-1].event_log_entry.dagster_event.message


@pytest.mark.pg
@pytest.mark.slow
def test_killed_run_is_failed_and_the_queue_moves_on(queue_of_one, tmp_path):
    instance, env = queue_of_one
    sensor = dead_run_sensor
    bin_dir = Path(sys.executable).parent
    daemon_log = tmp_path / "daemon.log"
    run_script = (
        f"import dagster as dg; from {THIS_MODULE} import sleepy_job; "
        f"sleepy_job.execute_in_process(instance=dg.DagsterInstance.get(), "
        f"tags={{{HOST_TAG!r}: {socket.gethostname()!r}}})"
    )
    worker = subprocess.Popen(
        [sys.executable, "-c", run_script],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with daemon_log.open("w") as log:
        daemon = subprocess.Popen(
            [str(bin_dir / "dagster-daemon"), "run", "-m", THIS_MODULE],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:

        def started_run():
            runs = instance.get_runs(
                dg.RunsFilter(job_name="sleepy_job", statuses=[dg.DagsterRunStatus.STARTED])
            )
            return runs and worker_pid(instance, runs[0].run_id)[0] == worker.pid and runs[0]

        stuck = wait_for(started_run, 60, "the sleepy run to start")
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        assert (
            instance.get_run_by_id(stuck.run_id).status == dg.DagsterRunStatus.STARTED
        )  # what the issue saw

        launch = subprocess.run(
            [str(bin_dir / "dagster"), "job", "launch", "-m", THIS_MODULE, "-j", "quick_job"],
            check=False,
            cwd=PROJECT_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert launch.returncode == 0, launch.stderr
        queued = instance.get_runs(dg.RunsFilter(job_name="quick_job"))[0]
        # the daemon sees the dead run holding the only slot and launches nothing
        wait_for(
            lambda: "Maximum is 1, won't launch more" in daemon_log.read_text(),
            60,
            "the daemon's queue check",
        )
        assert instance.get_run_by_id(queued.run_id).status == dg.DagsterRunStatus.QUEUED

        sensor(dg.build_sensor_context(instance=instance))

        assert instance.get_run_by_id(stuck.run_id).status == dg.DagsterRunStatus.FAILURE
        assert f"(pid: {worker.pid})" in failure_message(instance, stuck.run_id)
        wait_for(
            lambda: instance.get_run_by_id(queued.run_id).status == dg.DagsterRunStatus.SUCCESS,
            90,
            "the queued run to be launched and succeed",
        )
        # the launched run's worker wrote its pid ("Started process for run"); a finished run is left alone
        assert worker_pid(instance, queued.run_id)[0] not in (None, worker.pid)
        result = sensor(dg.build_sensor_context(instance=instance))
        assert "has a live worker" in result.skip_message
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        stop(daemon)


@pytest.mark.pg
@pytest.mark.slow
def test_step_process_exits_when_its_parent_is_killed(empty_database_url, tmp_path):
    pid_file = tmp_path / "child.pid"
    parent_script = (
        "import multiprocessing, sys, time\n"
        f"from {THIS_MODULE} import hold_transaction_in_child\n"
        "if __name__ == '__main__':\n"
        "    child = multiprocessing.get_context('spawn').Process(target=hold_transaction_in_child,\n"
        "                                                      args=(sys.argv[1], sys.argv[2]))\n"
        "    child.start()\n"
        "    time.sleep(600)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_script, empty_database_url, str(pid_file)],
        cwd=PROJECT_ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    child_pid = None
    try:
        wait_for(lambda: pid_file.exists() and pid_file.read_text(), 60, "the child to open its transaction")
        child_pid = int(pid_file.read_text())
        assert psutil.Process(child_pid).ppid() == parent.pid
        db = engine(empty_database_url)
        backends = sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )
        with db.connect() as conn:
            assert conn.execute(backends).scalar_one() >= 1

        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)

        wait_for(lambda: gone(child_pid), 10, "the orphaned child to exit", interval=0.1)
        assert f"parent process (pid {parent.pid}) is gone" in parent.stderr.read()

        def no_backends():
            with db.connect() as conn:
                return conn.execute(backends).scalar_one() == 0

        wait_for(no_backends, 10, "PostgreSQL to drop the child's connection")
        with db.connect() as conn:  # the open transaction was rolled back
            assert conn.execute(sa.text("SELECT to_regclass('orphan_probe')")).scalar_one() is None
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if child_pid is not None and not gone(child_pid):
            os.kill(child_pid, signal.SIGKILL)
        db = engine(empty_database_url)
        db.dispose()
