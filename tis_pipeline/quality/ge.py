"""Great Expectations 1.x suites built from the registry: the engine of every asset check's verdict.

``judge(report)`` runs the suite of a report's table over the rows the report judged (the rows the asset
wrote), stores GX's validation result in the file-based project under ``TIS_GX_DIR`` (``quality.docs``),
renders that result's Data Docs page, and returns the report with GX's verdicts: passed, unexpected count
and the sample of failing rows come from GX; the per-(symbol, day) counts come from the pandas masks, which
ingest quarantines by and which a test holds equal to GX's row for row. ``validate_frame`` is the same suite
over any frame without storing anything (tests, ``build_checks``).

One context per process and GX project, one pandas datasource (``frames``) with one dataframe asset per table,
one suite and validation definition per (table, set of rules) and the Data Docs site's validations section
(its Jinja templates compiled once, ``_site_section``) are cached: importing ``great_expectations`` costs
seconds, so it happens inside the functions here and only once per process (``preload_in_background``
starts it in a thread, for a step that has rows to read first).

Many processes share the project (each Dagster step is a process, several runs at once, pytest-xdist
workers), and before each run GX checks that the suite and validation definition a process holds equal the
stored ones (``ValidationDefinitionRelatedResourcesFreshnessError`` otherwise). So every object stored in GX
gets an id that is a ``uuid5`` of its names (datasource, assets, batch definitions, suites and each
expectation, validation definitions): every process builds byte-identical objects, writes one only when the
stored one differs (under an flock beside the project), and a cached object stays fresh whoever wrote it. A
run reads the stored objects under the same flock, shared, so it never reads a file a writer is rewriting;
should the check fail anyway (a project changed by hand or by an older version), the cached objects are
rebuilt from the store once and the run retried.

Rule kinds -> expectations (one expectation per rule, so each rule gets its own unexpected count):

=================  ===================================================================================
range              ExpectColumnValuesToBeBetween(min, max, strict_min/strict_max from the inclusivity)
enum               ExpectColumnValuesToBeInSet
not_null           ExpectColumnValuesToNotBeNull
unique             ExpectCompoundColumnsToBeUnique (ExpectColumnValuesToBeUnique for one column)
positive           ExpectColumnValuesToBeBetween(min 0, strict) on the column, or on the row-wise minimum
nonnegative        ExpectColumnValuesToBeBetween(min 0) likewise
ohlc_high / _low   ExpectColumnPairValuesAToBeGreaterThanB(or_equal) against the row-wise max / min
not_future         ExpectColumnValuesToBeBetween(timestamp, max = suite parameter ``latest_allowed``)
on_minute, stale_series, gaps, rollup_consistent
                   ExpectColumnValuesToBeBetween on the derived column (offset, run length, missing
                   minutes, mismatch flag) computed by ``quality.evaluate.derived_values``
price_jump         ExpectColumnPairValuesAToBeGreaterThanB(threshold >= |log return|)
=================  ===================================================================================

``UnexpectedRowsExpectation`` would express the series rules in SQL, but GE 1.24 runs it on SQL and Spark
datasources only, not pandas; hence the derived columns, and the SQL form of the rollup rule lives in
``market_data.rollups`` for checks that read PostgreSQL.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tis_pipeline import run_process
from tis_pipeline.quality import docs
from tis_pipeline.quality.deferred import deferring
from tis_pipeline.quality.evaluate import Context, derived_values, missing_reason, rule_details
from tis_pipeline.quality.report import (
    RuleResult,
    SymbolDayIndex,
    ValidationReport,
    rule_result,
    sample_rows,
    skipped_result,
    timestamp_span,
)
from tis_pipeline.quality.rules import TABLES, Rule, rules_for

if TYPE_CHECKING:
    from great_expectations.core import ExpectationSuite
    from great_expectations.data_context import AbstractDataContext
    from great_expectations.expectations import Expectation

DATASOURCE = "frames"
BATCH_DEFINITION = "whole_frame"
LATEST_ALLOWED = "latest_allowed"
SAMPLE_ROWS = 20  # GX's partial_unexpected_count: the failing rows shown in a check's metadata
# What ``judge`` asks of GX: counts and the first failing rows' positions (SUMMARY's partial_unexpected_*).
# Not the "unexpected index query": GX builds it for every map expectation of a SUMMARY result (another copy
# of the whole batch, filtered, and a string of every failing row's index) and keeps it only when asked.
JUDGE_RESULT_FORMAT = MappingProxyType(
    {
        "result_format": "SUMMARY",
        "partial_unexpected_count": SAMPLE_ROWS,
        "include_unexpected_rows": False,
        "return_unexpected_index_query": False,
    }
)

_lock = threading.RLock()
_states: dict[Path, dict[str, Any]] = {}  # GX project root -> its context and cached objects
_NAMESPACE = uuid.UUID("5b0f3c9e-6a64-4f0e-9d8e-2f6d0a7c1e41")  # of the ids of what tis stores in GX


def _uid(*names: str) -> str:
    """The id of a stored GX object: the same in every process for the same names."""
    return str(uuid.uuid5(_NAMESPACE, "\x1f".join(names)))


def _derived_name(rule: Rule, name: str) -> str:
    return f"__{rule.name}__{name}"


def _await_preload() -> None:
    """Wait for ``preload_in_background``'s thread, if one runs (called before taking ``_lock``, which it
    holds while it imports)."""
    preloading = _preloading.get("thread")
    if preloading is not None and preloading is not threading.current_thread():
        preloading.join()


# imported by GX's modules for expectations the registry never uses (KL divergence, KS tests, their charts):
# deferred until used (``quality.deferred``), ~0.9 s of CPU of GX's import
DEFERRED_BY_GX = ("scipy.stats", "altair")
_import_lock = threading.Lock()


def _gx():
    _await_preload()
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    if "great_expectations" not in sys.modules:
        with _import_lock, deferring(DEFERRED_BY_GX):
            run_process.import_heavy("great_expectations")
    import great_expectations as gx

    return gx


_preloading: dict[str, threading.Thread] = {}  # "thread": preload_in_background's, once per process
_preload_lock = threading.Lock()


def preload_in_background(root: Path | None = None) -> threading.Thread:
    """Import ``great_expectations`` and open the context of ``root`` in a daemon thread, once per process.

    The import costs ~2.3 s of CPU, once per process; a step that reads its rows from PostgreSQL first (the
    ``build_checks`` steps) starts it here so that it runs while the process waits for the server. Every
    function here that needs GX waits for this thread first (``_gx``), so no two threads import GX at once.
    An error in the thread is not raised there: the next use of GX meets it again."""
    with _preload_lock:  # not ``_lock``: the thread holds that one while it imports
        if "thread" not in _preloading:
            # SQLAlchemy's ORM first, here: GX imports it, and its import registers an inspector that the
            # Dagster storage's queries on this thread call at once, before the module it needs has finished
            # loading on the other thread (seen in a Celery worker: "partially initialized module
            # 'sqlalchemy.orm.exc' has no attribute 'UnmappedClassError'")
            import sqlalchemy.orm  # noqa: F401

            def load() -> None:
                with contextlib.suppress(Exception):
                    _state(root)

            thread = _preloading["thread"] = threading.Thread(target=load, name="gx-preload", daemon=True)
            thread.start()
        return _preloading["thread"]


@contextlib.contextmanager
def _project_lock(root: Path, *, shared: bool = False) -> Iterator[None]:
    """Processes share the GX project's YAML and JSON files: one writer at a time, and no reader while one
    writes (an flock beside them: exclusive to write, ``shared`` to read)."""
    root.mkdir(parents=True, exist_ok=True)
    with _lock, open(root / ".tis-gx.lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _asset_ids(tables: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """table -> (asset id, whole-frame batch definition id)."""
    return {t: (_uid(DATASOURCE, t), _uid(DATASOURCE, t, BATCH_DEFINITION)) for t in tables}


def _stored_asset_ids(datasource: Any) -> dict[str, tuple[str, ...]]:
    return {
        a.name: (str(a.id), *(str(b.id) for b in a.batch_definitions if b.name == BATCH_DEFINITION))
        for a in datasource.assets
    }


def _datasource(ctx: AbstractDataContext, tables: Iterable[str]) -> Any:
    """The pandas datasource with one asset and batch definition per table, all with ids derived from their
    names; written only if the stored one differs (call under the project's lock)."""
    wanted = _asset_ids(tables)
    stored = ctx.data_sources.all().get(DATASOURCE)
    if (
        stored is not None
        and str(stored.id) == _uid(DATASOURCE)
        and all(_stored_asset_ids(stored).get(t) == ids for t, ids in wanted.items())
    ):
        return stored
    keep = {} if stored is None else _stored_asset_ids(stored)
    assets = {**keep, **wanted}  # assets of tables another version added are kept (ids of theirs)
    if stored is not None:
        ctx.data_sources.delete(DATASOURCE)
    return ctx.data_sources.add_pandas(  # type: ignore[call-arg]  # the fields of the model, not typed
        name=DATASOURCE,
        id=_uid(DATASOURCE),
        assets=[
            {
                "name": table,
                "type": "dataframe",
                "id": ids[0],
                "batch_definitions": [{"name": BATCH_DEFINITION, "id": ids[1], "partitioner": None}]
                if len(ids) > 1
                else [],
            }
            for table, ids in sorted(assets.items())
        ],
    )


def _state(root: Path | None = None) -> dict[str, Any]:
    """The context of the GX project at ``root`` (default ``docs.gx_dir()``) and its caches, made once."""
    _await_preload()
    root = (root or docs.gx_dir()).resolve()
    with _lock:
        if root not in _states:
            gx = _gx()
            from great_expectations.data_context.types.base import ProgressBarsConfig

            with _project_lock(root):
                ctx = gx.get_context(mode="file", project_root_dir=str(root))
                ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
                datasource = _datasource(ctx, TABLES)
            _states[root] = {
                "root": root,
                "context": ctx,
                "datasource": datasource,
                "batch_definitions": {},
                "suites": {},
                "validations": {},
            }
        return _states[root]


def context(root: Path | None = None) -> AbstractDataContext:
    """The process's file-based GX context under ``root`` (default ``TIS_GX_DIR``), made once."""
    return _state(root)["context"]


def _batch_definition(table: str, root: Path | None = None) -> Any:
    state = _state(root)
    with _lock:
        defs = state["batch_definitions"]
        if table not in defs:
            datasource = state["datasource"]
            if _stored_asset_ids(datasource).get(table) != _asset_ids([table])[table]:  # not in rules.TABLES
                with _project_lock(state["root"]):
                    known = [a.name for a in datasource.assets]
                    datasource = state["datasource"] = _datasource(state["context"], [*known, table])
            defs[table] = datasource.get_asset(table).get_batch_definition(BATCH_DEFINITION)
        return defs[table]


def expectation_for(rule: Rule) -> Expectation:
    """The one GX expectation that judges ``rule`` (over raw or derived columns); meta carries the rule
    name, and the description Data Docs shows names the check, the expectation and the rule."""
    expectation = _expectation(rule)
    expectation.description = f"{rule.name} ({expectation.expectation_type}): {rule.description}"
    return expectation


def _expectation(rule: Rule) -> Expectation:
    gxe = _gx().expectations
    p, meta = rule.params, {"rule": rule.name, "severity": rule.severity}
    kind = rule.kind
    if kind == "range":
        return gxe.ExpectColumnValuesToBeBetween(
            column=rule.column,
            min_value=p["min"],
            max_value=p["max"],
            strict_min=not p["min_inclusive"],
            strict_max=not p["max_inclusive"],
            meta=meta,
        )
    if kind == "enum":
        return gxe.ExpectColumnValuesToBeInSet(column=rule.column, value_set=list(p["values"]), meta=meta)
    if kind == "not_null":
        return gxe.ExpectColumnValuesToNotBeNull(column=rule.column, meta=meta)
    if kind == "unique":
        if len(rule.columns) == 1:
            return gxe.ExpectColumnValuesToBeUnique(column=rule.column, meta=meta)
        return gxe.ExpectCompoundColumnsToBeUnique(
            column_list=list(rule.columns), ignore_row_if="any_value_is_missing", meta=meta
        )
    if kind in ("positive", "nonnegative"):
        column = rule.column if len(rule.columns) == 1 else _derived_name(rule, "min_value")
        return gxe.ExpectColumnValuesToBeBetween(
            column=column, min_value=0, strict_min=kind == "positive", meta=meta
        )
    if kind == "ohlc_high":
        return gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A=rule.columns[0],
            column_B=_derived_name(rule, "max_of_others"),
            or_equal=True,
            ignore_row_if="either_value_is_missing",
            meta=meta,
        )
    if kind == "ohlc_low":
        return gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A=_derived_name(rule, "min_of_others"),
            column_B=rule.columns[0],
            or_equal=True,
            ignore_row_if="either_value_is_missing",
            meta=meta,
        )
    if kind == "not_future":
        return gxe.ExpectColumnValuesToBeBetween(
            column="timestamp", max_value={"$PARAMETER": f"{LATEST_ALLOWED}_{rule.name}"}, meta=meta
        )
    if kind == "price_jump":
        return gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A=_derived_name(rule, "jump_threshold"),
            column_B=_derived_name(rule, "abs_log_return"),
            or_equal=True,
            ignore_row_if="either_value_is_missing",
            meta=meta,
        )
    derived_limit = {
        "on_minute": ("ns_past_boundary", 0),
        "stale_series": ("run_length", p.get("max_run")),
        "gaps": ("missing_minutes", 0),
        "rollup_consistent": ("mismatch", 0),
    }
    if kind in derived_limit:
        name, limit = derived_limit[kind]
        return gxe.ExpectColumnValuesToBeBetween(column=_derived_name(rule, name), max_value=limit, meta=meta)
    raise ValueError(f"rule {rule.name}: no GX expectation for kind {kind}")


def _suite_name(table: str, rules: tuple[Rule, ...]) -> str:
    """``table`` for its whole registry, ``table__<hash>`` for a subset (one suite per set of rules)."""
    if tuple(r.name for r in rules) == tuple(r.name for r in rules_for(table)):
        return table
    digest = hashlib.sha1("\n".join(r.name for r in rules).encode()).hexdigest()[:10]
    return f"{table}__{digest}"


def suite_for(
    table: str, rules: tuple[Rule, ...] | None = None, root: Path | None = None
) -> ExpectationSuite:
    """The (cached) ExpectationSuite of ``table``'s rules, or of the given subset of them, saved in the
    project (replacing a stored suite of the same name, so that the registry is the one source)."""
    rules = rules_for(table) if rules is None else rules
    state = _state(root)
    key = (table, tuple(r.name for r in rules))
    with _lock:
        suites = state["suites"]
        if key not in suites:
            suites[key] = _saved_suite(state["context"], _built_suite(table, rules), state["root"])
        return suites[key]


def _built_suite(table: str, rules: tuple[Rule, ...]) -> ExpectationSuite:
    """The suite of ``rules``, its id and each expectation's id derived from the suite's and rules' names."""
    name = _suite_name(table, rules)
    suite = _gx().ExpectationSuite(
        name=name, id=_uid("suite", name), expectations=[expectation_for(r) for r in rules]
    )
    for expectation in suite.expectations:
        expectation.id = _uid("suite", name, "expectation", expectation.meta["rule"])
    return suite


def _same_suite(stored: ExpectationSuite, built: ExpectationSuite) -> bool:
    """Equal content and ids (GX's ``==`` compares the expectations' ids too, not the suite's)."""
    return stored.id == built.id and stored == built


def _saved_suite(ctx: AbstractDataContext, built: ExpectationSuite, root: Path) -> ExpectationSuite:
    """``built`` as stored in the project: written (as it is, ids included) only if the stored suite
    differs, then read back, so that the object returned is the store's."""
    from great_expectations.exceptions import DataContextError

    with _project_lock(root):
        try:
            stored = ctx.suites.get(built.name)
        except DataContextError:
            stored = None
        if stored is not None and _same_suite(stored, built):
            return stored
        store = ctx.expectations_store
        store.set(key=store.get_key(name=built.name, id=built.id), value=built)
        return ctx.suites.get(built.name)


def _validation_definition(table: str, rules: tuple[Rule, ...], root: Path | None = None) -> Any:
    """The (cached) ValidationDefinition of ``table``'s batch and the suite of ``rules``."""
    gx = _gx()
    from great_expectations.exceptions import DataContextError

    state = _state(root)
    key = (table, tuple(r.name for r in rules))
    with _lock:
        validations = state["validations"]
        if key not in validations:
            suite = suite_for(table, rules, root)
            built = gx.ValidationDefinition(
                name=suite.name,
                id=_uid("validation_definition", suite.name),
                data=_batch_definition(table, root),
                suite=suite,
            )
            ctx = state["context"]
            with _project_lock(state["root"]):
                try:
                    stored = ctx.validation_definitions.get(built.name)
                except DataContextError:
                    stored = None
                if stored is None or stored.id != built.id or stored != built:
                    store = ctx.validation_definition_store
                    store.set(key=store.get_key(name=built.name, id=built.id), value=built)
                    stored = ctx.validation_definitions.get(built.name)
            validations[key] = stored
        return validations[key]


def _forget(table: str, rules: tuple[Rule, ...], root: Path | None = None) -> None:
    """Drop the cached suite and validation definition of ``rules``: the next use rebuilds them from the
    registry and the store."""
    state = _state(root)
    key = (table, tuple(r.name for r in rules))
    with _lock:
        state["suites"].pop(key, None)
        state["validations"].pop(key, None)


def _run(definition: Any, root: Path, **kwargs: Any) -> Any:
    """``definition.run(**kwargs)`` reading the stored objects under the shared project lock; GX's cached
    batches released after it (``_release_batches``)."""
    try:
        with _project_lock(root, shared=True):
            return definition.run(**kwargs)
    finally:
        _release_batches(_state(root))


def _release_batches(state: dict[str, Any]) -> None:
    """Drop the batches GX's execution engine keeps after a validation (its batch manager's caches hold the
    last batch and its data: the judged rows with their derived columns) until the next one replaces them.
    The engine is the datasource's, kept for the process: the rows of a step's last judgement would stay
    alive through every later step (measured: a 2.9 M-row day's 366 MiB frame; 500 symbols x 31 days: the
    DSI step started ~0.9 GiB higher than it ends alone)."""
    manager = state["datasource"].get_execution_engine().batch_manager
    manager.reset_batch_cache()
    manager.batch_data_cache.clear()


def _batch_frame(
    frame: pd.DataFrame, rules: tuple[Rule, ...], derived: Mapping[str, Mapping[str, np.ndarray]]
) -> pd.DataFrame:
    """The columns GX needs (raw + derived) with a RangeIndex, so GX's row indices are positions."""
    columns = list(dict.fromkeys(c for r in rules for c in r.columns))
    out = frame[columns].reset_index(drop=True)
    extra = {
        _derived_name(rule, name): values
        for rule in rules
        for name, values in derived.get(rule.name, {}).items()
    }
    if extra:
        out = pd.concat([out, pd.DataFrame(extra, index=out.index)], axis=1)
    if "timestamp" in out.columns and not isinstance(out["timestamp"].dtype, pd.DatetimeTZDtype):
        out["timestamp"] = pd.to_datetime(out["timestamp"], utc=True)
    return out


def validate_frame(
    frame: pd.DataFrame,
    table: str,
    *,
    severity: str | None = None,
    now: pd.Timestamp | None = None,
    sources: Mapping[str, pd.DataFrame] | None = None,
    rules: tuple[Rule, ...] | None = None,
) -> ValidationReport:
    """Validate ``frame`` against the GX suite of ``table`` (optionally one severity).

    Same arguments and same report as ``evaluate_frame``; passed/unexpected_count come from GX's own
    results, and the failing rows from the row indices GX reports (result format COMPLETE).
    """
    started = time.perf_counter()
    ctx = Context(now, sources)
    all_rules = rules if rules is not None else rules_for(table, severity=severity)
    runnable = tuple(r for r in all_rules if not missing_reason(frame, r, ctx))
    cache: dict = {}
    derived = {r.name: derived_values(frame, r, ctx, cache) for r in runnable}
    by_name: dict[str, Any] = {}
    if runnable and len(frame):
        batch = _batch_definition(table).get_batch(
            batch_parameters={"dataframe": _batch_frame(frame, runnable, derived)}
        )
        parameters = {
            f"{LATEST_ALLOWED}_{r.name}": ctx.latest_allowed(r) for r in runnable if r.kind == "not_future"
        }
        try:
            result = batch.validate(
                suite_for(table, runnable),
                result_format={"result_format": "COMPLETE", "include_unexpected_rows": False},
                expectation_parameters=parameters or None,
            )
        finally:
            del batch
            _release_batches(_state())
        by_name = {r.expectation_config.meta["rule"]: r for r in result.results}

    groups = SymbolDayIndex(frame)
    results: list[RuleResult] = []
    for rule in all_rules:
        if rule.name not in derived:
            results.append(skipped_result(frame, rule, missing_reason(frame, rule, ctx) or ""))
            continue
        if not len(frame):
            results.append(rule_result(frame, rule, np.zeros(0, dtype=bool), groups=groups))
            continue
        gx_result = by_name[rule.name]
        info = gx_result.exception_info or {}
        if info.get("raised_exception"):
            raise RuntimeError(f"GX failed to evaluate rule {rule.name}: {info.get('exception_message')}")
        res = gx_result.result
        mask = np.zeros(len(frame), dtype=bool)
        mask[np.asarray(res.get("unexpected_index_list") or [], dtype=np.int64)] = True
        count = int(res.get("unexpected_count", 0) or 0)
        results.append(
            rule_result(
                frame,
                rule,
                mask,
                groups=groups,
                derived=derived[rule.name],
                unexpected_count=count,
                details=rule_details(rule, derived[rule.name], mask, ctx),
            )
        )
        if bool(gx_result.success) == bool(count):
            raise RuntimeError(
                f"GX reported {count} unexpected rows and success={gx_result.success} for {rule.name}"
            )
    first, last = timestamp_span(frame)
    return ValidationReport(
        table=table,
        engine="great_expectations",
        rows=len(frame),
        results=tuple(results),
        first_timestamp=first,
        last_timestamp=last,
        elapsed_s=time.perf_counter() - started,
    )


def _site_section(state: dict[str, Any]) -> Any:
    """The Data Docs site's validations section (its page renderer and Jinja view), made once per context.

    ``build_data_docs(resource_identifiers=[one])`` makes a new site builder at every call, whose new Jinja
    environment parses and compiles every template again (~0.3 s a page), lists every stored result to find
    the one asked for and copies the static assets again; the section kept here compiles each template once
    per process (and, with the bytecode cache beside the site, loads it compiled in the next processes)."""
    section = state.get("site_section")
    if section is None:
        from jinja2 import FileSystemBytecodeCache

        ctx = state["context"]
        builder = ctx._init_site_builder_for_data_docs_site_creation(  # what build_data_docs makes
            site_name=docs.SITE, site_config=ctx.variables.data_docs_sites[docs.SITE]
        )
        section = builder.site_section_builders["validations"]
        cache = docs.uncommitted_dir(state["root"]) / "jinja_bytecode"
        cache.mkdir(parents=True, exist_ok=True)
        section.view_class.env.bytecode_cache = FileSystemBytecodeCache(str(cache))
        state["site_builder"], state["site_section"] = builder, section
    if not (docs.site_dir(state["root"]) / "static").is_dir():  # once per site (again if it was removed)
        state["site_builder"].target_store.copy_static_assets()
    return section


def _render_page(state: dict[str, Any], identifier: Any) -> None:
    """The Data Docs page of the stored validation result ``identifier``, and nothing else: what GX's
    validations section does for each result it builds (read the stored result, render, write)."""
    from great_expectations.data_context.types.resource_identifiers import SiteSectionIdentifier

    section = _site_section(state)
    page = section.view_class.render(
        section.renderer_class.render(section.source_store.get(identifier)),
        data_context_id=section.data_context_id,
        show_how_to_buttons=section.show_how_to_buttons,
    )
    section.target_store.set(
        SiteSectionIdentifier(site_section_name=section.name, resource_identifier=identifier), page
    )


def _page(identifier: Any, root: Path | None) -> Path:
    """The Data Docs page of a stored validation result (GX's layout: suite/run name/run time/batch)."""
    suite, run_name, run_time, batch = identifier.to_tuple()
    return docs.site_dir(root) / "validations" / suite / run_name / run_time / f"{batch}.html"


def _same_rows(result: RuleResult, positions: np.ndarray) -> bool:
    """Whether GX's sample positions are the rows of the pandas result's sample (its first failing rows): the
    sample a caller described further, e.g. with the file behind each row, is then kept as it is."""
    if result.mask is None or len(result.failing_rows) != len(positions):
        return False
    first = np.flatnonzero(result.mask.to_numpy())[: len(positions)]
    return np.array_equal(first, positions)


def judge(
    report: ValidationReport, *, run_name: str | None = None, root: Path | None = None
) -> ValidationReport:
    """``report`` with Great Expectations' verdicts over the rows it judged, the result stored and rendered.

    GX runs the suite of the report's judged rules (skipped rules stay skipped) over ``report.frame``, with
    the derived columns the pandas evaluator computed for it (``report.cache``) and the same clock. Each
    rule's passed, unexpected count and sample of failing rows (GX's ``partial_unexpected_index_list``) are
    GX's (a sample of the same rows as the pandas result's is kept as it is, so a caller's enrichment of it
    survives); the per-(symbol, day) counts and the masks stay the pandas evaluator's. When the
    two engines count differently, ``details["pandas_failing_rows"]`` says so (a test holds them equal).
    ``report.gx`` gets the stored result's file, its Data Docs page and URL, and GX's seconds.
    """
    if report.frame is None:
        raise ValueError(f"the report on {report.table} carries no frame: make it with evaluate_frame")
    _gx()
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    started = time.perf_counter()
    frame = report.frame
    clock = report.clock if isinstance(report.clock, Context) else Context()
    cache = report.cache if report.cache is not None else {}
    rules = tuple(r.rule for r in report.results if not r.skipped)
    if not rules:
        return dataclasses.replace(report, engine="great_expectations")
    derived = {r.name: derived_values(frame, r, clock, cache) for r in rules}
    parameters = {
        f"{LATEST_ALLOWED}_{r.name}": clock.latest_allowed(r) for r in rules if r.kind == "not_future"
    }
    from great_expectations.exceptions import DataContextError, ResourceFreshnessAggregateError

    definition = _validation_definition(report.table, rules, root)
    run_id = RunIdentifier(run_name=run_name, run_time=pd.Timestamp.now(tz="UTC").to_pydatetime())
    run_kwargs: dict[str, Any] = {
        "batch_parameters": {"dataframe": _batch_frame(frame, rules, derived)},
        "expectation_parameters": parameters or None,
        "result_format": dict(JUDGE_RESULT_FORMAT),
        "run_id": run_id,
    }
    state = _state(root)
    try:
        gx_result = _run(definition, state["root"], **run_kwargs)
    except (ResourceFreshnessAggregateError, DataContextError):
        # the stored suite or validation definition is not the one cached (changed by hand or by another
        # version of this code): rebuild both from the registry and the store, once
        _forget(report.table, rules, root)
        definition = _validation_definition(report.table, rules, root)
        gx_result = _run(definition, state["root"], **run_kwargs)
    validated_s = time.perf_counter() - started
    identifier = ValidationResultIdentifier(
        expectation_suite_identifier=ExpectationSuiteIdentifier(name=definition.suite.name),
        run_id=run_id,
        batch_identifier=f"{DATASOURCE}-{report.table}",
    )
    with _project_lock(state["root"]):
        _render_page(state, identifier)
    page = _page(identifier, state["root"])
    suite, run, when, batch = identifier.to_tuple()
    stored = docs.validations_dir(state["root"]) / suite / run / when / f"{batch}.json"

    by_name = {r.expectation_config.meta["rule"]: r for r in gx_result.results}
    results: list[RuleResult] = []
    for result in report.results:
        if result.skipped:
            results.append(result)
            continue
        rule = result.rule
        outcome = by_name[rule.name]
        info = outcome.exception_info or {}
        if info.get("raised_exception"):
            raise RuntimeError(f"GX failed to evaluate rule {rule.name}: {info.get('exception_message')}")
        res = outcome.result or {}
        count = int(res.get("unexpected_count", 0) or 0)
        positions = np.asarray(res.get("partial_unexpected_index_list") or [], dtype=np.int64)
        details = dict(result.details)
        if count != result.unexpected_count:
            details["pandas_failing_rows"] = result.unexpected_count
        sample = result.failing_rows
        if not _same_rows(result, positions):
            sample = sample_rows(frame, rule, positions, derived[rule.name])
        results.append(
            dataclasses.replace(
                result,
                passed=bool(outcome.success),
                unexpected_count=count,
                failing_rows=sample,
                details=MappingProxyType(details),
            )
        )
    return dataclasses.replace(
        report,
        engine="great_expectations",
        results=tuple(results),
        gx=MappingProxyType(
            {
                "suite": definition.suite.name,
                "result_path": str(stored),
                "page_path": str(page),
                "page_url": docs.page_url(page, state["root"]),
                "validate_s": round(validated_s, 3),
                "seconds": round(time.perf_counter() - started, 3),
            }
        ),
    )
