"""What a validation run found, in one shape for both evaluators (Great Expectations and plain pandas).

A ``ValidationReport`` holds one ``RuleResult`` per rule of the table: passed or not, how many rows failed and
what share, up to 20 failing rows (key columns, the rule's columns and the derived values it judged, such as a
run length or a jump threshold), and, when the frame has ``symbol`` and ``timestamp``, the failing count and
share per (symbol, UTC day). No Dagster here: ``quality.checks`` turns a report into asset-check results.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from tis_pipeline.quality.rules import Rule, key_columns

MAX_FAILING_ROWS = 20
NS_PER_DAY = 86_400 * 10**9


@dataclass(frozen=True)
class RuleResult:
    """The outcome of one rule over one frame. ``mask`` is aligned with the validated frame's index."""

    rule: Rule
    passed: bool
    unexpected_count: int
    element_count: int
    failing_rows: pd.DataFrame
    by_symbol_day: pd.DataFrame | None = None
    skipped: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    mask: pd.Series | None = field(default=None, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.rule.name

    @property
    def severity(self) -> str:
        return self.rule.severity

    @property
    def share(self) -> float:
        return self.unexpected_count / self.element_count if self.element_count else 0.0


@dataclass(frozen=True)
class ValidationReport:
    """All rule results of one table for one frame. ``passed`` means no *error* rule failed."""

    table: str
    engine: str
    rows: int
    results: tuple[RuleResult, ...]
    first_timestamp: str | None = None
    last_timestamp: str | None = None
    elapsed_s: float = 0.0
    # what Great Expectations needs to judge the same rows again (``quality.ge.judge``): the frame judged, the
    # evaluator's clock and sources (``evaluate.Context``) and its derived arrays; none of it is compared
    frame: pd.DataFrame | None = field(default=None, repr=False, compare=False)
    clock: Any = field(default=None, repr=False, compare=False)
    cache: dict | None = field(default=None, repr=False, compare=False)
    # set by ``quality.ge.judge``: the stored GX result's file, its Data Docs page and URL, GX's seconds
    gx: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def passed(self) -> bool:
        return not any(not r.passed and r.severity == "error" for r in self.results)

    @property
    def failed(self) -> tuple[RuleResult, ...]:
        return tuple(r for r in self.results if not r.passed)

    @property
    def skipped(self) -> tuple[RuleResult, ...]:
        return tuple(r for r in self.results if r.skipped)

    def __getitem__(self, name: str) -> RuleResult:
        for r in self.results:
            if r.rule.name == name:
                return r
        raise KeyError(f"no result for rule {name!r} in the report on {self.table}")

    def __contains__(self, name: object) -> bool:
        return any(r.rule.name == name for r in self.results)

    def counts(self) -> dict[str, int]:
        """Rule name -> failing rows (0 for passed or skipped rules)."""
        return {r.rule.name: r.unexpected_count for r in self.results}

    def quarantine_mask(self, severity: str | None = "error") -> pd.Series:
        """Rows failing any rule of ``severity`` (all rules when None): the rows ingest sets aside."""
        masks = [
            r.mask
            for r in self.results
            if r.mask is not None and (severity is None or r.severity == severity)
        ]
        if not masks:
            raise ValueError("this report carries no row masks")
        out = masks[0].copy()
        for m in masks[1:]:
            out |= m
        return out


# ---------------------------------------------------------------------------------------------------------
# Building results: shared by both evaluators, so that they can only differ in how they find failing rows.
# ---------------------------------------------------------------------------------------------------------


def timestamps_ns(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """UTC nanoseconds since the epoch as int64, and a mask of missing values (NaT)."""
    ts = values
    if not isinstance(ts.dtype, pd.DatetimeTZDtype):
        ts = pd.to_datetime(ts, utc=True)
    ts = ts.dt.as_unit("ns")
    nat = ts.isna().to_numpy()
    ints = ts.to_numpy(dtype="datetime64[ns]").view("int64").copy()
    ints[nat] = 0
    return ints, nat


class SymbolDayIndex:
    """Row -> (symbol, UTC day) group, computed once per frame so that every rule's counts cost a bincount."""

    def __init__(
        self,
        frame: pd.DataFrame,
        symbol_factors: tuple[np.ndarray, Any] | None = None,
        timestamps: tuple[np.ndarray, np.ndarray] | None = None,
    ):
        """``symbol_factors``: ``pd.factorize(frame["symbol"])``, ``timestamps``:
        ``timestamps_ns(frame["timestamp"])``, when the caller has them already."""
        self.available = {"symbol", "timestamp"} <= set(frame.columns)
        if not self.available:
            return
        ts, nat = timestamps_ns(frame["timestamp"]) if timestamps is None else timestamps
        days = np.where(nat, np.iinfo(np.int64).min, ts // NS_PER_DAY)
        if symbol_factors is not None and (symbol_factors[0] >= 0).all():
            # no missing symbol: the codes and labels are those of use_na_sentinel=False
            sym_codes, sym_labels = symbol_factors
        else:
            sym_codes, sym_labels = pd.factorize(frame["symbol"], use_na_sentinel=False)
        first_day = int(days.min()) if len(days) and not nat.any() else None
        if first_day is not None and int(days.max()) - first_day < len(days):
            # days in a row: numbered by their offset from the first, not factorised (the groups are the same)
            day_codes, n_days = days - first_day, int(days.max()) - first_day + 1
        else:
            day_codes, day_labels = pd.factorize(days, use_na_sentinel=False)
            n_days, first_day = max(len(day_labels), 1), None
        combined = sym_codes.astype(np.int64) * n_days + day_codes
        self.group, uniques = pd.factorize(combined, use_na_sentinel=False)
        self.symbols = np.asarray(sym_labels, dtype=object)[uniques // n_days]
        day_values = (
            uniques % n_days + first_day
            if first_day is not None
            else np.asarray(day_labels)[uniques % n_days]
        )
        self.days = np.array(
            [None if d == np.iinfo(np.int64).min else str(np.datetime64(int(d), "D")) for d in day_values],
            dtype=object,
        )
        self.rows = np.bincount(self.group, minlength=len(uniques))

    def counts(
        self, mask: np.ndarray, extra: np.ndarray | None = None, extra_name: str | None = None
    ) -> pd.DataFrame | None:
        if not self.available:
            return None
        # most rules fail nowhere: no need to gather the groups of no row
        failing = (
            np.bincount(self.group[mask], minlength=len(self.rows))
            if mask.any()
            else np.zeros(len(self.rows), dtype=np.intp)
        )
        hit = np.flatnonzero(failing)
        out = pd.DataFrame(
            {
                "symbol": self.symbols[hit],
                "day": self.days[hit],
                "rows": self.rows[hit].astype(np.int64),
                "failing": failing[hit].astype(np.int64),
            }
        )
        out["share"] = out["failing"] / out["rows"]
        if extra is not None and extra_name:
            weights = np.nan_to_num(np.where(mask, extra, 0.0))
            out[extra_name] = np.bincount(self.group, weights=weights, minlength=len(self.rows))[hit]
        return out.sort_values(["symbol", "day"], kind="stable").reset_index(drop=True)


def sample_rows(
    frame: pd.DataFrame, rule: Rule, positions: np.ndarray, derived: Mapping[str, np.ndarray]
) -> pd.DataFrame:
    """Up to 20 failing rows: the table's key columns, the rule's columns and the rule's derived values."""
    positions = np.asarray(positions[:MAX_FAILING_ROWS], dtype=np.int64)
    columns = [c for c in dict.fromkeys((*key_columns(rule.table), *rule.columns)) if c in frame.columns]
    # no row: a slice, which costs nothing, where a take of none would still go through every column
    # (.copy(): the slice would hold every column of ``frame``, kept as long as the report)
    out = (frame.iloc[positions] if len(positions) else frame.iloc[:0])[columns].reset_index(drop=True).copy()
    for name, values in derived.items():
        out[name] = np.asarray(values)[positions]
    return out


def rule_result(
    frame: pd.DataFrame,
    rule: Rule,
    mask: np.ndarray,
    *,
    groups: SymbolDayIndex,
    derived: Mapping[str, np.ndarray] | None = None,
    unexpected_count: int | None = None,
    details: Mapping[str, Any] | None = None,
    keep_mask: bool = True,
) -> RuleResult:
    """A RuleResult from a positional boolean mask of failing rows."""
    mask = np.asarray(mask, dtype=bool)
    derived = derived or {}
    positions = np.flatnonzero(mask)
    count = len(positions) if unexpected_count is None else int(unexpected_count)
    extra_name = "missing_minutes" if rule.kind == "gaps" else None
    extra = derived.get("missing_minutes") if extra_name else None
    return RuleResult(
        rule=rule,
        passed=count == 0,
        unexpected_count=count,
        element_count=len(frame),
        failing_rows=sample_rows(frame, rule, positions, derived),
        by_symbol_day=groups.counts(mask, extra, extra_name),
        details=MappingProxyType(dict(details or {})),
        mask=pd.Series(mask, index=frame.index, name=rule.name) if keep_mask else None,
    )


def skipped_result(frame: pd.DataFrame, rule: Rule, reason: str) -> RuleResult:
    return RuleResult(
        rule=rule,
        passed=True,
        unexpected_count=0,
        element_count=len(frame),
        failing_rows=pd.DataFrame(),
        by_symbol_day=None,
        skipped=reason,
        mask=pd.Series(False, index=frame.index, name=rule.name),
    )


def timestamp_span(frame: pd.DataFrame) -> tuple[str | None, str | None]:
    if "timestamp" not in frame.columns or frame.empty:
        return None, None
    ts = frame["timestamp"]
    if not isinstance(ts.dtype, pd.DatetimeTZDtype):
        ts = pd.to_datetime(ts, utc=True)
    lo, hi = ts.min(), ts.max()
    return (None if pd.isna(lo) else lo.isoformat()), (None if pd.isna(hi) else hi.isoformat())


# ---------------------------------------------------------------------------------------------------------
# A report over pieces: what one frame of all the pieces' rows would give, without holding them at once.
# ---------------------------------------------------------------------------------------------------------

_DETAILS_MAX = frozenset({"longest_run"})  # the other numeric details are counts, which add up


def merge_reports(reports: list[ValidationReport]) -> ValidationReport:
    """One report from the reports of disjoint pieces of a table's rows (pieces of whole symbols, so that no
    (symbol, day) and no series straddles two pieces): per rule, passed when every piece passed, counts
    summed, the first ``MAX_FAILING_ROWS`` failing rows in piece order, the (symbol, day) counts together,
    numeric details summed (``longest_run``: the longest), skipped only when every piece skipped it. The
    pieces' frames and masks are not kept. ``gx``: the stored GX result of the first piece with a failing
    rule (else the first piece's), with every piece's page in ``pages`` and the seconds summed."""
    if not reports:
        raise ValueError("merge_reports needs at least one report")
    first = reports[0]
    if len(reports) == 1:
        return _without_rows(first)
    results = []
    for i, rule_result_0 in enumerate(first.results):
        parts = [r.results[i] for r in reports]
        if any(p.rule.name != rule_result_0.rule.name for p in parts):
            raise ValueError("merge_reports: the pieces were judged by different rules")
        judged = [p for p in parts if not p.skipped]
        failing = [p.failing_rows for p in judged if not p.failing_rows.empty]
        by_day = [
            p.by_symbol_day for p in judged if p.by_symbol_day is not None and not p.by_symbol_day.empty
        ]
        details: dict[str, Any] = {}
        for p in judged:
            for key, value in p.details.items():
                if key not in details or not isinstance(value, int | float) or isinstance(value, bool):
                    details.setdefault(key, value)
                elif key in _DETAILS_MAX:
                    details[key] = max(details[key], value)
                else:
                    details[key] += value
        results.append(
            _own_tables(
                RuleResult(
                    rule=rule_result_0.rule,
                    passed=all(p.passed for p in parts),
                    unexpected_count=sum(p.unexpected_count for p in parts),
                    element_count=sum(p.element_count for p in parts),
                    failing_rows=(
                        pd.concat(failing, ignore_index=True).head(MAX_FAILING_ROWS)
                        if failing
                        else pd.DataFrame()
                    ),
                    by_symbol_day=(
                        pd.concat(by_day, ignore_index=True)
                        if by_day
                        else (parts[0].by_symbol_day if judged else None)
                    ),
                    skipped=None if judged else rule_result_0.skipped,
                    details=MappingProxyType(details),
                )
            )
        )
    firsts = [r.first_timestamp for r in reports if r.first_timestamp is not None]
    lasts = [r.last_timestamp for r in reports if r.last_timestamp is not None]
    gx: dict[str, Any] = {}
    stored = [r for r in reports if r.gx]
    if stored:
        shown = next((r for r in stored if r.failed), stored[0])
        gx = {
            **shown.gx,
            "seconds": round(sum(float(r.gx.get("seconds", 0.0)) for r in stored), 3),
            "pages": [r.gx["page_url"] for r in stored if "page_url" in r.gx],
        }
    return ValidationReport(
        table=first.table,
        engine=first.engine,
        rows=sum(r.rows for r in reports),
        results=tuple(results),
        first_timestamp=min(firsts) if firsts else None,  # ISO 8601 in UTC: text order is time order
        last_timestamp=max(lasts) if lasts else None,
        elapsed_s=sum(r.elapsed_s for r in reports),
        gx=MappingProxyType(gx),
    )


def _own_tables(result: RuleResult) -> RuleResult:
    """``result`` with copies of its small tables. A rule no row of a piece fails keeps as its sample the
    piece's first zero rows, and a copy-on-write slice or concat holds its source's columns: kept until the
    end of a step, the reports of its pieces would hold every piece's rows (measured: +2 GB for 500 symbols x
    31 days in the GE step, +1.5 GB in the ingest)."""
    from dataclasses import replace

    by_day = result.by_symbol_day
    return replace(
        result,
        mask=None,
        failing_rows=result.failing_rows.copy(deep=True),
        by_symbol_day=None if by_day is None else by_day.copy(deep=True),
    )


def _without_rows(report: ValidationReport) -> ValidationReport:
    """``report`` without its frame, masks and caches, and with tables of its own (what a report over pieces
    keeps of each)."""
    from dataclasses import replace

    results = tuple(_own_tables(r) for r in report.results)
    return replace(report, results=results, frame=None, clock=None, cache=None)
