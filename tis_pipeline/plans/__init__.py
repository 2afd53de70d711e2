"""Trading plans of the module ecosystem: generation, approval, simulated execution and module scoring.

``tis_pipeline.plans.logic`` is pure (pandas/numpy in, pandas out); the Dagster wiring lives with the
ecosystem's multi-asset (see ``docs/ecosystem.md``).
"""
