"""The `tis` command, run as a user runs it: a subprocess with its own environment."""

import itertools
import os
import socket
import subprocess
import sys
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tis_pipeline.ops.backfill import Chunk, covering_ranges, plan_chunks
from tis_pipeline.pg.engine import engine, with_database, with_driver
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
        **{k: v for k, v in os.environ.items() if k not in ("TIS_LOG_LEVEL", "TIS_MARKET_DATA_DIR")},
        "DAGSTER_HOME": str(tmp_path),
        # the test's own GX project and manifests, not those of the checkout's .tis (shared with other runs)
        "TIS_HOME": str(tmp_path / "tis_home"),
        "TIS_DATABASE_URL": migrated_database_url,
        "TIS_DAGSTER_PG_URL": with_driver(empty_database_url, "psycopg2"),
        "TIS_MARKET_SOURCE": "synthetic",
        "TIS_SYMBOLS": "AAA,BBB",
        "TIS_SYNTHETIC_SEED": "9",
        "CI": "true",
    }


REFUSED = "error: market_data_1m: RaiseException: refused by test"


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
    # what failed, then last the first line of why; the tracebacks only with --verbose
    assert failed.stderr.splitlines()[-2].startswith("chunk 2024-07-03...2024-07-04 failed (run ")
    assert failed.stderr.splitlines()[-2].endswith(
        "2 of 6 days done; once the cause is fixed, the same command resumes from this chunk "
        "(`tis --verbose …` shows the traceback)"
    )
    assert failed.stderr.splitlines()[-1] == REFUSED, failed.stderr
    assert "Traceback" not in failed.stderr and "Stack Trace" not in failed.stderr
    assert len(failed.stderr.splitlines()) == 2, failed.stderr
    verbose = run_tis(["--verbose", *args], cli_env)
    assert verbose.returncode == 1, verbose.stdout + verbose.stderr
    assert verbose.stderr.splitlines()[-1] == REFUSED, verbose.stderr
    assert "Stack Trace:" in verbose.stderr and 'tis_pipeline/market_data/assets.py", line' in verbose.stderr
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


def _dagster_runs(env):
    """Runs recorded in the Dagster storage of ``env`` (0 when Dagster never even made its tables)."""
    with engine(with_driver(env["TIS_DAGSTER_PG_URL"], "psycopg")).connect() as conn:
        if not sa.inspect(conn).has_table("runs"):
            return 0
        return conn.execute(sa.text("SELECT count(*) FROM runs")).scalar_one()


def _partitioned_assets():
    from tis_pipeline.definitions import defs

    keys = defs.resolve_job_def("daily_partitioned_job").asset_layer.executable_asset_keys
    return ", ".join(sorted(k.to_user_string() for k in keys))


@pytest.mark.pg
@pytest.mark.parametrize("case", ["before_start", "future", "no_such_asset", "chunk_days_0"])
def test_backfill_refuses_what_cannot_work_before_any_run(cli_env, case):
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    today = yesterday + timedelta(days=1)
    env = {**cli_env, "TIS_PARTITION_START": "2024-01-01"}
    args, expected = {
        "before_start": (
            ["--start", "2023-12-30", "--end", "2024-01-02"],
            "error: --start 2023-12-30 is before TIS_PARTITION_START=2024-01-01, the first partition: "
            "start on or after it, or set TIS_PARTITION_START earlier",
        ),
        "future": (
            ["--start", str(yesterday), "--end", str(today)],
            f"error: --end {today} is after yesterday ({yesterday} UTC), the last partition: "
            "end on or before it",
        ),
        "no_such_asset": (
            ["--start", "2024-01-02", "--end", "2024-01-02", "--select", "no_such_asset"],
            "error: --select 'no_such_asset' matches no asset; the daily-partitioned assets are "
            + _partitioned_assets(),
        ),
        "chunk_days_0": (
            ["--start", "2024-01-02", "--end", "2024-01-02", "--chunk-days", "0"],
            "error: --chunk-days must be at least 1, not 0",
        ),
    }[case]
    proc = run_tis(["backfill", *args], env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr == expected + "\n"
    assert _dagster_runs(env) == 0


@pytest.mark.pg
def test_demo_with_a_missing_data_dir_says_so_before_any_run(cli_env, tmp_path):
    env = {k: v for k, v in cli_env.items() if k != "TIS_MARKET_SOURCE"}
    env["TIS_MARKET_DATA_DIR"] = str(tmp_path / "absent")
    proc = run_tis(["demo"], env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr == (
        f"error: TIS_MARKET_DATA_DIR={tmp_path / 'absent'} does not exist: point it at a directory of bar "
        "files, or unset it to use the synthetic source\n"
    )
    assert _dagster_runs(env) == 0


@pytest.mark.pg
def test_a_database_missing_on_a_reachable_server_is_named(server_url):
    name = f"tis_absent_{uuid.uuid4().hex[:12]}"
    url = make_url(server_url)
    socket_dir = url.query.get("host")
    if url.host:
        where = f"{url.host}:{url.port or 5432}"
        command = f"createdb -h {url.host}{f' -p {url.port}' if url.port else ''} -U {url.username} {name}"
    else:
        where, command = f"{socket_dir} (socket)", f"createdb -h {socket_dir} -U {url.username} {name}"
    env = {**os.environ, "TIS_DATABASE_URL": with_database(server_url, name)}
    proc = run_tis(["db", "upgrade"], env, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr == (
        f"error: database {name} does not exist on server {where}; create it with `{command}` "
        "or unset TIS_DATABASE_URL to use the embedded database\n"
    )


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        (
            "0.0.0.0.0",
            "--host 0.0.0.0.0 is not an IP address or a host name (e.g. 127.0.0.1, 0.0.0.0 or localhost)",
        ),
        ("192.0.2.1", "--host 192.0.2.1 is not an address of this machine (e.g. 127.0.0.1 or 0.0.0.0)"),
    ],
    ids=["not_an_address", "not_this_machine"],
)
@pytest.mark.pg
def test_dev_names_a_wrong_host_not_a_port_in_use(cli_env, host, expected):
    with socket.socket() as probe:  # a port nothing uses: the only wrong thing is the host
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = run_tis(["dev", "--host", host, "--port", str(port)], cli_env, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr == f"error: {expected}\n"


@pytest.mark.pg
def test_db_url_masks_the_password_unless_asked(cli_env):
    # the server trusts the test's role: the password is carried, not checked
    url = make_url(cli_env["TIS_DATABASE_URL"]).set(password="s3cret pass")
    env = {**cli_env, "TIS_DATABASE_URL": url.render_as_string(hide_password=False)}
    masked = run_tis(["db", "url"], env, timeout=120)
    assert masked.returncode == 0, masked.stderr
    assert masked.stdout == url.render_as_string(hide_password=True) + "\n"
    assert "***" in masked.stdout and "s3cret" not in masked.stdout
    shown = run_tis(["db", "url", "--show-password"], env, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == url.render_as_string(hide_password=False) + "\n"


def _counts_table(stdout):
    """The demo's "rows per table" lines."""
    return stdout[stdout.index("rows per table") :].splitlines()


@pytest.mark.pg
@pytest.mark.slow
def test_demo_says_what_earlier_runs_left_and_fresh_starts_from_empty(cli_env):
    first = run_tis(["demo"], cli_env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "already holds" not in first.stdout
    again = run_tis(["demo"], cli_env)
    assert again.returncode == 0, again.stdout + again.stderr
    bars = digest(cli_env["TIS_DATABASE_URL"])["market_data_1m"][0]
    assert bars > 0
    assert "the database already holds " in again.stdout and "1-minute bars" in again.stdout
    assert "the counts below include them; `tis demo --fresh` starts from empty tables" in again.stdout
    fresh = run_tis(["demo", "--fresh"], cli_env)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert "emptied the project's tables" in fresh.stdout
    assert "already holds" not in fresh.stdout
    assert _counts_table(fresh.stdout) == _counts_table(first.stdout)


def _group_pids(pgid):
    import psutil

    pids = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                pids.append(p.pid)
        except (ProcessLookupError, psutil.Error):
            pass
    return pids


def _alive(process):
    import psutil

    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _answers(port):
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


@pytest.mark.pg
@pytest.mark.slow
def test_dev_stops_everything_on_sigterm(cli_env):
    import signal
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # the tis process leads its own group, as a shell's job would: its children (the dagster dev group) are
    # apart from it
    proc = subprocess.Popen(
        [*TIS, "dev", "--port", str(port)],
        cwd=PROJECT_ROOT,
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    groups: set[int] = set()
    try:
        deadline = time.monotonic() + 240
        while not _answers(port):
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "the UI never answered"
            time.sleep(1)
        import psutil

        children = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        assert children
        groups.update(os.getpgid(pid) for pid in children)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        out = proc.stdout.read()
        assert code == 128 + signal.SIGTERM, out
        deadline = time.monotonic() + 30
        while any(_group_pids(g) for g in groups) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not any(_group_pids(g) for g in groups), out
        live = {p.pid for p in psutil.process_iter() if _alive(p)}
        assert not live.intersection(children), out
        assert not _answers(port)
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", port))  # nothing listens there any more
        assert "will not be used" not in out, out
        assert "BetaWarning" not in out and "PreviewWarning" not in out, out
    finally:
        for pgid in {proc.pid, *groups}:
            if _group_pids(pgid):
                os.killpg(pgid, signal.SIGKILL)


def test_dev_kills_a_group_that_ignores_the_signal(monkeypatch):
    import signal
    import threading

    from tis_pipeline.cli import dev

    monkeypatch.setattr(dev, "DEV_STOP_SECONDS", 1)
    pids = []
    popen = subprocess.Popen

    def recording_popen(*args, **kwargs):
        proc = popen(*args, **kwargs)
        pids.append(proc.pid)
        return proc

    monkeypatch.setattr(subprocess, "Popen", recording_popen)
    threading.Timer(2.0, os.kill, (os.getpid(), signal.SIGTERM)).start()
    # a shell and its child that both ignore SIGTERM: only SIGKILL ends them
    code = dev.run_process_group(
        ["sh", "-c", "trap '' TERM INT HUP; sleep 60 & wait"], cwd=str(PROJECT_ROOT), env=dict(os.environ)
    )
    assert code == 128 + signal.SIGTERM
    assert not _group_pids(pids[0])


@pytest.mark.parametrize(
    ("selection", "expected"),
    [
        # one of the trading day's tables: the step writes all eight, so all eight run (Dagster refuses part)
        ("trading_plans", "trading_day"),
        ("key:modules or key:market_data_15m", "trading_day+market_data_15m"),
        ("market_data_1h", "market_data_1h"),
    ],
)
def test_a_table_written_with_others_is_selected_with_them(selection, expected, capsys):
    from tis_pipeline.cli import runs
    from tis_pipeline.trading_day.day import TABLES

    wanted = {part: {part} for part in expected.split("+")} | {"trading_day": set(TABLES)}
    keys = {k.to_user_string() for k in runs._resolve_selection(selection)}
    assert keys == set().union(*(wanted[part] for part in expected.split("+")))
    said = capsys.readouterr().out
    assert ("selected with them" in said) == (expected != "market_data_1h")
