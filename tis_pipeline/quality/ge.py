"""Great Expectations 1.x suites built from the registry, validated against the DataFrame about to be written.

One ephemeral GX context per process, one pandas datasource (``frames``) with one dataframe asset per table,
and one suite per (table, set of rules) are cached: the import of ``great_expectations`` costs seconds, so it
happens inside the functions here and only once. ``validate_frame`` returns the same ``ValidationReport`` as
``quality.evaluate.evaluate_frame``; a test proves the two agree frame for frame.

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

import os
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tis_pipeline.quality.evaluate import Context, derived_values, missing_reason, rule_details
from tis_pipeline.quality.report import (
    RuleResult,
    SymbolDayIndex,
    ValidationReport,
    rule_result,
    skipped_result,
    timestamp_span,
)
from tis_pipeline.quality.rules import Rule, rules_for

if TYPE_CHECKING:
    from great_expectations.core import ExpectationSuite
    from great_expectations.data_context import EphemeralDataContext
    from great_expectations.expectations import Expectation

DATASOURCE = "frames"
BATCH_DEFINITION = "whole_frame"
LATEST_ALLOWED = "latest_allowed"

_lock = threading.RLock()
_state: dict[str, Any] = {}


def _derived_name(rule: Rule, name: str) -> str:
    return f"__{rule.name}__{name}"


def _gx():
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    return gx


def context() -> EphemeralDataContext:
    """The process's ephemeral GX context with the ``frames`` pandas datasource (created once)."""
    with _lock:
        if "context" not in _state:
            gx = _gx()
            from great_expectations.data_context.types.base import ProgressBarsConfig

            ctx = gx.get_context(mode="ephemeral")
            ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
            _state["context"] = ctx
            _state["datasource"] = ctx.data_sources.add_pandas(DATASOURCE)
            _state["batch_definitions"] = {}
            _state["suites"] = {}
        return _state["context"]


def _batch_definition(table: str):
    context()
    with _lock:
        defs = _state["batch_definitions"]
        if table not in defs:
            asset = _state["datasource"].add_dataframe_asset(table)
            defs[table] = asset.add_batch_definition_whole_dataframe(BATCH_DEFINITION)
        return defs[table]


def expectation_for(rule: Rule) -> Expectation:
    """The one GX expectation that judges ``rule`` (over raw or derived columns); meta carries the rule
    name."""
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


def suite_for(table: str, rules: tuple[Rule, ...] | None = None) -> ExpectationSuite:
    """The (cached) ExpectationSuite of ``table``'s rules, or of the given subset of them."""
    gx = _gx()
    rules = rules_for(table) if rules is None else rules
    ctx = context()
    key = (table, tuple(r.name for r in rules))
    with _lock:
        suites = _state["suites"]
        if key not in suites:
            name = f"{table}__{len(suites)}"
            suite = ctx.suites.add(gx.ExpectationSuite(name=name))
            for rule in rules:
                suite.add_expectation(expectation_for(rule))
            suites[key] = suite
        return suites[key]


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
        result = batch.validate(
            suite_for(table, runnable),
            result_format={"result_format": "COMPLETE", "include_unexpected_rows": False},
            expectation_parameters=parameters or None,
        )
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
