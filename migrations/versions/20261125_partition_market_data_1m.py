"""Partition market_data_1m by UTC day (declarative range partitioning on "timestamp").

Same columns, defaults, CHECKs and primary key (symbol, timestamp) as the seed's table: only the storage
changes. A day is then written by building its partition apart (COPY into an unindexed table, primary key
built by one sort) and swapping it in, and retention drops a day instead of deleting its rows:
bench/RESULTS.md has the figures behind this choice. Child partitions are named market_data_1m_pYYYYMMDD and
are created by the write path (tis_pipeline/market_data/store.py), the way pg_partman does, since their dates
are not known in advance. A DEFAULT partition takes rows of days that have no partition yet (a hand-written
INSERT still works); the write path moves them into the day's partition when it builds one.

Revision ID: 20261125_partition_1m
Revises: 20261125_quarantine
Create Date: 2026-11-25
"""

from alembic import op

revision = "20261125_partition_1m"
down_revision = "20261125_quarantine"
branch_labels = None
depends_on = None

_CREATE_DAY_PARTITIONS = """
DO $$
DECLARE day date;
BEGIN
  FOR day IN SELECT DISTINCT ("timestamp" AT TIME ZONE 'UTC')::date FROM market_data_1m_unpartitioned LOOP
    EXECUTE format(
      'CREATE TABLE %I PARTITION OF market_data_1m FOR VALUES FROM (%L) TO (%L)',
      'market_data_1m_p' || to_char(day, 'YYYYMMDD'),
      (day::timestamp AT TIME ZONE 'UTC'), ((day + 1)::timestamp AT TIME ZONE 'UTC'));
  END LOOP;
END $$;
"""


def upgrade() -> None:
    op.execute("ALTER TABLE market_data_1m RENAME TO market_data_1m_unpartitioned")
    op.execute("ALTER INDEX pk_market_data_1m RENAME TO pk_market_data_1m_unpartitioned")
    op.execute(
        "CREATE TABLE market_data_1m "
        "(LIKE market_data_1m_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
        ' PARTITION BY RANGE ("timestamp")'
    )
    op.execute(
        'ALTER TABLE market_data_1m ADD CONSTRAINT pk_market_data_1m PRIMARY KEY (symbol, "timestamp")'
    )
    op.execute("CREATE TABLE market_data_1m_default PARTITION OF market_data_1m DEFAULT")
    op.execute(_CREATE_DAY_PARTITIONS)
    op.execute("INSERT INTO market_data_1m SELECT * FROM market_data_1m_unpartitioned")
    op.execute("DROP TABLE market_data_1m_unpartitioned")


def downgrade() -> None:
    op.execute("ALTER TABLE market_data_1m RENAME TO market_data_1m_partitioned")
    op.execute("ALTER INDEX pk_market_data_1m RENAME TO pk_market_data_1m_partitioned")
    op.execute(
        "CREATE TABLE market_data_1m "
        "(LIKE market_data_1m_partitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
    )
    op.execute(
        'ALTER TABLE market_data_1m ADD CONSTRAINT pk_market_data_1m PRIMARY KEY (symbol, "timestamp")'
    )
    op.execute("INSERT INTO market_data_1m SELECT * FROM market_data_1m_partitioned")
    op.execute("DROP TABLE market_data_1m_partitioned CASCADE")
