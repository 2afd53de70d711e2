"""A partial index on the bus's pending messages: the durable transport claims them in priority order.

``tis_pipeline/trading_day/bus/durable.py`` claims ``module_messages`` rows with ``status = 'pending'`` in
batches (``ORDER BY priority, "timestamp", message_id ... FOR UPDATE SKIP LOCKED``). Delivered, failed and
expired rows are the bulk of the table and never claimed again, so the index holds only the pending ones.

Revision ID: 20261207_messages_pending
Revises: 20261201_rollup_source_versions
Create Date: 2026-12-07
"""

from alembic import op

revision = "20261207_messages_pending"
down_revision = "20261201_rollup_source_versions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX ix_module_messages_pending ON module_messages "
        "(priority, \"timestamp\", message_id) WHERE status = 'pending'"
    )


def downgrade() -> None:
    op.execute("DROP INDEX ix_module_messages_pending")
