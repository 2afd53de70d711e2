"""The sharded ``dsi`` (plan, symbol-shard steps, finish) against the one-step asset: the very same tables
(every bar's mx_* columns, the rollups' evidence, events, evidence, states) and out-of-sample figures, for
any number of shards; a failed shard leaves the tables as they were. And how a plan cuts the symbols."""

import dagster as dg
import numpy as np
import pytest
import sqlalchemy as sa

from tis_pipeline.dsi import shards
from tis_pipeline.dsi.assets import HandoffIOManager, build_sharded_dsi, dsi
from tis_pipeline.market_data.assets import market_data_1h, market_data_1m, market_data_15m
from tis_pipeline.market_data.partitions import range_tags
from tis_pipeline.market_data.sources import BarSource
from tis_pipeline.pg.engine import engine
from tis_pipeline.resources import PostgresResource
from tis_pipeline_tests.dsi.test_assets import digests
from tis_pipeline_tests.support.kept_values import (
    assert_kept_and_scored,
    kept_rows,
    plant_values_dsi_does_not_write,
)

pytestmark = pytest.mark.pg
MARKET = [market_data_1m, market_data_15m, market_data_1h]
SYMBOLS = ["AAA", "BBB", "CCC", "DDD", "EEE"]
FIRST, LAST = "2024-03-04", "2024-03-05"


def _resources(url):
    return {
        "db": PostgresResource(url=url),
        "bars": BarSource(source="synthetic", symbols=SYMBOLS, seed=6),
    }


def _score(url, assets_def):
    return _score_range(url, assets_def, FIRST, LAST)


def _score_range(url, assets_def, first, last):
    result = dg.materialize(
        [*(a.to_source_assets()[0] for a in MARKET), assets_def],
        resources=_resources(url),
        tags=range_tags(first, last),
        raise_on_error=False,
    )
    meta = {
        m.asset_key.to_user_string(): m.metadata
        for m in result.get_asset_materialization_events()
        for m in [m.materialization]
    }
    return result, meta


def _scratch(url):
    with engine(url).connect() as conn:
        return (
            conn.execute(
                sa.text(
                    "SELECT relname FROM pg_class "
                    "WHERE relkind = 'r' AND relname ~ '^market_data_1m_p[0-9]{8}_'"
                )
            )
            .scalars()
            .all()
        )


def test_sharded_dsi_gives_the_one_step_tables_and_figures(migrated_database_url, monkeypatch):
    url = migrated_database_url
    monkeypatch.setenv("TIS_DSI_CHUNK_BARS", "3000")  # two symbols a piece: pieces inside the shards too
    assert dg.materialize(MARKET, resources=_resources(url), tags=range_tags(FIRST, LAST)).success
    found = {}
    for name, assets_def in (
        ("one step", dsi),
        ("1 shard", build_sharded_dsi(1)),
        ("2 shards", build_sharded_dsi(2)),
        ("3 shards", build_sharded_dsi(3)),
        ("4 shards", build_sharded_dsi(4)),  # more shards than pieces: shards cut pieces in two
    ):
        result, meta = _score(url, assets_def)
        assert result.success, name
        evidence = meta["dsi_evidence"]
        found[name] = (
            digests(url),
            evidence["out_of_sample"].value,
            evidence["bars_scored"].value,
            evidence["confirmed_share"].value,
            meta["anomaly_events"]["dagster/row_count"].value,
        )
        checks = result.get_asset_check_evaluations()
        assert checks and all(c.passed for c in checks if c.severity == dg.AssetCheckSeverity.ERROR), name
        assert _scratch(url) == [], name
        if name != "one step":
            steps = {e.step_key for e in result.all_events if e.step_key}
            shard_steps = {s for s in steps if s.startswith("dsi.dsi_shard[")}
            assert len(shard_steps) == int(name[0]), steps
            assert evidence["symbol_shards"].value == int(name[0])
    reference = found["one step"]
    assert reference[2] > 5 * 2 * 1400 and reference[1]["n"] > 0 and reference[4] > 0
    for name, figures in found.items():
        assert figures == reference, name


def test_a_failed_shard_leaves_the_tables_as_they_were(migrated_database_url, monkeypatch):
    """Shard 1 of 2 fails after its rows are in the run's day tables: the run fails before anything is
    swapped in, every table holds what it held; the next sharded run drops the dead run's day tables and
    writes the one-step run's rows."""
    url = migrated_database_url
    assert dg.materialize(MARKET, resources=_resources(url), tags=range_tags(FIRST, FIRST)).success
    result, _ = _score_range(url, dsi, FIRST, FIRST)
    assert result.success
    before = digests(url)
    score_shard = shards.score_shard

    def dies_after_writing(engine_, plan, k, config, buckets):
        done = score_shard(engine_, plan, k, config, buckets)
        if k == 1:
            raise RuntimeError("shard 1 killed after writing its rows")
        return done

    monkeypatch.setattr(shards, "score_shard", dies_after_writing)
    failed, _ = _score_range(url, build_sharded_dsi(2), FIRST, FIRST)
    assert not failed.success
    assert digests(url) == before
    left = _scratch(url)
    assert len(left) == 1, left
    with engine(url).connect() as conn:
        assert conn.execute(sa.text(f'SELECT count(*) FROM "{left[0]}"')).scalar_one() > 1000
    monkeypatch.setattr(shards, "score_shard", score_shard)
    again, _ = _score_range(url, build_sharded_dsi(2), FIRST, FIRST)
    assert again.success
    assert _scratch(url) == []
    assert digests(url) == before


def test_shards_cut_the_symbols_into_runs_of_about_equal_bars():
    bars = np.array([10, 10, 10, 10, 10, 10, 10, 10])
    assert shards._cuts(bars, 2, preferred=[]) == [0, 4, 8]
    assert shards._cuts(bars, 2, preferred=[3, 6]) == [0, 3, 8]  # on a piece boundary when it can
    assert shards._cuts(bars, 3, preferred=[4]) == [0, 3, 5, 8]  # too few boundaries: any rank
    assert shards._cuts(bars, 20, preferred=[]) == list(range(9))  # at most one shard per symbol
    assert shards._cuts(np.array([100, 1, 1, 1]), 2, preferred=[]) == [0, 1, 4]


def test_sharded_days_keep_every_value_dsi_does_not_write(migrated_database_url):
    """As the one-step asset does (test_assets.py, ``support.kept_values``): values its floats cannot prove (a
    shard's rows made equal to the table's), module columns (carried by the finish step), a day whose rows sit
    in the DEFAULT partition: all come out exactly as they were, every bar scored, nothing of the run's tables
    left."""
    url = migrated_database_url
    assert dg.materialize(MARKET, resources=_resources(url), tags=range_tags(FIRST, FIRST)).success
    planted = plant_values_dsi_does_not_write(url, FIRST, odd_symbol="AAA", learning_symbol="EEE")
    before = kept_rows(url)
    result, meta = _score_range(url, build_sharded_dsi(2), FIRST, LAST)
    assert result.success and meta["dsi_evidence"]["symbol_shards"].value == 2
    assert_kept_and_scored(url, planted, before)
    assert len(before) > 5 * 1400
    assert _scratch(url) == []


def test_the_plan_step_removes_the_handoff_files_of_ended_runs_only(tmp_path):
    """Only a run's finish step removes its handoff directory, so a failed or killed run's plan and shard
    results would stay forever: the next plan step removes those of runs that ended, never a live run's."""
    handoff = HandoffIOManager(base_dir=str(tmp_path))
    for run_id in ("ended-a", "live", "ended-b"):
        (tmp_path / run_id / "dsi.dsi_plan").mkdir(parents=True)
        (tmp_path / run_id / "dsi.dsi_plan" / "plan").write_bytes(b"x" * 10)
    (tmp_path / "stray-file").write_bytes(b"")  # not a run's directory: left alone
    assert handoff.forget_ended_runs(None, alive=lambda run_id: run_id == "live") == ["ended-a", "ended-b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live", "stray-file"]
    assert (tmp_path / "live" / "dsi.dsi_plan" / "plan").read_bytes() == b"x" * 10
    assert handoff.forget_ended_runs(None, alive=lambda run_id: False) == ["live"]
    assert HandoffIOManager(base_dir=str(tmp_path / "none")).forget_ended_runs(None, lambda r: False) == []


def test_the_plan_waits_for_every_bar_table():
    """The shards read only the 1-minute bars, but the plan (and with it every shard) waits for all three bar
    tables: scoring beside the rollups bought nothing on two cores (bench/RESULTS.md), and the finish writes
    the rollups' evidence."""
    graph = build_sharded_dsi(2).node_def
    assert isinstance(graph, dg.GraphDefinition)
    fed = {(m.graph_input_name, m.maps_to.node_name) for m in graph.input_mappings}
    assert fed == {
        ("market_data_1m", "dsi_plan"),
        ("market_data_15m", "dsi_plan"),
        ("market_data_1h", "dsi_plan"),
    }
