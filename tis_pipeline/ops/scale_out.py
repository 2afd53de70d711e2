"""Scale-out: the bar-level assets as one job whose steps run on Celery workers (dagster-celery), DSI split
into symbol shards that run side by side.

The job materializes market_data_1m, its 15m/1h rollups and DSI (``dsi_evidence``, ``anomaly_events`` and
the ``mx_*`` columns), DSI as the sharded asset (``dsi.assets.build_sharded_dsi``): a plan step, one step per
symbol shard (each scores its symbols of the range into the run's day tables: the work a second worker
takes), and a finish step that swaps every day in at once (the plan after the rollups: on two cores the
shards scoring beside them bought nothing, ``dsi.assets``). The trading day, which couples the symbols, is
not in it: it runs once after (``daily_partitioned_job``). Each step becomes a Celery task that a worker
picks up and runs against the job rebuilt from this module. Start workers on every machine with the same
``execution: config:`` block in ``worker.yaml`` as ``celery_config`` below::

    dagster-celery worker start -A dagster_celery.app -y worker.yaml -n w1 [-q QUEUE] -- --concurrency=1

The run and the workers must share one persistent Dagster instance (``DAGSTER_HOME`` with PostgreSQL
storage, ``TIS_DAGSTER_PG_URL``), its storage directory (the shard steps hand their results over there:
``dsi.assets.HandoffIOManager``) and the project's ``TIS_*`` environment. Launch a partition range from
Python::

    job = dg.build_reconstructable_job("tis_pipeline.ops.scale_out", "market_data_celery_job",
                                       reconstructable_kwargs={"queue": "dagster", "shards": 2})
    dg.execute_job(job, instance=instance, tags=range_tags("2024-01-01", "2024-01-31"))  # from
    market_data.partitions

The job is built by a function so that broker, backend, queue and shards can differ per deployment (or per
test); the worker rebuilds it with the same arguments, which travel with each task.

A worker lost mid-step. dagster-celery's executor waits for each step's task result, and gets one when a
worker's pool process dies (Celery stores ``WorkerLostError``: the run fails). When the whole worker dies
(killed, its machine gone) no result ever comes: the task stays unacknowledged in the broker until its
visibility timeout, and the run would read STARTED meanwhile, its run process alive (``dead_run_sensor`` sees
nothing wrong). So the executor here (``watched_celery_executor``, dagster-celery's with one addition) pings
the worker that took each step in flight (its name from the step's "in celery worker" event) every
``LOST_WORKER_CHECK_SECONDS``; after ``LOST_WORKER_MISSES`` unanswered pings in a row the task is revoked and
the step counts as failed (``WorkerLost``): the run fails like one whose pool process was killed, and an
operator runs it again (the project configures no run retries). The pings need workers that answer remote
control while they run a task: the prefork pool (dagster-celery's default), not ``--pool=solo``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import dagster as dg
from celery.exceptions import TaskRevokedError
from dagster._core.events import DagsterEvent, EngineEventData
from dagster._core.execution.retries import RetryMode
from dagster._serdes import serialize_value
from dagster._utils.error import serializable_error_info_from_exc_info

# dagster-celery's executor pieces (pinned below 0.30 in pyproject.toml): its config schema and the function
# that submits a step's task, reused as they are so that only the waiting changes
from dagster_celery.executor import CELERY_CONFIG, CeleryExecutor, _submit_task

from tis_pipeline import run_process
from tis_pipeline.dsi import checks as dsi_checks
from tis_pipeline.dsi import definitions as dsi
from tis_pipeline.dsi.shards import symbol_shards
from tis_pipeline.market_data import definitions as market_data
from tis_pipeline.resources import shared_resources

if TYPE_CHECKING:  # define_asset_job's return type is public only through this module
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

JOB_NAME = "market_data_celery_job"
run_process.STEP_PROCESS_JOBS.add(JOB_NAME)  # its steps run in Celery's worker processes, one each
MARKET_DATA_ASSETS = ("market_data_1m", "market_data_15m", "market_data_1h")
DSI_ASSETS = ("dsi_evidence", "anomaly_events")
DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
DEFAULT_BACKEND = "redis://127.0.0.1:6379/1"
DEFAULT_QUEUE = "dagster"  # the queue a worker started without -q listens on
DEFAULT_SHARDS = 2  # one per worker of the two this machine runs; TIS_SYMBOL_SHARDS above 1 overrides it
# dagster-celery's broker transport options (dagster_celery.defaults), which a config_source entry replaces
# whole, and the Redis visibility timeout: a task unacknowledged for longer is delivered to a worker again
# even while it still runs (task_acks_late), so it must exceed the longest step. 6 h, the runs' own limit
# (dagster.yaml's max_runtime_seconds): a shard of a month of thousands of symbols can take more than Redis'
# default hour, and two runs of one shard at once fail the run's finish step. A worker that dies is found by
# the executor's pings, not by this timeout.
BROKER_TRANSPORT_OPTIONS = {
    "max_retries": 3,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
    "visibility_timeout": 6 * 3600,
}
LOST_WORKER_CHECK_SECONDS = 15.0  # how often the run pings the worker of each step in flight
LOST_WORKER_MISSES = 3  # unanswered pings in a row before the step counts as lost (~45 s)
PING_TIMEOUT_SECONDS = 2.0
CELERY_WORKER_EVENT = "in celery worker"  # dagster_celery.tasks: "Executing steps <key> in celery worker"


def celery_config(
    broker: str = DEFAULT_BROKER, backend: str = DEFAULT_BACKEND, queue: str = DEFAULT_QUEUE
) -> dict:
    """The celery executor's config; workers need the same broker and backend (and ``-q queue``).

    A worker takes a task only when it has a free process, and acknowledges it when done: the shards of a run
    go to different workers (one prefetching both would score them one after the other), and a task of a
    worker killed mid-step is not lost silently."""
    return {
        "broker": broker,
        "backend": backend,
        "config_source": {
            "task_default_queue": queue,
            "worker_prefetch_multiplier": 1,
            "task_acks_late": True,
            "broker_transport_options": BROKER_TRANSPORT_OPTIONS,
        },
    }


class WorkerLost(RuntimeError):
    """The Celery worker running a step stopped answering: the step's result will never come."""


class WatchedTask:
    """A step's Celery task as dagster-celery's execution loop polls it (``ready``, ``get``, ``revoke``),
    ready also when the worker that took it has stopped answering pings (the task is revoked, so that a
    worker that later receives it again drops it). A lost task (that, or Celery's ``WorkerLostError`` when
    the pool process died) gets from ``get`` the events ``lost`` makes of the error: the step's failure."""

    def __init__(
        self,
        result: Any,
        app: Any,
        instance: dg.DagsterInstance,
        run_id: str,
        step_key: str,
        lost: Callable[[Any], list[str]],
    ):
        self._result, self._app, self._instance = result, app, instance
        self._run_id, self._step_key, self._lost_events = run_id, step_key, lost
        self._worker: str | None = None
        self._cursor: str | None = None
        self._missed = 0
        self._next_check = time.monotonic() + LOST_WORKER_CHECK_SECONDS
        self._lost: str | None = None

    def _find_worker(self) -> str | None:
        """The name of the worker that took the step (its latest "in celery worker" event), once written."""
        records = self._instance.get_records_for_run(
            self._run_id, cursor=self._cursor, of_type=dg.DagsterEventType.ENGINE_EVENT
        )
        self._cursor = records.cursor
        for record in records.records:
            event = record.event_log_entry.dagster_event
            if event is None or event.step_key != self._step_key:
                continue
            if CELERY_WORKER_EVENT in (event.message or ""):
                name = event.event_specific_data.metadata.get("Celery worker")  # type: ignore[union-attr]
                if name is not None:
                    self._worker = str(name.value)
        return self._worker

    def ready(self) -> bool:
        if self._lost is not None or self._result.ready():
            return True
        now = time.monotonic()
        if now < self._next_check:
            return False
        self._next_check = now + LOST_WORKER_CHECK_SECONDS
        worker = self._find_worker()
        if worker is None:  # not taken yet (queued), or the worker has not started the step
            return False
        replies = self._app.control.ping(destination=[worker], timeout=PING_TIMEOUT_SECONDS)
        if any(worker in reply for reply in replies):
            self._missed = 0
            return False
        self._missed += 1
        if self._missed < LOST_WORKER_MISSES or self._result.ready():
            return self._result.ready()
        self._lost = (
            f"the Celery worker {worker} running step {self._step_key} has not answered "
            f"{self._missed} pings in a row ({LOST_WORKER_CHECK_SECONDS:.0f} s apart): it is lost"
        )
        self._result.revoke()
        return True

    def get(self) -> Any:
        try:
            # our own revoke may reach the backend first (another worker stores the task as REVOKED): a lost
            # step reads as lost unless its result came in before the revoke
            if self._lost is not None and not self._result.successful():
                raise WorkerLost(self._lost)
            return self._result.get()
        except TaskRevokedError:
            raise  # revoked as the run is terminated: the loop reports it
        except Exception:
            return self._lost_events(sys.exc_info())

    def revoke(self) -> None:
        self._result.revoke()


class WatchedCeleryExecutor(CeleryExecutor):
    """dagster-celery's executor whose loop also sees a step's worker die (``WatchedTask``) and goes on after
    a lost task (``lost_step_events``)."""

    def execute(self, plan_context: Any, execution_plan: Any) -> Any:
        from dagster_celery.core_execution_loop import core_celery_execution_loop

        def submit(app: Any, context: Any, step: Any, queue: str, priority: int, known_state: Any) -> Any:
            result = _submit_task(app, context, step, queue, priority, known_state)

            def lost(exc_info: Any) -> list[str]:
                return self.lost_step_events(context.for_step(step), exc_info, known_state)

            return WatchedTask(result, app, context.instance, context.run_id, step.key, lost)

        return core_celery_execution_loop(plan_context, execution_plan, step_execution_fn=submit)

    def lost_step_events(self, step_context: Any, exc_info: Any, known_state: Any) -> list[str]:
        """A step whose task was lost (its pool process or worker died, or the task failed outside the step),
        reported as Dagster's multiprocess executor reports a crashed step process: an engine event with the
        error, then the step's failure (logged here; serialized for the loop, which handles them like a
        worker's events). The loop then skips what depends on the step and runs the rest. Raised instead,
        the error would stop dagster-celery's loop from submitting any later step without skipping it: a step
        that became ready after the loss (the hourly rollup when the GE step's worker died) kept the run
        STARTED for ever."""
        error = serializable_error_info_from_exc_info(exc_info)
        events = [
            DagsterEvent.engine_event(
                step_context,
                f"the Celery task of step {step_context.step.key} was lost: {error.message.strip()}",
                EngineEventData.engine_error(error),
            ),
            self.log_failure_or_retry_event_after_error(step_context, error, known_state),
        ]
        return [serialize_value(event) for event in events]


@dg.executor(
    name="celery",
    config_schema=CELERY_CONFIG,
    requirements=dg.multiple_process_executor_requirements(),
)
def watched_celery_executor(init_context: dg.InitExecutorContext) -> WatchedCeleryExecutor:
    """dagster-celery's ``celery_executor`` (same config), watching the workers of the steps in flight."""
    config = init_context.executor_config
    return WatchedCeleryExecutor(
        broker=config.get("broker"),
        backend=config.get("backend"),
        config_source=config.get("config_source"),
        include=config.get("include"),
        retries=RetryMode.from_config(config["retries"]),  # type: ignore[arg-type]
    )


def market_data_celery_asset_job(
    broker: str = DEFAULT_BROKER, backend: str = DEFAULT_BACKEND, queue: str = DEFAULT_QUEUE
) -> UnresolvedAssetJobDefinition:
    """The 1m ingest, its 15m/1h rollups and DSI, every step a Celery task (registered in the Definitions,
    where DSI is sharded when ``TIS_SYMBOL_SHARDS`` is above 1)."""
    return dg.define_asset_job(
        JOB_NAME,
        selection=dg.AssetSelection.assets(*MARKET_DATA_ASSETS, *DSI_ASSETS),
        executor_def=watched_celery_executor.configured(celery_config(broker, backend, queue)),
        description="market_data_1m, _15m, _1h and DSI with every step on a Celery worker; DSI in symbol "
        "shards (TIS_SYMBOL_SHARDS).",
    )


def market_data_celery_job(
    broker: str = DEFAULT_BROKER,
    backend: str = DEFAULT_BACKEND,
    queue: str = DEFAULT_QUEUE,
    shards: int | None = None,
) -> dg.JobDefinition:
    """The same job resolved against the market-data Definitions, the sharded DSI (``shards`` symbol shards;
    default ``TIS_SYMBOL_SHARDS`` when above 1, else ``DEFAULT_SHARDS``) and the shared resources, for
    ``build_reconstructable_job`` (a worker rebuilds it from these arguments)."""
    if shards is None:
        shards = symbol_shards() if symbol_shards() > 1 else DEFAULT_SHARDS
    job = market_data_celery_asset_job(broker, backend, queue)
    return dg.Definitions.merge(
        market_data.defs,
        dg.Definitions(
            assets=[dsi.dsi_assets(shards)],
            asset_checks=dsi_checks.dsi_checks,
            resources=shared_resources,
            jobs=[job],
        ),
    ).resolve_job_def(JOB_NAME)
