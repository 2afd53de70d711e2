"""Dagster asset checks from the registry: one check per rule, blocking for errors, WARN for warnings.

Two ways to use them:

* an asset that validates the frame it writes declares ``check_specs=check_specs_for("market_data_1m")`` and
  yields ``check_results(report, window)`` from the same ``ValidationReport`` (no second read)::

      report = evaluate_frame(frame, "market_data_1m")
      yield dg.MaterializeResult(metadata=...)
      yield from check_results(report, context.partition_time_window)

* a stand-alone multi-asset check that reads the data itself: ``build_checks(table, asset_key, loader)``
  (with ``partitions_def=`` a separate step of the asset's partitioned runs, for an asset whose step GE would
  slow too much).

Either way the verdicts are Great Expectations' (``quality.ge.judge``), stored with a Data Docs page under
``TIS_GX_DIR`` that each check's metadata links to (``quality.docs``; ``tis docs`` serves the site), except
where ``gx=False`` keeps the pandas evaluator's: the ``market_data_1m`` asset's own step, where GE would halve
the ingest's rows per second (bench/RESULTS.md); GE judges those rows in a ``build_checks(...,
partitions_def=...)`` step.

Check names are the rule names (``ck_market_data_1m_high_bounds``, ``market_data_1m_no_gaps``): the same
word as the CHECK constraint and as the quarantine reason. Specs are listed errors first, then warnings.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from tis_pipeline.quality.report import RuleResult, ValidationReport, merge_reports
from tis_pipeline.quality.rules import Rule, rules_for
from tis_pipeline.run_process import warm_before, warm_while_waiting

MAX_SYMBOL_DAY_ROWS = 100  # per-(symbol, day) rows shown in a result's metadata, most failing first

CoercibleToRange = dg.PartitionKeyRange | dg.TimeWindow | tuple[Any, Any] | str | None


def _ordered(rules: Iterable[Rule]) -> list[Rule]:
    return sorted(rules, key=lambda r: 0 if r.severity == "error" else 1)  # stable: registry order inside


def check_spec(
    rule: Rule,
    asset: dg.AssetKey | str | Sequence[str] | None = None,
    partitions_def: dg.PartitionsDefinition | None = None,
    *,
    prefix: str = "",
    blocking: bool | None = None,
) -> dg.AssetCheckSpec:
    """The check of ``rule``, named ``prefix`` + the rule's name; blocking for errors unless ``blocking``
    says otherwise."""
    return dg.AssetCheckSpec(
        name=prefix + rule.name,
        asset=asset if asset is not None else rule.table,
        description=f"[{rule.severity}] {rule.description}",
        blocking=rule.severity == "error" if blocking is None else blocking,
        metadata={"rule_kind": rule.kind, "severity": rule.severity, "columns": ", ".join(rule.columns)},
        partitions_def=partitions_def,
    )


def check_specs_for(
    table: str,
    *,
    asset: dg.AssetKey | str | Sequence[str] | None = None,
    severity: str | None = None,
) -> list[dg.AssetCheckSpec]:
    """One AssetCheckSpec per rule of ``table`` (asset key defaults to the table name)."""
    return [check_spec(r, asset) for r in _ordered(rules_for(table, severity=severity))]


def partition_bounds(
    partition_range: CoercibleToRange, report: ValidationReport | None = None
) -> tuple[str | None, str | None]:
    """(start, end) strings of a partition key range, a time window, a pair, or the frame's timestamps."""
    if partition_range is None:
        return (report.first_timestamp, report.last_timestamp) if report else (None, None)
    if isinstance(partition_range, str):
        return partition_range, partition_range
    if isinstance(partition_range, dg.PartitionKeyRange):
        return partition_range.start, partition_range.end
    if isinstance(partition_range, dg.TimeWindow):
        return partition_range.start.isoformat(), partition_range.end.isoformat()
    start, end = partition_range
    return _text(start), _text(end)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime | date | pd.Timestamp):
        return value.isoformat()
    return str(value)


def _scalar(value: Any) -> str | int | float | bool | None:
    """A value TableRecord accepts: str, int, float, bool or None."""
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, datetime | date | pd.Timestamp):
        return value.isoformat()
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, default=str, sort_keys=True)
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


def _column_type(series: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(series.dtype):
        return "bool"
    if pd.api.types.is_integer_dtype(series.dtype):
        return "int"
    if pd.api.types.is_float_dtype(series.dtype):
        return "float"
    return "string"


def table_metadata(frame: pd.DataFrame) -> dg.TableMetadataValue:
    """A DataFrame as ``MetadataValue.table`` (values made JSON-safe: timestamps as ISO strings)."""
    schema = dg.TableSchema(columns=[dg.TableColumn(str(c), _column_type(frame[c])) for c in frame.columns])
    records = [
        dg.TableRecord({str(c): _scalar(v) for c, v in zip(frame.columns, row, strict=True)})
        for row in frame.itertuples(index=False, name=None)
    ]
    return dg.MetadataValue.table(records=records, schema=schema)


def _params(rule: Rule) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in rule.params.items()}


def _gx_metadata(report: ValidationReport) -> dict[str, Any]:
    """Links to the stored GX validation result of ``report`` (none for a report GX did not store)."""
    gx = report.gx
    if not gx:
        return {}
    return {
        "gx_data_docs": dg.MetadataValue.url(gx["page_url"]),
        "gx_validation_page": dg.MetadataValue.path(gx["page_path"]),
        "gx_validation_result": dg.MetadataValue.path(gx["result_path"]),
        "gx_suite": dg.MetadataValue.text(gx["suite"]),
        "gx_seconds": dg.MetadataValue.float(float(gx["seconds"])),
        # judged in pieces (``merge_reports``): the page above is the first piece's with a failure
        **({"gx_pages": dg.MetadataValue.json(list(gx["pages"]))} if "pages" in gx else {}),
    }


def result_metadata(
    result: RuleResult, report: ValidationReport, partition_range: CoercibleToRange = None
) -> dict[str, Any]:
    """Metadata of one rule's check result: the rule, the range covered, counts, per (symbol, day),
    samples."""
    rule = result.rule
    start, end = partition_bounds(partition_range, report)
    metadata: dict[str, Any] = {
        "rule": dg.MetadataValue.text(f"{rule.name} ({rule.kind}, {rule.severity}): {rule.description}"),
        "params": dg.MetadataValue.json(_params(rule)),
        "partition_start": dg.MetadataValue.text(start or ""),
        "partition_end": dg.MetadataValue.text(end or ""),
        "engine": dg.MetadataValue.text(report.engine),
        **_gx_metadata(report),
        "rows_checked": dg.MetadataValue.int(result.element_count),
        "failing_rows": dg.MetadataValue.int(result.unexpected_count),
        "failing_share": dg.MetadataValue.float(float(result.share)),
    }
    for key, value in result.details.items():
        metadata[key] = value if isinstance(value, int | float | str) else dg.MetadataValue.json(value)
    if result.skipped:
        metadata["skipped"] = dg.MetadataValue.text(result.skipped)
        return metadata
    if result.by_symbol_day is not None and not result.by_symbol_day.empty:
        by_day = result.by_symbol_day.sort_values(["failing", "symbol", "day"], ascending=[False, True, True])
        metadata["failing_symbol_days"] = dg.MetadataValue.int(len(by_day))
        metadata["failing_by_symbol_day"] = table_metadata(
            by_day.head(MAX_SYMBOL_DAY_ROWS).reset_index(drop=True)
        )
    if not result.failing_rows.empty:
        metadata["failing_rows_sample"] = table_metadata(result.failing_rows)
    return metadata


def check_results(
    report: ValidationReport,
    partition_range: CoercibleToRange = None,
    *,
    asset: dg.AssetKey | str | Sequence[str] | None = None,
    gx: bool = True,
    prefix: str = "",
) -> list[dg.AssetCheckResult]:
    """One AssetCheckResult per rule in ``report`` (errors first), for an asset to yield after writing.

    The verdicts are Great Expectations': a report of the pandas evaluator that carries its frame (every
    ``evaluate_frame`` report) is judged again by GX over the same rows (``quality.ge.judge``), which stores
    the validation result under ``TIS_GX_DIR`` and renders its Data Docs page; each check's metadata links to
    it (``gx_data_docs``, served by ``tis docs``; ``gx_validation_page``, the file). The per-(symbol, day)
    counts come from the pandas masks, which ingest quarantines by and a test holds equal to GX's.
    ``gx=False`` reports the pandas evaluator's verdicts as they are (``engine: pandas``, nothing stored): the
    ``market_data_1m`` asset's step, whose million-row frames GE would judge too slowly, benchmarks, tests.
    ``prefix``: the checks are named ``prefix`` + the rule's name (as declared by ``build_checks(prefix=)``).

    The asset must declare the same checks: ``check_specs_for(table, severity=s)`` for a report made with
    ``severity=s``. A rule the report skipped (column or source absent) passes, with the reason in metadata.
    """
    asset_key = dg.AssetKey.from_coercible(asset if asset is not None else report.table)
    if gx and not report.gx and report.frame is not None:
        from tis_pipeline.quality.ge import judge

        report = judge(report)
    by_rule = {r.rule.name: r for r in report.results}
    out = []
    for rule in _ordered(r.rule for r in report.results):
        result = by_rule[rule.name]
        description = (
            f"not evaluated: {result.skipped}"
            if result.skipped
            else f"{result.unexpected_count} of {result.element_count} rows fail: {rule.description}"
        )
        out.append(
            dg.AssetCheckResult(
                asset_key=asset_key,
                check_name=prefix + rule.name,
                passed=result.passed,
                severity=dg.AssetCheckSeverity.ERROR
                if rule.severity == "error"
                else dg.AssetCheckSeverity.WARN,
                description=description,
                metadata=result_metadata(result, report, partition_range),
            )
        )
    return out


def frame_check_results(
    frame: pd.DataFrame,
    table: str,
    partition_range: CoercibleToRange = None,
    *,
    asset: dg.AssetKey | str | Sequence[str] | None = None,
) -> list[dg.AssetCheckResult]:
    """``table``'s rules judged on the rows an asset wrote, as the results of its ``check_specs_for(table)``.

    An empty frame is given the rules' columns, so that every rule is evaluated (and passes on no rows)
    instead of being skipped for a missing column.
    """
    from tis_pipeline.quality.evaluate import evaluate_frame

    if not len(frame):
        columns = sorted({c for r in rules_for(table) for c in r.columns})
        frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in columns})
    return check_results(evaluate_frame(frame, table), partition_range, asset=asset)


@dataclass(frozen=True)
class CheckInput:
    """What a ``build_checks`` loader returns when a bare DataFrame is not enough."""

    frame: pd.DataFrame
    sources: Mapping[str, pd.DataFrame] = field(default_factory=dict)  # e.g. {"market_data_1m": bars}
    partition_range: CoercibleToRange = None
    now: pd.Timestamp | None = None


def _warm_great_expectations() -> None:
    """GX imported and its context opened on the calling thread's time (``run_process``'s warm-up of a run
    whose assets GX judges: the first judging step then finds it done)."""
    from tis_pipeline.quality.ge import preload_in_background

    preload_in_background().join()


def build_checks(
    table: str,
    asset_key: dg.AssetKey | str | Sequence[str],
    frame_loader: Callable[[dg.AssetCheckExecutionContext], pd.DataFrame | CheckInput | Iterable[CheckInput]],
    *,
    required_resource_keys: set[str] | None = None,
    engine: str = "great_expectations",
    name: str | None = None,
    partitions_def: dg.PartitionsDefinition | None = None,
    rules: Iterable[Rule] | None = None,
    prefix: str = "",
    blocking: bool | None = None,
) -> list[dg.AssetChecksDefinition]:
    """A multi-asset check (one op, one read) with one check per rule of ``table``.

    ``frame_loader(context)`` reads the data through the context's resources (``required_resource_keys``)
    and returns a DataFrame or a ``CheckInput``, or an iterable of ``CheckInput`` pieces of whole symbols
    (judged one after the other, GX storing a result and a page for each, and merged: ``report
    .merge_reports``), so that a long range is judged in the memory of a piece. ``engine`` is
    ``"great_expectations"`` (GX's verdicts, stored with their Data Docs page, as ``check_results``) or
    ``"pandas"`` (the pandas evaluator's, nothing stored); both give the same counts. Subsets are honoured:
    running one check evaluates one rule. With GX, the step starts GX's import in a background thread before
    it calls the loader (``ge.preload_in_background``), so that the import runs while the loader reads.
    ``partitions_def`` (the asset's) makes it a step of the asset's partitioned runs: the loader then reads
    ``context.partition_time_window``, the rows the run wrote.

    ``rules`` (default: all of ``table``'s) are the rules checked; ``prefix`` names the checks ``prefix`` +
    the rule's name, so that they can sit beside the asset's own checks of the same rules (the
    ``market_data_1m`` asset's in-step pandas checks and its ``gx_`` checks); ``blocking`` overrides the
    rules' (errors block).
    """
    if engine not in ("pandas", "great_expectations"):
        raise ValueError(f"engine must be 'pandas' or 'great_expectations', not {engine!r}")
    key = dg.AssetKey.from_coercible(asset_key)
    chosen = tuple(_ordered(rules_for(table) if rules is None else rules))
    if any(r.table != table for r in chosen):
        raise ValueError(f"build_checks({table!r}): rules of another table given")
    with warnings.catch_warnings():  # a partitioned check spec is Preview in dagster 1.13: said once, here
        warnings.simplefilter("ignore", dg.PreviewWarning)
        specs = [check_spec(r, key, partitions_def, prefix=prefix, blocking=blocking) for r in chosen]

    op_name = name or f"{table}_rule_checks"
    if engine == "great_expectations":  # a run with this step warms GX from its start (``run_process``)
        warm_before(op_name, _warm_great_expectations)

    @dg.multi_asset_check(
        specs=specs,
        name=op_name,
        description=f"The registry's rules for {table} (quality/rules.py)",
        can_subset=True,
        required_resource_keys=required_resource_keys or set(),
    )
    # no annotation: Dagster cannot resolve a postponed (string) one
    def _rule_checks(context):  # noqa: ANN001
        if engine == "great_expectations":
            from tis_pipeline.quality.ge import preload_in_background

            # GX's import (seconds) while the loader waits for the database: with the run's other heavy
            # imports after it (``run_process``: GX first, named by this step), or alone
            warm_while_waiting()
            preload_in_background()
        loaded = frame_loader(context)
        selected = {k.name for k in context.selected_asset_check_keys}
        judged = tuple(r for r in chosen if prefix + r.name in selected)
        from tis_pipeline.quality.evaluate import evaluate_frame

        gx = engine == "great_expectations"
        if isinstance(loaded, pd.DataFrame | CheckInput):
            item = loaded if isinstance(loaded, CheckInput) else CheckInput(frame=loaded)
            report = evaluate_frame(item.frame, table, now=item.now, sources=item.sources, rules=judged)
            yield from check_results(report, item.partition_range, asset=key, gx=gx, prefix=prefix)
            return
        # pieces (whole symbols each): judged one at a time, so that memory follows a piece, not the range
        reports, partition_range = [], None
        for item in loaded:
            report = evaluate_frame(item.frame, table, now=item.now, sources=item.sources, rules=judged)
            if gx:
                from tis_pipeline.quality.ge import judge

                report = judge(report)
            reports.append(merge_reports([report]))  # its counts and samples, not its rows
            partition_range = item.partition_range
            del item, report
        yield from check_results(merge_reports(reports), partition_range, asset=key, gx=gx, prefix=prefix)

    if partitions_def is None:
        return [_rule_checks]
    # multi_asset_check has no partitions_def (AssetChecksDefinition.create sets None); the same definition
    # with the asset's partitions runs as a step of the asset's partitioned runs
    return [
        dg.AssetChecksDefinition(
            keys_by_input_name=_rule_checks.keys_by_input_name,
            keys_by_output_name={},
            node_def=_rule_checks.node_def,
            partitions_def=partitions_def,
            partition_mappings=None,
            asset_deps=None,
            selected_asset_keys=None,
            can_subset=True,
            resource_defs=dict(_rule_checks.resource_defs),
            group_names_by_key=None,
            metadata_by_key=None,
            tags_by_key=None,
            legacy_freshness_policies_by_key=None,
            backfill_policy=None,
            descriptions_by_key=None,
            check_specs_by_output_name=_rule_checks.check_specs_by_output_name,
            selected_asset_check_keys=None,
            is_subset=False,
            owners_by_key=None,
        )
    ]
