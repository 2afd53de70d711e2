"""An index on the message a carried message re-offers: the trading day finds what is still to carry.

``tis_pipeline/trading_day/store.py`` (``read_carried_messages``) re-offers every message an earlier day left
'pending' that no later row carries yet (``message_data->>'carried_from'`` = its id), however old: after a gap
in the data the bus then expires what ran out of ttl instead of leaving it pending forever. Only carried
copies have the key, so the partial index holds them alone and each lookup is one probe.

Revision ID: 20261207_messages_carried
Revises: 20261207_messages_pending
Create Date: 2026-12-07
"""

from alembic import op

revision = "20261207_messages_carried"
down_revision = "20261207_messages_pending"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX ix_module_messages_carried_from ON module_messages "
        "((message_data->>'carried_from')) WHERE (message_data->>'carried_from') IS NOT NULL"
    )


def downgrade() -> None:
    op.execute("DROP INDEX ix_module_messages_carried_from")
