"""The one Definitions object: the domains' definitions merged with the shared resources, and the catalog.

The domains' modules are imported, not their ``defs``: Dagster's loader wants one Definitions at module scope.
Every table asset then gets, in one place rather than in each domain, what a Dagster user looks for on its
page: ``dagster/column_schema`` (every column of its table in ``docs/data-model.md``, with type, nullability,
constraints and the seed's comment), ``dagster/table_name``, an owner and ``domain``/``layer`` tags per domain
(``tis_pipeline.catalog``), and a reference to the code that writes it.
"""

import warnings

import dagster as dg

from tis_pipeline import catalog
from tis_pipeline.dsi import definitions as dsi
from tis_pipeline.market_data import definitions as market_data
from tis_pipeline.ops import definitions as ops
from tis_pipeline.quality.rules import rules_for
from tis_pipeline.resources import shared_resources
from tis_pipeline.trading_day import definitions as trading_day


def column_schema(table: catalog.Table) -> dg.TableSchema:
    """The table's columns as the data model declares them; a column's CHECK constraints (the quality
    registry's, ``ck_<table>_<column>_…``) are listed beside its key, default and references."""
    checks: dict[str, list[str]] = {}
    for rule in rules_for(table.name):
        if rule.is_db_check:
            checks.setdefault(rule.columns[0], []).append(f"CHECK {rule.name}: {rule.description}")
    single_key = len(table.primary_key) == 1
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=column.name,
                type=column.type,
                description=column.comment or None,
                constraints=dg.TableColumnConstraints(
                    nullable=not column.not_null,
                    unique=single_key and column.primary_key,
                    other=[*column.constraints, *checks.get(column.name, [])],
                ),
                tags={"section": column.section} if column.section else None,
            )
            for column in table.columns
        ],
        constraints=dg.TableConstraints(other=[f"PRIMARY KEY ({', '.join(table.primary_key)})"])
        if table.primary_key
        else None,
    )


def catalogued(spec: dg.AssetSpec) -> dg.AssetSpec:
    """``spec`` with its table's column schema, name, owner and tags (unchanged if it is not a table)."""
    table = catalog.tables().get(spec.key.to_user_string())
    if table is None:
        return spec
    domain = catalog.DOMAINS.get(spec.group_name or "")
    tags = {"layer": catalog.LAYERS[table.name]} if table.name in catalog.LAYERS else {}
    if domain is not None:
        tags["domain"] = domain.group
    return spec.merge_attributes(
        metadata={
            "dagster/column_schema": column_schema(table),
            "dagster/table_name": catalog.table_name(table.name),
            "data_model": dg.MetadataValue.text(catalog.describe_table(table)),
        },
        owners=[domain.owner] if domain is not None else [],
        tags=tags,
    )


def _with_catalog(definitions: dg.Definitions) -> dg.Definitions:
    """``definitions`` with every table asset catalogued and every asset's code references (the file and line
    of the function that materializes it)."""
    with warnings.catch_warnings():  # both APIs are Beta in dagster 1.13: no BetaWarning at every load
        warnings.simplefilter("ignore", dg.BetaWarning)
        warnings.simplefilter("ignore", dg.PreviewWarning)
        references = {
            spec.key: spec.metadata["dagster/code_references"]
            for assets in dg.with_source_code_references(list(definitions.assets or []))
            if isinstance(assets, dg.AssetsDefinition)
            for spec in assets.specs
            if "dagster/code_references" in spec.metadata
        }

        def spec_of(spec: dg.AssetSpec) -> dg.AssetSpec:
            spec = catalogued(spec)
            if spec.key in references:
                spec = spec.merge_attributes(metadata={"dagster/code_references": references[spec.key]})
            return spec

        return definitions.map_asset_specs(func=spec_of)


defs = _with_catalog(
    dg.Definitions.merge(
        market_data.defs,
        dsi.defs,
        trading_day.defs,
        ops.defs,
        dg.Definitions(resources=shared_resources),
    )
)
