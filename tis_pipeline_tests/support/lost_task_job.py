"""A small job for ``test_celery``'s lost-task case, run on real Celery workers with the project's executor
(``scale_out.watched_celery_executor``): ``victim`` and ``first`` each wait for a PostgreSQL advisory lock
that the test holds (a deterministic "inside the step", no sleeps); ``later`` depends on ``first`` only, so
it becomes ready after the test has killed the victim's process and let ``first`` go on."""

from __future__ import annotations

import os

import dagster as dg
import sqlalchemy as sa

from tis_pipeline.ops.scale_out import celery_config, watched_celery_executor

LOCK_KEY = 730_601_999  # the advisory lock the test holds exclusively while both steps wait for it


def _wait_for_the_test() -> None:
    with sa.create_engine(os.environ["TIS_DATABASE_URL"]).connect() as conn:
        conn.execute(sa.text("SELECT pg_advisory_lock_shared(:key)"), {"key": LOCK_KEY})
        conn.execute(sa.text("SELECT pg_advisory_unlock_shared(:key)"), {"key": LOCK_KEY})


@dg.op
def victim() -> None:
    _wait_for_the_test()


@dg.op
def first() -> int:
    _wait_for_the_test()
    return 1


@dg.op
def later(value: int) -> int:
    return value + 1


def lost_task_job(broker: str, backend: str, queue: str) -> dg.JobDefinition:
    """The job on the project's Celery executor (``build_reconstructable_job`` rebuilds it in the workers)."""

    @dg.job(
        name="lost_task_job",
        executor_def=watched_celery_executor.configured(celery_config(broker, backend, queue)),
    )
    def job() -> None:
        victim()
        later(first())

    return job
