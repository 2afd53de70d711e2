"""Versions of the days the bars and DSI's scores were written for, and the versions each carried state was
computed from.

Every ingest gives each day it replaces a new version in ``market_data_day_versions``. Every DSI run does the
same for the days it scores, in ``dsi_day_versions``. Both take their versions from one sequence, so they only
grow and are never reused. A state records the highest version of the days up to its own at the moment it was
saved: ``dsi_state`` for the bars, ``ecosystem_state`` for the bars and DSI. It stays valid while no day up to
its own has a higher one. So a corrected past day sends the next DSI run, and after it the next trading-day
run, back to that day, and the values equal a fresh replay of the corrected bars.

Revision ID: 20261130_day_versions
Revises: 20261130_ecosystem_state
Create Date: 2026-11-30
"""

from alembic import op

revision = "20261130_day_versions"
down_revision = "20261130_ecosystem_state"
branch_labels = None
depends_on = None

_VERSIONED = {"market_data_day_versions": "dsi_state", "dsi_day_versions": "ecosystem_state"}


def upgrade() -> None:
    op.execute("CREATE SEQUENCE market_data_day_version_seq")
    for versions, state in _VERSIONED.items():
        op.execute(f"""
            CREATE TABLE {versions} (
                day DATE NOT NULL CONSTRAINT pk_{versions} PRIMARY KEY,
                version BIGINT NOT NULL,
                written_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now()
            )
        """)
        # states saved before versions existed were computed from the days as they are now: 0 keeps them valid
        op.execute(f"ALTER TABLE {state} ADD COLUMN source_version BIGINT NOT NULL DEFAULT 0")


def downgrade() -> None:
    for versions, state in reversed(_VERSIONED.items()):
        op.execute(f"ALTER TABLE {state} DROP COLUMN source_version")
        op.execute(f"DROP TABLE {versions}")
    op.execute("DROP SEQUENCE market_data_day_version_seq")
