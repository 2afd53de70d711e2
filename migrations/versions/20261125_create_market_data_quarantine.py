"""Create market_data_quarantine: the bar rows rejected on ingest, with the rule that rejected them.

Not in the seed: the ingest keeps what it refuses (raw values as read, where they came from, which rule and
why) so that a rejected partition can be explained and replayed.

Revision ID: 20261125_quarantine
Revises: 20261125_seed
Create Date: 2026-11-25
"""

from alembic import op

revision = "20261125_quarantine"
down_revision = "20261125_seed"
branch_labels = None
depends_on = None

MARKET_DATA_QUARANTINE = """
CREATE TABLE market_data_quarantine (
    quarantine_id BIGINT GENERATED ALWAYS AS IDENTITY CONSTRAINT pk_market_data_quarantine PRIMARY KEY,
    partition_date DATE NOT NULL,
    source_file TEXT NOT NULL,
    source_line INTEGER,
    symbol TEXT,
    timestamp TIMESTAMP WITH TIME ZONE,
    raw_values JSONB NOT NULL, -- the row as read, before any parsing
    rule VARCHAR(100) NOT NULL, -- the name of the rule that rejected it
    message TEXT,
    quarantined_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW()
)
"""


def upgrade() -> None:
    op.execute(MARKET_DATA_QUARANTINE)
    op.execute(
        "CREATE INDEX ix_market_data_quarantine_partition_date ON market_data_quarantine(partition_date)"
    )


def downgrade() -> None:
    op.execute("DROP TABLE market_data_quarantine")
