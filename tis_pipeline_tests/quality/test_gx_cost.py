"""What the GE step does to cost less changes nothing GE says: the result format without GX's index query,
the next piece read while one is judged, GX imported in the background."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import dagster as dg
import pandas as pd
import pytest

from tis_pipeline.market_data import definitions
from tis_pipeline.market_data.assets import market_data_1m
from tis_pipeline.market_data.partitions import range_tags
from tis_pipeline.market_data.sources import BarSource
from tis_pipeline.market_data.store import BAR_READ_COLUMNS, read_bars
from tis_pipeline.quality import ge
from tis_pipeline.quality.evaluate import derived_values, evaluate_frame
from tis_pipeline.resources import PostgresResource
from tis_pipeline_tests.quality.frames import market_1m


def _bars_breaking_several_rules() -> pd.DataFrame:
    """Two symbols' bars with zero lows, highs below the close, a jump, a stale run and minutes left out."""
    bars = market_1m(minutes=400, flat=(100, 40), jump_at=250)
    bars.loc[bars["timestamp"].dt.minute.eq(7), "low"] = 0.0
    below = bars["timestamp"].dt.minute.eq(13)
    bars.loc[below, "high"] = bars.loc[below, "close"] * 0.999
    return bars.drop(index=bars.index[300:305]).reset_index(drop=True)


def _results_by_rule(result: Any) -> dict[str, tuple[bool, dict]]:
    return {r.expectation_config.meta["rule"]: (r.success, dict(r.result)) for r in result.results}


def test_judges_result_format_gives_the_summary_gx_gave_with_its_index_query(tmp_path):
    """GX's SUMMARY result with and without the unexpected index query it builds and then drops: the same
    success, counts, missing counts, partial values, value counts and failing-row positions per rule."""
    bars = _bars_breaking_several_rules()
    report = evaluate_frame(bars, "market_data_1m", now=bars["timestamp"].max())
    rules = tuple(r.rule for r in report.results if not r.skipped)
    derived = {r.name: derived_values(bars, r, report.clock, report.cache) for r in rules}
    definition = ge._validation_definition("market_data_1m", rules, tmp_path / "gx")
    parameters = {
        f"{ge.LATEST_ALLOWED}_{r.name}": report.clock.latest_allowed(r)
        for r in rules
        if r.kind == "not_future"
    }
    before = {
        "result_format": "SUMMARY",
        "partial_unexpected_count": ge.SAMPLE_ROWS,
        "include_unexpected_rows": False,
    }
    results = [
        _results_by_rule(
            definition.run(
                batch_parameters={"dataframe": ge._batch_frame(bars, rules, derived)},
                expectation_parameters=parameters,
                result_format=result_format,
            )
        )
        for result_format in (before, dict(ge.JUDGE_RESULT_FORMAT))
    ]
    assert results[0] == results[1]
    failing = {rule: outcome for rule, (success, outcome) in results[0].items() if not success}
    broken = {
        "ck_market_data_1m_prices_positive",
        "ck_market_data_1m_high_bounds",
        "market_data_1m_no_gaps",
        "market_data_1m_no_price_jumps",
        "market_data_1m_close_not_stale",
    }
    assert broken <= set(failing)
    assert all(len(outcome["partial_unexpected_index_list"]) > 0 for outcome in failing.values())
    assert not any("unexpected_index_query" in outcome for _, outcome in results[1].values())


def _context(database_url: str, first: str, end: str) -> Any:
    """What ``_rows_the_run_wrote`` reads of a check's context, for a run that wrote nothing itself (the whole
    window is read)."""
    return SimpleNamespace(
        partition_time_window=SimpleNamespace(
            start=pd.Timestamp(first, tz="UTC"), end=pd.Timestamp(end, tz="UTC")
        ),
        instance=SimpleNamespace(get_latest_materialization_event=lambda key: None),
        run=SimpleNamespace(run_id="not-the-writer"),
        resources=SimpleNamespace(db=PostgresResource(url=database_url)),
    )


@pytest.mark.pg
def test_the_gx_step_reads_the_next_piece_in_a_reader_thread_while_one_is_judged(database_url, monkeypatch):
    """One piece a symbol: the second piece's read starts, in a reader thread, before the first piece is
    handed back; the reads run on ``GX_READERS`` connections of their own; the pieces are the window's rows,
    whole symbols in the table's order, as one read gives them; leaving the pieces early waits for the reads
    in flight and closes cleanly."""
    first, end = "2024-06-03", "2024-06-04"
    symbols = ["PFA", "PFB", "PFC"]
    written = dg.materialize(
        [market_data_1m],
        resources={
            "db": PostgresResource(url=database_url),
            "bars": BarSource(source="synthetic", symbols=symbols, seed=5),
        },
        tags=range_tags(first, first),
    )
    assert written.success
    monkeypatch.setenv("TIS_CHECK_PIECE_ROWS", "1")
    reads: list[tuple[str | None, str]] = []
    connections: set[int] = set()
    started = threading.Event()

    def recorded(*args: Any, **kwargs: Any) -> pd.DataFrame:
        connections.add(id(args[0]))
        reads.append((kwargs.get("symbols_from"), threading.current_thread().name))
        if len(reads) == 2:
            started.set()
        return read_bars(*args, **kwargs)

    monkeypatch.setattr(definitions, "read_bars", recorded)
    pieces = definitions._rows_the_run_wrote(_context(database_url, first, end))
    head = next(pieces)
    assert started.wait(timeout=60)  # the next piece is read while the caller holds the first
    assert all(name.startswith("gx-read") for _, name in reads)
    frames = [head.frame, *(item.frame for item in pieces)]
    assert len(reads) == 3 and len(connections) == definitions.GX_READERS == 2
    assert [f["symbol"].unique().tolist() for f in frames] == [[s] for s in symbols]
    window = pd.Timestamp(first, tz="UTC"), pd.Timestamp(end, tz="UTC")
    from tis_pipeline.pg.engine import engine

    with engine(database_url).connect() as conn:
        whole = read_bars(conn, "market_data_1m", *window, (*BAR_READ_COLUMNS, "mx_evidence"))
    pd.testing.assert_frame_equal(pd.concat(frames, ignore_index=True), whole)

    early = definitions._rows_the_run_wrote(_context(database_url, first, end))
    assert len(next(early).frame) > 0
    early.close()  # the read of the second piece may be in flight: waited for, then the connection closed


def test_gx_imported_in_the_background_serves_the_next_use_in_the_main_thread(tmp_path):
    """In a fresh interpreter: the preload thread is started once; a judge right after it waits for it (no
    second import, no deadlock) and gives GE's verdicts; great_expectations was imported by that thread."""
    code = """
import sys, threading
from tis_pipeline.quality import ge
from tis_pipeline.quality.evaluate import evaluate_frame
from tis_pipeline_tests.quality.frames import market_1m
thread = ge.preload_in_background()
assert ge.preload_in_background() is thread and thread.name == "gx-preload"
bars = market_1m(minutes=60)
judged = ge.judge(evaluate_frame(bars, "market_data_1m", now=bars["timestamp"].max()))
assert not thread.is_alive() and "great_expectations" in sys.modules
assert judged.engine == "great_expectations" and judged.passed, judged.counts()
print("ok")
"""
    assert _fresh_interpreter(code, tmp_path).endswith("ok")


def _fresh_interpreter(code: str, tmp_path: Path) -> str:
    env = {"TIS_GX_DIR": str(tmp_path / "gx"), "GX_ANALYTICS_ENABLED": "false"}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


def test_gx_is_imported_without_scipy_stats_and_altair_which_its_modules_import_on_first_use(tmp_path):
    """In a fresh interpreter: GX judges without scipy.stats or altair ever imported; the KL divergence
    expectation's module (which imports both at its top) holds stand-ins that import the real modules when
    first used, and give what they give; ``import scipy.stats`` after that is the real module, imported
    once."""
    code = """
import sys
from tis_pipeline.quality import ge
from tis_pipeline.quality.deferred import Deferred
from tis_pipeline.quality.evaluate import evaluate_frame
from tis_pipeline_tests.quality.frames import market_1m
bars = market_1m(minutes=60)
bars.loc[5, "low"] = 0.0
judged = ge.judge(evaluate_frame(bars, "market_data_1m", now=bars["timestamp"].max()))
assert judged.engine == "great_expectations" and not judged.passed
assert judged.counts()["ck_market_data_1m_prices_positive"] == 1, judged.counts()
assert not {"scipy.stats", "altair"} & set(sys.modules), "imported with GX"
from great_expectations.expectations.core import expect_column_kl_divergence_to_be_less_than as kl
assert type(kl.stats) is Deferred and type(kl.alt) is Deferred
assert abs(kl.stats.entropy([0.5, 0.5], [0.25, 0.75]) - 0.1438410362258904) < 1e-15
assert type(sys.modules["scipy.stats"]) is not Deferred
import scipy.stats
assert scipy.stats is sys.modules["scipy.stats"] and kl.stats.entropy is scipy.stats.entropy
assert kl.alt.Chart is sys.modules["altair"].Chart
print("ok")
"""
    assert _fresh_interpreter(code, tmp_path).endswith("ok")


def test_a_module_imported_before_gx_is_not_deferred(tmp_path):
    """scipy.stats imported first (a DSI figure, a test): GX's modules get the real module, no stand-in."""
    code = """
import sys
import scipy.stats
from tis_pipeline.quality import ge
ge._gx()
from great_expectations.expectations.core import expect_column_kl_divergence_to_be_less_than as kl
assert kl.stats is scipy.stats and type(kl.alt).__name__ == "Deferred"
print("ok")
"""
    assert _fresh_interpreter(code, tmp_path).endswith("ok")


def _on_another_thread(work: Callable[[], Any]) -> tuple[Any, int]:
    """``work()`` run on a thread of its own (as GX's import runs on the preload thread beside the main one):
    its result (its error raised here) and the thread's id."""

    def run() -> tuple[Any, int]:
        return work(), threading.get_ident()

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="importer") as pool:
        return pool.submit(run).result()


def test_a_deferred_module_imported_by_another_thread_while_deferred_is_the_real_one(monkeypatch):
    """During ``deferring`` (GX's import on the preload thread), another thread's ``import`` gets the
    stand-in; it answers as the module, and so do its submodules; after the block ``sys.modules`` holds no
    stand-in."""
    from tis_pipeline.quality import deferred

    name = "json.tool"  # not imported by anything here: a module of the standard library with a parent
    monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.delattr(sys.modules["json"], "tool", raising=False)

    def import_tool() -> tuple[Any, bool]:
        from json import tool

        return tool, callable(tool.main)  # the real module's main, imported now, on this thread

    with deferred.deferring((name, "json")) as names:
        assert names == (name,)  # json is imported: not deferred
        stand_in = sys.modules[name]
        assert type(stand_in) is deferred.Deferred
        (tool, main_is_callable), importer = _on_another_thread(import_tool)
        assert importer != threading.get_ident()
        assert tool is stand_in and main_is_callable
        assert type(sys.modules[name]) is not deferred.Deferred
    assert type(sys.modules[name]) is not deferred.Deferred and tool.main is sys.modules[name].main
    for module in ("email.mime", "email.mime.text", "email.mime.base"):
        monkeypatch.delitem(sys.modules, module, raising=False)

    def import_submodule() -> str:
        import email.mime.text  # a submodule of a deferred package: the package is imported for it

        return email.mime.text.MIMEText("x").get_payload()

    with deferred.deferring(("email.mime",)) as names:
        assert names == ("email.mime",)
        payload, importer = _on_another_thread(import_submodule)
        assert importer != threading.get_ident() and payload == "x"
        assert type(sys.modules["email.mime"]) is not deferred.Deferred
    assert not any(type(m) is deferred.Deferred for m in list(sys.modules.values()))
