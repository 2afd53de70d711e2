"""Indexes on the foreign keys whose parents lose rows: re-runs and retention cost per row, not per table.

PostgreSQL checks a foreign key when a referenced row is deleted by looking the row up in the referencing
table, and without an index on the referencing column that look-up is a scan of the whole table, once per
deleted row. Three parents lose rows: ``trading_plans`` and ``module_replications`` (a trading day run again
clears its window, ``trading_day/store.py`` ``clear_window``; retention of plans after 2 years) and
``dsi_evidence`` (DSI run again replaces the window's events and their evidence, ``dsi/store.py``
``replace_events``; retention after 1 year). Measured on one day of 2,000 symbols: deleting its 6,466
evidence rows took 3.4 s of scans of ``anomaly_events`` (and grows with every day kept: ~20 minutes with a
year of events), 0.05 s with the index; deleting its 4,937 plans 0.77 s, 0.09 s with it. The keys to
``modules`` need none: modules are never deleted.

Revision ID: 20261207_fk_indexes
Revises: 20261207_messages_carried
Create Date: 2026-12-07
"""

from alembic import op

revision = "20261207_fk_indexes"
down_revision = "20261207_messages_carried"
branch_labels = None
depends_on = None

INDEXES = {
    "ix_trading_plan_approvals_plan_id": ("trading_plan_approvals", "plan_id"),
    "ix_anomaly_events_dsi_evidence_id": ("anomaly_events", "dsi_evidence_id"),
    "ix_module_replication_triggers_replication_id": ("module_replication_triggers", "replication_id"),
}


def upgrade() -> None:
    for name, (table, column) in INDEXES.items():
        op.create_index(name, table, [column])


def downgrade() -> None:
    for name, (table, _) in INDEXES.items():
        op.drop_index(name, table_name=table)
