"""Runs whose worker process died: found by ``dead_run_sensor`` and reported to the instance, so that they
stop holding a slot of the run queue.

With the ``DefaultRunLauncher`` (one process per run, on this machine) Dagster's run monitoring cannot check a
run's worker (``supports_check_run_worker_health`` is False): a run whose process was killed reads STARTED
until ``max_runtime_seconds``, and a few of them stop every schedule, sensor and backfill behind the queue's
``max_concurrent_runs``. The worker writes its pid in an engine event when it starts ("Started process for run
(pid: N)" for a launched run, "Executing steps in process (pid: N)" for ``execute_in_process``, as ``tis
backfill`` runs); the sensor looks that process up and reports the run failed (canceled, when it was being
canceled) once the process is gone, has exited, or the pid belongs to a newer process.

Runs of another machine (``tis/host`` tag, set by the ``tis`` command) are left alone: their processes cannot
be seen from here. Runs without the tag were launched by this machine's daemon or UI.

The decision (``dead_runs``) is pure and tested on its own; the rest reads and writes the instance.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import dagster as dg
import psutil

HOST_TAG = "tis/host"
SENSOR_NAME = "dead_run_sensor"
WATCHED_STATUSES = ("STARTING", "STARTED", "CANCELING")  # DagsterRunStatus values
# Engine events that name the run's worker process (dagster/_cli/api.py, dagster/_core/executor/in_process.py)
LAUNCHED_WORKER_EVENTS = ("Started process for run", "Started process for resuming job")
IN_PROCESS_WORKER_EVENT = "Executing steps in process"
# The worker existed when it wrote the event; a process with that pid created later is another process.
# psutil's create_time is exact to a clock tick; the slack absorbs that and rounding.
CREATE_TIME_SLACK_SECONDS = 1.0


@dataclass(frozen=True)
class RunFacts:
    """What the decision needs to know about an in-progress run."""

    run_id: str
    host: str | None  # the run's ``tis/host`` tag; None for runs of this machine's daemon or UI
    pid: int | None  # the worker's pid from its engine event; None before the worker wrote it
    pid_reported_at: float | None  # Unix time of that event


@dataclass(frozen=True)
class ProcessFacts:
    """A live process table entry."""

    pid: int
    create_time: float  # Unix time
    zombie: bool  # exited, not yet reaped by its parent


@dataclass(frozen=True)
class DeadRun:
    run_id: str
    pid: int
    reason: str


def dead_runs(
    runs: Iterable[RunFacts], processes: Mapping[int, ProcessFacts], hostname: str
) -> list[DeadRun]:
    """The runs whose worker process is gone. ``processes`` holds the worker pids that exist on this machine.

    A run of another host is left alone, and so is a run whose worker has not written its pid yet (Dagster's
    ``start_timeout_seconds`` covers a worker that never starts)."""
    dead = []
    for run in runs:
        if run.host not in (None, hostname) or run.pid is None or run.pid_reported_at is None:
            continue
        process = processes.get(run.pid)
        if process is None:
            reason = "no longer exists"
        elif process.zombie:
            reason = "has exited"
        elif process.create_time > run.pid_reported_at + CREATE_TIME_SLACK_SECONDS:
            reason = "no longer exists (the pid now belongs to a process started after the run's worker)"
        else:
            continue
        dead.append(DeadRun(run.run_id, run.pid, reason))
    return dead


def process_facts(pids: Iterable[int]) -> dict[int, ProcessFacts]:
    """The processes among ``pids`` that exist on this machine."""
    found = {}
    for pid in set(pids):
        try:
            process = psutil.Process(pid)
            with process.oneshot():
                zombie = process.status() == psutil.STATUS_ZOMBIE
                found[pid] = ProcessFacts(pid, process.create_time(), zombie)
        except psutil.NoSuchProcess:
            continue
        except psutil.AccessDenied:  # it exists; assume it is the worker
            found[pid] = ProcessFacts(pid, 0.0, zombie=False)
    return found


def worker_pid(instance: dg.DagsterInstance, run_id: str) -> tuple[int | None, float | None]:
    """The pid of the run's worker process and the Unix time of the event that named it (latest launch, else
    the in-process executor's first event); (None, None) before the worker wrote it."""
    launched: tuple[int, float] | None = None
    in_process: tuple[int, float] | None = None
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT).records
    for record in records:
        entry = record.event_log_entry
        event = entry.dagster_event
        if event is None or event.step_key is not None:
            continue
        pid_value = getattr(event.event_specific_data, "metadata", {}).get("pid")
        message = event.message or ""
        if pid_value is None or not str(pid_value.value).isdigit():
            continue
        pid = (int(pid_value.value), entry.timestamp)
        if message.startswith(LAUNCHED_WORKER_EVENTS):
            launched = pid
        elif message.startswith(IN_PROCESS_WORKER_EVENT) and in_process is None:
            in_process = pid
    found = launched or in_process
    return found if found is not None else (None, None)


def in_progress_runs(instance: dg.DagsterInstance) -> list[RunFacts]:
    statuses = [dg.DagsterRunStatus(status) for status in WATCHED_STATUSES]
    records = instance.get_run_records(filters=dg.RunsFilter(statuses=statuses))
    facts = []
    for record in records:
        run = record.dagster_run
        pid, reported_at = worker_pid(instance, run.run_id)
        facts.append(RunFacts(run.run_id, run.tags.get(HOST_TAG), pid, reported_at))
    return facts


def report_dead_runs(instance: dg.DagsterInstance, hostname: str | None = None) -> list[DeadRun]:
    """Find this machine's runs whose worker is gone and report them failed (canceled when they were being
    canceled); returns what was reported."""
    hostname = hostname or socket.gethostname()
    runs = in_progress_runs(instance)
    processes = process_facts(run.pid for run in runs if run.pid is not None)
    reported = []
    for dead in dead_runs(runs, processes, hostname):
        # Read the status again after looking at the process: a worker writes the end of its run before it
        # exits, so a run still in progress now was left behind by its worker.
        run = instance.get_run_by_id(dead.run_id)
        if run is None or run.status.value not in WATCHED_STATUSES:
            continue
        message = (
            f"The run's worker process (pid: {dead.pid}) on {hostname} {dead.reason}: it was killed "
            f"or crashed without ending the run. Reported by {SENSOR_NAME}."
        )
        if run.status.value == "CANCELING":
            instance.report_run_canceled(run, message=message)
        else:
            instance.report_run_failed(run, message=message)
        reported.append(dead)
    return reported


@dg.sensor(
    name=SENSOR_NAME,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Reports runs failed whose worker process on this machine is gone (killed or crashed), "
    "so that they stop holding a slot of the run queue.",
)
def dead_run_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    """Every minute, reports this machine's runs whose worker is gone. Running by default."""
    reported = report_dead_runs(context.instance)
    for dead in reported:
        context.log.warning(f"run {dead.run_id}: worker pid {dead.pid} {dead.reason}; reported the run ended")
    if reported:
        return dg.SkipReason(
            f"reported {len(reported)} run(s) whose worker is gone: " + ", ".join(d.run_id for d in reported)
        )
    return dg.SkipReason("every in-progress run of this machine has a live worker")
