"""The DSI asset against a real PostgreSQL: every bar scored, events with evidence, range == day by day."""

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from tis_pipeline.dsi import frames
from tis_pipeline.dsi.assets import dsi
from tis_pipeline.market_data.assets import market_data_1h, market_data_1m, market_data_15m
from tis_pipeline.market_data.partitions import range_tags
from tis_pipeline.market_data.sources import BarSource
from tis_pipeline.market_data.store import read_bars
from tis_pipeline.pg.engine import engine
from tis_pipeline.resources import PostgresResource
from tis_pipeline_tests.support.kept_values import (
    assert_kept_and_scored,
    kept_rows,
    plant_values_dsi_does_not_write,
)
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
    "state": "SELECT md5(string_agg(encode(state, 'hex'), '|' ORDER BY day)) FROM dsi_state",
}


def evidence_digest_query(conn) -> str:
    """Every column of dsi_evidence but the wall-clock ones (frames.WALL_CLOCK_COLUMNS, and their unclamped
    copy under mx_expert_contributions' "latency" key): what a replay must reproduce bit for bit."""
    columns = conn.execute(
        sa.text(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'dsi_evidence' "
            "ORDER BY ordinal_position"
        )
    ).scalars()
    kept = [
        f"coalesce((mx_expert_contributions - '{frames.WALL_CLOCK_CONTRIBUTIONS_KEY}')::text, 'NULL')"
        if c == "mx_expert_contributions"
        else f"coalesce(\"{c}\"::text, 'NULL')"
        for c in columns
        if c not in frames.WALL_CLOCK_COLUMNS
    ]
    assert len(kept) == 21 - len(frames.WALL_CLOCK_COLUMNS)
    joined = ", ".join(kept)
    return f"SELECT md5(string_agg(concat_ws(',', {joined}), '|' ORDER BY evidence_id)) FROM dsi_evidence"


def digests(url):
    with engine(url).connect() as conn:
        found = {k: conn.execute(sa.text(q)).scalar_one() for k, q in DIGESTS.items()}
        found["evidence"] = conn.execute(sa.text(evidence_digest_query(conn))).scalar_one()
        return found


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
    check_evidence_semantics(url)
    # the digest leaves out the wall-clock columns and nothing else
    with engine(url).begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE dsi_evidence SET mx_processing_latency_ms = mx_processing_latency_ms % 9998 + 1, "
                "mx_latency_p50 = mx_latency_p50 % 9998 + 1, mx_latency_p95 = mx_latency_p95 % 9998 + 1, "
                "mx_throughput_per_second = mx_throughput_per_second % 9998 + 1, "
                "mx_expert_contributions = jsonb_set(jsonb_set(mx_expert_contributions, "
                "'{latency,bar_ms_true}', '0.5'), '{latency,run,latency_p95_ms_true}', '0.7')"
            )
        )
    assert digests(url) == before
    for change in (
        "mx_evidence_boost = CASE WHEN mx_evidence_boost > 0 THEN mx_evidence_boost - 0.0001 "
        "ELSE mx_evidence_boost + 0.0001 END",
        "mx_expert_survival_rates = jsonb_set(mx_expert_survival_rates, '{window_bars}', '61')",
        "mx_expert_contributions = jsonb_set(mx_expert_contributions, '{contributions}', '{}')",
        "plan_id = NULL, mx_microtape_hash = NULL",
    ):
        with engine(url).connect() as conn, conn.begin() as tx:
            conn.execute(
                sa.text(
                    f"UPDATE dsi_evidence SET {change} WHERE evidence_id = (SELECT evidence_id "
                    "FROM dsi_evidence WHERE mx_microtape_hash IS NOT NULL ORDER BY evidence_id LIMIT 1)"
                )
            )
            changed = conn.execute(sa.text(evidence_digest_query(conn))).scalar_one()
            tx.rollback()
        assert changed != before["evidence"], change


def check_evidence_semantics(url):
    """Per row: the latency of its bar's streaming call (ceil, clamped, flagged), survival rates in [0, 1]
    over the stated window, the boost a factor within numeric(5,4)."""
    from tis_pipeline.dsi.logic.config import EXPERTS, DsiConfig
    from tis_pipeline.dsi.logic.score import legal_ms

    with engine(url).connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT e.mx_processing_latency_ms, e.mx_expert_contributions->'latency', "
                "e.mx_expert_survival_rates, e.mx_evidence_boost::float8, e.mx_latency_p50, a.symbol, "
                "e.timestamp FROM dsi_evidence e JOIN anomaly_events a ON a.dsi_evidence_id = e.evidence_id"
            )
        ).all()
    assert len(rows) > 5
    true_ms = {}
    for stored, block, survival, boost, p50, symbol, ts in rows:
        assert (stored, block["bar_ms_clamped"]) == legal_ms(block["bar_ms_true"])
        assert 1 <= block["bar_batch_bars"] <= 16 and p50 == block["run"]["latency_p50_ms"]
        true_ms.setdefault((symbol, ts), set()).add(block["bar_ms_true"])
        assert survival["window_bars"] == DsiConfig().survival_window
        assert set(survival["rates"]) == set(EXPERTS)  # jsonb keeps its own key order
        assert all(0.0 <= r <= 1.0 for r in survival["rates"].values())
        assert -9.9999 <= boost <= 9.9999
    assert all(len(v) == 1 for v in true_ms.values()), "the event rows of one bar share its timing"
    per_bar = [next(iter(v)) for v in true_ms.values()]
    assert len(set(per_bar)) > 1, "measured per bar, not one figure per run"
    block = rows[0][1]["run"]
    assert block["n"] == len(per_bar)
    assert block["latency_p50_ms_true"] == pytest.approx(float(np.percentile(per_bar, 50)), rel=1e-9)


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
    exactly as they were (``support.kept_values``); nothing of the build is left behind."""
    url = migrated_database_url
    assert run(url, MARKET, "2024-01-08", "2024-01-08").success
    planted = plant_values_dsi_does_not_write(url, "2024-01-08", odd_symbol="AAA", learning_symbol="BBB")
    before = kept_rows(url)
    assert dsi_only(url, "2024-01-08", "2024-01-09").success
    assert_kept_and_scored(url, planted, before)
    with engine(url).connect() as conn:
        partitions = conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_inherits WHERE inhparent = 'market_data_1m'::regclass "
                "AND inhrelid::regclass::text IN ('market_data_1m_p20240108', 'market_data_1m_p20240109')"
            )
        ).scalar_one()
    assert partitions == 2
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


def test_scoring_in_pieces_gives_the_very_same_tables_and_figures(
    migrated_database_url, empty_database_url, monkeypatch
):
    """A day read, scored and written one symbol at a time (TIS_DSI_CHUNK_BARS=1) against the whole day at
    once: every table and the out-of-sample figures the same, bit for bit."""
    from tis_pipeline.dsi import pipeline
    from tis_pipeline.pg import migrate

    four = {"bars": BarSource(source="synthetic", symbols=["AAA", "BBB", "CCC", "DDD", "EEE"], seed=6)}
    pieces, whole = migrated_database_url, empty_database_url
    migrate.upgrade(whole)
    figures = {}
    for url, chunk, groups in ((pieces, "1", 4), (whole, "100000000", 1)):
        resources = {**four, "db": PostgresResource(url=url)}
        assert dg.materialize(
            MARKET, resources=resources, tags=range_tags("2024-03-04", "2024-03-06")
        ).success
        monkeypatch.setenv("TIS_DSI_CHUNK_BARS", chunk)
        monkeypatch.setattr(pipeline, "SCORE_GROUPS", groups)
        result = dg.materialize(
            [*(a.to_source_assets()[0] for a in MARKET), dsi],
            resources=resources,
            tags=range_tags("2024-03-04", "2024-03-06"),
        )
        assert result.success
        meta = next(
            m.metadata
            for m in result.asset_materializations_for_node("dsi")
            if m.asset_key.to_user_string() == "dsi_evidence"
        )
        figures[url] = (meta["out_of_sample"].value, meta["bars_scored"].value, meta["confirmed_share"].value)
    with engine(pieces).connect() as conn:
        assert len(store_pieces(conn)) == 5, "one symbol a piece"
    assert digests(pieces) == digests(whole)
    assert figures[pieces] == figures[whole]
    assert figures[pieces][0]["n"] > 0 and figures[pieces][1] > 5 * 3 * 1000


def store_pieces(conn):
    from tis_pipeline.dsi import store

    return store.day_pieces(store.symbol_counts(conn, pd.Timestamp("2024-03-05", tz="UTC")), 1)
