"""The module ecosystem's carried state per UTC day, and the lookups the trading day needs.

``ecosystem_state`` holds, for each day the trading-day step ran, the whole module population at the end of
that day (every module's genome, scores, lifecycle and lineage as JSON), so that day d + 1 starts exactly
where day d ended, whether the days run in one range or one by one. ``modules`` itself shows the latest state.
The indexes serve the links the step writes and clears: an anomaly event's plan, a plan's evidence.

Revision ID: 20261130_ecosystem_state
Revises: 20261125_dsi_state
Create Date: 2026-11-30
"""

from alembic import op

revision = "20261130_ecosystem_state"
down_revision = "20261125_dsi_state"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE TABLE ecosystem_state (
            day DATE NOT NULL CONSTRAINT pk_ecosystem_state PRIMARY KEY,
            config_fingerprint VARCHAR(16) NOT NULL,
            modules INTEGER NOT NULL,
            population JSONB NOT NULL,
            computed_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now()
        )
    """)
    op.execute("CREATE INDEX ix_anomaly_events_trading_plan_id ON anomaly_events (trading_plan_id)")
    op.execute('CREATE INDEX ix_trading_plan_approvals_timestamp ON trading_plan_approvals ("timestamp")')
    op.execute('CREATE INDEX ix_module_messages_timestamp ON module_messages ("timestamp")')


def downgrade() -> None:
    op.execute("DROP INDEX ix_module_messages_timestamp")
    op.execute("DROP INDEX ix_trading_plan_approvals_timestamp")
    op.execute("DROP INDEX ix_anomaly_events_trading_plan_id")
    op.execute("DROP TABLE ecosystem_state")
