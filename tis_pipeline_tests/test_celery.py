"""Scale-out on Celery: a real worker process runs every step of a partition-range run of the market-data job.

The worker (``dagster-celery worker start -A dagster_celery.app -y celery/worker.yaml``) and the run share one
persistent Dagster instance (a DAGSTER_HOME linked to the repository's dagster.yaml, PostgreSQL storage) and
one project database. Redis databases 10/11 (14/15 for the test that kills workers, whose unacknowledged
tasks must never reach another session's workers) and a queue of its own per test keep parallel sessions
apart.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import psutil
import pytest
import sqlalchemy as sa
import yaml

from tis_pipeline.dsi.assets import HandoffIOManager
from tis_pipeline.market_data import synthetic
from tis_pipeline.market_data.partitions import range_tags
from tis_pipeline.pg.engine import engine, with_driver
from tis_pipeline.settings import PROJECT_ROOT

pytestmark = [
    pytest.mark.celery,
    pytest.mark.pg,
    pytest.mark.slow,
    # dagster-celery registers its execute_plan task again for every step it submits; harmless
    pytest.mark.filterwarnings("ignore::celery.exceptions.DuplicateTaskNameWarning"),
]

WORKER_YAML = Path(__file__).parent / "celery" / "worker.yaml"
CELERY = yaml.safe_load(WORKER_YAML.read_text())["execution"]["config"]
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
SYMBOLS, SEED = ["AAA", "BBB"], 3
FIRST, LAST = "2024-04-08", "2024-04-10"  # three daily partitions, one run
READY_TIMEOUT, RUN_TIMEOUT = 90, 180  # seconds
TABLES = {"market_data_1m": None, "market_data_15m": "15min", "market_data_1h": "1h"}


def _broker_db(config: dict) -> int:
    return int(config["broker"].rsplit("/", 1)[1])


@pytest.fixture
def redis_client():
    """The broker's database; skips the test when Redis is not there."""
    yield from _redis_or_skip(_broker_db(CELERY))


def _redis_or_skip(db: int):
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(
            f"Redis at {REDIS_HOST}:{REDIS_PORT} is unreachable ({exc}); the Celery test needs it as broker"
        )
    yield client
    client.close()


def _tail(path: Path, lines: int = 60) -> str:
    text = path.read_text(errors="replace") if path.exists() else "(no worker log)"
    return "\n".join(text.splitlines()[-lines:])


def _stop(proc: subprocess.Popen) -> None:
    """Stop the worker's whole process group (dagster-celery → celery → pool children) and wait for it."""
    try:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        _, tree = psutil.wait_procs(tree, timeout=wait)
        if not tree:
            break
    proc.wait(10)


def _forget_queue(client, queue: str) -> None:
    """Drop the test's queue and its kombu bindings from the broker database (best effort)."""
    client.delete(queue)
    for pattern in ("_kombu.binding.*", "_kombu.binding_permanent.*"):
        for key in client.scan_iter(pattern):
            if client.type(key) != b"set":
                continue
            for member in client.smembers(key):
                if member.decode(errors="replace").split("\x06\x16")[-1] == queue:
                    client.srem(key, member)


@pytest.fixture
def dagster_home(tmp_path, empty_database_url, migrated_database_url, monkeypatch):
    """One persistent instance and one project database, in this process's environment and the worker's."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").symlink_to(PROJECT_ROOT / "dagster.yaml")
    env = {
        "DAGSTER_HOME": str(home),
        "TIS_DAGSTER_PG_URL": with_driver(empty_database_url, "psycopg2"),
        "TIS_DATABASE_URL": migrated_database_url,
        "TIS_MARKET_SOURCE": "synthetic",
        "TIS_SYMBOLS": ",".join(SYMBOLS),
        "TIS_SYNTHETIC_SEED": str(SEED),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("TIS_MARKET_DATA_DIR", raising=False)
    return env


@contextlib.contextmanager
def _worker_process(
    name: str, queue: str, log: Path, env: dict, concurrency: int, worker_yaml: Path = WORKER_YAML
):
    """A real Celery worker named ``name`` on ``queue``, ready; stopped (with its children) on the way out."""
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        **env,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(bin_dir / "dagster-celery"),
                "worker",
                "start",
                "-A",
                "dagster_celery.app",
                "-y",
                str(worker_yaml),
                "-n",
                name,
                "-q",
                queue,
                "-l",
                "INFO",
                "--",
                f"--concurrency={concurrency}",
                "--without-gossip",
                "--without-mingle",
            ],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while f"{name}@" not in _tail(log, 400) or " ready." not in _tail(log, 400):
            if proc.poll() is not None:
                pytest.fail(
                    f"the Celery worker exited with {proc.returncode} before it was ready:\n{_tail(log)}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"the Celery worker was not ready after {READY_TIMEOUT}s:\n{_tail(log)}")
            time.sleep(0.5)
        yield proc
    finally:
        _stop(proc)


@pytest.fixture
def worker(redis_client, tmp_path, dagster_home):
    """A real Celery worker on a queue of its own; yields (process, name, queue, log path)."""
    name, queue = f"w_{uuid.uuid4().hex[:10]}", f"tis_test_{uuid.uuid4().hex[:12]}"
    log = tmp_path / "worker.log"
    try:
        with _worker_process(name, queue, log, dagster_home, concurrency=2) as proc:
            yield proc, name, queue, log
    finally:
        _forget_queue(redis_client, queue)


def _run_in_thread(fn, timeout: float, proc: subprocess.Popen | list, log: Path | list):
    """fn() in a daemon thread: the celery executor waits for its tasks forever, the test only so long
    (``proc``, ``log``: a worker's, or lists of several)."""
    procs, logs = (proc, log) if isinstance(proc, list) else ([proc], [log])
    box: dict = {}

    def target():
        try:
            box["result"] = fn()
        except BaseException as exc:  # reported in the test's thread
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True, name="celery-run")
    thread.start()
    deadline = time.monotonic() + timeout
    tails = lambda: "\n".join(_tail(path) for path in logs)  # noqa: E731
    while thread.is_alive():
        thread.join(1)
        for each in procs:
            if each.poll() is not None and thread.is_alive():
                pytest.fail(f"a Celery worker died (exit {each.returncode}) during the run:\n{tails()}")
        if time.monotonic() > deadline:
            pytest.fail(f"the run did not finish within {timeout}s; worker log tails:\n{tails()}")
    if "error" in box:
        raise AssertionError(f"the run raised {box['error']!r}; worker log tails:\n{tails()}") from box[
            "error"
        ]
    return box["result"]


def _stored(url: str, table: str) -> pd.DataFrame:
    """The whole table: the database is the test's own, so nothing may lie outside the range either."""
    with engine(url).connect() as conn:
        return pd.read_sql(
            sa.text(
                f'SELECT symbol, "timestamp", open::float8, high::float8, low::float8, close::float8, '
                f'volume::float8 FROM {table} ORDER BY symbol, "timestamp"'
            ),
            conn,
        )


def _expected(source: pd.DataFrame, rule: str | None) -> pd.DataFrame:
    if rule is None:
        return source.sort_values(["symbol", "timestamp"], ignore_index=True)
    return (
        source.sort_values("timestamp")
        .groupby(["symbol", source["timestamp"].dt.floor(rule).rename("bucket")])
        .agg(
            open=("open", "first"),
            high=("high", "max"),
            low=("low", "min"),
            close=("close", "last"),
            volume=("volume", "sum"),
        )
        .reset_index()
        .rename(columns={"bucket": "timestamp"})
    )


def _expected_steps(shards: int = 2) -> set[str]:
    """The step keys of a run of the Celery job: every node, the sharded DSI graph as its plan, shard and
    finish steps."""
    from tis_pipeline.ops.scale_out import market_data_celery_job

    nodes = set(market_data_celery_job().graph.node_names()) - {"dsi"}
    return nodes | {"dsi.dsi_plan", "dsi.dsi_finish", *(f"dsi.dsi_shard[shard_{k}]" for k in range(shards))}


def _celery_job(module: str, name: str, celery: dict, queue: str, **more: object):
    """The job ``name`` of ``module`` on the Celery executor of ``celery``'s broker and backend and ``queue``,
    rebuilt by the workers from the same arguments."""
    kwargs = {"broker": celery["broker"], "backend": celery["backend"], "queue": queue, **more}
    return dg.build_reconstructable_job(module, name, reconstructable_kwargs=kwargs)


def test_partition_range_runs_its_steps_on_a_celery_worker(worker, dagster_home):
    proc, name, queue, log = worker
    job = _celery_job("tis_pipeline.ops.scale_out", "market_data_celery_job", CELERY, queue)
    tags = range_tags(FIRST, LAST)
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"

        def launch():
            with dg.execute_job(job, instance=instance, tags=tags, raise_on_error=False) as result:
                return result.run_id, result.success

        run_id, success = _run_in_thread(launch, RUN_TIMEOUT, proc, log)
        logs = instance.all_logs(run_id)
        failures = [
            e.dagster_event.event_specific_data
            for e in logs
            if e.dagster_event and e.dagster_event.event_type == dg.DagsterEventType.STEP_FAILURE
        ]
        assert success, f"the run failed: {failures}\nworker log tail:\n{_tail(log)}"
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.SUCCESS

        # every step started in the worker's process tree, announced by the celery task under the worker's
        # name
        worker_pids = {proc.pid} | {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
        starts = {
            e.step_key: e.dagster_event.pid
            for e in logs
            if e.dagster_event and e.dagster_event.event_type == dg.DagsterEventType.STEP_START
        }
        # the three assets, the sharded DSI's plan, shards (one per symbol here) and finish, and the asset
        # checks that target them in steps of their own (freshness, expected symbols, stale days), all as
        # Celery tasks
        assets = {"market_data_1m", "market_data_15m", "market_data_1h"}
        assert assets <= set(starts), starts
        assert set(starts) == _expected_steps(), starts
        assert all(pid != os.getpid() and pid in worker_pids for pid in starts.values()), (
            starts,
            worker_pids,
        )
        delegated = {
            e.step_key: e.dagster_event.engine_event_data.metadata["Celery worker"].value
            for e in logs
            if e.dagster_event
            and e.dagster_event.is_engine_event
            and "Celery worker" in e.dagster_event.engine_event_data.metadata
        }
        assert set(delegated) == set(starts), delegated
        assert all(host.startswith(f"{name}@") for host in delegated.values()), (name, delegated)
        submitted = [e.user_message for e in logs if "Submitting celery task" in (e.user_message or "")]
        assert len(submitted) == len(starts) and all(f'queue "{queue}"' in m for m in submitted), submitted

        # one run over the range: one materialization per asset and partition day
        days = {d.strftime("%Y-%m-%d") for d in pd.date_range(FIRST, LAST, freq="D")}
        for asset in assets:
            events = instance.fetch_materializations(dg.AssetKey(asset), limit=100).records
            assert {r.partition_key for r in events if r.run_id == run_id} == days, asset

    # the tables hold exactly what the synthetic source gives for those days, rolled up like pandas does
    start, end = pd.Timestamp(FIRST, tz="UTC"), pd.Timestamp(LAST, tz="UTC") + pd.Timedelta(days=1)
    source = synthetic.bars(start, end, SYMBOLS, seed=SEED)
    url = dagster_home["TIS_DATABASE_URL"]
    for table, rule in TABLES.items():
        stored, expected = _stored(url, table), _expected(source, rule)
        assert len(stored) == len(expected), f"{table}: {len(stored)} rows stored, {len(expected)} expected"
        assert stored.groupby("symbol").size().to_dict() == expected.groupby("symbol").size().to_dict(), table
        assert (
            stored["symbol"].tolist() == expected["symbol"].tolist()
            and (stored["timestamp"] == expected["timestamp"]).all()
        ), f"{table}: keys differ"
        for column in ("open", "high", "low", "close", "volume"):
            np.testing.assert_allclose(
                stored[column].to_numpy(),
                expected[column].to_numpy(),
                rtol=1e-9,
                atol=1e-8,
                err_msg=f"{table}.{column}",
            )


# ------------------------------------------------------------------------------------------------------------
# Two workers, DSI in symbol shards: the very tables of a single-process run
# ------------------------------------------------------------------------------------------------------------

SHARDED_DAY = "2024-04-09"
# every column of the bar tables (mx_* included) and of the DSI tables, as text, in key order; dsi_evidence
# without its wall-clock columns (a replay changes them: tis_pipeline_tests/dsi/test_assets.py)
TABLE_ROWS = {
    "market_data_1m": 'SELECT t::text FROM market_data_1m t ORDER BY symbol, "timestamp"',
    "market_data_15m": 'SELECT t::text FROM market_data_15m t ORDER BY symbol, "timestamp"',
    "market_data_1h": 'SELECT t::text FROM market_data_1h t ORDER BY symbol, "timestamp"',
    "anomaly_events": "SELECT t::text FROM anomaly_events t ORDER BY event_id",
    "dsi_state": "SELECT concat_ws(',', day, config_fingerprint, symbols, bars, md5(state)) FROM dsi_state "
    "ORDER BY day",
}


def _single_process_run(url: str, tags: dict[str, str]) -> None:
    """Ingest, rollups and the one-step DSI over the tagged range in this process: the reference tables a
    sharded run on Celery workers must reproduce."""
    from tis_pipeline.dsi.assets import dsi
    from tis_pipeline.market_data.assets import market_data_1h, market_data_1m, market_data_15m
    from tis_pipeline.market_data.sources import BarSource
    from tis_pipeline.resources import PostgresResource

    single = dg.materialize(
        [market_data_1m, market_data_15m, market_data_1h, dsi],
        resources={
            "db": PostgresResource(url=url),
            "bars": BarSource(source="synthetic", symbols=SYMBOLS, seed=SEED),
        },
        tags=tags,
    )
    assert single.success


def _table_rows(url: str) -> dict[str, list[str]]:
    from tis_pipeline.dsi import frames

    with engine(url).connect() as conn:
        rows = {name: conn.execute(sa.text(q)).scalars().all() for name, q in TABLE_ROWS.items()}
        columns = conn.execute(
            sa.text(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'dsi_evidence' "
                "ORDER BY ordinal_position"
            )
        ).scalars()
        kept = [
            f"(mx_expert_contributions - '{frames.WALL_CLOCK_CONTRIBUTIONS_KEY}')::text"
            if c == "mx_expert_contributions"
            else f'"{c}"::text'
            for c in columns
            if c not in frames.WALL_CLOCK_COLUMNS
        ]
        rows["dsi_evidence"] = (
            conn.execute(
                sa.text(f"SELECT concat_ws(',', {', '.join(kept)}) FROM dsi_evidence ORDER BY evidence_id")
            )
            .scalars()
            .all()
        )
    return rows


@pytest.fixture
def two_workers(redis_client, tmp_path, dagster_home):
    """Two real Celery workers, one process each, on one queue of their own; yields ([(process, name, log)],
    queue)."""
    queue = f"tis_test_{uuid.uuid4().hex[:12]}"
    names = [f"w{i}_{uuid.uuid4().hex[:8]}" for i in (1, 2)]
    logs = [tmp_path / f"{name}.log" for name in names]
    try:
        with (
            _worker_process(names[0], queue, logs[0], dagster_home, concurrency=1) as first,
            _worker_process(names[1], queue, logs[1], dagster_home, concurrency=1) as second,
        ):
            yield list(zip((first, second), names, logs, strict=True)), queue
    finally:
        _forget_queue(redis_client, queue)


def test_a_sharded_day_on_two_workers_writes_the_single_process_tables(two_workers, dagster_home):
    """The day run in one process (dg.materialize: ingest, rollups, the one-step DSI), then again as the
    Celery job on two workers with DSI in two symbol shards, after the DSI tables were emptied: every row of
    market_data_1m/15m/1h (mx_* included), dsi_evidence, anomaly_events and dsi_state the same."""
    workers, queue = two_workers
    url = dagster_home["TIS_DATABASE_URL"]
    tags = range_tags(SHARDED_DAY, SHARDED_DAY)
    _single_process_run(url, tags)
    by_single = _table_rows(url)
    assert all(by_single[t] for t in TABLE_ROWS), {t: len(r) for t, r in by_single.items()}
    assert len(by_single["market_data_1m"]) > 2 * 1400 and by_single["dsi_evidence"]
    with engine(url).begin() as conn:  # the sharded run must write these again, not find them
        conn.execute(sa.text("TRUNCATE anomaly_events, dsi_evidence, dsi_state"))
        conn.execute(sa.text("UPDATE market_data_15m SET mx_evidence = NULL, mx_confirm = NULL"))

    job = _celery_job("tis_pipeline.ops.scale_out", "market_data_celery_job", CELERY, queue, shards=2)
    procs, names, logs = (list(x) for x in zip(*workers, strict=True))
    with dg.DagsterInstance.get() as instance:

        def launch():
            with dg.execute_job(job, instance=instance, tags=tags, raise_on_error=False) as result:
                return result.run_id, result.success

        run_id, success = _run_in_thread(launch, RUN_TIMEOUT, procs, logs)
        records = instance.all_logs(run_id)
        failures = [
            e.dagster_event.event_specific_data
            for e in records
            if e.dagster_event and e.dagster_event.event_type == dg.DagsterEventType.STEP_FAILURE
        ]
        assert success, f"the run failed: {failures}\nworker log tails:\n" + "\n".join(map(_tail, logs))
        starts = {
            e.step_key: e.dagster_event.pid
            for e in records
            if e.dagster_event and e.dagster_event.event_type == dg.DagsterEventType.STEP_START
        }
        assert set(starts) == _expected_steps(2), starts
        delegated = {
            e.step_key: e.dagster_event.engine_event_data.metadata["Celery worker"].value.split("@")[0]
            for e in records
            if e.dagster_event
            and e.dagster_event.is_engine_event
            and "Celery worker" in e.dagster_event.engine_event_data.metadata
        }
        assert set(delegated) == set(starts), delegated
        # every step on one of the two workers, and both workers at work in the run
        assert set(delegated.values()) == set(names), delegated
        worker_pids = {
            p.pid
            for proc in procs
            for p in [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        }
        assert all(pid in worker_pids for pid in starts.values()), (starts, worker_pids)
        materialized = {
            e.dagster_event.asset_key.to_user_string()
            for e in records
            if e.dagster_event and e.dagster_event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION
        }
        assert {"market_data_1m", "market_data_15m", "market_data_1h", "dsi_evidence", "anomaly_events"} <= (
            materialized
        )

    by_shards = _table_rows(url)
    for table in TABLE_ROWS:
        assert len(by_shards[table]) == len(by_single[table]), table
        assert by_shards[table] == by_single[table], f"{table}: rows differ"
    assert by_shards["dsi_evidence"] == by_single["dsi_evidence"]
    with engine(url).connect() as conn:
        left = conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_class WHERE relkind = 'r' AND relname ~ '^market_data_1m_p[0-9]{8}_'"
            )
        ).scalar_one()
    assert left == 0, "the run's day tables are all swapped in"


# ------------------------------------------------------------------------------------------------------------
# A worker process killed mid-shard: the run fails, nothing changes, the next run cleans up and writes it all
# ------------------------------------------------------------------------------------------------------------

KILL_YAML = Path(__file__).parent / "celery" / "worker_kill.yaml"
KILL_CELERY = yaml.safe_load(KILL_YAML.read_text())["execution"]["config"]
KILL_FIRST, KILL_LAST = "2024-04-08", "2024-04-09"  # two days: a shard fills the first, then waits
STEP_TIMEOUT = 120  # seconds for each thing the test waits for while the run goes on
TEST_RUN_TAG = "tis/test_run"
START = dg.DagsterEventType.STEP_START
WAITING_FOR_LOCK = "SELECT count(*) FROM pg_locks WHERE relation = to_regclass(:t) AND NOT granted"


@pytest.fixture
def kill_redis():
    """The kill test's broker database (14, see celery/worker_kill.yaml); skips when Redis is not there."""
    yield from _redis_or_skip(_broker_db(KILL_CELERY))


@pytest.fixture
def workers_to_kill(kill_redis, tmp_path, dagster_home):
    """Two real Celery workers, one pool process each, on a queue of their own in Redis databases 14/15;
    yields ([(process, name, log)], queue)."""
    queue = f"tis_kill_{uuid.uuid4().hex[:12]}"
    names = [f"k{i}_{uuid.uuid4().hex[:8]}" for i in (1, 2)]
    logs = [tmp_path / f"{name}.log" for name in names]
    try:
        with (
            _worker_process(names[0], queue, logs[0], dagster_home, 1, KILL_YAML) as first,
            _worker_process(names[1], queue, logs[1], dagster_home, 1, KILL_YAML) as second,
        ):
            yield list(zip((first, second), names, logs, strict=True)), queue
    finally:
        _forget_queue(kill_redis, queue)
        _forget_unacked(kill_redis, queue)


def _forget_unacked(client, queue: str) -> None:
    """Drop the deliveries of ``queue`` that a killed worker never acknowledged (kombu's ``unacked`` hash),
    so that no later worker on database 14 is handed them when their visibility timeout passes."""
    for tag, payload in client.hgetall("unacked").items():
        if queue.encode() in payload:
            client.hdel("unacked", tag)
            client.zrem("unacked_index", tag)


def _wait_for(what: str, probe, logs: list[Path], thread: threading.Thread | None = None):
    """``probe()``'s first truthy value, polled; fails the test after ``STEP_TIMEOUT`` or when the run's
    thread ended first."""
    deadline = time.monotonic() + STEP_TIMEOUT
    while not (found := probe()):
        if thread is not None and not thread.is_alive():
            pytest.fail(f"the run ended before {what}; worker log tails:\n" + "\n".join(map(_tail, logs)))
        if time.monotonic() > deadline:
            pytest.fail(
                f"no {what} within {STEP_TIMEOUT}s; worker log tails:\n" + "\n".join(map(_tail, logs))
            )
        time.sleep(0.1)
    return found


def _events(instance: dg.DagsterInstance, run_id: str, kind: dg.DagsterEventType) -> dict[str, int]:
    """step key -> pid of the run's events of ``kind``."""
    return {
        e.step_key: e.dagster_event.pid
        for e in instance.all_logs(run_id, of_type=kind)
        if e.step_key and e.dagster_event
    }


def _launch(job, instance: dg.DagsterInstance, tags: dict, logs: list[Path], name: str):
    """``job`` launched on a thread of its own with a marker tag: (its thread, its run id once the run
    exists, the box that gets ``result`` = (run id, success) or ``error``)."""
    marker = uuid.uuid4().hex
    box: dict = {}

    def launch():
        try:
            with dg.execute_job(
                job, instance=instance, tags={**tags, TEST_RUN_TAG: marker}, raise_on_error=False
            ) as result:
                box["result"] = (result.run_id, result.success)
        except BaseException as exc:  # reported in the test's thread
            box["error"] = exc

    thread = threading.Thread(target=launch, daemon=True, name=name)
    thread.start()
    run_id = _wait_for(
        "run",
        lambda: [r.run_id for r in instance.get_runs(filters=dg.RunsFilter(tags={TEST_RUN_TAG: marker}))],
        logs,
        thread,
    )[0]
    return thread, run_id, box


def _ended_failed(thread, box: dict, instance: dg.DagsterInstance, run_id: str, logs: list[Path], after: str):
    """The run ``_launch`` started ends within ``RUN_TIMEOUT``, FAILURE, without an error in its thread."""
    thread.join(RUN_TIMEOUT)
    if thread.is_alive():
        run = instance.get_run_by_id(run_id)
        pytest.fail(
            f"the run is still {run.status if run else '?'} {RUN_TIMEOUT}s after {after}; worker log tails:\n"
            + "\n".join(map(_tail, logs))
        )
    assert "error" not in box, box
    assert box["result"] == (run_id, False)
    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE


def _messages(instance: dg.DagsterInstance, run_id: str) -> str:
    """Every event message of the run, with its event data (errors included), one line each."""
    return "\n".join(
        (e.user_message or "") + (str(e.dagster_event.event_specific_data) if e.dagster_event else "")
        for e in instance.all_logs(run_id)
    )


def _run_tables(url: str, run_id: str) -> list[str]:
    """The scratch day tables owned by the run ``run_id`` (``pg.day_partitions``' run-owned tables)."""
    from tis_pipeline.pg.day_partitions import scratch_tables

    with engine(url).connect() as conn:
        return sorted(t.name for t in scratch_tables(conn) if t.run == run_id)


def _without_dsi(url: str) -> None:
    """Empty what DSI writes (its tables and every mx_* column), so that anything a run swaps in shows."""
    with engine(url).begin() as conn:
        conn.execute(sa.text("TRUNCATE anomaly_events, dsi_evidence, dsi_state"))
        for table in TABLES:
            columns = (
                conn.execute(
                    sa.text(
                        "SELECT column_name FROM information_schema.columns "
                        "WHERE table_name = :t AND column_name LIKE 'mx\\_%' ORDER BY 1"
                    ),
                    {"t": table},
                )
                .scalars()
                .all()
            )
            if columns:
                assignments = ", ".join(f'"{c}" = NULL' for c in columns)
                conn.execute(sa.text(f"UPDATE {table} SET {assignments}"))


@pytest.mark.parametrize("victim", ["pool process", "whole worker"])
def test_a_worker_killed_mid_shard_fails_the_run_and_changes_nothing(workers_to_kill, dagster_home, victim):
    """kill -9 of the worker process running DSI shard 0 (after it filled the first day's table, while it
    waits to fill the second), or of its whole worker (main process and pool, as when its machine goes): the
    run ends FAILURE (the project configures no run retries; a lost worker is found by the executor's pings,
    ``scale_out.WatchedTask``), every table holds what it held before, the killed run's day tables stay until
    the next sharded run starts and drops them, and that run (on the workers left) writes the single-process
    run's tables."""
    workers, queue = workers_to_kill
    procs, _, logs = (list(x) for x in zip(*workers, strict=True))
    url = dagster_home["TIS_DATABASE_URL"]
    tags = range_tags(KILL_FIRST, KILL_LAST)
    _single_process_run(url, tags)
    reference = _table_rows(url)
    assert all(reference[t] for t in TABLE_ROWS), {t: len(r) for t, r in reference.items()}
    _without_dsi(url)
    before = _table_rows(url)
    assert not before["dsi_evidence"] and not before["dsi_state"] and before != reference

    job = _celery_job("tis_pipeline.ops.scale_out", "market_data_celery_job", KILL_CELERY, queue, shards=2)
    shard_0, shard_1 = "dsi.dsi_shard[shard_0]", "dsi.dsi_shard[shard_1]"
    with dg.DagsterInstance.get() as instance:
        # what the project configures: no run retries (dagster.yaml has no run_retries), so a failed run stays
        # failed until an operator runs it again
        assert not instance.run_retries_enabled
        thread, run_id, box = _launch(job, instance, tags, logs, "celery-run-to-kill")
        # the plan step creates the run's empty day tables; the second day's is held so that each shard, once
        # it has filled the first day, waits inside its step (a deterministic "mid-shard", no sleeps)
        tables = _wait_for("day tables of the run", lambda: _run_tables(url, run_id), logs, thread)
        assert len(tables) == 2, tables
        holder = engine(url).connect()
        held = holder.begin()
        try:
            holder.execute(sa.text(f'LOCK TABLE "{tables[1]}" IN ACCESS EXCLUSIVE MODE'))
            starts = _wait_for(
                "start of both shard steps",
                lambda: s if {shard_0, shard_1} <= set(s := _events(instance, run_id, START)) else None,
                logs,
                thread,
            )
            with engine(url).connect() as conn:
                _wait_for(
                    "two shards waiting to fill the second day",
                    lambda: (
                        conn.execute(
                            sa.text(WAITING_FOR_LOCK),
                            {"t": tables[1]},
                        ).scalar_one()
                        == 2
                    ),
                    logs,
                    thread,
                )
            pid = starts[shard_0]
            owners = [
                p for p in procs if pid in {c.pid for c in psutil.Process(p.pid).children(recursive=True)}
            ]
            assert len(owners) == 1, (pid, procs)  # a worker's pool process, not the run's
            assert not _events(instance, run_id, dg.DagsterEventType.STEP_SUCCESS).keys() & {shard_0, shard_1}
            if victim == "pool process":
                os.kill(pid, signal.SIGKILL)
            else:
                os.killpg(owners[0].pid, signal.SIGKILL)
                owners[0].wait(10)
            survivors = [i for i, p in enumerate(procs) if victim == "pool process" or p is not owners[0]]
        finally:
            held.rollback()
            holder.close()
        _ended_failed(thread, box, instance, run_id, logs, "its shard's process was killed")
        ends = _events(instance, run_id, dg.DagsterEventType.STEP_SUCCESS)
        failed = _events(instance, run_id, dg.DagsterEventType.STEP_FAILURE)
        assert shard_1 in ends and shard_0 not in ends and shard_0 in failed, (ends, failed)
        assert "dsi.dsi_finish" not in _events(instance, run_id, START)
        # the killed shard ran once: its task was not handed to a worker again (acknowledged with Celery's
        # WorkerLostError, or revoked by the executor and left for the 6 h visibility timeout)
        assert [e.step_key for e in instance.all_logs(run_id, of_type=START)].count(shard_0) == 1
        messages = _messages(instance, run_id)
        assert f"the Celery task of step {shard_0} was lost" in messages
        if victim == "pool process":  # Celery's own report: the worker lives on, with a new pool process
            assert "WorkerLostError" in messages and "signal 9" in messages
        else:  # the executor's pings
            assert "WorkerLost" in messages and "has not answered" in messages
        # nothing retries it behind the operator's back
        assert not instance.get_runs(filters=dg.RunsFilter(tags={"dagster/parent_run_id": run_id}))
        assert [i for i, p in enumerate(procs) if p.poll() is None] == survivors

        # the tables hold exactly what they held; the killed run's day tables (the first holding both shards'
        # rows of that day) wait for the next sharded run
        assert _table_rows(url) == before
        assert _run_tables(url, run_id) == tables
        with engine(url).connect() as conn:
            filled, day_bars = conn.execute(
                sa.text(
                    f'SELECT (SELECT count(*) FROM "{tables[0]}"), (SELECT count(*) FROM market_data_1m '
                    'WHERE "timestamp" >= :day AND "timestamp" < :next)'
                ),
                {"day": pd.Timestamp(KILL_FIRST, tz="UTC"), "next": pd.Timestamp(KILL_LAST, tz="UTC")},
            ).one()
        assert filled == day_bars > 1000
        # the killed run's handoff (its plan, the finished shard's result) waits for the next run too
        handoff = HandoffIOManager().run_dir(instance, run_id)
        assert (handoff / "dsi.dsi_plan").is_dir()

        def launch_again():
            with dg.execute_job(job, instance=instance, tags=tags, raise_on_error=False) as result:
                return result.run_id, result.success

        again_id, success = _run_in_thread(
            launch_again, RUN_TIMEOUT, [procs[i] for i in survivors], [logs[i] for i in survivors]
        )
        assert success, "\n".join(map(_tail, logs))
        dropped = [
            e.user_message
            for e in instance.all_logs(again_id)
            if e.step_key == "dsi.dsi_plan" and "scratch tables of dead runs" in (e.user_message or "")
        ]
        assert len(dropped) == 1 and all(t in dropped[0] for t in tables), dropped
        assert not handoff.exists() and not HandoffIOManager().run_dir(instance, again_id).exists()
    assert _run_tables(url, run_id) == [] and _run_tables(url, again_id) == []
    with engine(url).connect() as conn:
        left = conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_class WHERE relkind = 'r' AND relname ~ '^market_data_1m_p[0-9]{8}_'"
            )
        ).scalar_one()
    assert left == 0
    assert _table_rows(url) == reference


def test_a_lost_task_fails_its_step_and_the_steps_ready_later_still_run(workers_to_kill, dagster_home):
    """The pool process running ``victim`` is killed while ``first`` runs on the other worker: the victim's
    step fails (``lost_step_events``), and ``later``, which became ready only after the loss, still runs; the
    run ends FAILURE. dagster-celery alone would submit no step after the lost task, and the run would stay
    STARTED."""
    from tis_pipeline_tests.support.lost_task_job import LOCK_KEY

    workers, queue = workers_to_kill
    procs, _, logs = (list(x) for x in zip(*workers, strict=True))
    url = dagster_home["TIS_DATABASE_URL"]
    job = _celery_job("tis_pipeline_tests.support.lost_task_job", "lost_task_job", KILL_CELERY, queue)
    waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = :key AND NOT granted"
    with dg.DagsterInstance.get() as instance, engine(url).connect() as holder:
        holder.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": LOCK_KEY})
        thread, run_id, box = _launch(job, instance, {}, logs, "celery-run-lost-task")
        try:
            starts = _wait_for(
                "start of both waiting steps",
                lambda: s if {"victim", "first"} <= set(s := _events(instance, run_id, START)) else None,
                logs,
                thread,
            )
            with engine(url).connect() as conn:
                _wait_for(
                    "both steps waiting for the test's lock",
                    lambda: conn.execute(sa.text(waiting), {"key": LOCK_KEY}).scalar_one() == 2,
                    logs,
                    thread,
                )
            os.kill(starts["victim"], signal.SIGKILL)
            # the victim's loss is reported before first can finish, so later is submitted after it
            _wait_for(
                "the victim's failure",
                lambda: "victim" in _events(instance, run_id, dg.DagsterEventType.STEP_FAILURE),
                logs,
                thread,
            )
            assert "later" not in _events(instance, run_id, START)
        finally:
            holder.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": LOCK_KEY})
        _ended_failed(thread, box, instance, run_id, logs, "the victim was killed")
        assert set(_events(instance, run_id, dg.DagsterEventType.STEP_SUCCESS)) == {"first", "later"}
        assert set(_events(instance, run_id, dg.DagsterEventType.STEP_FAILURE)) == {"victim"}
        messages = _messages(instance, run_id)
        assert "the Celery task of step victim was lost" in messages and "WorkerLostError" in messages
        assert all(p.poll() is None for p in procs)  # the worker lives on, with a new pool process
