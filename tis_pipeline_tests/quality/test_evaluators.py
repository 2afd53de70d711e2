"""Both evaluators on the same frames: a clean frame passes, each violation fails exactly its rule, and the
Great Expectations and pandas reports agree row for row."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from tis_pipeline.quality.evaluate import evaluate_frame, failing_mask
from tis_pipeline.quality.ge import validate_frame
from tis_pipeline.quality.report import ValidationReport
from tis_pipeline.quality.rules import RULES, SCALE_LOSS_COLUMN, TABLES, UNREADABLE_COLUMN, rule
from tis_pipeline_tests.quality.frames import (
    START,
    SYMBOLS,
    Case,
    market_1m,
    market_case,
    valid_case,
    violation,
)


def assert_agree(pandas_report: ValidationReport, ge_report: ValidationReport) -> None:
    assert [r.name for r in pandas_report.results] == [r.name for r in ge_report.results]
    for p, g in zip(pandas_report.results, ge_report.results, strict=True):
        assert (p.passed, p.unexpected_count, p.element_count, p.skipped) == (
            g.passed,
            g.unexpected_count,
            g.element_count,
            g.skipped,
        ), p.name
        pd.testing.assert_series_equal(p.mask, g.mask, obj=p.name)
        pd.testing.assert_frame_equal(p.failing_rows, g.failing_rows, obj=p.name)
        if p.by_symbol_day is None:
            assert g.by_symbol_day is None, p.name
        else:
            pd.testing.assert_frame_equal(p.by_symbol_day, g.by_symbol_day, obj=p.name)
        assert dict(p.details) == dict(g.details), p.name
    assert pandas_report.passed == ge_report.passed


def evaluate_both(case: Case) -> ValidationReport:
    kwargs = {"now": case.now, "sources": case.sources}
    pandas_report = evaluate_frame(case.frame, case.table, **kwargs)
    ge_report = validate_frame(case.frame, case.table, **kwargs)
    assert (pandas_report.engine, ge_report.engine) == ("pandas", "great_expectations")
    assert_agree(pandas_report, ge_report)
    return pandas_report


# The columns ingest adds to the rows it judges for its ingest-only rules (absent from the stored table): a
# clean frame of ingested bars has them, all 0, so that those rules are judged too.
INGEST_ONLY = {"market_data_1m": {SCALE_LOSS_COLUMN: 0, UNREADABLE_COLUMN: 0}}


@pytest.mark.parametrize("table", TABLES)
def test_a_clean_frame_passes_every_rule(table):
    case = valid_case(table)
    case = dataclasses.replace(case, frame=case.frame.assign(**INGEST_ONLY.get(table, {})))
    report = evaluate_both(case)
    assert report.passed
    assert not report.failed, {r.name: r.unexpected_count for r in report.failed}
    assert not report.skipped, {r.name: r.skipped for r in report.skipped}  # every rule was judged


@pytest.mark.parametrize("rule_under_test", RULES, ids=lambda r: r.name)
def test_a_violation_fails_exactly_its_rule(rule_under_test):
    case = violation(rule_under_test)
    report = evaluate_both(case)
    assert [r.name for r in report.failed] == [rule_under_test.name]
    result = report[rule_under_test.name]
    assert result.unexpected_count == case.expected
    assert result.share == pytest.approx(case.expected / len(case.frame))
    assert 0 < len(result.failing_rows) <= 20
    assert report.passed == (rule_under_test.severity == "warn")
    mask = failing_mask(case.frame, rule_under_test, now=case.now, sources=case.sources)
    assert int(mask.sum()) == case.expected
    pd.testing.assert_series_equal(mask, result.mask)


def test_severity_selects_rules():
    case = violation(rule("market_data_1m_no_gaps"))
    errors = evaluate_frame(case.frame, "market_data_1m", severity="error", now=case.now)
    warnings = validate_frame(case.frame, "market_data_1m", severity="warn", now=case.now)
    assert {r.severity for r in errors.results} == {"error"} and errors.passed
    assert {r.name for r in warnings.results} == {
        "market_data_1m_close_not_stale",
        "market_data_1m_no_gaps",
        "market_data_1m_no_price_jumps",
        "market_data_1m_values_fit_scale",
        "market_data_1m_source_files_readable",
    }
    assert [r.name for r in warnings.failed] == ["market_data_1m_no_gaps"]
    assert warnings.passed  # warnings never fail the report


def test_stale_run_of_exactly_max_run_bars_passes():
    limit = rule("market_data_1m_close_not_stale").params["max_run"]
    at_limit = market_1m(flat=(50, limit))
    over = market_1m(flat=(50, limit + 1))
    stale = rule("market_data_1m_close_not_stale")
    assert not failing_mask(at_limit, stale).any()
    report = evaluate_frame(over, "market_data_1m", now=over["timestamp"].max())
    result = report["market_data_1m_close_not_stale"]
    assert result.unexpected_count == limit + 1
    assert result.details["longest_run"] == limit + 1
    assert result.failing_rows["run_length"].eq(limit + 1).all()


def test_gaps_count_missing_minutes_and_ignore_session_breaks():
    bars = market_1m()
    first = np.flatnonzero(bars["symbol"].to_numpy() == SYMBOLS[0])
    holed = bars.drop(index=first[100:103]).reset_index(drop=True)
    report = evaluate_frame(holed, "market_data_1m", now=bars["timestamp"].max())
    gaps = report["market_data_1m_no_gaps"]
    assert gaps.unexpected_count == 1 and gaps.details == {"gaps": 1, "missing_minutes": 3}
    assert gaps.failing_rows.loc[0, "timestamp"] == START + pd.Timedelta(minutes=103)
    assert gaps.by_symbol_day.to_dict("records") == [
        {
            "symbol": "AAA",
            "day": "2024-03-04",
            "rows": 197,
            "failing": 1,
            "share": 1 / 197,
            "missing_minutes": 3.0,
        }
    ]
    # a venue closed overnight: the second half of the series resumes after the session break
    closed = bars.copy()
    later = closed["symbol"].eq(SYMBOLS[0]) & (closed.index >= first[100])
    closed.loc[later, "timestamp"] += pd.Timedelta(hours=10)
    assert not failing_mask(closed, rule("market_data_1m_no_gaps")).any()


def test_price_jump_reports_return_and_threshold():
    bars = market_1m(jump_at=150)
    result = evaluate_frame(bars, "market_data_1m", now=bars["timestamp"].max())[
        "market_data_1m_no_price_jumps"
    ]
    assert result.unexpected_count == 1
    row = result.failing_rows.iloc[0]
    assert row["timestamp"] == START + pd.Timedelta(minutes=150)
    assert row["abs_log_return"] == pytest.approx(0.05, abs=1e-3)
    assert row["jump_threshold"] < 0.01


def test_per_symbol_day_counts_span_days_and_symbols():
    bars = market_1m(minutes=3000)  # a little over two days
    bad = bars.index[bars["timestamp"].dt.hour.eq(0) & bars["timestamp"].dt.minute.lt(3)]
    bars.loc[bad, "volume"] = -1.0
    result = evaluate_frame(bars, "market_data_1m", now=bars["timestamp"].max())[
        "ck_market_data_1m_volume_nonnegative"
    ]
    assert result.unexpected_count == len(bad) == 2 * 3 * 3
    table = result.by_symbol_day
    assert list(table.columns) == ["symbol", "day", "rows", "failing", "share"]
    assert table[["symbol", "day", "failing"]].to_dict("records") == [
        {"symbol": s, "day": d, "failing": 3}
        for s in SYMBOLS
        for d in ("2024-03-04", "2024-03-05", "2024-03-06")
    ]
    assert table["rows"].tolist() == [1440, 1440, 120] * 2


def test_masks_follow_the_callers_index_and_quarantine_errors_only():
    case = violation(rule("ck_market_data_1m_prices_positive"))
    frame = case.frame.copy()
    frame.index = frame.index[::-1] + 1000  # not a RangeIndex
    report = evaluate_frame(frame, "market_data_1m", now=case.now)
    mask = report.quarantine_mask()
    assert mask.index.equals(frame.index) and int(mask.sum()) == 2
    assert (frame.loc[mask, "low"] == 0).all()
    assert report.quarantine_mask(severity="warn").sum() == 0


def test_naive_timestamps_are_read_as_utc():
    case = market_case("market_data_1m")
    naive = case.frame.assign(timestamp=case.frame["timestamp"].dt.tz_localize(None))
    report = evaluate_frame(naive, "market_data_1m", now=case.now)
    assert report.passed and not report.failed


def test_missing_columns_and_sources_are_skipped_not_failed():
    case = market_case("market_data_15m")
    report = evaluate_frame(case.frame.drop(columns="mx_evidence"), "market_data_15m", now=case.now)
    skipped = {r.name: r.skipped for r in report.skipped}
    assert set(skipped) == {"ck_market_data_15m_mx_evidence_range", "market_data_15m_rollup_consistent"}
    assert "market_data_1m" in skipped["market_data_15m_rollup_consistent"]
    assert report.passed


def test_rollup_without_source_bars_fails():
    case = market_case("market_data_1h")
    source = case.sources["market_data_1m"]
    trimmed = {"market_data_1m": source[source["timestamp"] >= START + pd.Timedelta(hours=1)]}
    report = evaluate_frame(case.frame, "market_data_1h", now=case.now, sources=trimmed)
    result = report["market_data_1h_rollup_consistent"]
    assert result.unexpected_count == len(SYMBOLS)
    assert result.details == {"without_source_bars": len(SYMBOLS)}


def test_empty_frame():
    frame = market_case("market_data_1m").frame.iloc[:0]
    for evaluate in (evaluate_frame, validate_frame):
        report = evaluate(frame, "market_data_1m")
        assert report.passed and report.rows == 0 and not report.failed


def test_ge_suite_is_built_once_per_process():
    from tis_pipeline.quality import ge

    assert ge.suite_for("modules") is ge.suite_for("modules")
    assert ge.context() is ge.context()
    suite = ge.suite_for("trading_plans")
    types = {e.expectation_type for e in suite.expectations}
    assert {
        "expect_column_values_to_be_between",
        "expect_column_values_to_be_in_set",
        "expect_column_values_to_not_be_null",
    } <= types


def _pandas_rolling_mad_of_past(ret, starts, window, min_periods):
    """The jump rule's rolling MAD as it was computed: pandas, series by series (the reference)."""
    out = np.full(len(ret), np.nan)
    for start, end in zip(starts, np.append(starts[1:], len(ret)), strict=True):
        past = pd.Series(ret[start:end]).shift(1)
        center = past.rolling(window, min_periods=min_periods).median()
        out[start:end] = (
            (past - center.shift(1)).abs().rolling(window, min_periods=min_periods).median().to_numpy()
        )
    return out


@pytest.mark.parametrize("window, min_periods", [(60, 30), (5, 1), (4, 4), (7, 3)])
def test_rolling_mad_in_one_pass_equals_pandas_series_by_series(window, min_periods):
    from tis_pipeline.quality.evaluate import _rolling_mad_of_past

    rng = np.random.default_rng(window * 100 + min_periods)
    lengths = [1, 2, window - 1, window, window + 1, 3 * window, 500, 17, 1000]
    ret = rng.standard_t(3, sum(lengths)) * 1e-3
    ret[rng.random(len(ret)) < 0.05] = np.nan  # missing returns (gaps, first bar of a series)
    ret[rng.random(len(ret)) < 0.05] = 0.0  # ties: even counts take the mean of the two middle values
    starts = np.cumsum([0, *lengths[:-1]])
    ret[starts] = np.nan
    got = _rolling_mad_of_past(ret, starts, window, min_periods)
    want = _pandas_rolling_mad_of_past(ret, starts, window, min_periods)
    np.testing.assert_array_equal(got, want)  # bit for bit, NaNs in the same places
    assert len(_rolling_mad_of_past(np.array([]), np.array([], dtype=int), window, min_periods)) == 0


def test_key_and_series_rules_on_rows_in_any_order():
    """The key rule read off the rows in key order equals DataFrame.duplicated over the complete rows, and the
    series rules do not depend on the rows' order (a frame of days one after the other is not sorted by
    time)."""
    bars = market_1m()
    extra = bars.iloc[[3, 3, 10, 40]].copy()
    extra.loc[extra.index[2], "symbol"] = None
    extra.loc[extra.index[3], "timestamp"] = pd.NaT
    frame = pd.concat([bars, extra], ignore_index=True)
    now = bars["timestamp"].max()
    for order in (np.arange(len(frame)), np.random.default_rng(5).permutation(len(frame))):
        shuffled = frame.iloc[order].reset_index(drop=True)
        report = evaluate_frame(shuffled, "market_data_1m", now=now)
        key = rule("market_data_1m_key_unique")
        complete = shuffled[["symbol", "timestamp"]].notna().all(axis=1)
        want = complete & shuffled[["symbol", "timestamp"]].where(complete).duplicated(keep=False)
        assert report[key.name].unexpected_count == 3
        np.testing.assert_array_equal(report[key.name].mask.to_numpy(), want.to_numpy())
        pd.testing.assert_series_equal(report[key.name].mask, failing_mask(shuffled, key, now=now))
        for name in (
            "market_data_1m_no_gaps",
            "market_data_1m_no_price_jumps",
            "market_data_1m_close_not_stale",
        ):
            base = evaluate_frame(frame, "market_data_1m", now=now)[name].mask.to_numpy()
            np.testing.assert_array_equal(report[name].mask.to_numpy(), base[order], err_msg=name)
