"""Great Expectations' step of market_data_1m: registered beside the asset's own checks, run in the asset's
runs (one partition or a range), over exactly the rows the run wrote, stored with a Data Docs page."""

from __future__ import annotations

import html
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from tis_pipeline.definitions import defs
from tis_pipeline.market_data.assets import market_data_1m
from tis_pipeline.market_data.definitions import GX_PREFIX, market_data_1m_gx_checks
from tis_pipeline.market_data.partitions import range_tags
from tis_pipeline.market_data.sources import BarSource
from tis_pipeline.pg.engine import engine
from tis_pipeline.quality.rules import rules_for
from tis_pipeline.resources import PostgresResource

pytestmark = pytest.mark.pg

LEFT_OUT = {"market_data_1m_source_files_readable", "market_data_1m_values_fit_scale"}


def _run(database_url: str, symbols: list[str], first: str, last: str) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [market_data_1m, *market_data_1m_gx_checks],
        resources={
            "db": PostgresResource(url=database_url),
            "bars": BarSource(source="synthetic", symbols=symbols, seed=11),
        },
        tags=range_tags(first, last),
    )


def _written(result: dg.ExecuteInProcessResult) -> int:
    return result.asset_materializations_for_node("market_data_1m")[0].metadata["rows_written_by_run"].value


def _table_rows(database_url: str, first: str, end: str) -> int:
    with engine(database_url).connect() as conn:
        return conn.execute(
            sa.text('SELECT count(*) FROM market_data_1m WHERE "timestamp" >= :a AND "timestamp" < :b'),
            {"a": first, "b": end},
        ).scalar_one()


def test_the_gx_checks_are_registered_beside_the_assets_own_and_in_the_daily_job():
    keys = defs.resolve_asset_graph().asset_check_keys
    checks = {k.name for k in keys if k.asset_key.path == ["market_data_1m"]}
    judged = [r.name for r in rules_for("market_data_1m") if r.name not in LEFT_OUT]
    assert {GX_PREFIX + name for name in judged} <= checks
    assert {r.name for r in rules_for("market_data_1m")} <= checks  # the in-step checks keep their names
    job = defs.resolve_job_def("daily_partitioned_job")
    in_job = {k.name for k in job.asset_layer.asset_graph.asset_check_keys}
    assert {GX_PREFIX + name for name in judged} <= in_job
    # `tis backfill` runs the job with an asset selection: the GE step comes with market_data_1m
    subset = job.get_subset(asset_selection={dg.AssetKey("market_data_1m")})
    assert "market_data_1m_gx_checks" in subset.graph.node_names()
    gx_specs = list(market_data_1m_gx_checks[0].check_specs)
    assert gx_specs and not any(s.blocking for s in gx_specs)  # the asset's own checks block; these report


def test_a_range_run_judges_with_gx_exactly_the_rows_it_wrote_and_again_the_same(database_url):
    """Another source's symbol in the same days stays out of the GE step's rows; the verdicts and counts are
    the in-step (pandas) checks' of the same rules; a second run of the same range gives the same."""
    first, last, end = "2024-05-06", "2024-05-07", "2024-05-08"
    other = _run(database_url, ["ZZZ"], first, last)
    assert other.success
    results = []
    for _ in range(2):
        result = _run(database_url, ["AAA", "BBB"], first, last)
        assert result.success
        results.append(result)
        written = _written(result)
        assert 0 < written < _table_rows(database_url, first, end)  # ZZZ's rows are in the days too
        evaluations = {c.check_name: c for c in result.get_asset_check_evaluations()}
        judged = [r for r in rules_for("market_data_1m") if r.name not in LEFT_OUT]
        for rule in judged:
            gx, own = evaluations[GX_PREFIX + rule.name], evaluations[rule.name]
            assert gx.metadata["engine"].value == "great_expectations", rule.name
            assert own.metadata["engine"].value == "pandas"
            assert gx.metadata["partition_start"].value.startswith(first)
            assert gx.metadata["partition_end"].value.startswith(end)
            if "skipped" in own.metadata or "skipped" in gx.metadata:
                continue
            assert gx.metadata["rows_checked"].value == written, rule.name
            assert gx.passed == own.passed, rule.name
            assert gx.metadata["failing_rows"].value == own.metadata["failing_rows"].value, rule.name
        gaps = evaluations[GX_PREFIX + "market_data_1m_no_gaps"]
        page = Path(gaps.metadata["gx_validation_page"].value)
        assert page.is_file()
        text = html.unescape(page.read_text())
        assert "market_data_1m_no_gaps (expect_column_values_to_be_between)" in text
        assert "market_data_1m_key_unique (expect_compound_columns_to_be_unique)" in text
    first_run, second_run = (
        {
            c.check_name: (c.passed, c.metadata["failing_rows"].value)
            for c in r.get_asset_check_evaluations()
            if c.check_name.startswith(GX_PREFIX)
        }
        for r in results
    )
    assert first_run == second_run
    assert _written(results[0]) == _written(results[1])


def test_the_gx_step_judges_a_range_in_pieces_of_whole_symbols_with_the_verdicts_of_one_piece(
    database_url, monkeypatch
):
    """TIS_CHECK_PIECE_ROWS=1: one piece a symbol, one GX result and page each; every rule's verdict, counts,
    (symbol, day) counts and details equal those of the range judged at once."""
    first, last = "2024-05-13", "2024-05-14"
    verdicts = {}
    for piece_rows in ("10000000", "1"):
        monkeypatch.setenv("TIS_CHECK_PIECE_ROWS", piece_rows)
        result = _run(database_url, ["AAA", "BBB", "CCC"], first, last)
        assert result.success
        gx = [c for c in result.get_asset_check_evaluations() if c.check_name.startswith(GX_PREFIX)]
        keys = ("passed", "rows_checked", "failing_rows", "failing_symbol_days", "gaps", "missing_minutes")
        verdicts[piece_rows] = {
            c.check_name: {
                "passed": c.passed,
                **{k: c.metadata[k].value for k in keys[1:] if k in c.metadata},
                "sample": c.metadata["failing_rows_sample"].value.records
                if "failing_rows_sample" in c.metadata
                else None,
            }
            for c in gx
        }
        pages = {c.check_name: c.metadata["gx_pages"].value for c in gx if "gx_pages" in c.metadata}
        if piece_rows == "1":
            assert pages and all(len(p) == 3 for p in pages.values())  # a page a symbol
            assert all(Path(c.metadata["gx_validation_page"].value).is_file() for c in gx)
        else:
            assert not pages  # one piece: its own page, as before
    assert verdicts["1"] == verdicts["10000000"]
    gaps = verdicts["1"][GX_PREFIX + "market_data_1m_no_gaps"]
    assert gaps["rows_checked"] == _written(result) > 0
    assert not gaps["passed"] and gaps["failing_symbol_days"] >= 3  # the synthetic source leaves minutes out
