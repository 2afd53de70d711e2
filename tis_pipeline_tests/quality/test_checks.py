"""Asset checks from the registry: specs, results with their metadata, and both ways of running them."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest

from tis_pipeline.quality.checks import CheckInput, build_checks, check_results, check_specs_for
from tis_pipeline.quality.evaluate import evaluate_frame
from tis_pipeline.quality.ge import validate_frame
from tis_pipeline.quality.rules import rules_for
from tis_pipeline_tests.quality.frames import START, SYMBOLS, market_1m, market_case


def _bad_bars() -> pd.DataFrame:
    """Two days of two symbols; low = 0 on a few bars (an error) and one gap (a warning)."""
    bars = market_1m(minutes=2000)
    bad = bars.index[bars["timestamp"].dt.minute.eq(7) & bars["timestamp"].dt.hour.isin([1, 2])]
    bars.loc[bad, "low"] = 0.0
    first = bars.index[bars["symbol"].eq("BBB")][1500:1502]
    return bars.drop(index=first).reset_index(drop=True)


def test_specs_one_per_rule_errors_blocking_warnings_not():
    specs = check_specs_for("market_data_1m")
    rules = rules_for("market_data_1m")
    assert sorted(s.name for s in specs) == sorted(r.name for r in rules)
    severities = [s.metadata["severity"] for s in specs]
    assert severities == sorted(severities, key=lambda s: s != "error")  # errors first
    for spec in specs:
        assert spec.asset_key == dg.AssetKey("market_data_1m")
        assert spec.blocking == (spec.metadata["severity"] == "error")
    assert check_specs_for("modules", asset=["db", "modules"])[0].asset_key == dg.AssetKey(["db", "modules"])


def test_check_results_carry_rule_range_counts_and_failing_rows():
    bars = _bad_bars()
    report = evaluate_frame(bars, "market_data_1m", now=bars["timestamp"].max())
    results = {
        r.check_name: r for r in check_results(report, dg.PartitionKeyRange("2024-03-04", "2024-03-05"))
    }
    assert set(results) == {r.name for r in rules_for("market_data_1m")}

    positive = results["ck_market_data_1m_prices_positive"]
    assert not positive.passed and positive.severity == dg.AssetCheckSeverity.ERROR
    md = positive.metadata
    assert "positive" in md["rule"].value and md["partition_start"].value == "2024-03-04"
    assert md["partition_end"].value == "2024-03-05"
    assert md["failing_rows"].value == 2 * 2 * 2  # 2 hours x 2 days x 2 symbols
    assert md["failing_share"].value == pytest.approx(8 / len(bars))
    by_day = md["failing_by_symbol_day"].value
    assert [(r.data["symbol"], r.data["day"], r.data["failing"]) for r in by_day.records] == [
        (s, d, 2) for s in SYMBOLS for d in ("2024-03-04", "2024-03-05")
    ]
    assert {c.name for c in md["failing_by_symbol_day"].schema.columns} == {
        "symbol",
        "day",
        "rows",
        "failing",
        "share",
    }
    sample = md["failing_rows_sample"].records
    assert len(sample) == 8
    first = sample[0].data
    assert (first["symbol"], first["timestamp"], first["low"]) == (
        "AAA",
        (START + pd.Timedelta(minutes=67)).isoformat(),
        0.0,
    )

    gaps = results["market_data_1m_no_gaps"]
    assert not gaps.passed and gaps.severity == dg.AssetCheckSeverity.WARN
    assert gaps.metadata["missing_minutes"].value == 2
    assert gaps.metadata["failing_by_symbol_day"].value.records[0].data["missing_minutes"] == 2.0

    clean = results["ck_market_data_1m_volume_nonnegative"]
    assert clean.passed and clean.metadata["failing_rows"].value == 0
    assert "failing_rows_sample" not in clean.metadata


def test_range_defaults_to_the_frames_timestamps_and_skips_are_explained():
    case = market_case("market_data_15m")
    report = validate_frame(case.frame, "market_data_15m", now=case.now)  # no 1m source: rollup skipped
    results = {r.check_name: r for r in check_results(report)}
    rollup = results["market_data_15m_rollup_consistent"]
    assert rollup.passed and "market_data_1m" in rollup.metadata["skipped"].value
    assert rollup.metadata["partition_start"].value == case.frame["timestamp"].min().isoformat()
    assert results["ck_market_data_15m_high_bounds"].metadata["engine"].value == "great_expectations"


def test_an_asset_yields_check_results_from_the_frame_it_wrote():
    bars = _bad_bars()

    @dg.asset(name="market_data_1m", check_specs=check_specs_for("market_data_1m"))
    def market_data_1m():
        report = evaluate_frame(bars, "market_data_1m", now=bars["timestamp"].max())
        yield dg.MaterializeResult(metadata={"rows": len(bars)})
        yield from check_results(report, ("2024-03-04", "2024-03-05"))

    @dg.asset(deps=[market_data_1m])
    def downstream():
        return 1

    result = dg.materialize([market_data_1m, downstream], raise_on_error=False)
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert len(evaluations) == len(rules_for("market_data_1m"))
    assert not evaluations["ck_market_data_1m_prices_positive"].passed
    # a failed blocking check stops what depends on the asset
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert materialized == {dg.AssetKey("market_data_1m")}
    assert not result.success


def test_build_checks_reads_once_and_honours_subsets():
    case = market_case("market_data_1h")
    calls = []

    def loader(context: dg.AssetCheckExecutionContext) -> CheckInput:
        calls.append(context.op_def.name)
        return CheckInput(
            frame=case.frame, sources=case.sources, partition_range=("2024-03-04", "2024-03-05"), now=case.now
        )

    @dg.asset(name="market_data_1h")
    def market_data_1h():
        return None

    checks = build_checks("market_data_1h", "market_data_1h", loader, engine="great_expectations")
    result = dg.materialize([market_data_1h, *checks])
    evaluations = result.get_asset_check_evaluations()
    assert result.success and len(calls) == 1
    assert {e.check_name for e in evaluations} == {r.name for r in rules_for("market_data_1h")}
    assert all(e.passed for e in evaluations)

    one = dg.AssetCheckKey(dg.AssetKey("market_data_1h"), "market_data_1h_rollup_consistent")
    job = dg.Definitions(assets=[market_data_1h], asset_checks=checks).resolve_implicit_global_asset_job_def()
    subset = job.get_subset(asset_check_selection={one}, asset_selection=set())
    evaluations = subset.execute_in_process().get_asset_check_evaluations()
    assert [e.check_name for e in evaluations] == ["market_data_1h_rollup_consistent"]


def test_check_names_are_valid_and_defs_load():
    checks = []
    for table in ("modules", "market_data_1m", "market_data_15m"):
        checks += build_checks(
            table, table, lambda context: pd.DataFrame()
        )  # raises on an invalid check name
    dg.Definitions.validate_loadable(dg.Definitions(asset_checks=checks))
