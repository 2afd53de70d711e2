"""Retention with a fixed `as_of` on every table: archived, deleted, foreign keys intact, idempotent."""

import uuid

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from tis_pipeline.market_data.assets import market_data_1h, market_data_1m, market_data_15m
from tis_pipeline.market_data.partitions import range_tags
from tis_pipeline.market_data.sources import BarSource
from tis_pipeline.ops import retention
from tis_pipeline.ops.jobs import retention_job
from tis_pipeline.pg.engine import engine
from tis_pipeline.resources import PostgresResource

pytestmark = pytest.mark.pg
AS_OF = pd.Timestamp("2026-06-01 12:00", tz="UTC")


def ts(days_before: float) -> str:
    return (AS_OF - pd.Timedelta(days=days_before)).isoformat()


def test_periods_parse_and_override(monkeypatch):
    assert retention.parse_period("7d") == pd.DateOffset(days=7)
    assert retention.parse_period("6mo") == pd.DateOffset(months=6)
    assert retention.parse_period("permanent") is None
    with pytest.raises(ValueError):
        retention.parse_period("7 parsecs")
    monkeypatch.setenv("TIS_RETENTION_MARKET_DATA_1M", "90d")
    assert retention.periods()["market_data_1m"] == "90d"
    assert retention.periods({"market_data_1m": "1d"})["market_data_1m"] == "1d"
    assert retention.periods()["module_replications"] == "permanent"


def test_children_first_order_follows_foreign_keys(database_url):
    with engine(database_url).connect() as conn:
        fks = retention.foreign_keys(conn)
    order = retention.children_first([*list(retention.SEED_PERIODS), "modules"], fks)
    pos = {t: i for i, t in enumerate(order)}
    for child, _, parent, _ in fks:
        if child in pos and parent in pos:
            assert pos[child] < pos[parent], (child, parent)


@pytest.fixture
def populated(migrated_database_url, tmp_path, monkeypatch):
    """Rows of every table, some older than their table's period, some not, with references across them."""
    url = migrated_database_url
    monkeypatch.setenv("TIS_ARCHIVE_DIR", str(tmp_path / "archive"))
    # market data: 12 days ending the day before as_of; rollups for all but the oldest day
    resources = {
        "db": PostgresResource(url=url),
        "bars": BarSource(source="synthetic", symbols=["AAA"], seed=2),
    }
    tags = range_tags("2026-05-20", "2026-05-31")
    assert dg.materialize(
        [market_data_1m, market_data_15m, market_data_1h], resources=resources, tags=tags
    ).success
    with engine(url).begin() as conn:
        conn.execute(sa.text("DELETE FROM market_data_15m WHERE \"timestamp\" < '2026-05-21'"))
        m = uuid.uuid4()
        conn.execute(
            sa.text(
                "INSERT INTO modules (module_id, module_type, module_version) VALUES (:m, 'trader', '1')"
            ),
            {"m": m},
        )
        plan_old, plan_kept_by_approval, plan_new = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        for plan, age in ((plan_old, 800), (plan_kept_by_approval, 800), (plan_new, 10)):
            conn.execute(
                sa.text(
                    "INSERT INTO trading_plans (plan_id, module_id, symbol, timestamp, signal_strength, "
                    "direction, "
                    "confidence_score) VALUES (:p, :m, 'AAA', :t, 0.5, 'long', 0.5)"
                ),
                {"p": plan, "m": m, "t": ts(age)},
            )
        conn.execute(
            sa.text(
                "INSERT INTO trading_plan_approvals "
                "(plan_id, decision_maker_module_id, timestamp, approval_status) "
                "VALUES (:p, :m, :t, 'approved'), (:p2, :m, :t2, 'approved')"
            ),
            {"p": plan_kept_by_approval, "m": m, "t": ts(100), "p2": plan_old, "t2": ts(900)},
        )
        ev_old, ev_new = uuid.uuid4(), uuid.uuid4()
        for ev, age in ((ev_old, 400), (ev_new, 5)):
            conn.execute(
                sa.text(
                    "INSERT INTO dsi_evidence (evidence_id, plan_id, timestamp, mx_evidence, mx_confirm) "
                    "VALUES (:e, :p, :t, 0.5, true)"
                ),
                {"e": ev, "p": plan_new, "t": ts(age)},
            )
        conn.execute(
            sa.text(
                "INSERT INTO anomaly_events "
                "(symbol, timestamp, anomaly_type, anomaly_score, signal_pack, dsi_evidence_id) "
                "VALUES ('AAA', :t, 'volume_spike', 0.9, '{}', :e), "
                "('AAA', :t2, 'price_jump', 0.8, '{}', :e2)"
            ),
            {"t": ts(400), "e": ev_old, "t2": ts(5), "e2": ev_new},
        )
        for table, cols, age_old, age_new in (
            (
                "module_performance",
                "performance_score, consistency_score, innovation_score, specialization_score, "
                "collaboration_score",
                400,
                300,
            ),
            ("module_messages", "message_type, message_data", 31, 29),
            ("module_intelligence_sharing", "intelligence_type, intelligence_data", 200, 150),
        ):
            values = {
                "module_performance": "0.5, 0.5, 0.5, 0.5, 0.5",
                "module_messages": "'trading_plan', '{\"k\": \"x\\\\ny\"}'",
                "module_intelligence_sharing": "'learning_update', '{}'",
            }[table]
            who = "module_id" if table == "module_performance" else "sender_module_id"
            for age in (age_old, age_new):
                conn.execute(
                    sa.text(f"INSERT INTO {table} ({who}, timestamp, {cols}) VALUES (:m, :t, {values})"),
                    {"m": m, "t": ts(age)},
                )
        conn.execute(
            sa.text(
                "INSERT INTO module_replications "
                "(parent_module_id, child_module_id, timestamp, trigger_type) "
                "VALUES (:m, :m, :t, 'diversity_gap')"
            ),
            {"m": m, "t": ts(5000)},
        )
    return url


def counts(url):
    tables = [*list(retention.SEED_PERIODS), "modules"]
    with engine(url).connect() as conn:
        return {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one() for t in tables}


def test_retention_archives_then_deletes_exactly_what_aged_out(populated):
    url = populated
    before = counts(url)
    with engine(url).connect() as conn:
        snapshot = (
            conn.execute(sa.text("SELECT message_data::text FROM module_messages ORDER BY timestamp"))
            .scalars()
            .all()
        )
    run = retention_job.execute_in_process(
        run_config={"ops": {"apply_retention": {"config": {"as_of": AS_OF.isoformat()}}}},
        resources={"db": PostgresResource(url=url)},
    )
    assert run.success
    deleted = run.output_for_node("apply_retention")
    after = counts(url)
    # 1m: 7 days kept; of the 5 older days, the oldest has no 15m rollup and stays
    assert deleted["market_data_1m"] == before["market_data_1m"] - after["market_data_1m"]
    with engine(url).connect() as conn:
        days_1m = (
            conn.execute(
                sa.text(
                    "SELECT DISTINCT (\"timestamp\" AT TIME ZONE 'UTC')::date::text "
                    "FROM market_data_1m ORDER BY 1"
                )
            )
            .scalars()
            .all()
        )
        days_15m = conn.execute(sa.text('SELECT min("timestamp") FROM market_data_15m')).scalar_one()
        orphans = conn.execute(
            sa.text(
                "SELECT count(*) FROM trading_plan_approvals a LEFT JOIN trading_plans p USING (plan_id) "
                "WHERE p.plan_id IS NULL"
            )
        ).scalar_one()
    assert days_1m == ["2026-05-20"] + [f"2026-05-{d}" for d in range(25, 32)]
    assert days_15m >= pd.Timestamp("2026-05-21", tz="UTC")
    assert orphans == 0
    expected_deleted = {
        "trading_plan_approvals": 1,
        "trading_plans": 1,
        "dsi_evidence": 1,
        "anomaly_events": 1,
        "module_performance": 1,
        "module_messages": 1,
        "module_intelligence_sharing": 1,
        "module_replications": 0,
        "market_data_15m": 0,
        "market_data_1h": 0,
    }
    for table, n in expected_deleted.items():
        assert deleted[table] == n, table
        assert before[table] - after[table] == n, table
    assert after["modules"] == 1
    from tis_pipeline.market_data import synthetic

    aged = synthetic.bars(
        pd.Timestamp("2026-05-21", tz="UTC"), pd.Timestamp("2026-05-25", tz="UTC"), ["AAA"], 2
    )
    assert deleted["market_data_1m"] == len(aged)
    # archives: one file per table and day, readable, holding exactly the deleted rows
    files = retention.archive_dir()
    archived_messages = pq.read_table(next((files / "module_messages").glob("*.parquet"))).to_pandas()
    assert len(archived_messages) == 1
    assert archived_messages["message_data"].iloc[0] == snapshot[0]
    archived_1m = sum(pq.read_metadata(p).num_rows for p in (files / "market_data_1m").glob("*.parquet"))
    assert archived_1m == deleted["market_data_1m"]
    # a second run finds nothing more to delete
    again = retention_job.execute_in_process(
        run_config={"ops": {"apply_retention": {"config": {"as_of": AS_OF.isoformat()}}}},
        resources={"db": PostgresResource(url=url)},
    )
    assert all(v == 0 for v in again.output_for_node("apply_retention").values())
    assert counts(url) == after
    # rollups age out too, by their own (here shortened) periods, with exact counts
    cutoff = AS_OF - pd.Timedelta(days=4)
    with engine(url).connect() as conn:
        old = {
            t: conn.execute(
                sa.text(f'SELECT count(*) FROM {t} WHERE "timestamp" < :c'), {"c": cutoff}
            ).scalar_one()
            for t in ("market_data_15m", "market_data_1h")
        }
    assert min(old.values()) > 0
    shorter = retention_job.execute_in_process(
        run_config={
            "ops": {
                "apply_retention": {
                    "config": {
                        "as_of": AS_OF.isoformat(),
                        "periods": {"market_data_15m": "4d", "market_data_1h": "4d"},
                    }
                }
            }
        },
        resources={"db": PostgresResource(url=url)},
    )
    rolled = shorter.output_for_node("apply_retention")
    assert (
        rolled["market_data_15m"] == old["market_data_15m"]
        and rolled["market_data_1h"] == old["market_data_1h"]
    )
    assert rolled["market_data_1m"] == 0, "1-minute bars whose rollups are gone stay"
    archived_1h = sum(pq.read_metadata(p).num_rows for p in (files / "market_data_1h").glob("*.parquet"))
    assert archived_1h == old["market_data_1h"]
    # and the archive restores what was deleted, exactly
    with engine(url).begin() as conn:
        restored, used = retention.restore(conn, "module_messages", "2000-01-01", "2100-01-01")
    assert restored == 1 and len(used) == 1
    with engine(url).connect() as conn:
        back = (
            conn.execute(sa.text("SELECT message_data::text FROM module_messages ORDER BY timestamp"))
            .scalars()
            .all()
        )
    assert back == snapshot


def test_the_retention_job_drops_scratch_tables_a_killed_run_left_and_keeps_fresh_ones(migrated_database_url):
    from tis_pipeline.pg import day_partitions

    database_url = migrated_database_url  # a database of its own: the job applies retention as of now
    now = pd.Timestamp.now(tz="UTC")
    tag = uuid.uuid4().hex[:8]
    tables = {
        f"market_data_1m_p20240101_{tag}": day_partitions.scratch_comment(
            now - pd.Timedelta(days=2)
        ),  # left behind
        f"rollup_expected_{tag}_0": day_partitions.scratch_comment(now - pd.Timedelta(days=3)),  # left behind
        f"rollup_expected_{tag}_1": None,  # made before scratch tables carried a comment
        f"market_data_1m_p20240102_{tag}": day_partitions.scratch_comment(
            now - pd.Timedelta(minutes=5)
        ),  # in use
        f"rollup_expected_{tag}_not_ours": day_partitions.scratch_comment(now - pd.Timedelta(days=9)),
    }  # not a name of ours
    with engine(database_url).begin() as conn:
        for name, comment in tables.items():
            conn.execute(sa.text(f'CREATE TABLE "{name}" (x int)'))
            if comment:
                conn.execute(sa.text(f"COMMENT ON TABLE \"{name}\" IS '{comment}'"))
    run = retention_job.execute_in_process(resources={"db": PostgresResource(url=database_url)})
    assert run.success
    meta = next(e for e in run.all_node_events if e.is_successful_output).event_specific_data.metadata
    assert sorted(meta["stale_scratch_tables_dropped"].value) == sorted(
        [f"market_data_1m_p20240101_{tag}", f"rollup_expected_{tag}_0", f"rollup_expected_{tag}_1"]
    )
    with engine(database_url).begin() as conn:
        left = set(
            conn.execute(
                sa.text("SELECT relname FROM pg_class WHERE relname LIKE :p"), {"p": f"%{tag}%"}
            ).scalars()
        )
        assert left == {f"market_data_1m_p20240102_{tag}", f"rollup_expected_{tag}_not_ours"}
        for name in left:
            conn.execute(sa.text(f'DROP TABLE "{name}"'))


def test_partition_builds_and_rollup_pieces_carry_their_creation_time(migrated_database_url):
    from tis_pipeline.market_data import rollups, synthetic
    from tis_pipeline.pg import day_partitions
    from tis_pipeline_tests.support.day_builds import build_days

    eng = engine(migrated_database_url)
    day = pd.Timestamp("2024-07-01", tz="UTC")
    before = pd.Timestamp.now(tz="UTC")
    built = build_days(eng, synthetic.day_bars(day, ["AAA"], seed=3), day, day + pd.Timedelta(days=1))
    expected = rollups.stage_expected_rollup(eng, "market_data_15m", day, day + pd.Timedelta(days=1))
    expected.ready()
    try:
        with eng.connect() as conn:
            comments = (
                conn.execute(
                    sa.text(
                        "SELECT obj_description(to_regclass(n), 'pg_class') "
                        "FROM unnest(CAST(:names AS text[])) n"
                    ),
                    {"names": [s for _, _, s in built.jobs] + expected.tables},
                )
                .scalars()
                .all()
            )
        assert len(comments) == 1 + 4
        for comment in comments:
            created = pd.Timestamp(comment.removeprefix(day_partitions.SCRATCH_COMMENT_PREFIX))
            assert before <= created <= pd.Timestamp.now(tz="UTC")
    finally:
        day_partitions.discard(eng, built)
        rollups.discard_expected(eng, expected)
