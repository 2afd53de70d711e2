import os
import subprocess
import sys

import dagster as dg

from tis_pipeline.definitions import defs
from tis_pipeline.settings import PROJECT_ROOT


def test_definitions_load_and_every_job_resolves():
    dg.Definitions.validate_loadable(defs)
    jobs = [job.name for job in defs.jobs]
    assert {
        "daily_partitioned_job",
        "stale_days_checks_job",
        "retention_job",
        "dagster_storage_prune_job",
    } <= set(jobs)
    for name in jobs:
        assert defs.resolve_job_def(name).name == name
    schedule_names = {s.name for s in defs.schedules}
    assert {
        "daily_partitioned_schedule",
        "stale_days_checks_schedule",
        "retention_schedule",
    } <= schedule_names
    assert {s.name for s in defs.sensors} == {
        "market_data_files_sensor",
        "dead_run_sensor",
        "market_data_freshness_sensor",
    }
    checks = {(k.asset_key.to_user_string(), k.name) for k in defs.resolve_asset_graph().asset_check_keys}
    assert {
        ("market_data_15m", "source_changes_rolled_up"),
        ("market_data_1h", "source_changes_rolled_up"),
        ("market_data_1m", "expected_symbols_present"),
        ("dsi_evidence", "scores_follow_their_bars"),
    } <= checks
    assert any(asset == "market_data_1m" and "freshness" in name for asset, name in checks)
    # Great Expectations' step of market_data_1m, beside the asset's own checks and in the daily job
    assert {
        ("market_data_1m", "gx_market_data_1m_no_gaps"),
        ("market_data_1m", "market_data_1m_no_gaps"),
    } <= checks
    daily = defs.resolve_job_def("daily_partitioned_job").asset_layer.asset_graph.asset_check_keys
    assert dg.AssetCheckKey(dg.AssetKey("market_data_1m"), "gx_market_data_1m_no_gaps") in daily


# The one asset that is not a seed table: the ecosystem report writes no table, its figures are its
# materialization's metadata (trading_day/assets.py). It has no column schema or table name to catalogue, and
# says what it is by its ``layer`` tag.
NOT_TABLES = {"ecosystem_report": "report"}


def test_every_table_asset_is_catalogued():
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if key.to_user_string() in NOT_TABLES:
            assert node.tags.get("layer") == NOT_TABLES[key.to_user_string()], key
            assert "dagster/column_schema" not in node.metadata and "dagster/table_name" not in node.metadata
            assert node.owners and node.tags.get("domain") == node.group_name, key
            assert node.partitions_def is None, key
            continue
        assert isinstance(node.metadata.get("dagster/column_schema"), dg.TableSchema), key
        assert node.metadata["dagster/table_name"] == f"public.{key.to_user_string()}"
        assert node.owners and {"domain", "layer"} <= set(node.tags), key


def test_asset_keys_are_the_seed_table_names():
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"market_data_1m", "market_data_15m", "market_data_1h"} <= keys


def test_dagster_definitions_validate_cli(tmp_path):
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path),
        "TIS_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-m", "tis_pipeline.definitions"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Validation successful" in proc.stdout + proc.stderr
