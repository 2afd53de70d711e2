"""The fast evaluator: the registry's rules as boolean masks over a pandas DataFrame (no GE, no Dagster).

Ingest calls ``failing_mask(frame, rule)`` / ``evaluate_frame(frame, table)`` to quarantine failing rows
before they reach PostgreSQL; ``quality.ge`` evaluates the same rules through Great Expectations, and a test
proves the two agree on the same frames.

Rules that look at a series rather than a row (stale closes, gaps, jumps, rollups) are computed here as
*derived values* per row (a run length, the missing minutes before a bar, a jump threshold, the rollup of the
source bars). Great Expectations has no expectation for "a run of equal values" on pandas, so ``quality.ge``
hands it these same derived columns and lets an ordinary expectation judge them.

Input conventions: ``timestamp`` is UTC (naive values are read as UTC), numeric columns are numeric dtypes,
and series rules look at consecutive bars of one symbol inside the frame only (a run, gap or jump that
straddles the frame's edge is seen from its inside part).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from tis_pipeline.quality.report import (
    RuleResult,
    SymbolDayIndex,
    ValidationReport,
    rule_result,
    skipped_result,
    timestamp_span,
    timestamps_ns,
)
from tis_pipeline.quality.rules import OHLCV, Rule, rules_for

NS_PER_MINUTE = 60 * 10**9
T = TypeVar("T")


class Context:
    """What a rule may need besides the frame: the clock and, for rollups, the source frames."""

    def __init__(self, now: pd.Timestamp | None = None, sources: Mapping[str, pd.DataFrame] | None = None):
        now = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now)
        self.now = now.tz_localize("UTC") if now.tzinfo is None else now.tz_convert("UTC")
        self.sources = dict(sources or {})

    def latest_allowed(self, rule: Rule) -> pd.Timestamp:
        return self.now + pd.Timedelta(minutes=rule.params["tolerance_minutes"])


# ------------------------------------------------------------------------------------------------ helpers


def _memo(cache: dict | None, key: Hashable, make: Callable[[], T]) -> T:
    """``make()``, once per ``key`` of ``cache`` (one frame's derived arrays, read only); every time without
    one."""
    if cache is None:
        return make()
    if key not in cache:
        cache[key] = make()
    return cache[key]


def _numeric(frame: pd.DataFrame, column: str, cache: dict | None = None) -> np.ndarray:
    """``frame[column]`` as float64 (NaN for missing); with a ``cache``, once per frame and column (read
    only)."""

    def make() -> np.ndarray:
        s = frame[column]
        if not pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype):
            s = pd.to_numeric(s)
        return s.to_numpy(dtype="float64", na_value=np.nan)

    return _memo(cache, ("numeric", column), make)


def missing_reason(frame: pd.DataFrame, rule: Rule, ctx: Context | None = None) -> str | None:
    """Why ``rule`` cannot be evaluated on ``frame`` (None when it can)."""
    absent = [c for c in rule.columns if c not in frame.columns]
    if absent:
        return f"column(s) {', '.join(absent)} not in the frame"
    if rule.kind == "rollup_consistent" and (ctx is None or rule.params["source"] not in ctx.sources):
        return (
            f"source frame {rule.params['source']} not given "
            f"(pass sources={{'{rule.params['source']}': ...}})"
        )
    return None


class _Series:
    """Rows of valid (symbol, timestamp) sorted by symbol then time; positions refer to the frame."""

    def __init__(
        self,
        frame: pd.DataFrame,
        codes: np.ndarray | None = None,
        timestamps: tuple[np.ndarray, np.ndarray] | None = None,
    ):
        if codes is None:
            codes, _ = pd.factorize(frame["symbol"], use_na_sentinel=True)
        ts, nat = timestamps_ns(frame["timestamp"]) if timestamps is None else timestamps
        complete = (codes >= 0) & ~nat
        if complete.all():  # the usual frame: no row to leave out, nothing to gather first
            self.order, self.codes, self.ts = _symbol_time_order(codes, ts)
        else:
            valid = np.flatnonzero(complete)
            order, self.codes, self.ts = _symbol_time_order(codes[valid], ts[valid])
            self.order = valid[order]
        self.n = len(frame)
        # True where the previous sorted row is the same symbol
        self.same_prev = np.zeros(len(self.order), dtype=bool)
        self.same_prev[1:] = self.codes[1:] == self.codes[:-1]
        self.starts = np.flatnonzero(~self.same_prev)
        self.ends = np.append(self.starts[1:], len(self.order)) if len(self.starts) else self.starts

    def scatter(self, sorted_values: np.ndarray) -> np.ndarray:
        out = np.full(self.n, np.nan)
        out[self.order] = sorted_values
        return out


def _symbol_time_order(codes: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``order = np.lexsort((ts, codes))`` (positions by symbol code, then time, ties in frame order), with
    ``codes[order]`` and ``ts[order]``.

    When each symbol's rows already come in time order (ingest's days, one after the other), a stable sort by
    the code alone is that order, at a fraction of lexsort's cost; otherwise lexsort.
    """
    order = np.argsort(codes, kind="stable")
    c, t = codes[order], ts[order]
    if not ((c[1:] != c[:-1]) | (t[1:] >= t[:-1])).all():
        order = np.lexsort((ts, codes))
        c, t = codes[order], ts[order]
    return order, c, t


def _timestamps(frame: pd.DataFrame, cache: dict | None) -> tuple[np.ndarray, np.ndarray]:
    """``timestamps_ns(frame["timestamp"])``, once per frame with a ``cache`` (read only)."""
    return _memo(cache, "timestamps", lambda: timestamps_ns(frame["timestamp"]))


def symbol_factors(frame: pd.DataFrame, cache: dict | None) -> tuple[np.ndarray, pd.Index]:
    """``pd.factorize(frame["symbol"])`` (code -1 = missing), once per frame for everything that needs it."""
    return _memo(cache, "symbol_factors", lambda: pd.factorize(frame["symbol"], use_na_sentinel=True))


def _series(frame: pd.DataFrame, cache: dict | None) -> _Series:
    return _memo(
        cache, "series", lambda: _Series(frame, symbol_factors(frame, cache)[0], _timestamps(frame, cache))
    )


# ------------------------------------------------------------------------------------------ derived values


def derived_values(
    frame: pd.DataFrame, rule: Rule, ctx: Context, cache: dict | None = None
) -> dict[str, np.ndarray]:
    """Per-row values a rule judges beyond the raw columns (positional float arrays, NaN = not judged).

    Both evaluators use these; the column names become the failing-row sample's extra columns.
    """
    cache = {} if cache is None else cache
    kind, p = rule.kind, rule.params
    if kind == "ohlc_high":
        _high, *others = rule.columns
        with np.errstate(all="ignore"):
            floor = np.fmax.reduce([_numeric(frame, c, cache) for c in others])
        return {"max_of_others": floor}
    if kind == "ohlc_low":
        _low, *others = rule.columns
        return {"min_of_others": np.fmin.reduce([_numeric(frame, c, cache) for c in others])}
    if kind in ("positive", "nonnegative") and len(rule.columns) > 1:
        return {"min_value": np.fmin.reduce([_numeric(frame, c, cache) for c in rule.columns])}
    if kind == "on_minute":
        ts, nat = _timestamps(frame, cache)
        offset = (ts % (p["minutes"] * NS_PER_MINUTE)).astype("float64")
        offset[nat] = np.nan
        return {"ns_past_boundary": offset}
    if kind == "stale_series":
        return {"run_length": _run_lengths(frame, _series(frame, cache), p)}
    if kind == "gaps":
        return {"missing_minutes": _missing_minutes(frame, _series(frame, cache), p)}
    if kind == "price_jump":
        abs_ret, threshold = _jumps(frame, _series(frame, cache), p)
        return {"abs_log_return": abs_ret, "jump_threshold": threshold}
    if kind == "rollup_consistent":
        return _rollup_comparison(frame, ctx.sources[p["source"]], p)
    return {}


def _run_lengths(frame: pd.DataFrame, s: _Series, p: Mapping) -> np.ndarray:
    close = _numeric(frame, "close")[s.order]
    if len(close) == 0:
        return s.scatter(close)
    new_run = np.ones(len(close), dtype=bool)
    new_run[1:] = (
        ~s.same_prev[1:] | (np.diff(s.ts) != NS_PER_MINUTE) | (close[1:] != close[:-1]) | np.isnan(close[1:])
    )
    run_id = np.cumsum(new_run) - 1
    lengths = np.bincount(run_id)[run_id].astype("float64")
    lengths[np.isnan(close)] = np.nan
    return s.scatter(lengths)


def _missing_minutes(frame: pd.DataFrame, s: _Series, p: Mapping) -> np.ndarray:
    step = p["minutes"] * NS_PER_MINUTE
    out = np.full(len(s.order), np.nan)
    if len(out) > 1:
        delta = np.diff(s.ts)
        missing = (delta // step - 1).clip(min=0).astype("float64")
        missing[delta > p["session_break_minutes"] * NS_PER_MINUTE] = 0.0
        out[1:] = np.where(s.same_prev[1:], missing, np.nan)
    return s.scatter(out)


def _jumps(frame: pd.DataFrame, s: _Series, p: Mapping) -> tuple[np.ndarray, np.ndarray]:
    close = _numeric(frame, "close")[s.order]
    with np.errstate(all="ignore"):
        log_close = np.log(np.where(close > 0, close, np.nan))
    ret = np.full(len(close), np.nan)
    if len(close) > 1:
        ret[1:] = np.where(s.same_prev[1:], np.diff(log_close), np.nan)
    window, min_periods = int(p["window"]), int(p["min_periods"])
    mad = _rolling_mad_of_past(ret, s.starts, window, min_periods)
    threshold = np.fmax(p["k"] * mad, p["min_abs_log_return"])
    threshold[np.isnan(mad)] = np.nan
    return s.scatter(np.abs(ret)), s.scatter(threshold)


def _rolling_mad_of_past(ret: np.ndarray, starts: np.ndarray, window: int, min_periods: int) -> np.ndarray:
    """Per series (rows ``starts[i]`` to the next start), the rolling median absolute deviation of the
    previous ``window`` values from their own rolling median, as pandas computes it series by series::

        past = r.shift(1); center = past.rolling(window, min_periods).median()
        mad = (past - center.shift(1)).abs().rolling(window, min_periods).median()

    In one pass for all series: ``window`` NaNs go between series (moving medians skip NaNs and count only
    values toward ``min_periods``, as pandas does), so no window reaches into the previous series, and
    bottleneck's ``move_median`` replaces a pandas rolling median per series (the same median of the same
    values: the middle one, or the mean of the two middle ones).
    """
    import bottleneck as bn

    n = len(ret)
    if n == 0:
        return np.full(0, np.nan)
    gap = window
    # row -> padded position: each row moves by ``gap`` for every series start at or before it
    at = np.arange(n) + gap * np.cumsum(np.bincount(starts, minlength=n)[:n])
    padded = np.full(n + gap * len(starts), np.nan)
    is_row = np.zeros(len(padded), dtype=bool)
    is_row[at] = True
    padded[at] = ret
    past = np.full_like(padded, np.nan)
    past[1:] = padded[:-1]
    past[~is_row] = np.nan
    center = bn.move_median(past, window, min_count=min_periods)
    prev_center = np.full_like(center, np.nan)
    prev_center[1:] = center[:-1]
    deviation = np.abs(past - prev_center)
    deviation[~is_row] = np.nan
    return bn.move_median(deviation, window, min_count=min_periods)[at]


def rollup_bars(source: pd.DataFrame, minutes: int) -> pd.DataFrame:
    """The ``minutes`` rollup of 1-minute bars, labelled by the bucket's open (UTC).

    Input columns: symbol, timestamp, open, high, low, close, volume. Output: the same columns plus
    ``source_bars`` (how many 1-minute bars the bucket holds), one row per (symbol, bucket), sorted.
    """
    ts = source["timestamp"]
    if not isinstance(ts.dtype, pd.DatetimeTZDtype):
        ts = pd.to_datetime(ts, utc=True)
    work = pd.DataFrame({"symbol": source["symbol"].to_numpy(), "timestamp": ts.to_numpy()})
    for col in OHLCV:
        work[col] = _numeric(source, col)
    work["bucket"] = work["timestamp"].dt.floor(f"{minutes}min")
    work = work.sort_values(["symbol", "timestamp"], kind="stable")
    grouped = work.groupby(["symbol", "bucket"], sort=True, observed=True)
    out = (
        grouped.agg(
            open=("open", "first"),
            high=("high", "max"),
            low=("low", "min"),
            close=("close", "last"),
            volume=("volume", "sum"),
            source_bars=("open", "size"),
        )
        .reset_index()
        .rename(columns={"bucket": "timestamp"})
    )
    return out[["symbol", "timestamp", *OHLCV, "source_bars"]]


def _rollup_comparison(frame: pd.DataFrame, source: pd.DataFrame, p: Mapping) -> dict[str, np.ndarray]:
    expected = rollup_bars(source, int(p["minutes"]))
    ts = frame["timestamp"]
    if not isinstance(ts.dtype, pd.DatetimeTZDtype):
        ts = pd.to_datetime(ts, utc=True)
    keys = pd.DataFrame({"symbol": frame["symbol"].to_numpy(), "timestamp": ts.dt.as_unit("ns").to_numpy()})
    expected["timestamp"] = expected["timestamp"].dt.as_unit("ns")
    merged = keys.merge(expected, on=["symbol", "timestamp"], how="left", validate="many_to_one")
    out: dict[str, np.ndarray] = {}
    mismatch = merged["source_bars"].isna().to_numpy().copy()
    for col in OHLCV:
        want = merged[col].to_numpy(dtype="float64", na_value=np.nan)
        have = _numeric(frame, col)
        differs = ~np.isclose(have, want, rtol=p["rtol"], atol=p["atol"]) & ~np.isnan(have) & ~np.isnan(want)
        mismatch |= differs
        out[f"expected_{col}"] = want
    flag = mismatch.astype("float64")
    flag[keys["symbol"].isna().to_numpy() | keys["timestamp"].isna().to_numpy()] = np.nan
    out["source_bars"] = merged["source_bars"].to_numpy(dtype="float64", na_value=np.nan)
    out["mismatch"] = flag
    return out


# ------------------------------------------------------------------------------------------------- masks


# kinds whose mask reads their derived values (the others judge the frame's columns)
_JUDGED_ON_DERIVED = frozenset({"on_minute", "stale_series", "gaps", "price_jump", "rollup_consistent"})


def _mask(
    frame: pd.DataFrame,
    rule: Rule,
    ctx: Context,
    derived: Mapping[str, np.ndarray],
    cache: dict | None = None,
) -> np.ndarray:
    kind, p = rule.kind, rule.params
    if kind == "not_null":
        return frame[rule.column].isna().to_numpy()
    if kind == "range":
        v = _numeric(frame, rule.column, cache)
        with np.errstate(invalid="ignore"):
            lo_ok = v >= p["min"] if p["min_inclusive"] else v > p["min"]
            hi_ok = v <= p["max"] if p["max_inclusive"] else v < p["max"]
        return ~np.isnan(v) & ~(lo_ok & hi_ok)
    if kind == "enum":
        s = frame[rule.column]
        return (s.notna() & ~s.isin(list(p["values"]))).to_numpy()
    if kind == "unique" and _is_symbol_time_key(frame, rule):
        return _repeated_keys(_series(frame, cache))
    if kind == "unique":
        sub = frame[list(rule.columns)]
        complete = sub.notna().all(axis=1).to_numpy()
        out = np.zeros(len(frame), dtype=bool)
        out[complete] = sub[complete].duplicated(keep=False).to_numpy()
        return out
    if kind in ("positive", "nonnegative"):
        out = np.zeros(len(frame), dtype=bool)
        for column in rule.columns:
            v = _numeric(frame, column, cache)
            with np.errstate(invalid="ignore"):
                out |= (v <= 0) if kind == "positive" else (v < 0)
        return out
    if kind in ("ohlc_high", "ohlc_low"):
        # SQL: a AND b AND c fails when any comparison is known false; NULL comparisons are unknown
        head, *others = rule.columns
        h = _numeric(frame, head, cache)
        out = np.zeros(len(frame), dtype=bool)
        for column in others:
            v = _numeric(frame, column, cache)
            with np.errstate(invalid="ignore"):
                out |= (h < v) if kind == "ohlc_high" else (h > v)
        return out
    if kind == "on_minute":
        return derived["ns_past_boundary"] > 0
    if kind == "not_future":
        ts, nat = _timestamps(frame, cache)
        return ~nat & (ts > ctx.latest_allowed(rule).value)
    if kind == "stale_series":
        return derived["run_length"] > p["max_run"]
    if kind == "gaps":
        return derived["missing_minutes"] > 0
    if kind == "price_jump":
        return derived["abs_log_return"] > derived["jump_threshold"]
    if kind == "rollup_consistent":
        return derived["mismatch"] > 0
    raise ValueError(f"rule {rule.name}: no pandas evaluation for kind {kind}")


def _is_symbol_time_key(frame: pd.DataFrame, rule: Rule) -> bool:
    return rule.columns == ("symbol", "timestamp") and pd.api.types.is_datetime64_any_dtype(
        frame["timestamp"].dtype
    )


def _repeated_keys(s: _Series) -> np.ndarray:
    """Rows whose (symbol, timestamp) another row shares, both complete: ``duplicated(keep=False)`` over the
    complete rows, read off the rows in key order (a key's rows are neighbours there)."""
    same = np.zeros(len(s.order), dtype=bool)
    if len(same) > 1:
        same[1:] = s.same_prev[1:] & (s.ts[1:] == s.ts[:-1])
    repeated = same.copy()
    repeated[:-1] |= same[1:]
    out = np.zeros(s.n, dtype=bool)
    out[s.order[repeated]] = True
    return out


def rule_details(rule: Rule, derived: Mapping[str, np.ndarray], mask: np.ndarray, ctx: Context) -> dict:
    """Thresholds and totals worth showing next to a rule's counts."""
    details: dict = {}
    if rule.kind == "not_future":
        details["latest_allowed"] = ctx.latest_allowed(rule).isoformat()
    if rule.kind == "gaps":
        details["gaps"] = int(mask.sum())
        details["missing_minutes"] = int(np.nansum(np.where(mask, derived["missing_minutes"], 0.0)))
    if rule.kind == "stale_series" and mask.any():
        details["longest_run"] = int(np.nanmax(derived["run_length"]))
    if rule.kind == "rollup_consistent":
        details["without_source_bars"] = int(np.sum(np.isnan(derived["source_bars"]) & mask))
    return details


def failing_mask(
    frame: pd.DataFrame,
    rule: Rule,
    *,
    now: pd.Timestamp | None = None,
    sources: Mapping[str, pd.DataFrame] | None = None,
) -> pd.Series:
    """Boolean Series aligned with ``frame.index``: True for rows that fail ``rule`` (all False if
    skipped)."""
    ctx = Context(now, sources)
    if missing_reason(frame, rule, ctx):
        return pd.Series(False, index=frame.index, name=rule.name)
    # the row rules' derived values only feed the failing-row samples: a mask alone does without them
    derived = derived_values(frame, rule, ctx) if rule.kind in _JUDGED_ON_DERIVED else {}
    mask = _mask(frame, rule, ctx, derived)
    return pd.Series(np.asarray(mask, dtype=bool), index=frame.index, name=rule.name)


def _passing_result(
    frame: pd.DataFrame, rule: Rule, ctx: Context, groups: SymbolDayIndex, cache: dict
) -> RuleResult:
    """The result ``rule_result`` gives a rule no row fails; the derived values' names (the failing-row
    sample's columns) come from the frame's first zero rows."""
    derived = derived_values(_memo(cache, "no_rows", lambda: frame.iloc[:0]), rule, ctx)
    nothing = np.zeros(len(frame), dtype=bool)
    return rule_result(
        frame,
        rule,
        nothing,
        groups=groups,
        derived=derived,
        details=rule_details(rule, derived, nothing[:0], ctx),
    )


def failing_masks(
    frame: pd.DataFrame, rules: Iterable[Rule], *, now: pd.Timestamp | None = None
) -> dict[str, np.ndarray]:
    """``failing_mask`` of each rule as a boolean array (by rule name), with one clock for all and each
    numeric column read once."""
    ctx = Context(now)
    cache: dict[Hashable, Any] = {}
    out: dict[str, np.ndarray] = {}
    for rule in rules:
        if missing_reason(frame, rule, ctx):
            out[rule.name] = np.zeros(len(frame), dtype=bool)
            continue
        derived = derived_values(frame, rule, ctx, cache) if rule.kind in _JUDGED_ON_DERIVED else {}
        out[rule.name] = np.asarray(_mask(frame, rule, ctx, derived, cache), dtype=bool)
    return out


def evaluate_frame(
    frame: pd.DataFrame,
    table: str,
    *,
    severity: str | None = None,
    now: pd.Timestamp | None = None,
    sources: Mapping[str, pd.DataFrame] | None = None,
    rules: tuple[Rule, ...] | None = None,
    enforced: Collection[str] = (),
) -> ValidationReport:
    """Evaluate the registry's rules of ``table`` (optionally one severity) on ``frame`` with pandas.

    ``now`` is the clock of the not-in-the-future rule; ``sources`` maps a source table to its frame
    (``{"market_data_1m": bars}`` for the rollup rule of the 15m/1h tables). Rules whose columns or source
    are absent are reported as skipped (passed, with the reason). Each result carries its row mask.

    ``enforced`` names rules that no row of ``frame`` can break because the caller has already set aside every
    row that broke them (ingest's ``validate_bars`` quarantines by these same rules): each is reported as
    judged, with no failing row, without judging the rows again. A test holds such reports equal to full ones.
    """
    started = time.perf_counter()
    ctx = Context(now, sources)
    cache: dict = {}
    keyed = {"symbol", "timestamp"} <= set(frame.columns)
    groups = SymbolDayIndex(
        frame, *((symbol_factors(frame, cache), _timestamps(frame, cache)) if keyed else ())
    )
    results: list[RuleResult] = []
    for rule in rules if rules is not None else rules_for(table, severity=severity):
        reason = missing_reason(frame, rule, ctx)
        if reason:
            results.append(skipped_result(frame, rule, reason))
            continue
        if rule.name in enforced:
            results.append(_passing_result(frame, rule, ctx, groups, cache))
            continue
        derived = derived_values(frame, rule, ctx, cache)
        mask = np.asarray(_mask(frame, rule, ctx, derived, cache), dtype=bool)
        results.append(
            rule_result(
                frame,
                rule,
                mask,
                groups=groups,
                derived=derived,
                details=rule_details(rule, derived, mask, ctx),
            )
        )
    first, last = timestamp_span(frame)
    return ValidationReport(
        table=table,
        engine="pandas",
        rows=len(frame),
        results=tuple(results),
        first_timestamp=first,
        last_timestamp=last,
        elapsed_s=time.perf_counter() - started,
        frame=frame,
        clock=ctx,
        cache=cache,
    )
