"""The Celery executor's watch of the workers running a run's steps (``scale_out.WatchedTask``): a step whose
worker stops answering pings counts as failed after ``LOST_WORKER_MISSES`` misses in a row, and only then.
Fakes stand in for Celery's result, its control API and the instance's event log; the real thing (workers
killed mid-step) is in ``tis_pipeline_tests/test_celery.py``."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import dagster as dg
import pytest

pytest.importorskip("dagster_celery")

from tis_pipeline.ops import scale_out

RUN, STEP, WORKER = "run-1", "dsi.dsi_shard[shard_0]", "w1@host"


@dataclass
class FakeResult:
    done: bool = False
    revoked: int = 0
    succeeded: bool = False
    revoke_is_stored: bool = False  # another worker stores the revoked task's state at once

    def ready(self) -> bool:
        return self.done

    def successful(self) -> bool:
        return self.succeeded

    def get(self) -> list[str]:
        if self.revoked and not self.succeeded:
            raise RuntimeError("TaskRevokedError")
        return ["events"]

    def revoke(self) -> None:
        self.revoked += 1
        self.done = self.done or self.revoke_is_stored


@dataclass
class FakeControl:
    answering: bool = True
    pings: list[list[str]] = field(default_factory=list)

    def ping(self, destination: list[str], timeout: float) -> list[dict]:
        self.pings.append(destination)
        return [{WORKER: {"ok": "pong"}}] if self.answering else []


def _worker_event(step_key: str, worker: str):
    event = SimpleNamespace(
        step_key=step_key,
        message=f"Executing steps {step_key} in celery worker",
        event_specific_data=SimpleNamespace(metadata={"Celery worker": dg.MetadataValue.text(worker)}),
    )
    return SimpleNamespace(event_log_entry=SimpleNamespace(dagster_event=event))


class FakeInstance:
    def __init__(self, records):
        self.records, self.calls = records, []

    def get_records_for_run(self, run_id, cursor=None, of_type=None):
        self.calls.append((run_id, cursor, of_type))
        start = int(cursor or 0)
        return SimpleNamespace(records=self.records[start:], cursor=str(len(self.records)))


@pytest.fixture(autouse=True)
def every_poll_checks(monkeypatch):
    monkeypatch.setattr(scale_out, "LOST_WORKER_CHECK_SECONDS", 0.0)


def _lost(exc_info) -> list[str]:
    """What the executor's ``lost_step_events`` stands for here: the error a lost task's ``get`` reports."""
    return [f"lost: {exc_info[0].__name__}: {exc_info[1]}"]


def _task(records, answering=True, done=False):
    result, control = FakeResult(done), FakeControl(answering)
    instance = FakeInstance(records)
    task = scale_out.WatchedTask(result, SimpleNamespace(control=control), instance, RUN, STEP, _lost)
    return task, result, control, instance


def test_a_step_whose_worker_stops_answering_fails_after_the_misses():
    task, result, control, _ = _task([_worker_event("other", "w9@host"), _worker_event(STEP, WORKER)], False)
    for _ in range(scale_out.LOST_WORKER_MISSES - 1):
        assert not task.ready()
    assert result.revoked == 0
    assert task.ready()
    assert result.revoked == 1 and control.pings == [[WORKER]] * scale_out.LOST_WORKER_MISSES
    (lost,) = task.get()
    assert lost.startswith("lost: WorkerLost: ") and "w1@host running step dsi.dsi_shard[shard_0]" in lost


@pytest.mark.parametrize("succeeded", [False, True])
def test_a_lost_step_stays_lost_when_its_revoke_is_stored_first(succeeded):
    """Our revoke may make the result ready (REVOKED, stored by another worker) before the loop asks for it:
    the step still reads as lost, unless its result came in before the revoke."""
    task, result, _, _ = _task([_worker_event(STEP, WORKER)], answering=False)
    result.revoke_is_stored = True
    for _ in range(scale_out.LOST_WORKER_MISSES - 1):
        assert not task.ready()
    assert task.ready() and result.ready() and result.revoked == 1
    result.succeeded = succeeded
    if succeeded:
        assert task.get() == ["events"]
    else:
        (lost,) = task.get()
        assert lost.startswith("lost: WorkerLost: ") and "has not answered" in lost


def test_an_answering_worker_or_a_finished_task_is_never_lost():
    task, result, control, _ = _task([_worker_event(STEP, WORKER)], answering=True)
    for _ in range(3 * scale_out.LOST_WORKER_MISSES):
        assert not task.ready()
    assert len(control.pings) == 3 * scale_out.LOST_WORKER_MISSES and result.revoked == 0
    control.answering = False  # misses count in a row only: one answer starts them again
    for _ in range(scale_out.LOST_WORKER_MISSES - 1):
        assert not task.ready()
    control.answering = True
    assert not task.ready()
    control.answering = False
    for _ in range(scale_out.LOST_WORKER_MISSES - 1):
        assert not task.ready()
    result.done = True  # its result came in after all: the result, not a loss
    assert task.ready() and task.get() == ["events"] and result.revoked == 0


def test_a_step_not_taken_by_a_worker_yet_is_not_pinged():
    task, result, control, instance = _task([_worker_event("other", "w9@host")], answering=False)
    for _ in range(2 * scale_out.LOST_WORKER_MISSES):
        assert not task.ready()
    assert control.pings == [] and result.revoked == 0
    # the event log is read on from where it stopped, not from the start each time
    assert [c[1] for c in instance.calls[:3]] == [None, "1", "1"]
    instance.records.append(_worker_event(STEP, WORKER))
    for _ in range(scale_out.LOST_WORKER_MISSES):
        task.ready()
    assert task.ready() and control.pings == [[WORKER]] * scale_out.LOST_WORKER_MISSES


def test_the_celery_job_uses_the_watching_executor_and_a_long_visibility_timeout():
    job = scale_out.market_data_celery_job(shards=2)
    assert job.executor_def.name == "celery"
    assert isinstance(
        job.executor_def.executor_creation_fn(_init_context(job)), scale_out.WatchedCeleryExecutor
    )
    options = scale_out.celery_config()["config_source"]["broker_transport_options"]
    assert options["visibility_timeout"] >= 6 * 3600
    assert {"max_retries", "interval_start", "interval_step", "interval_max"} <= set(options)


def _init_context(job):
    config = {**scale_out.celery_config(), "retries": {"disabled": {}}}
    return SimpleNamespace(executor_config=config, job=job)
