"""Scratch tables belong to the process that made them: a run that starts drops those of dead processes (their
owner's advisory lock is free), never those of a live one, however old; `tis db status` shows them."""

import os
import signal
import subprocess
import sys
import time

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from tis_pipeline.dsi.assets import dsi
from tis_pipeline.market_data.assets import market_data_1h, market_data_1m, market_data_15m
from tis_pipeline.market_data.partitions import range_tags
from tis_pipeline.market_data.sources import BarSource
from tis_pipeline.pg import day_partitions
from tis_pipeline.pg.engine import engine
from tis_pipeline.resources import PostgresResource
from tis_pipeline.settings import PROJECT_ROOT

pytestmark = pytest.mark.pg
MARKET = [market_data_1m, market_data_15m, market_data_1h]

# a process that makes scratch tables with the project's own code (a day partition built for a swap, the
# pieces of an expected rollup), says their names and then waits, as a run between building and swapping does
MAKER = """
import sys, time
import pandas as pd
from tis_pipeline.market_data import rollups, synthetic
from tis_pipeline.pg.engine import engine
from tis_pipeline_tests.support.day_builds import build_days
eng = engine(sys.argv[1])
day = pd.Timestamp(sys.argv[2], tz="UTC")
built = build_days(eng, synthetic.day_bars(day, ["ZZZ"], seed=1), day, day + pd.Timedelta(days=1))
expected = rollups.stage_expected_rollup(eng, "market_data_15m", day, day + pd.Timedelta(days=1))
expected.ready()
print(" ".join([s for _, _, s in built.jobs] + expected.tables), flush=True)
time.sleep(600)
"""


def start_maker(url: str, day: str) -> tuple[subprocess.Popen, set[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", MAKER, url, day],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
    )
    assert proc.stdout is not None
    names = set(proc.stdout.readline().split())
    assert len(names) == 1 + 4, names  # one day table, ROLLUP_PIECES pieces
    return proc, names


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)  # no cleanup of any kind: as the OOM killer or a lost machine does it
    proc.wait(timeout=30)


def tables(url: str) -> dict[str, day_partitions.ScratchTable]:
    with engine(url).connect() as conn:
        return {t.name: t for t in day_partitions.scratch_tables(conn)}


def wait_dead(url: str, names: set[str]) -> None:
    """Until the server has seen the killed process's connection close (its backend ends at once)."""
    deadline = time.monotonic() + 30
    while any(tables(url)[n].alive for n in names):
        assert time.monotonic() < deadline, "the killed process's owner lock was never released"
        time.sleep(0.1)


def resources(url):
    return {"db": PostgresResource(url=url), "bars": BarSource(source="synthetic", symbols=["AAA"], seed=4)}


def test_this_process_owns_its_scratch_tables_until_it_lets_go(migrated_database_url):
    url = migrated_database_url
    eng = engine(url)
    day = pd.Timestamp("2024-05-01", tz="UTC")
    from tis_pipeline.market_data import synthetic
    from tis_pipeline_tests.support.day_builds import build_days

    before = pd.Timestamp.now(tz="UTC")

    built = build_days(eng, synthetic.day_bars(day, ["AAA"], seed=3), day, day + pd.Timedelta(days=1))
    (name,) = [s for _, _, s in built.jobs]
    found = tables(url)[name]
    assert found.owner is not None and found.alive is True
    assert found.created is not None and before <= found.created <= pd.Timestamp.now(tz="UTC")
    with eng.begin() as conn:
        assert day_partitions.drop_dead_scratch_tables(conn) == []  # alive: kept
    day_partitions.release_scratch_owners()  # as if this process had died
    assert tables(url)[name].alive is False
    with eng.begin() as conn:
        assert day_partitions.drop_dead_scratch_tables(conn) == [name]
    assert tables(url) == {}
    # the next table gets an owner again (the lock is taken anew)
    built = build_days(eng, synthetic.day_bars(day, ["AAA"], seed=3), day, day + pd.Timedelta(days=1))
    assert all(tables(url)[s].alive for _, _, s in built.jobs)
    day_partitions.discard(eng, built)


def test_runs_that_start_drop_the_scratch_tables_of_killed_processes_only(migrated_database_url):
    """Two processes make scratch tables; one is killed. The ingest drops the dead one's tables and keeps the
    live one's, even when they look days old; `tis db status` lists both with their owner's state; a DSI run
    that starts after a second kill drops that one's tables too."""
    url = migrated_database_url
    live, live_names = start_maker(url, "2024-03-01")
    dead, dead_names = start_maker(url, "2024-03-02")
    try:
        assert all(t.alive for t in tables(url).values())
        kill(dead)
        wait_dead(url, dead_names)
        # the live process's tables, made to look five days old: age is not what decides
        long_ago = pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=5)
        with engine(url).begin() as conn:
            for name in live_names:
                owner = tables(url)[name].owner
                comment = day_partitions.scratch_comment(long_ago, owner)
                conn.execute(sa.text(f"COMMENT ON TABLE \"{name}\" IS '{comment}'"))
            # tables of a version before owners: a day old goes, a fresh one stays
            for legacy, age in (("rollup_expected_0badc0de_0", 2), ("rollup_expected_0badc0de_1", 0)):
                created = pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=age, minutes=1)
                conn.execute(sa.text(f'CREATE TABLE "{legacy}" (x int)'))
                conn.execute(
                    sa.text(f"COMMENT ON TABLE \"{legacy}\" IS '{day_partitions.scratch_comment(created)}'")
                )
        found = tables(url)
        assert {n for n, t in found.items() if t.alive is True} == live_names
        assert {n for n, t in found.items() if t.alive is False} == dead_names

        status = subprocess.run(
            [sys.executable, "-m", "tis_pipeline.cli", "db", "status"],
            cwd=PROJECT_ROOT,
            env={**os.environ, "TIS_DATABASE_URL": url},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert status.returncode == 0, status.stderr
        lines = {line.split(":")[0].strip(): line for line in status.stdout.splitlines()}
        assert "scratch tables: 12" in status.stdout, status.stdout
        for name in live_names:
            assert f"owner {found[name].owner} alive" in lines[name]
        for name in dead_names:
            assert f"owner {found[name].owner} dead" in lines[name]
        assert "owner unknown" in lines["rollup_expected_0badc0de_0"]

        ingest = dg.materialize(MARKET, resources=resources(url), partition_key="2024-01-08")
        assert ingest.success
        assert set(tables(url)) == live_names | {"rollup_expected_0badc0de_1"}

        second, second_names = start_maker(url, "2024-03-03")
        kill(second)
        wait_dead(url, second_names)
        scored = dg.materialize(
            [*(a.to_source_assets()[0] for a in MARKET), dsi],
            resources=resources(url),
            tags=range_tags("2024-01-08", "2024-01-08"),
        )
        assert scored.success
        assert set(tables(url)) == live_names | {"rollup_expected_0badc0de_1"}
    finally:
        for proc in (live, dead):
            if proc.poll() is None:
                kill(proc)
    wait_dead(url, live_names)
    with engine(url).begin() as conn:
        assert set(day_partitions.drop_dead_scratch_tables(conn)) == live_names
