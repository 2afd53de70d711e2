"""A version per day DSI has scored, and the versions each ecosystem state was computed from.

DSI gives every day it writes a new version (``dsi_day_versions``, from the same sequence as the bars' days). An
ecosystem state records the highest version, of bars and of DSI, of the days up to its own. So a corrected past
day, once re-scored by DSI, sends the next trading-day run back to that day, as a re-ingest sends DSI back.

Revision ID: 20261130_dsi_day_versions
Revises: 20261130_day_versions
Create Date: 2026-11-30
"""

from alembic import op

revision = "20261130_dsi_day_versions"
down_revision = "20261130_day_versions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE TABLE dsi_day_versions (
            day DATE NOT NULL CONSTRAINT pk_dsi_day_versions PRIMARY KEY,
            version BIGINT NOT NULL,
            written_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now()
        )
    """)
    # states saved before versions existed were computed from the days as they are now: version 0 keeps them valid
    op.execute("ALTER TABLE ecosystem_state ADD COLUMN source_version BIGINT NOT NULL DEFAULT 0")


def downgrade() -> None:
    op.execute("ALTER TABLE ecosystem_state DROP COLUMN source_version")
    op.execute("DROP TABLE dsi_day_versions")
