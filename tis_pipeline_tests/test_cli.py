"""The `tis` command, run as a user runs it: a subprocess with its own environment."""

import itertools
import os
import subprocess
import sys
from datetime import date

import pytest
import sqlalchemy as sa

from tis_pipeline.ops.backfill import Chunk, covering_ranges, plan_chunks
from tis_pipeline.pg.engine import engine, with_driver
from tis_pipeline.settings import PROJECT_ROOT

TIS = [sys.executable, "-m", "tis_pipeline.cli"]


def run_tis(args, env, timeout=600):
    return subprocess.run(
        TIS + args, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["db"],
        ["db", "up"],
        ["db", "upgrade"],
        ["db", "downgrade"],
        ["db", "status"],
        ["db", "url"],
        ["db", "stop"],
        ["env"],
        ["demo"],
        ["dev"],
        ["backfill"],
        ["archive", "restore"],
    ],
)
def test_every_command_has_help(command):
    proc = run_tis([*command, "--help"], dict(os.environ), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Usage" in proc.stdout


def test_unreachable_database_url_gives_one_clear_line():
    env = {**os.environ, "TIS_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none"}
    proc = run_tis(["db", "upgrade"], env, timeout=120)
    assert proc.returncode == 1
    assert "cannot reach PostgreSQL at postgresql+psycopg://nobody@127.0.0.1:1/none" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_invalid_database_url_is_named():
    env = {**os.environ, "TIS_DATABASE_URL": "mysql://x@y/z"}
    proc = run_tis(["db", "status"], env, timeout=120)
    assert proc.returncode == 1
    assert "must point at PostgreSQL" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_backfill_rejects_bad_dates():
    proc = run_tis(
        ["backfill", "--start", "2024-13-01", "--end", "2024-01-02"], dict(os.environ), timeout=120
    )
    assert proc.returncode == 1
    assert "--start must be a date like 2024-01-31" in proc.stderr


def test_plan_chunks_covers_the_range_without_overlap():
    chunks = plan_chunks(date(2024, 1, 1), date(2024, 12, 31), 31)
    assert len(chunks) == 12
    assert chunks[0].first == date(2024, 1, 1) and chunks[-1].last == date(2024, 12, 31)
    assert sum(c.days for c in chunks) == 366
    assert all((b.first - a.last).days == 1 for a, b in itertools.pairwise(chunks))
    with pytest.raises(ValueError):
        plan_chunks(date(2024, 1, 2), date(2024, 1, 1), 31)


def test_covering_ranges_join_short_gaps_and_split_long_ones():
    days = [
        date(2017, 9, 3),
        date(2017, 9, 4),
        date(2016, 10, 7),
        date(2016, 10, 9),
        date(2017, 9, 8),
        date(2016, 10, 8),
        date(2017, 9, 4),
    ]
    assert covering_ranges(days) == [
        Chunk(date(2016, 10, 7), date(2016, 10, 9)),
        Chunk(date(2017, 9, 3), date(2017, 9, 4)),
        Chunk(date(2017, 9, 8), date(2017, 9, 8)),
    ]
    assert covering_ranges(days, max_gap_days=3) == [
        Chunk(date(2016, 10, 7), date(2016, 10, 9)),
        Chunk(date(2017, 9, 3), date(2017, 9, 8)),
    ]
    assert covering_ranges(days, max_gap_days=2) == covering_ranges(days)
    assert covering_ranges([]) == []
    with pytest.raises(ValueError):
        covering_ranges(days, max_gap_days=-1)


@pytest.fixture
def cli_env(tmp_path, migrated_database_url, empty_database_url):
    (tmp_path / "dagster.yaml").symlink_to(PROJECT_ROOT / "dagster.yaml")
    return {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path),
        "TIS_DATABASE_URL": migrated_database_url,
        "TIS_DAGSTER_PG_URL": with_driver(empty_database_url, "psycopg2"),
        "TIS_MARKET_SOURCE": "synthetic",
        "TIS_SYMBOLS": "AAA,BBB",
        "TIS_SYNTHETIC_SEED": "9",
        "CI": "true",
    }


def digest(url):
    with engine(url).connect() as conn:
        return {
            t: conn.execute(
                sa.text(
                    "SELECT count(*), "
                    "md5(coalesce(string_agg(t::text, '|' ORDER BY symbol, \"timestamp\"), '')) "
                    f"FROM {t} t"
                )
            ).one()
            for t in ("market_data_1m", "market_data_15m", "market_data_1h")
        }


@pytest.mark.pg
def test_backfill_runs_chunks_fails_clearly_and_resumes(cli_env):
    url = cli_env["TIS_DATABASE_URL"]
    # the database refuses to build the partition of 2024-07-04, as a server failing mid-backfill would
    with engine(url).begin() as conn:
        conn.execute(
            sa.text("""
            CREATE FUNCTION tis_test_refuse() RETURNS event_trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF EXISTS (SELECT 1 FROM pg_event_trigger_ddl_commands()
                         WHERE object_identity LIKE '%market_data_1m_p20240704%') THEN
                RAISE EXCEPTION 'refused by test';
              END IF;
            END $$;
            CREATE EVENT TRIGGER tis_test_refuse ON ddl_command_end WHEN TAG IN ('ALTER TABLE')
              EXECUTE FUNCTION tis_test_refuse();
        """)
        )
    args = ["backfill", "--start", "2024-07-01", "--end", "2024-07-06", "--chunk-days", "2"]
    failed = run_tis(args, cli_env)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "chunk 2024-07-03...2024-07-04 failed" in failed.stderr
    assert "refused by test" in failed.stderr
    with engine(url).connect() as conn:
        days = (
            conn.execute(
                sa.text(
                    "SELECT DISTINCT (\"timestamp\" AT TIME ZONE 'UTC')::date FROM market_data_1m ORDER BY 1"
                )
            )
            .scalars()
            .all()
        )
    assert [d.isoformat() for d in days] == ["2024-07-01", "2024-07-02"]
    with engine(url).begin() as conn:
        conn.execute(sa.text("DROP EVENT TRIGGER tis_test_refuse; DROP FUNCTION tis_test_refuse();"))
    resumed = run_tis(args, cli_env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "1 of 3 chunks already done" in resumed.stdout
    assert "2 run(s)" in resumed.stdout
    after_resume = digest(url)
    again = run_tis(args, cli_env)
    assert "3 of 3 chunks already done" in again.stdout and "0 run(s)" in again.stdout
    # a clean run of the whole range from scratch gives the very same rows
    with engine(url).begin() as conn:
        conn.execute(sa.text("TRUNCATE market_data_1m, market_data_15m, market_data_1h"))
    clean = run_tis([*args[:-2], "--chunk-days", "6"], cli_env)
    assert clean.returncode == 0, clean.stderr
    assert digest(url) == after_resume
    assert after_resume["market_data_1m"][0] > 6 * 2 * 1400
