"""DSI's carried state per UTC day, and one anomaly event per (symbol, minute, type).

``dsi_state`` holds, for each day scored, the DSI state at the end of that day (learned Hedge losses,
classifier counts, rolling windows), so that day d + 1 continues exactly where day d ended whether the days
are computed in one run or one by one. The unique index makes re-scoring a day replace its events, never add
to them.

Revision ID: 20261125_dsi_state
Revises: 20261125_partition_1m
Create Date: 2026-11-25
"""

from alembic import op

revision = "20261125_dsi_state"
down_revision = "20261125_partition_1m"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE TABLE dsi_state (
            day DATE NOT NULL CONSTRAINT pk_dsi_state PRIMARY KEY,
            config_fingerprint VARCHAR(16) NOT NULL,
            symbols INTEGER NOT NULL,
            bars INTEGER NOT NULL,
            state BYTEA NOT NULL,
            computed_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now()
        )
    """)
    op.execute(
        "CREATE UNIQUE INDEX ux_anomaly_events_symbol_timestamp_type "
        'ON anomaly_events (symbol, "timestamp", anomaly_type)'
    )


def downgrade() -> None:
    op.execute("DROP INDEX ux_anomaly_events_symbol_timestamp_type")
    op.execute("DROP TABLE dsi_state")
