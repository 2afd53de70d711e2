"""The catalog: every table asset carries its data-model columns (type, nullability, constraints, the seed's
comment), its table name, an owner and tags of its domain, and a reference to its code."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from tis_pipeline import catalog
from tis_pipeline.definitions import defs
from tis_pipeline_tests.test_schema import DATA_MODEL, SEED_TABLES, parse_seed

TABLE_ASSETS = (*SEED_TABLES, "market_data_15m", "market_data_1h")


@pytest.fixture(scope="module")
def graph():
    return defs.resolve_asset_graph()


def test_the_parser_reads_every_column_of_the_seed_as_the_schema_tests_do():
    """Two parsers of the same text (the schema tests' and the catalog's) agree column by column."""
    text = DATA_MODEL.read_text(encoding="utf-8")
    seed, parsed = parse_seed(text), catalog.parse_data_model(text)
    assert set(seed.tables) <= set(parsed)
    for name, table in seed.tables.items():
        ours = parsed[name]
        assert [c.name for c in ours.columns] == [c.name for c in table.columns]
        assert ours.primary_key == table.primary_key
        for theirs, mine in zip(table.columns, ours.columns, strict=True):
            assert mine.not_null == theirs.not_null, (name, mine.name)
            assert mine.comment == theirs.comment, (name, mine.name)
            assert (mine.references is None) == (theirs.references is None), (name, mine.name)
            if theirs.references:
                assert mine.references == f"{theirs.references[0]}({theirs.references[1]})"


def test_the_parser_on_a_small_model():
    text = (
        "```sql\nCREATE TABLE t (\n    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),\n"
        "    -- Section A\n    a DECIMAL(3, 2) NOT NULL, -- 0-1\n"
        "    s VARCHAR(10) DEFAULT 'x--y', -- 'p', 'q'\n"
        "    r UUID REFERENCES other(id)\n);\n```\n"
    )
    table = catalog.parse_data_model(text)["t"]
    assert [c.name for c in table.columns] == ["id", "a", "s", "r"]
    assert table.primary_key == ("id",)
    a, s = table.column("a"), table.column("s")
    assert (a.type, a.not_null, a.comment, a.section) == ("DECIMAL(3,2)", True, "0-1", "Section A")
    assert (s.default, s.comment, s.not_null) == ("'x--y'", "'p', 'q'", False)
    assert table.column("r").constraints == ("REFERENCES other(id)",)
    assert table.column("id").constraints == ("PRIMARY KEY", "DEFAULT gen_random_uuid()")
    with pytest.raises(ValueError, match="unknown type"):
        catalog.parse_data_model("```sql\nCREATE TABLE u (\n    x MONEY\n);\n```\n")


def test_every_table_asset_has_its_column_schema_table_name_owner_and_tags(graph):
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert set(TABLE_ASSETS) <= keys
    tables = catalog.tables()
    for name in TABLE_ASSETS:
        node = graph.get(dg.AssetKey(name))
        schema = node.metadata["dagster/column_schema"]
        assert isinstance(schema, dg.TableSchema)
        source = tables[name]
        assert [c.name for c in schema.columns] == [c.name for c in source.columns]
        for column, seeded in zip(schema.columns, source.columns, strict=True):
            assert column.type == seeded.type
            assert column.constraints.nullable is not seeded.not_null
            assert column.description == (seeded.comment or None)
        assert node.metadata["dagster/table_name"] == f"public.{name}"
        domain = catalog.DOMAINS[node.group_name]
        assert node.owners == [domain.owner]
        assert node.tags["domain"] == node.group_name
        assert node.tags["layer"] == catalog.LAYERS[name]
        references = node.metadata["dagster/code_references"].code_references
        assert references and all(Path(r.file_path).is_file() for r in references)
        assert all(Path(r.file_path).name == "assets.py" for r in references)


def test_trading_plans_columns_say_what_the_seed_says(graph):
    schema = graph.get(dg.AssetKey("trading_plans")).metadata["dagster/column_schema"]
    columns = {c.name: c for c in schema.columns}
    assert len(columns) == 30
    assert columns["entry_conditions"].description == "Trigger conditions"
    assert columns["position_size"].description == "% of portfolio"
    assert columns["direction"].type == "VARCHAR(10)" and not columns["direction"].constraints.nullable
    assert "CHECK ck_trading_plans_direction_enum: direction in {long, short, neutral} (NULL allowed)" in (
        columns["direction"].constraints.other
    )
    assert columns["plan_id"].constraints.unique and "PRIMARY KEY" in columns["plan_id"].constraints.other
    assert "REFERENCES modules(module_id)" in columns["module_id"].constraints.other
    assert columns["signal_strength"].tags == {"section": "Core Trading Plan"}


def test_the_rollups_have_the_columns_of_market_data_1m_and_a_composite_key(graph):
    bars = graph.get(dg.AssetKey("market_data_1m")).metadata["dagster/column_schema"]
    for name in ("market_data_15m", "market_data_1h"):
        schema = graph.get(dg.AssetKey(name)).metadata["dagster/column_schema"]
        assert [(c.name, c.type) for c in schema.columns] == [(c.name, c.type) for c in bars.columns]
        assert schema.constraints.other == ["PRIMARY KEY (symbol, timestamp)"]
        symbol = next(c for c in schema.columns if c.name == "symbol")
        assert not symbol.constraints.nullable and not symbol.constraints.unique  # part of a two-column key


def test_the_catalog_leaves_everything_else_of_the_assets_alone(graph):
    node = graph.get(dg.AssetKey("market_data_1m"))
    assert node.group_name == "market_data" and node.partitions_def is not None
    assert node.backfill_policy is not None
    assert {"postgres", "pandas"} <= set(node.kinds)
    assert node.description and "One-minute OHLCV bars" in node.description
