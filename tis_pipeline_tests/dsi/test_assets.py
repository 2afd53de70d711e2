"""The DSI asset against a real PostgreSQL: every bar scored, events with evidence, range == day by day."""

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from tis_pipeline.dsi.assets import dsi
from tis_pipeline.market_data.assets import market_data_1h, market_data_1m, market_data_15m
from tis_pipeline.market_data.partitions import range_tags
from tis_pipeline.market_data.sources import BarSource
from tis_pipeline.market_data.store import read_bars
from tis_pipeline.pg.engine import engine
from tis_pipeline.resources import PostgresResource
from tis_pipeline_tests.support.locks import wait_for_lock_waiters

pytestmark = pytest.mark.pg
MARKET = [market_data_1m, market_data_15m, market_data_1h]


def resources(url):
    return {
        "db": PostgresResource(url=url),
        "bars": BarSource(source="synthetic", symbols=["AAA", "BBB"], seed=4),
    }


def run(url, assets, first, last):
    return dg.materialize(
        assets, resources=resources(url), raise_on_error=False, selection=None, tags=range_tags(first, last)
    )


def dsi_only(url, first, last):
    return dg.materialize(
        [*(a.to_source_assets()[0] for a in MARKET), dsi],
        resources=resources(url),
        raise_on_error=False,
        tags=range_tags(first, last),
    )


DIGESTS = {
    "bars": "SELECT md5(string_agg(concat_ws(',', symbol, \"timestamp\", mx_evidence, mx_confirm, "
    "mx_expert_contributions::text), '|' ORDER BY symbol, \"timestamp\")) FROM market_data_1m",
    "rollups": "SELECT md5(string_agg(concat_ws(',', symbol, \"timestamp\", mx_evidence, mx_confirm), '|' "
    'ORDER BY symbol, "timestamp")) FROM market_data_15m',
    "events": "SELECT md5(string_agg(concat_ws(',', event_id, symbol, \"timestamp\", anomaly_type, "
    "anomaly_score, "
    "signal_pack::text, dsi_evidence_id, microstructure_validation::text), '|' ORDER BY event_id)) "
    "FROM anomaly_events",
    # latency figures are measurements, not functions of the data: everything else must match bit for bit
    "evidence": "SELECT md5(string_agg(concat_ws(',', evidence_id, \"timestamp\", mx_evidence, mx_confirm, "
    "mx_microtape_hash, mx_expert_contributions->'contributions', mx_fsm_experts::text, "
    "mx_classifier_experts::text, mx_anomaly_experts::text, mx_divergence_experts::text, "
    "mx_expert_weights::text, mx_expert_survival_rates::text, mx_evidence_boost, mx_confirm_rate, "
    "mx_expert_survival_rate, mx_confidence_interval::text), '|' ORDER BY evidence_id)) FROM dsi_evidence",
    "state": "SELECT md5(string_agg(encode(state, 'hex'), '|' ORDER BY day)) FROM dsi_state",
}


def digests(url):
    with engine(url).connect() as conn:
        return {k: conn.execute(sa.text(q)).scalar_one() for k, q in DIGESTS.items()}


def test_every_bar_is_scored_and_events_carry_evidence(migrated_database_url):
    url = migrated_database_url
    assert run(url, MARKET, "2024-01-08", "2024-01-10").success
    result = dsi_only(url, "2024-01-08", "2024-01-10")
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks if c.severity == dg.AssetCheckSeverity.ERROR)
    with engine(url).connect() as conn:
        bars, scored, in_range = conn.execute(
            sa.text(
                "SELECT count(*), count(mx_evidence), count(*) FILTER (WHERE mx_evidence BETWEEN 0 AND 1 "
                "AND mx_confirm IS NOT NULL AND jsonb_array_length(mx_expert_contributions->'fsm') = 4) "
                "FROM market_data_1m"
            )
        ).one()
        events, linked, hashes = conn.execute(
            sa.text(
                "SELECT count(*), count(e.evidence_id), count(DISTINCT e.mx_microtape_hash) "
                "FROM anomaly_events a "
                "LEFT JOIN dsi_evidence e ON e.evidence_id = a.dsi_evidence_id"
            )
        ).one()
        evidence = conn.execute(sa.text("SELECT count(*) FROM dsi_evidence")).scalar_one()
        rollup_scored = conn.execute(
            sa.text("SELECT count(*) = count(mx_evidence) FROM market_data_1h")
        ).scalar_one()
        latencies = conn.execute(
            sa.text("SELECT min(mx_processing_latency_ms), max(mx_throughput_per_second) FROM dsi_evidence")
        ).one()
        states = conn.execute(sa.text("SELECT count(*) FROM dsi_state")).scalar_one()
        confirmed = conn.execute(
            sa.text("SELECT count(*) FILTER (WHERE mx_confirm) FROM market_data_1m")
        ).scalar_one()
        read = read_bars(
            conn,
            "market_data_1m",
            pd.Timestamp("2024-01-08", tz="UTC"),
            pd.Timestamp("2024-01-11", tz="UTC"),
            ("symbol", "timestamp", "mx_confirm"),
        )
    assert read["mx_confirm"].dtype == "boolean" and int(read["mx_confirm"].sum()) == confirmed
    assert 0 < confirmed < bars
    assert bars == scored == in_range > 8000
    assert events > 0 and linked == events == evidence
    assert hashes > 0
    assert rollup_scored
    assert 0 < latencies[0] < 10000 and 0 < latencies[1] < 10000
    assert states == 3
    meta = result.asset_materializations_for_node("dsi")
    assert any(m.metadata.get("dagster/row_count") is not None for m in meta)
    evidence_meta = next(m.metadata for m in meta if m.asset_key.to_user_string() == "dsi_evidence")
    assert evidence_meta["confirmed_share"].value == pytest.approx(confirmed / bars)
    quality = evidence_meta["out_of_sample"].value
    assert 0 < quality["confirmed_n"] <= confirmed and quality["confirmed_n"] < quality["n"]
    assert 0 <= quality["confirmed_hit_rate"] <= 1 and 0 <= quality["unconfirmed_hit_rate"] <= 1
    before = digests(url)
    assert dsi_only(url, "2024-01-08", "2024-01-10").success
    assert digests(url) == before, "re-materializing gives the same rows"


def test_range_run_equals_day_by_day_and_a_fresh_database(
    server_url, migrated_database_url, empty_database_url
):
    from tis_pipeline.pg import migrate

    by_range, by_day = migrated_database_url, empty_database_url
    migrate.upgrade(by_day)
    for url in (by_range, by_day):
        assert run(url, MARKET, "2024-02-01", "2024-02-03").success
    assert dsi_only(by_range, "2024-02-01", "2024-02-03").success
    for day in ("2024-02-01", "2024-02-02", "2024-02-03"):
        assert dsi_only(by_day, day, day).success
    assert digests(by_range) == digests(by_day)


def test_a_late_day_on_a_fresh_database_catches_up_to_the_same_values(
    migrated_database_url, empty_database_url
):
    from tis_pipeline.pg import migrate

    by_range, catch_up = migrated_database_url, empty_database_url
    migrate.upgrade(catch_up)
    for url in (by_range, catch_up):
        assert run(url, MARKET, "2024-02-01", "2024-02-03").success
    assert dsi_only(by_range, "2024-02-01", "2024-02-03").success
    assert dsi_only(catch_up, "2024-02-03", "2024-02-03").success  # no state before it: scores from 02-01
    assert digests(catch_up) == digests(by_range)


def test_a_corrected_past_day_sends_the_next_run_back_to_rescore_from_it(
    migrated_database_url, empty_database_url
):
    from tis_pipeline.pg import migrate

    corrected = {"db": None, "bars": BarSource(source="synthetic", symbols=["AAA", "BBB"], seed=5)}
    day_two = range_tags("2024-02-02", "2024-02-02")
    later, replay = migrated_database_url, empty_database_url
    migrate.upgrade(replay)
    # later: scored first, then day 2's bars are corrected and only day 3 is asked for
    assert run(later, MARKET, "2024-02-01", "2024-02-03").success
    assert dsi_only(later, "2024-02-01", "2024-02-03").success
    stale = digests(later)
    assert dg.materialize(
        MARKET, resources={**corrected, "db": PostgresResource(url=later)}, tags=day_two
    ).success
    result = dsi_only(later, "2024-02-03", "2024-02-03")
    assert result.success
    evidence = next(
        m.metadata
        for m in result.asset_materializations_for_node("dsi")
        if m.asset_key.to_user_string() == "dsi_evidence"
    )
    assert evidence["range"].value == "2024-02-02..2024-02-03"  # back to the corrected day, not further
    # replay: the corrected bars from the start, scored in one range on a fresh database
    assert run(replay, MARKET, "2024-02-01", "2024-02-03").success
    assert dg.materialize(
        MARKET, resources={**corrected, "db": PostgresResource(url=replay)}, tags=day_two
    ).success
    assert dsi_only(replay, "2024-02-01", "2024-02-03").success
    assert digests(later) == digests(replay) != stale


UNWRITTEN = {
    "scored_1m": "SELECT count(mx_evidence) + count(mx_expert_contributions) FROM market_data_1m",
    "scored_15m": "SELECT count(mx_evidence) FROM market_data_15m",
    "scored_1h": "SELECT count(mx_evidence) FROM market_data_1h",
    "events": "SELECT count(*) FROM anomaly_events",
    "evidence": "SELECT count(*) FROM dsi_evidence",
    "state": "SELECT count(*) FROM dsi_state",
}


@pytest.mark.parametrize(
    "table, operation",
    [
        ("market_data_1h", "UPDATE"),  # fails after the scored days were swapped in, before the events
        ("anomaly_events", "INSERT"),  # fails after the days and the rollups' evidence were written
    ],
)
def test_a_failed_run_leaves_the_tables_as_they_were(migrated_database_url, table, operation):
    url = migrated_database_url
    assert run(url, MARKET, "2024-01-08", "2024-01-09").success
    with engine(url).begin() as conn:
        conn.execute(
            sa.text(
                "CREATE FUNCTION injected_failure() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'injected failure'; END $$"
            )
        )
        conn.execute(
            sa.text(
                f"CREATE TRIGGER injected BEFORE {operation} ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION injected_failure()"
            )
        )
    failed = dsi_only(url, "2024-01-08", "2024-01-09")
    assert not failed.success
    assert "injected failure" in failed.get_step_failure_events()[0].event_specific_data.error.to_string()
    with engine(url).connect() as conn:
        assert {k: conn.execute(sa.text(q)).scalar_one() for k, q in UNWRITTEN.items()} == dict.fromkeys(
            UNWRITTEN, 0
        )
    assert scratch_tables(url) == []  # the days built for the swap were dropped
    with engine(url).connect() as conn:
        conn.execute(sa.text(f"DROP TRIGGER injected ON {table}"))
        conn.commit()
    assert dsi_only(url, "2024-01-08", "2024-01-09").success  # nothing left behind in the way of the next run
    with engine(url).connect() as conn:
        written = {k: conn.execute(sa.text(q)).scalar_one() for k, q in UNWRITTEN.items()}
    assert all(written.values()), written


def test_dsi_and_an_ingest_of_the_same_day_serialise(migrated_database_url):
    """DSI, held after its swap, and a concurrent re-ingest of the same day: both finish, no deadlock."""
    from concurrent.futures import ThreadPoolExecutor

    url = migrated_database_url
    assert run(url, MARKET, "2024-01-08", "2024-01-08").success
    holder = engine(url).connect()
    try:
        holder.execute(sa.text("LOCK TABLE market_data_1h IN SHARE MODE"))  # DSI's rollup UPDATE waits here
        with ThreadPoolExecutor(max_workers=2) as pool:
            scoring = pool.submit(dsi_only, url, "2024-01-08", "2024-01-08")
            wait_for_lock_waiters(url, 1)  # DSI has swapped the 1-minute day in and waits for the hourly bars
            ingesting = pool.submit(run, url, [market_data_1m], "2024-01-08", "2024-01-08")
            wait_for_lock_waiters(url, 2)  # the ingest's partition swap waits for DSI
            holder.rollback()
            assert scoring.result().success
            assert ingesting.result().success
    finally:
        holder.close()
    with engine(url).connect() as conn:
        bars, scored = conn.execute(sa.text("SELECT count(*), count(mx_evidence) FROM market_data_1m")).one()
    assert bars > 0 and scored == 0  # the ingest came second: fresh bars, to be scored by the next DSI run
    assert dsi_only(url, "2024-01-08", "2024-01-08").success


def scratch_tables(url) -> list[str]:
    from tis_pipeline.pg.day_partitions import SCRATCH_TABLE_PATTERN

    with engine(url).connect() as conn:
        return (
            conn.execute(
                sa.text("SELECT relname FROM pg_class WHERE relname ~ :p"), {"p": SCRATCH_TABLE_PATTERN}
            )
            .scalars()
            .all()
        )


def test_the_rebuilt_days_keep_every_value_dsi_does_not_write(migrated_database_url):
    """DSI writes each scored day as a new partition. Values its floats cannot prove (a fraction above 2**26,
    a value with 20 digits), module columns, and a day whose rows sit in the DEFAULT partition all come out
    exactly as they were; nothing of the build is left behind."""
    url = migrated_database_url
    assert run(url, MARKET, "2024-01-08", "2024-01-08").success
    odd = {"volume": "123456789.12345678", "open": "99999999999.99999999", "high": "99999999999.99999999"}
    with engine(url).begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE market_data_1m SET volume = :volume, open = :open, high = :high, "
                "module_intelligence = '{\"kept\": true}' "
                "WHERE symbol = 'AAA' AND \"timestamp\" = '2024-01-08 10:00+00'"
            ),
            odd,
        )
        conn.execute(
            sa.text(
                "UPDATE market_data_1m SET module_learning_updates = '[1, 2]' "
                "WHERE symbol = 'BBB' AND \"timestamp\" = '2024-01-08 11:00+00'"
            )
        )
        # a day without a partition of its own: its rows go to the DEFAULT partition
        conn.execute(
            sa.text(
                'INSERT INTO market_data_1m (symbol, "timestamp", open, high, low, close, volume, '
                "module_intelligence) "
                "SELECT symbol, \"timestamp\" + interval '1 day', open, high, low, close, "
                "volume + 0.00000001, "
                "'{\"m\": 1}' FROM market_data_1m WHERE \"timestamp\" < '2024-01-08 02:00+00'"
            )
        )
        default_rows = conn.execute(sa.text("SELECT count(*) FROM ONLY market_data_1m_default")).scalar_one()
    assert default_rows > 100
    columns = (
        'symbol, "timestamp", open, high, low, close, volume, module_intelligence, module_learning_updates'
    )
    with engine(url).connect() as conn:
        before = conn.execute(sa.text(f"SELECT {columns} FROM market_data_1m ORDER BY 1, 2")).all()
    assert dsi_only(url, "2024-01-08", "2024-01-09").success
    with engine(url).connect() as conn:
        after = conn.execute(sa.text(f"SELECT {columns} FROM market_data_1m ORDER BY 1, 2")).all()
        scored = conn.execute(
            sa.text(
                "SELECT count(*) FILTER (WHERE mx_evidence IS NULL OR mx_confirm IS NULL "
                "OR mx_expert_contributions IS NULL) FROM market_data_1m"
            )
        ).scalar_one()
        in_default = conn.execute(sa.text("SELECT count(*) FROM ONLY market_data_1m_default")).scalar_one()
        partitions = conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_inherits WHERE inhparent = 'market_data_1m'::regclass "
                "AND inhrelid::regclass::text IN ('market_data_1m_p20240108', 'market_data_1m_p20240109')"
            )
        ).scalar_one()
        odd_after = conn.execute(
            sa.text(
                "SELECT volume::text, open::text, module_intelligence->>'kept' FROM market_data_1m "
                "WHERE symbol = 'AAA' AND \"timestamp\" = '2024-01-08 10:00+00'"
            )
        ).one()
    assert after == before and len(after) == len(before) > default_rows
    assert tuple(odd_after) == (odd["volume"], odd["open"], "true")
    assert scored == 0 and in_default == 0 and partitions == 2
    assert scratch_tables(url) == []


def test_a_scoring_failure_midway_through_a_day_abandons_its_build(migrated_database_url, monkeypatch):
    """The day's build consumes the scored parts as they come; a failure after the first part ends it too (no
    hang, no table left behind, nothing written)."""
    from tis_pipeline.dsi.logic import score as logic

    url = migrated_database_url
    assert run(url, MARKET, "2024-01-08", "2024-01-08").success
    score_bars, calls = logic.score_bars, []

    def failing_on_the_second_part(bars, state, config):
        calls.append(len(bars))
        if len(calls) == 2:
            raise ValueError("injected scoring failure")
        return score_bars(bars, state, config)

    monkeypatch.setattr(logic, "score_bars", failing_on_the_second_part)
    failed = dsi_only(url, "2024-01-08", "2024-01-08")
    assert not failed.success and len(calls) == 2
    assert (
        "injected scoring failure"
        in failed.get_step_failure_events()[0].event_specific_data.error.to_string()
    )
    with engine(url).connect() as conn:
        assert {k: conn.execute(sa.text(q)).scalar_one() for k, q in UNWRITTEN.items()} == dict.fromkeys(
            UNWRITTEN, 0
        )
    assert scratch_tables(url) == []


def test_a_failed_build_fails_the_run_and_leaves_nothing(migrated_database_url, monkeypatch):
    from tis_pipeline.pg import day_partitions as bar_store

    url = migrated_database_url
    assert run(url, MARKET, "2024-01-08", "2024-01-09").success

    def failing(cur, staging):
        raise RuntimeError(f"injected build failure of {staging}")

    monkeypatch.setattr(bar_store, "finish_day_table", failing)
    failed = dsi_only(url, "2024-01-08", "2024-01-09")
    assert not failed.success
    assert (
        "injected build failure" in failed.get_step_failure_events()[0].event_specific_data.error.to_string()
    )
    with engine(url).connect() as conn:
        assert {k: conn.execute(sa.text(q)).scalar_one() for k, q in UNWRITTEN.items()} == dict.fromkeys(
            UNWRITTEN, 0
        )
    assert scratch_tables(url) == []
