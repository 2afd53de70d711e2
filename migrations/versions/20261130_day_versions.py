"""A version per day of market_data_1m, and the versions each DSI state was computed from.

Every ingest that replaces days gives each of them a new version from a sequence (monotonic, never reused).
A DSI state records the highest version of the days up to its own at the moment it was saved. It stays valid only
while no day up to its own has a higher version. So a corrected past day sends the next DSI run back to re-score
from that day, and the values equal those of a fresh replay of the corrected bars.

Revision ID: 20261130_day_versions
Revises: 20261130_ecosystem_state
Create Date: 2026-11-30
"""

from alembic import op

revision = "20261130_day_versions"
down_revision = "20261130_ecosystem_state"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE SEQUENCE market_data_day_version_seq")
    op.execute("""
        CREATE TABLE market_data_day_versions (
            day DATE NOT NULL CONSTRAINT pk_market_data_day_versions PRIMARY KEY,
            version BIGINT NOT NULL,
            written_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now()
        )
    """)
    # states saved before versions existed were computed from the days as they are now: version 0 keeps them valid
    op.execute("ALTER TABLE dsi_state ADD COLUMN source_version BIGINT NOT NULL DEFAULT 0")


def downgrade() -> None:
    op.execute("ALTER TABLE dsi_state DROP COLUMN source_version")
    op.execute("DROP TABLE market_data_day_versions")
    op.execute("DROP SEQUENCE market_data_day_version_seq")
