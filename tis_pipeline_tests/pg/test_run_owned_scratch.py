"""Scratch tables owned by a Dagster run (the day tables a sharded DSI run's plan step creates and its shard
steps fill, each a process of its own): they outlive the process that made them, other runs leave them alone
while the run goes on, and they are dropped once the run has ended, or by anyone once a day old."""

import pandas as pd
import pytest
import sqlalchemy as sa

from tis_pipeline.pg import day_partitions
from tis_pipeline.pg.engine import engine, raw_connection

pytestmark = pytest.mark.pg
DAY = pd.Timestamp("2024-05-06", tz="UTC")


def _make(url: str, name: str, run: str) -> None:
    with engine(url).connect() as conn:
        raw = raw_connection(conn)
        with raw.cursor() as cur:
            day_partitions.create_day_table(cur, DAY, name, run=run)
        raw.commit()


def test_the_comment_names_the_run_and_no_owner():
    now = pd.Timestamp("2026-01-02T03:04:05", tz="UTC")
    comment = day_partitions.scratch_comment(now, run="0f1e2d3c-run")
    assert day_partitions.scratch_run(comment) == "0f1e2d3c-run"
    assert day_partitions.parse_scratch_comment(comment) == (now, None)
    owned = day_partitions.scratch_comment(now, owner=7)
    assert day_partitions.scratch_run(owned) is None
    assert day_partitions.parse_scratch_comment(owned) == (now, 7)


def test_a_run_owned_table_goes_when_its_run_has_ended(migrated_database_url):
    url = migrated_database_url
    live, ended = "market_data_1m_p20240506_aaaaaaaa", "market_data_1m_p20240506_bbbbbbbb"
    _make(url, live, run="run-live")
    _make(url, ended, run="run-ended")
    day_partitions.release_scratch_owners()  # no owner process holds them: the runs do
    with engine(url).begin() as conn:
        found = {t.name: t for t in day_partitions.scratch_tables(conn)}
        assert (found[live].run, found[live].owner, found[live].alive) == ("run-live", None, None)
        assert found[ended].run == "run-ended"
        # code that cannot ask Dagster (an ingest, retention) keeps a young run-owned table
        assert day_partitions.drop_dead_scratch_tables(conn) == []
        assert day_partitions.drop_dead_scratch_tables(conn, run_alive=lambda run: run == "run-live") == [
            ended
        ]
        # a day later anyone drops it, whatever its run says
        later = pd.Timestamp.now(tz="UTC") + day_partitions.LEGACY_SCRATCH_AGE + pd.Timedelta(minutes=1)
        assert day_partitions.drop_dead_scratch_tables(conn, now=later, run_alive=lambda run: True) == [live]
        left = conn.execute(
            sa.text("SELECT count(*) FROM pg_class WHERE relname IN (:a, :b)"), {"a": live, "b": ended}
        ).scalar_one()
    assert left == 0
