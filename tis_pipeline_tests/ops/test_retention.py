"""Retention with a fixed `as_of` on every table: archived, deleted, foreign keys intact, idempotent."""

import shutil
import uuid
from pathlib import Path

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
            created, owner = day_partitions.parse_scratch_comment(comment)
            assert created is not None and before <= created <= pd.Timestamp.now(tz="UTC")
            assert owner is not None
    finally:
        day_partitions.discard(eng, built)
        rollups.discard_expected(eng, expected)


# ------------------------------------------------------------ archives: content, not encoding; one per day


def test_same_rows_ignores_order_and_chunking_but_not_content():
    import pyarrow as pa

    rows = pa.table({"k": ["a", "b", "c"], "v": ["1", None, ""]})
    shuffled = pa.concat_tables([rows.slice(2), rows.slice(0, 1), rows.slice(1, 1)])  # three chunks
    assert shuffled.column("k").num_chunks == 3
    assert retention.same_rows(rows, shuffled)
    assert retention.content_digest(rows) == retention.content_digest(shuffled)
    null_for_empty = pa.table({"k": ["a", "b", "c"], "v": ["1", None, None]})  # NULL is not ''
    assert not retention.same_rows(rows, null_for_empty)
    assert retention.content_digest(rows) != retention.content_digest(null_for_empty)
    assert not retention.same_rows(rows, rows.slice(0, 2))


def archive_files(table: str) -> list[str]:
    """Every file in ``table``'s archive folder, hidden ones included (a temporary file left over counts)."""
    folder = retention.archive_dir() / table
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def run_retention(url, as_of=AS_OF, periods=None):
    config = {"as_of": as_of.isoformat(), **({"periods": periods} if periods else {})}
    result = retention_job.execute_in_process(
        run_config={"ops": {"apply_retention": {"config": config}}},
        resources={"db": PostgresResource(url=url)},
    )
    assert result.success
    return result.output_for_node("apply_retention")


def day_rows(url, table, day):
    """The rows of ``table`` on UTC ``day`` as retention archives them (text, as PostgreSQL prints them)."""
    with engine(url).begin() as conn:
        return retention._fetch_text(
            conn,
            f'SELECT * FROM {table} WHERE "timestamp" >= %(a)s AND "timestamp" < %(b)s',
            {
                "a": pd.Timestamp(day, tz="UTC").to_pydatetime(),
                "b": pd.Timestamp(day, tz="UTC") + pd.Timedelta(days=1),
            },
        )


@pytest.fixture
def realistic_days(migrated_database_url, tmp_path, monkeypatch):
    """Three UTC days of 30 symbols of 1-minute bars (about 43,000 a day) from the synthetic source, rolled
    up, through the real assets."""
    monkeypatch.setenv("TIS_ARCHIVE_DIR", str(tmp_path / "archive"))
    url = migrated_database_url
    resources = {
        "db": PostgresResource(url=url),
        "bars": BarSource(source="synthetic", symbols=[f"S{i:02d}" for i in range(30)], seed=7),
    }
    assert dg.materialize(
        [market_data_1m, market_data_15m, market_data_1h],
        resources=resources,
        tags=range_tags("2026-05-20", "2026-05-22"),
    ).success
    return url


def test_a_realistic_day_is_retained_and_a_restored_day_is_retained_again(realistic_days):
    """30 symbols x 1,440 bars a day: the archive check compares content, so a day that CSV reading hands over
    in several chunks passes; after `restore` (the rows come back into the DEFAULT partition) the next
    retention deletes them again and reuses the day's file, which already holds them: no second file."""
    url = realistic_days
    days = ["2026-05-20", "2026-05-21"]  # as of 2026-05-29 12:00 the 7-day cutoff is 2026-05-22 12:00
    as_of = pd.Timestamp("2026-05-29 12:00", tz="UTC")
    before = {d: day_rows(url, "market_data_1m", d) for d in days}
    assert all(t.num_rows >= 40_000 for t in before.values()), {d: t.num_rows for d, t in before.items()}
    total = counts(url)["market_data_1m"]

    deleted = run_retention(url, as_of)
    archived = sum(t.num_rows for t in before.values())
    assert deleted["market_data_1m"] == archived
    assert counts(url)["market_data_1m"] == total - archived
    assert archive_files("market_data_1m") == [f"{d}.parquet" for d in days]
    folder = retention.archive_dir() / "market_data_1m"
    for d in days:
        assert retention.same_rows(pq.read_table(folder / f"{d}.parquet"), before[d])
    written = {d: (folder / f"{d}.parquet").stat().st_mtime_ns for d in days}

    with engine(url).begin() as conn:
        restored, used = retention.restore(conn, "market_data_1m", days[0], days[-1])
    assert restored == archived and len(used) == 2
    for d in days:
        assert retention.same_rows(day_rows(url, "market_data_1m", d), before[d])

    again = run_retention(url, as_of)
    assert again["market_data_1m"] == archived
    assert counts(url)["market_data_1m"] == total - archived
    assert archive_files("market_data_1m") == [f"{d}.parquet" for d in days]
    for d in days:
        assert retention.same_rows(pq.read_table(folder / f"{d}.parquet"), before[d])
        assert (folder / f"{d}.parquet").stat().st_mtime_ns == written[d]  # reused, not rewritten


class Killed(BaseException):
    """The process dies after the archive files are written, before the deletion commits."""


def test_a_retention_killed_after_writing_its_files_succeeds_next_time_without_duplicates(populated):
    url = populated
    with engine(url).connect() as conn:
        aged_message = conn.execute(
            sa.text("SELECT message_id FROM module_messages WHERE timestamp < :c"), {"c": ts(30)}
        ).scalar_one()
    counts_before = counts(url)
    with pytest.raises(Killed), engine(url).begin() as conn:
        first_try = retention.apply(conn, AS_OF)
        raise Killed
    assert counts(url) == counts_before  # nothing deleted: the transaction never committed
    left = {o.table: o.files for o in first_try if o.files}
    assert {"market_data_1m", "module_messages", "trading_plans"} <= set(left)
    # a third try died while writing the messages' file, and the aged message changed since the first try:
    # the database holds the rows to delete, so its version is the one archived
    day = (AS_OF - pd.Timedelta(days=31)).date().isoformat()
    folder = retention.archive_dir() / "module_messages"
    (folder / f".{day}.parquet.deadbeef.tmp").write_bytes(b"PAR1 half")
    # and older versions left a numbered copy of a failed try and a file they were killed writing
    shutil.copy(folder / f"{day}.parquet", folder / f"{day}-3.parquet")
    (folder / f"{day}-2.parquet").write_bytes(b"PAR1 half")
    with engine(url).begin() as conn:
        conn.execute(
            sa.text('UPDATE module_messages SET message_data = \'{"k": "changed"}\' WHERE message_id = :m'),
            {"m": aged_message},
        )

    deleted = run_retention(url)
    after = counts(url)
    for table, files in left.items():
        names = [n for n in archive_files(table) if not n.endswith(".unreadable")]
        assert names == sorted({f"{Path(f).stem}.parquet" for f in files}), table  # one file a day, no -2
        in_files = sum(pq.read_metadata(retention.archive_dir() / table / n).num_rows for n in names)
        assert in_files == deleted[table] == counts_before[table] - after[table], table
    assert archive_files("module_messages") == [f"{day}-2.parquet.unreadable", f"{day}.parquet"]
    messages = pq.read_table(folder / f"{day}.parquet").to_pandas()
    assert messages["message_id"].tolist() == [str(aged_message)]
    assert messages["message_data"].tolist() == ['{"k": "changed"}']


def test_a_day_archived_by_two_runs_keeps_both_parts_in_its_one_file(
    migrated_database_url, tmp_path, monkeypatch
):
    """A cutoff falls inside a day: the morning goes today, the evening tomorrow, into the same file, which
    must keep the morning (deleted: the file is its only copy) and gain the evening."""
    monkeypatch.setenv("TIS_ARCHIVE_DIR", str(tmp_path / "archive"))
    url = migrated_database_url
    with engine(url).begin() as conn:
        m = conn.execute(
            sa.text(
                "INSERT INTO modules (module_type, module_version) VALUES ('trader', '1') RETURNING module_id"
            )
        ).scalar_one()
        for hour in ("06:00", "18:00"):
            conn.execute(
                sa.text(
                    "INSERT INTO module_messages (sender_module_id, timestamp, message_type, message_data) "
                    "VALUES (:m, :t, 'trading_plan', :d)"
                ),
                {"m": m, "t": f"2026-04-20 {hour}+00", "d": f'{{"at": "{hour}"}}'},
            )
    # 30 days: as of 2026-05-20 12:00 the cutoff is 2026-04-20 12:00, a day later 2026-04-21 12:00
    assert run_retention(url, pd.Timestamp("2026-05-20 12:00", tz="UTC"))["module_messages"] == 1
    assert run_retention(url, pd.Timestamp("2026-05-21 12:00", tz="UTC"))["module_messages"] == 1
    assert archive_files("module_messages") == ["2026-04-20.parquet"]
    archived = pq.read_table(retention.archive_dir() / "module_messages" / "2026-04-20.parquet").to_pandas()
    assert sorted(archived["message_data"]) == ['{"at": "06:00"}', '{"at": "18:00"}']
    with engine(url).begin() as conn:
        assert retention.restore(conn, "module_messages", "2026-04-20", "2026-04-20")[0] == 2
