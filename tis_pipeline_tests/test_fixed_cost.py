"""What every `tis` run pays whatever its rows: Dagster's storage sessions and its schema probes.

The figures are in bench/RESULTS.md (``python -m bench.scale --symbols 50``); these tests hold the behaviour:
the session option is on the URL `tis` derives and only there, and a probe is asked again until it finds.
"""

import importlib.util
import threading

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tis_pipeline import environment, run_process
from tis_pipeline.cli import runs
from tis_pipeline.ops import instance_storage
from tis_pipeline.pg.engine import with_driver
from tis_pipeline.settings import PROJECT_ROOT


def test_derived_dagster_url_carries_the_session_option_after_any_other():
    plain = environment.with_session_options("postgresql+psycopg2://root:p%40ss@127.0.0.1:5432/db")
    parsed = make_url(plain)
    assert parsed.query["options"] == "-c synchronous_commit=off"
    assert parsed.password == "p@ss" and parsed.database == "db" and parsed.drivername.endswith("psycopg2")
    mixed = environment.with_session_options(
        "postgresql+psycopg2://root@h/db?options=-c%20search_path%3Dx&sslmode=prefer"
    )
    assert make_url(mixed).query["options"] == "-c search_path=x -c synchronous_commit=off"
    assert make_url(mixed).query["sslmode"] == "prefer"
    assert environment.with_session_options(plain) == plain  # not twice


def test_prepare_derives_the_option_but_keeps_a_url_set_by_hand(monkeypatch, tmp_path):
    monkeypatch.setenv("TIS_HOME", str(tmp_path))
    monkeypatch.setenv("TIS_DATABASE_URL", "postgresql://root@127.0.0.1:5432/some_db")
    monkeypatch.delenv("TIS_DAGSTER_DATABASE_URL", raising=False)
    monkeypatch.delenv("TIS_DAGSTER_PG_URL", raising=False)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    derived = environment.prepare()["TIS_DAGSTER_PG_URL"]
    assert make_url(derived).query["options"] == environment.DAGSTER_SESSION_OPTIONS
    assert make_url(derived).database == "some_db"
    by_hand = "postgresql+psycopg2://root@127.0.0.1:5432/other_db"
    monkeypatch.setenv("TIS_DAGSTER_PG_URL", by_hand)
    assert environment.prepare()["TIS_DAGSTER_PG_URL"] == by_hand


@pytest.mark.pg
def test_dagster_sessions_commit_without_waiting_for_the_flush(empty_database_url):
    url = environment.with_session_options(with_driver(empty_database_url, "psycopg2"))
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SHOW synchronous_commit")).scalar_one() == "off"
    finally:
        engine.dispose()


def test_a_probe_is_asked_again_until_it_finds():
    asked: list[str] = []
    present = {"runs"}

    def probe(*args):
        asked.append(args[-1])
        return args[-1] in present

    remembered = instance_storage.remember_found(probe)
    assert [remembered(name) for name in ("runs", "runs", "asset_check_executions")] == [True, True, False]
    present.add("asset_check_executions")  # made by a migration in between
    assert remembered("asset_check_executions") and remembered("asset_check_executions")
    assert remembered("conn", "runs")  # a connection first: the name is the last argument
    assert asked == ["runs", "asset_check_executions", "asset_check_executions"]


@pytest.mark.pg
def test_the_commands_instance_asks_the_schema_once(tmp_path, monkeypatch, empty_database_url):
    (tmp_path / "dagster.yaml").symlink_to(PROJECT_ROOT / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.setenv("TIS_DAGSTER_PG_URL", with_driver(empty_database_url, "psycopg2"))
    runs._instance.cache_clear()
    try:
        instance = runs._instance()
        storage = instance.event_log_storage
        statements: list[str] = []
        engine = storage._engine  # the kept-connection engine of ops.instance_storage
        listener = lambda *args: statements.append(args[2])  # noqa: E731  (conn, cursor, statement, ...)
        sa.event.listen(engine, "before_cursor_execute", listener)
        try:
            assert storage.supports_asset_checks and storage.supports_asset_checks
            assert storage.has_asset_key_index_cols() and storage.has_asset_key_index_cols()
            assert not storage.has_table("no_such_table") and not storage.has_table("no_such_table")
        finally:
            sa.event.remove(engine, "before_cursor_execute", listener)
        # one probe for each of the two that found, two for the one that did not
        tables = [s for s in statements if s.startswith("SELECT pg_catalog.pg_class.relname")]
        columns = [s for s in statements if s.startswith("SELECT pg_catalog.pg_attribute.attname")]
        assert (len(tables), len(columns), len(statements)) == (3, 1, 4), statements
    finally:
        runs._instance.cache_clear()
        instance.dispose()


class _Node:
    """An object that can sit in a reference cycle and be watched through a weak reference."""

    def __init__(self) -> None:
        self.other: object = self


def test_the_start_runs_without_the_collector_and_a_run_with_the_starts_objects_frozen():
    """``tis backfill``'s start: no collector pass; its objects are then frozen, out of the passes of the run
    after it, and given back to the collector when the run ends (``run_process``); garbage cycles made during
    the run are collected during the run, one made at the start once the run is over."""
    import gc
    import weakref

    assert gc.isenabled() and gc.get_freeze_count() == 0
    try:
        with runs.startup_without_collector():
            assert not gc.isenabled()
            kept = [_Node() for _ in range(1000)]
            dropped = _Node()  # garbage of the start: a cycle, dropped before the run
            start_garbage = weakref.ref(dropped)
        del dropped
        assert gc.isenabled() and gc.get_freeze_count() >= 1000
        run_process.run_started(None)
        try:
            assert gc.isenabled() and gc.get_freeze_count() >= 1000
            made = _Node()
            run_garbage = weakref.ref(made)
            del made
            gc.collect()
            assert run_garbage() is None  # the run's own cycles are collected as before
            assert start_garbage() is not None  # frozen: left alone until the run ends
        finally:
            run_process.run_ended()
        assert gc.get_freeze_count() == 0
        gc.collect()
        assert start_garbage() is None
        assert len(kept) == 1000
    finally:
        gc.unfreeze()
        gc.enable()


def test_nested_runs_unfreeze_at_the_last_end_and_a_step_freezes_only_inside_a_run():
    import gc

    assert gc.get_freeze_count() == 0
    try:
        assert not run_process.freeze_alive_objects()  # outside a run: nothing frozen, nothing to unfreeze
        assert gc.get_freeze_count() == 0
        run_process.run_started(None)
        run_process.run_started(None)  # a test's run inside another's process
        kept = [_Node() for _ in range(500)]
        assert run_process.freeze_alive_objects() and gc.get_freeze_count() >= len(kept)
        run_process.run_ended()
        assert gc.get_freeze_count() >= len(kept)  # the outer run still runs
        run_process.run_ended()
        assert gc.get_freeze_count() == 0
        run_process.run_ended()  # an end without a start changes nothing
        assert gc.get_freeze_count() == 0
    finally:
        gc.unfreeze()


def test_a_run_warms_the_loaders_of_its_steps_once_on_a_thread_of_its_own():
    import threading

    called: list[tuple[str, str]] = []

    def loader(name: str):
        def load() -> None:
            called.append((name, threading.current_thread().name))

        return load

    first, second, broken, other = loader("first"), loader("second"), loader("broken"), loader("other")

    def failing() -> None:
        broken()
        raise ImportError("no such module")

    run_process.warm_before("probe_table", first)
    run_process.warm_before("probe_table", failing)  # a failing loader does not stop the others
    run_process.warm_before("probe_table", second)
    run_process.warm_before("probe_other", other)
    try:
        run_process.run_started(None)  # no plan known: nothing to warm
        assert run_process.warm_while_waiting() is None
        run_process.run_ended()
        run_process.run_started(["probe_table", "unrelated"])
        assert called == []  # nothing before the run's first wait
        thread = run_process.warm_while_waiting()
        assert thread is not None and run_process.warm_while_waiting() is None  # once per run
        thread.join(10)
        run_process.run_ended()
        assert called == [(n, "tis-warm-imports") for n in ("first", "broken", "second")]
        run_process.run_started(["probe_table", "probe_other"])
        thread = run_process.warm_while_waiting()  # once per process: only the loader not called yet
        assert thread is not None
        thread.join(10)
        run_process.run_ended()
        assert called[3:] == [("other", "tis-warm-imports")]
        run_process.run_started(["probe_other"])
        run_process.run_ended()  # a run that never waited leaves nothing pending for the next
        assert run_process._pending == []
    finally:
        for key in ("probe_table", "probe_other"):
            run_process._loaders.pop(key, None)
    if importlib.util.find_spec("dagster_celery") is not None:  # Celery's steps each in a worker process
        from tis_pipeline.ops import scale_out

        assert scale_out.JOB_NAME in run_process.STEP_PROCESS_JOBS


@pytest.mark.pg
def test_a_dagster_run_freezes_the_heap_and_warms_its_assets_imports(empty_database_url, monkeypatch):
    """A real run (``materialize``) through the db resource: inside its step the start's heap is frozen and
    the warm-up thread has loaded what its step named; after the run nothing is frozen."""
    import gc
    import sys
    import threading

    import dagster as dg

    from tis_pipeline.resources import PostgresResource

    assert gc.get_freeze_count() == 0
    monkeypatch.delitem(sys.modules, "colorsys", raising=False)  # a small stdlib module to warm for real
    warmed: list[str] = []

    def import_colorsys() -> None:
        import colorsys  # noqa: F401

        warmed.append(threading.current_thread().name)

    run_process.warm_before("warm_probe", import_colorsys)
    seen: dict[str, object] = {}

    @dg.asset(name="warm_probe")
    def warm_probe(db: PostgresResource) -> None:
        seen["frozen"] = gc.get_freeze_count()
        seen["before_wait"] = "colorsys" in sys.modules
        thread = run_process.warm_while_waiting()
        assert thread is not None
        thread.join(10)
        seen["colorsys"] = "colorsys" in sys.modules
        with db.connect() as conn:
            seen["db"] = conn.execute(sa.text("SELECT 1")).scalar_one()

    try:
        result = dg.materialize([warm_probe], resources={"db": PostgresResource(url=empty_database_url)})
    finally:
        run_process._loaders.pop("warm_probe", None)
    assert result.success
    assert seen["db"] == 1
    assert isinstance(seen["frozen"], int) and seen["frozen"] > 10_000  # Dagster's, pandas' ... modules
    assert seen["before_wait"] is False and seen["colorsys"] is True and warmed == ["tis-warm-imports"]
    assert gc.get_freeze_count() == 0


def test_a_start_that_fails_leaves_the_collector_enabled():
    import gc

    try:
        with pytest.raises(RuntimeError), runs.startup_without_collector():
            raise RuntimeError("no database")
        assert gc.isenabled()
    finally:
        gc.unfreeze()
        gc.enable()


def test_paused_collector_comes_back_when_the_last_pause_ends_on_any_thread():
    import gc

    assert gc.isenabled()
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, bool] = {}

    def first() -> None:
        with run_process.collector_paused():
            first_in.set()
            assert second_in.wait(10)
        first_out.set()

    def second() -> None:
        assert first_in.wait(10)
        with run_process.collector_paused():
            second_in.set()
            assert first_out.wait(10)
            seen["after_first_ended"] = gc.isenabled()  # the second still holds it paused

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert seen == {"after_first_ended": False}
    assert gc.isenabled()


def test_a_pause_leaves_a_disabled_collector_disabled_and_can_freeze_what_is_alive():
    import gc

    try:
        gc.disable()
        with run_process.collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
    try:
        with run_process.collector_paused(freeze=True):
            kept = [_Node() for _ in range(500)]
        assert gc.isenabled() and gc.get_freeze_count() >= 500
        assert len(kept) == 500
    finally:
        gc.unfreeze()


def test_a_heavy_import_runs_without_the_collector(tmp_path, monkeypatch):
    import gc
    import sys

    (tmp_path / "tis_heavy_probe.py").write_text("import gc\nCOLLECTOR_ON = gc.isenabled()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tis_heavy_probe", raising=False)
    module = run_process.import_heavy("tis_heavy_probe")
    assert module.COLLECTOR_ON is False  # paused while the module ran
    assert gc.isenabled()  # and back after
    assert run_process.import_heavy("tis_heavy_probe") is module
