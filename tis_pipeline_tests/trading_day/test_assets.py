"""The trading day against a real PostgreSQL: every table written and linked, honest fills, replays
identical."""

import dagster as dg
import pytest
import sqlalchemy as sa

from tis_pipeline.dsi.assets import dsi
from tis_pipeline.market_data.assets import market_data_1h, market_data_1m, market_data_15m
from tis_pipeline.market_data.partitions import range_tags
from tis_pipeline.market_data.sources import BarSource
from tis_pipeline.pg.engine import engine
from tis_pipeline.resources import PostgresResource
from tis_pipeline.trading_day.assets import TABLES, trading_day

pytestmark = pytest.mark.pg
UPSTREAM = [market_data_1m, market_data_15m, market_data_1h, dsi]
SYMBOLS = ["AAA", "BBB", "CCC"]
FOUNDERS = 5


def resources(url):
    return {"db": PostgresResource(url=url), "bars": BarSource(source="synthetic", symbols=SYMBOLS, seed=4)}


def tags(first, last):
    return range_tags(first, last)


def upstream(url, first, last):
    assert dg.materialize(UPSTREAM, resources=resources(url), tags=tags(first, last)).success


def trading(url, first, last):
    sources = [spec for a in UPSTREAM for spec in a.to_source_assets()]
    return dg.materialize(
        [*sources, trading_day], resources=resources(url), raise_on_error=False, tags=tags(first, last)
    )


def _digest(table, order, exclude=()):
    columns = (
        f"to_jsonb(t) - ARRAY[{', '.join(repr(c) for c in exclude)}]::text[]" if exclude else "to_jsonb(t)"
    )
    return f"SELECT md5(coalesce(string_agg(({columns})::text, '|' ORDER BY {order}), '')) FROM {table} t"


# creation_time_ms, validation_time_ms and initialization_time_ms are wall-clock measurements (as DSI's
# latency): every other value must match bit for bit
DIGESTS = {
    "trading_plans": _digest("trading_plans", "plan_id"),
    "trading_plan_approvals": _digest("trading_plan_approvals", "approval_id"),
    "module_performance": _digest("module_performance", "performance_id"),
    "module_messages": _digest("module_messages", "message_id"),
    "module_intelligence_sharing": _digest("module_intelligence_sharing", "sharing_id"),
    "module_replication_triggers": _digest("module_replication_triggers", "trigger_id"),
    "module_replications": _digest(
        "module_replications",
        "replication_id",
        ("creation_time_ms", "validation_time_ms", "initialization_time_ms"),
    ),
    "modules": _digest("modules", "module_id"),
    "links": "SELECT md5(coalesce(string_agg(concat_ws(',', event_id, trading_plan_id, "
    "plan_generation_module_id, "
    "plan_execution_status, plan_performance_metrics::text), '|' ORDER BY event_id), '')) "
    "FROM anomaly_events",
    "evidence_links": "SELECT md5(coalesce(string_agg(concat_ws(',', evidence_id, plan_id), "
    "'|' ORDER BY evidence_id), "
    "'')) FROM dsi_evidence",
    "state": "SELECT md5(string_agg(population::text, '|' ORDER BY day)) FROM ecosystem_state",
    "bar_notes": "SELECT md5(coalesce(string_agg(concat_ws(',', symbol, \"timestamp\", "
    "module_intelligence::text, "
    "module_learning_updates::text), '|' ORDER BY symbol, \"timestamp\"), '')) FROM market_data_1m "
    "WHERE module_intelligence IS NOT NULL OR module_learning_updates IS NOT NULL",
}


def digests(url):
    with engine(url).connect() as conn:
        return {k: conn.execute(sa.text(q)).scalar_one() for k, q in DIGESTS.items()}


def counts(url):
    with engine(url).connect() as conn:
        return {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one() for t in TABLES}


def test_a_trading_day_writes_every_table_linked_and_checked(migrated_database_url):
    url = migrated_database_url
    upstream(url, "2024-06-10", "2024-06-12")
    result = trading(url, "2024-06-10", "2024-06-12")
    assert result.success
    checks = [c for c in result.get_asset_check_evaluations() if c.asset_key.to_user_string() in TABLES]
    assert {c.asset_key.to_user_string() for c in checks} == set(TABLES)
    assert checks and all(c.passed for c in checks), [c.check_name for c in checks if not c.passed]
    n = counts(url)
    with engine(url).connect() as conn:
        q = lambda sql: conn.execute(sa.text(sql)).all()  # noqa: E731
        events_total = q("SELECT count(*) FROM anomaly_events")[0][0]
        # a plan per planned event, made one minute after the event's bar opened, by the module named on the
        # event
        linked = q("""SELECT count(*), count(*) FILTER (WHERE p.symbol = e.symbol
                             AND p."timestamp" = e."timestamp" + INTERVAL '1 minute'
                             AND p.module_id = e.plan_generation_module_id
                             AND p.execution_status = e.plan_execution_status)
                      FROM anomaly_events e JOIN trading_plans p ON p.plan_id = e.trading_plan_id""")[0]
        evidence = q("""SELECT count(*) FROM dsi_evidence d
                        JOIN anomaly_events e ON e.dsi_evidence_id = d.evidence_id
                        WHERE d.plan_id = e.trading_plan_id""")[0][0]
        decisions = q("""SELECT count(*), count(DISTINCT a.plan_id), count(*) FILTER (WHERE
                             (a.approval_status = 'rejected') = (p.validation_status = 'failed')
                             AND (a.approval_status = 'rejected') = (p.execution_status = 'cancelled'))
                         FROM trading_plan_approvals a JOIN trading_plans p USING (plan_id)""")[0]
        # honest fills: the entry is the open of the first bar at or after the plan's time (plus slippage),
        # and no fill happens before the plan exists or after it expired
        fills = q("""SELECT p.plan_id, p.direction, p.executed_price::float8,
                            (p.attribution_analysis->>'entry_slippage_bps')::float8, b.open::float8,
                            b."timestamp" >= p."timestamp" AND b."timestamp" < p.valid_until
                            AND (p.performance_metrics->>'entry_time')::timestamptz = b."timestamp"
                     FROM trading_plans p
                     JOIN LATERAL (SELECT open, "timestamp" FROM market_data_1m m
                                   WHERE m.symbol = p.symbol AND m."timestamp" >= p."timestamp"
                                   ORDER BY m."timestamp" LIMIT 1) b ON true
                     WHERE p.executed_price IS NOT NULL""")
        per_day = q("""SELECT "timestamp"::date, count(*) FROM module_performance GROUP BY 1 ORDER BY 1""")
        # a child is one generation below its deepest parent (a mate may be deeper than the primary)
        lineage = q("""SELECT count(*), count(*) FILTER (WHERE c.parent_modules ? r.parent_module_id::text
                              AND c.generational_depth = 1 + (SELECT max(p.generational_depth) FROM modules p
                                                              WHERE c.parent_modules ? p.module_id::text))
                       FROM module_replications r JOIN modules c ON c.module_id = r.child_module_id""")[0]
        processed = q("""SELECT count(*), count(r.replication_id) FROM module_replication_triggers t
                         LEFT JOIN module_replications r USING (replication_id)
                         WHERE t.status = 'processed'""")[0]
        timings = q("""SELECT count(*) FILTER (WHERE creation_time_ms > 0),
                              count(*) FILTER (WHERE validation_time_ms > 0),
                              count(*) FILTER (WHERE initialization_time_ms > 0) FROM module_replications""")[
            0
        ]
        # the bars where modules acted: each plan's event bar, noted once
        noted = q("""SELECT count(*) FILTER (WHERE module_intelligence IS NOT NULL),
                            (SELECT count(DISTINCT (symbol, "timestamp" - INTERVAL '1 minute'))
                             FROM trading_plans),
                            (SELECT count(*) FROM trading_plans),
                            (SELECT sum(jsonb_array_length(module_intelligence->'acted')) FROM market_data_1m)
                     FROM market_data_1m""")[0]
    assert n["trading_plans"] > 10 and events_total >= n["trading_plans"]
    assert linked == (n["trading_plans"], n["trading_plans"])
    assert evidence == n["trading_plans"]
    assert decisions == (n["trading_plans"], n["trading_plans"], n["trading_plans"])
    assert fills and all(inside for *_, inside in fills)
    for _plan, direction, price, slippage_bps, bar_open, _inside in fills:
        sign = 1 if direction == "long" else -1
        assert price == pytest.approx(bar_open * (1 + sign * slippage_bps / 1e4), rel=1e-6)
    assert [d.isoformat() for d, _ in per_day] == ["2024-06-10", "2024-06-11", "2024-06-12"]
    assert per_day[0][1] == FOUNDERS
    assert n["modules"] == FOUNDERS + n["module_replications"]
    assert lineage == (n["module_replications"], n["module_replications"])
    assert processed[0] == processed[1] == n["module_replications"]
    # creation, validation (a dry run of the child's genome) and initialization are measured steps
    assert timings == (n["module_replications"],) * 3
    assert noted[0] == noted[1] and noted[2] == noted[3] == n["trading_plans"]
    # what the UI shows (issue 16 §3): the run's rows beside the table's, module names, the plot's range
    meta = {
        m.asset_key.to_user_string(): m.metadata
        for m in result.asset_materializations_for_node("trading_day")
    }
    for table in TABLES:
        assert meta[table]["dagster/row_count"].value == n[table], table  # the whole range was this run's
        assert meta[table]["rows_deleted_by_run"].value == 0, table
    assert all(meta[t]["rows_written_by_run"].value == n[t] for t in TABLES if t != "modules")
    plans = meta["trading_plans"]
    assert plans["range"].value == "2024-06-10..2024-06-12"
    table = plans["pnl_by_module"].value.splitlines()
    assert [c.strip() for c in table[0].strip("|").split("|")][:5] == [
        "module_id",
        "name",
        "generation",
        "trades",
        "pnl",
    ]
    with engine(url).connect() as conn:
        named = dict(conn.execute(sa.text("SELECT module_id::text, generational_depth FROM modules")).all())
    for line in table[2:]:
        module_id, name, generation = (c.strip() for c in line.strip("|").split("|")[:3])
        assert name and int(generation) == named[module_id]
    plot = plans["plot"].value
    assert plot.startswith("![cumulative P&L by module 2024-06-10..2024-06-12](data:image/png;base64,")
    assert " modules with executed plans shown" in plot


def test_rerun_is_idempotent_and_a_range_equals_day_by_day(migrated_database_url, empty_database_url):
    from tis_pipeline.pg import migrate

    by_range, by_day = migrated_database_url, empty_database_url
    migrate.upgrade(by_day)
    for url in (by_range, by_day):
        upstream(url, "2024-02-05", "2024-02-07")
    assert trading(by_range, "2024-02-05", "2024-02-07").success
    first, first_counts = digests(by_range), counts(by_range)
    assert first_counts["trading_plans"] > 0 and first_counts["module_performance"] > 0
    assert trading(by_range, "2024-02-05", "2024-02-07").success
    assert counts(by_range) == first_counts, "re-materializing gives the same rows, not more"
    assert digests(by_range) == first
    for day in ("2024-02-05", "2024-02-06", "2024-02-07"):
        assert trading(by_day, day, day).success
    assert digests(by_day) == first


def test_a_corrected_past_day_sends_the_trading_day_back_to_it(migrated_database_url, empty_database_url):
    from tis_pipeline.pg import migrate

    market = [market_data_1m, market_data_15m, market_data_1h]
    sources = [spec for a in market for spec in a.to_source_assets()]

    def correct_day_two(url):  # other bars for 2024-02-06, with their rollups
        bars = BarSource(source="synthetic", symbols=SYMBOLS, seed=5)
        assert dg.materialize(
            market,
            resources={"db": PostgresResource(url=url), "bars": bars},
            tags=tags("2024-02-06", "2024-02-06"),
        ).success

    def scores(url, first, last):
        assert dg.materialize([*sources, dsi], resources=resources(url), tags=tags(first, last)).success

    later, replay = migrated_database_url, empty_database_url
    migrate.upgrade(replay)
    # later: the whole chain first; then day 2 is corrected, and DSI and the trading day are asked for day 3
    # only
    upstream(later, "2024-02-05", "2024-02-07")
    assert trading(later, "2024-02-05", "2024-02-07").success
    stale = digests(later)
    correct_day_two(later)
    scores(later, "2024-02-07", "2024-02-07")  # re-scores from 2024-02-06 (tested in dsi/)
    result = trading(later, "2024-02-07", "2024-02-07")
    assert result.success
    ran = {m.metadata["range"].value for m in result.asset_materializations_for_node("trading_day")}
    assert ran == {"2024-02-06..2024-02-07"}  # back to the corrected day, not further
    # replay: the corrected bars from the start, in ranges, on a fresh database
    assert dg.materialize(market, resources=resources(replay), tags=tags("2024-02-05", "2024-02-07")).success
    correct_day_two(replay)
    scores(replay, "2024-02-05", "2024-02-07")
    assert trading(replay, "2024-02-05", "2024-02-07").success
    assert digests(later) == digests(replay) != stale


def test_a_failed_day_leaves_the_previous_rows(migrated_database_url):
    """A run that fails part-way (a plan the database refuses) rolls back: the earlier run's rows stay
    whole."""
    url = migrated_database_url
    upstream(url, "2024-03-04", "2024-03-05")
    assert trading(url, "2024-03-04", "2024-03-05").success
    before = digests(url)
    with engine(url).begin() as conn:
        conn.execute(
            sa.text("""
            CREATE FUNCTION tis_test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF NEW."timestamp" >= '2024-03-05' THEN RAISE EXCEPTION 'refused by test'; END IF;
              RETURN NEW;
            END $$;
            CREATE TRIGGER tis_test_refuse BEFORE INSERT ON module_performance FOR EACH ROW
              EXECUTE FUNCTION tis_test_refuse();""")
        )
    result = trading(url, "2024-03-04", "2024-03-05")
    assert not result.success
    assert digests(url) == before
    with engine(url).begin() as conn:
        conn.execute(sa.text("DROP TRIGGER tis_test_refuse ON module_performance"))
    assert trading(url, "2024-03-04", "2024-03-05").success
    assert digests(url) == before


def test_plans_before_the_event_are_impossible(migrated_database_url):
    """No plan is stamped before the minute after its event's bar, nor valid past its UTC day."""
    url = migrated_database_url
    upstream(url, "2024-04-01", "2024-04-01")
    assert trading(url, "2024-04-01", "2024-04-01").success
    with engine(url).connect() as conn:
        bad = conn.execute(
            sa.text("""
            SELECT count(*) FROM trading_plans p JOIN anomaly_events e ON e.trading_plan_id = p.plan_id
            WHERE p."timestamp" < e."timestamp" + INTERVAL '1 minute'
               OR p.valid_until > date_trunc('day', e."timestamp" AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                                  + INTERVAL '1 day'""")
        ).scalar_one()
        plans = conn.execute(sa.text("SELECT count(*) FROM trading_plans")).scalar_one()
    assert plans > 0 and bad == 0


def _evaluations(result) -> list[tuple]:
    """Each check's asset, name, verdict, severity and metadata (but the links to its run's data docs: named
    by the time it ran), in the order the asset yielded them."""
    return [
        (
            c.asset_key.to_user_string(),
            c.check_name,
            c.passed,
            c.severity,
            {k: v for k, v in c.metadata.items() if not k.startswith("gx_")},
        )
        for c in result.get_asset_check_evaluations()
    ]


def _on_threads(function, names: list[str]):
    """``function``, recording into ``names`` the thread of each call."""

    def recorded(*args, **kwargs):
        import threading

        names.append(threading.current_thread().name)
        return function(*args, **kwargs)

    return recorded


def _plans_plot(result) -> str:
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        if mat.asset_key.to_user_string() == "trading_plans":
            return str(mat.metadata["plot"].value)
    raise AssertionError("no trading_plans materialization")


def test_checks_on_their_thread_and_a_frozen_heap_change_nothing(
    migrated_database_url, empty_database_url, monkeypatch
):
    """A range large enough for its checks to be judged (and its P&L plot drawn) on their own thread beside
    the last writes, with the heap frozen (``MANY_PLANS``, ``MANY_EVENTS``; here every range is), writes the
    tables and yields the checks and the plot of a range judged after its writes, on the asset's thread."""
    from tis_pipeline.pg import migrate
    from tis_pipeline.trading_day import assets

    after, beside = migrated_database_url, empty_database_url
    migrate.upgrade(beside)
    for url in (after, beside):
        upstream(url, "2024-02-05", "2024-02-06")
    plain = trading(after, "2024-02-05", "2024-02-06")
    assert plain.success
    n_plans = counts(after)["trading_plans"]
    assert 0 < n_plans < assets.MANY_PLANS  # the small range: judged after its writes
    monkeypatch.setattr(assets, "MANY_PLANS", 1)
    monkeypatch.setattr(assets, "MANY_EVENTS", 1)
    threads: dict[str, list[str]] = {"_check_results": [], "pnl_plot": []}
    for name, names in threads.items():
        monkeypatch.setattr(assets, name, _on_threads(getattr(assets, name), names))
    threaded = trading(beside, "2024-02-05", "2024-02-06")
    assert threaded.success
    # the checks and the P&L plot, each once, on the checks' thread beside the writes
    assert {name: [t[:6] for t in names] for name, names in threads.items()} == {
        "_check_results": ["checks"],
        "pnl_plot": ["checks"],
    }
    assert _plans_plot(threaded) == _plans_plot(plain)
    assert _evaluations(threaded) == _evaluations(plain)
    assert len(_evaluations(plain)) > len(TABLES) and all(e[2] for e in _evaluations(plain))
    assert digests(beside) == digests(after)
    import gc

    assert not gc.get_freeze_count()  # the heap went back to the collector
