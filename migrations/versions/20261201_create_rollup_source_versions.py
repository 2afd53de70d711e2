"""The 1-minute source version each day of a rollup was built from.

``rollup_source_versions`` holds, per rollup table (``market_data_15m``, ``market_data_1h``) and UTC day, the
version of the 1-minute day (``market_data_day_versions``) its bars were built from. A day whose 1-minute
version is higher has been re-ingested since: the next run of the rollup heals it, and the rollups'
``source_changes_rolled_up`` checks compare it with its 1-minute bars until then.

Rollup days that exist when this migration runs are taken to be built from the 1-minute days as they are now
(as ``dsi_state.source_version`` did for states saved before versions existed).

Revision ID: 20261201_rollup_source_versions
Revises: 20261130_day_versions
Create Date: 2026-12-01
"""

from alembic import op

revision = "20261201_rollup_source_versions"
down_revision = "20261130_day_versions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE TABLE rollup_source_versions (
            rollup TEXT NOT NULL,
            day DATE NOT NULL,
            source_version BIGINT NOT NULL,
            built_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
            CONSTRAINT pk_rollup_source_versions PRIMARY KEY (rollup, day)
        )
    """)
    op.execute("""
        INSERT INTO rollup_source_versions (rollup, day, source_version)
        SELECT r.rollup, v.day, v.version
        FROM market_data_day_versions v
        CROSS JOIN (VALUES ('market_data_15m'), ('market_data_1h')) AS r(rollup)
    """)


def downgrade() -> None:
    op.execute("DROP TABLE rollup_source_versions")
