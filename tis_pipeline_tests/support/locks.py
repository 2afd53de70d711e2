"""Waiting, in tests of concurrency, until other sessions block on a lock."""

import sqlalchemy as sa

from tis_pipeline.pg.engine import engine


def wait_for_lock_waiters(url: str, count: int, deadline_s: float = 120.0) -> None:
    """Block until ``count`` backends of this database wait on a heavyweight lock (not a timed assertion: a
    wait with a generous deadline, so a hang fails the test instead of freezing it)."""
    import time

    give_up = time.monotonic() + deadline_s
    with engine(url).connect() as conn:
        while True:
            waiting = conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
            conn.rollback()
            if waiting >= count:
                return
            if time.monotonic() > give_up:
                raise TimeoutError(f"{waiting} of {count} backends waiting on a lock")
            time.sleep(0.05)
