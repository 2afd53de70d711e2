"""Data quality: one registry of rules (``rules``) evaluated by pandas (``evaluate``) or Great Expectations
(``ge``), turned into Dagster asset checks (``checks``) and compared with PostgreSQL's CHECKs (``constraints``).

Importing this package does not import Great Expectations (that costs seconds); ``validate_frame`` does, once.
"""

from __future__ import annotations

import dagster as dg

from tis_pipeline.quality.checks import (
    CheckInput,
    build_checks,
    check_results,
    check_spec,
    check_specs_for,
    frame_check_results,
)
from tis_pipeline.quality.evaluate import evaluate_frame, failing_mask, rollup_bars
from tis_pipeline.quality.ge import suite_for, validate_frame
from tis_pipeline.quality.report import RuleResult, ValidationReport
from tis_pipeline.quality.rules import DbCheck, Rule, all_rules, db_check_rules, rule, rules_for
from tis_pipeline.quality.sql import rollup_mismatch_sql

defs = dg.Definitions()

__all__ = [
    "CheckInput",
    "DbCheck",
    "Rule",
    "RuleResult",
    "ValidationReport",
    "all_rules",
    "build_checks",
    "check_results",
    "frame_check_results",
    "check_spec",
    "check_specs_for",
    "db_check_rules",
    "defs",
    "evaluate_frame",
    "failing_mask",
    "rollup_bars",
    "rollup_mismatch_sql",
    "rule",
    "rules_for",
    "suite_for",
    "validate_frame",
]
