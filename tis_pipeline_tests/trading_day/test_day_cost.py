"""The trading day's faster paths give what the paths they replace gave, bit for bit: the bus walked by a heap
of due times (against the scan of every pending row per tick), the rehearsal's decisions and executions
reused (against a rerun), the closes awaited as a ``Future``, a child's dry run without text, the desk's
positions carried from plan to plan (against a scan of every earlier plan), the day's regime in numpy, ids
without ``uuid.UUID`` objects and ``plain``'s shortcuts. No database: synthetic days in memory."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal, assert_series_equal

from tis_pipeline.trading_day import closes as closes_module
from tis_pipeline.trading_day import day as day_module
from tis_pipeline.trading_day.bus import inprocess
from tis_pipeline.trading_day.bus.inprocess import BusPolicy, Receiver, deliver
from tis_pipeline.trading_day.day import run_day
from tis_pipeline.trading_day.ecosystem import common, routing, triggers
from tis_pipeline.trading_day.ecosystem.common import MESSAGE_COLUMNS, rows_frame
from tis_pipeline.trading_day.ecosystem.founders import founding_population
from tis_pipeline.trading_day.plans import approve, score
from tis_pipeline.trading_day.plans.common import (
    PLAN_SCHEMA,
    REGIME_MIN_RETURNS,
    conform,
    naive_ns,
    utc_series,
)
from tis_pipeline.trading_day.plans.execute import open_book
from tis_pipeline.trading_day.plans.generate import generate_plans
from tis_pipeline.trading_day.plans.market import DayBars, prepare_bars, regime_label, trend_z
from tis_pipeline.trading_day.population import (
    ECOSYSTEM_NAMESPACE,
    PLANS_NAMESPACE,
    acting_module,
    ecosystem_uuid,
    genome_of,
    is_missing,
    plan_uuid,
)
from tis_pipeline_tests.trading_day.test_day_inputs import WALL_CLOCK, _bars, _events

DAY = pd.Timestamp("2024-03-04", tz="UTC")


def _without_wall_clock(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[[c for c in frame.columns if c not in WALL_CLOCK]]


@pytest.fixture(scope="module")
def synthetic_day() -> dict[str, Any]:
    bars = _bars(DAY, 3)
    return {"bars": bars, "events": _events(bars, DAY, 240, 3), "population": founding_population(DAY)}


# ------------------------------------------------------------------------------------------------ the bus


def _deliver_by_scan(
    messages_: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp, policy: BusPolicy
) -> pd.DataFrame:
    """The walk as it was: every pending row looked at on every tick (the reference the heap must match)."""
    if messages_.empty:
        return messages_.copy()
    rows = {str(r["message_id"]): dict(r) for r in messages_.to_dict("records")}
    for r in rows.values():
        r[inprocess._ARRIVAL] = inprocess.arrival(r)
    pending = {mid for mid, r in rows.items() if r["status"] == "pending"}
    if not pending:
        return messages_.copy()
    due_at = {mid: inprocess.due(rows[mid], policy) for mid in pending}
    t0 = inprocess.first_tick(min(due_at.values()), start)
    while pending and t0 < end:
        t1 = t0 + inprocess.TICK
        queues: dict[str | None, list[dict[str, Any]]] = {}
        for mid in sorted(pending):
            if due_at[mid] < t1:
                r = rows[mid]
                rid = r.get("receiver_module_id")
                queues.setdefault(None if rid is None else str(rid), []).append(r)
        for rid in sorted(queues, key=lambda k: "" if k is None else k):
            for new in inprocess.step(queues[rid], rid, t0, 0, policy):
                mid = str(new["message_id"])
                rows[mid] = new
                if new["status"] != "pending":
                    pending.discard(mid)
                    due_at.pop(mid, None)
                else:
                    due_at[mid] = inprocess.due(new, policy)
        if not pending:
            break
        t0 = inprocess.next_tick(t0, min(due_at[m] for m in pending))
    out = pd.DataFrame([rows[str(m)] for m in messages_["message_id"]], columns=messages_.columns)
    out["last_delivery_attempt"] = pd.to_datetime(out["last_delivery_attempt"], utc=True)
    return out.astype(messages_.dtypes.to_dict()).set_axis(messages_.index)


RECEIVERS = (None, "desk", "trader", "alpha", "gone", "nobody")  # None: a broadcast; nobody: unknown


def _random_messages(seed: int, n: int) -> tuple[pd.DataFrame, BusPolicy]:
    """Bursts to receivers of small capacity (waits, priorities, expiry), an unreachable receiver (retries,
    failures), an unknown one, broadcasts, carried rows with attempts made, ttl 0, and a burst at the window's
    end (left pending)."""
    rng = np.random.default_rng(seed)
    receivers = {
        "desk": Receiver(live=True, capacity_per_minute=2),
        "trader": Receiver(live=True, capacity_per_minute=5),
        "alpha": Receiver(live=True),
        "gone": Receiver(live=False, state="status failed"),
    }
    rows = []
    for k in range(n):
        # minutes drawn from a few hot spots, the day's last minutes among them
        minute = int(rng.choice([600, 601, 602, 900, 1437, 1439])) + int(rng.integers(0, 3))
        at = DAY + pd.Timedelta(minutes=min(minute, 1439), seconds=int(rng.integers(0, 60)))
        carried = rng.random() < 0.1
        rows.append(
            {
                "message_id": ecosystem_uuid("cost-test", seed, k),
                "sender_module_id": "alpha",
                "receiver_module_id": [None, "desk", "trader", "alpha", "gone", "nobody"][
                    int(rng.integers(0, 6))
                ],
                "timestamp": at - pd.Timedelta(hours=1) if carried else at,
                "message_type": "trading_plan",
                "message_data": {"key": k, "sender_latency_ms": int(rng.integers(0, 90_000))},
                "priority": int(rng.integers(1, 4)),
                "ttl_seconds": int(rng.choice([0, 30, 120, 600, 7200])),
                "status": "pending",
                "delivery_attempts": int(rng.integers(1, 3)) if carried else 0,
                "last_delivery_attempt": at - pd.Timedelta(minutes=30) if carried else None,
                "error_message": None,
            }
        )
    return rows_frame(rows, "module_messages", MESSAGE_COLUMNS), BusPolicy(receivers=receivers)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_bus_walked_by_a_heap_gives_the_scans_rows(seed):
    frame, policy = _random_messages(seed, 400)
    end = DAY + pd.Timedelta(days=1)
    expected = _deliver_by_scan(frame, DAY, end, policy)
    got = deliver(frame, DAY, end, policy)
    assert_frame_equal(got, expected, check_exact=True)
    # every fate of the rule happened
    assert {"delivered", "expired", "failed", "pending"} <= set(got["status"])


# -------------------------------------------------------------------------------- the rehearsal, reused


def test_the_day_reusing_its_rehearsal_equals_the_day_rerunning_its_steps(synthetic_day, monkeypatch):
    """Every table of ``run_day`` as when the decision maker and the trader ran again after the rehearsal;
    the closes given as a ``Future`` change nothing either."""
    calls = {"approve": 0, "execute": 0}
    real_approve, real_execute = day_module.approve_plans, day_module.simulate_execution

    def counted_approve(*args, **kwargs):
        calls["approve"] += 1
        return real_approve(*args, **kwargs)

    def counted_execute(*args, **kwargs):
        calls["execute"] += 1
        return real_execute(*args, **kwargs)

    monkeypatch.setattr(day_module, "approve_plans", counted_approve)
    monkeypatch.setattr(day_module, "simulate_execution", counted_execute)
    closes: Future[pd.DataFrame] = Future()
    closes.set_result(synthetic_day["bars"])
    day_inputs = (synthetic_day["events"], synthetic_day["bars"], synthetic_day["population"], pd.DataFrame())
    reused = run_day(DAY, *day_inputs, None, closes)
    assert calls == {"approve": 0, "execute": 0}  # the real pass took the rehearsal's output
    monkeypatch.setattr(day_module, "same_frame", lambda a, b: False)
    rerun = run_day(
        DAY, synthetic_day["events"], synthetic_day["bars"], synthetic_day["population"], pd.DataFrame()
    )
    assert calls == {"approve": 1, "execute": 1}
    plans, approvals = rerun["trading_plans"], rerun["trading_plan_approvals"]
    assert len(plans) > 150
    assert {"approved", "modified", "rejected"} <= set(approvals["approval_status"])
    assert reused.keys() == rerun.keys()
    for name in rerun:
        assert_frame_equal(
            _without_wall_clock(reused[name]), _without_wall_clock(rerun[name]), check_exact=True, obj=name
        )


def test_a_bus_that_holds_plans_back_makes_the_day_decide_again(synthetic_day, monkeypatch):
    """Every third plan's message with no time to live: those expire on the way, the desk sees fewer plans
    than were rehearsed, and its step runs again on those (the rehearsal's decisions would be another
    day's)."""
    real_plan_messages = routing.plan_messages

    def short_lived(*args, **kwargs):
        frame = real_plan_messages(*args, **kwargs)
        return frame.assign(ttl_seconds=np.where(np.arange(len(frame)) % 3 == 0, 0, frame["ttl_seconds"]))

    monkeypatch.setattr(routing, "plan_messages", short_lived)
    calls = {"approve": 0}
    real_approve = day_module.approve_plans

    def counted_approve(*args, **kwargs):
        calls["approve"] += 1
        return real_approve(*args, **kwargs)

    monkeypatch.setattr(day_module, "approve_plans", counted_approve)
    out = run_day(
        DAY, synthetic_day["events"], synthetic_day["bars"], synthetic_day["population"], pd.DataFrame()
    )
    assert calls["approve"] == 1
    plans = out["trading_plans"]
    held = plans["validation_status"] == "pending"  # never decided: held by the bus
    assert held.sum() > 30
    assert len(out["trading_plan_approvals"]) == len(plans) - held.sum()
    assert out["trading_plan_approvals"]["approval_status"].isin(["approved", "modified", "rejected"]).all()


# ------------------------------------------------------------------------------- a child's dry run, numbers


def test_plans_without_text_have_the_same_rows_and_numbers(synthetic_day):
    prepared = DayBars(synthetic_day["bars"])
    full = generate_plans(DAY, synthetic_day["events"], prepared, synthetic_day["population"])
    numbers = generate_plans(DAY, synthetic_day["events"], prepared, synthetic_day["population"], text=False)
    text = [
        "entry_conditions",
        "microstructure_evidence",
        "regime_context",
        "module_intelligence",
        "execution_notes",
        "risk_assessment",
        "portfolio_impact",
    ]
    assert len(full) > 150
    assert numbers[text].isna().all().all()
    rest = [c for c in full.columns if c not in text]
    assert_frame_equal(numbers[rest], full[rest], check_exact=True)


# ------------------------------------------------------------------------------------------------ the desk


def test_the_desk_carrying_its_positions_decides_as_the_scan_of_every_earlier_plan(
    synthetic_day, monkeypatch
):
    """``review`` with its open and closed positions carried from plan to plan gives the frame and what the
    desk saw as when it looked at every accepted plan again for each plan (its path for plans out of time
    order)."""
    population = synthetic_day["population"]
    prepared = DayBars(synthetic_day["bars"])
    plans = generate_plans(DAY, synthetic_day["events"], prepared, population)
    plans = conform(plans, PLAN_SCHEMA).sort_values(["timestamp", "plan_id"], kind="stable")
    plans = plans.reset_index(drop=True)
    desk_module = acting_module(population, "decision_maker", last_entry_only=True)
    trader_module = acting_module(population, "trader", last_entry_only=True)
    assert desk_module is not None and trader_module is not None
    desk, trader = genome_of(desk_module["genome"]), genome_of(trader_module["genome"])
    book = open_book(plans, prepared)
    sizes = plans["position_size"].to_numpy(dtype="float64")
    carried, carried_seen = approve.review(plans, sizes, desk, trader, book)
    monkeypatch.setattr(approve, "_in_time_order", lambda ts: False)
    scanned, scanned_seen = approve.review(plans, sizes, desk, trader, book)
    monkeypatch.undo()
    assert {"approved", "modified", "rejected"} <= set(carried["status"])
    assert max(s["closed_positions"] for s in carried_seen) > 0
    assert max(len(s["open_positions"]) for s in carried_seen) > 1
    assert_frame_equal(carried, scanned, check_exact=True)
    assert carried_seen == scanned_seen
    quiet, none_seen = approve.review(plans, sizes, desk, trader, book, describe=False)
    assert_frame_equal(quiet, carried, check_exact=True)
    assert none_seen == []


# ----------------------------------------------------------------------------------------- the day's regime


def _day_regime_by_frames(day: pd.Timestamp, bars: DayBars) -> str:
    """The day's regime as it was computed (filtered frame, groupby cumcount)."""
    b = closes_module.sorted_closes(bars.closes)
    b = b[(b["timestamp"] >= day) & (b["timestamp"] < day + pd.Timedelta(days=1))].reset_index(drop=True)
    if b.empty:
        return "unknown"
    sym = b["symbol"].to_numpy(dtype=object)
    run = np.cumsum(np.r_[False, sym[1:] != sym[:-1]])
    pos = pd.Series(run).groupby(run, sort=False).cumcount().to_numpy()
    close = b["close"].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        lr = np.where(pos > 0, np.log(close / np.roll(close, 1)), np.nan)
    stats = pd.DataFrame({"run": run, "lr": lr}).groupby("run", sort=True)["lr"].agg(["sum", "std", "count"])
    stats = stats[stats["count"] >= REGIME_MIN_RETURNS]
    if stats.empty:
        return "unknown"
    z = trend_z(stats["sum"].to_numpy(), stats["std"].to_numpy(), stats["count"].to_numpy())
    return regime_label(float(np.median(z)), float(stats["std"].median()))


@pytest.mark.parametrize(("seed", "drift"), [(1, 0.0), (2, 0.0004), (3, -0.0004), (4, 0.004)])
def test_the_days_regime_in_numpy_is_the_frames(seed, drift):
    bars = _bars(DAY, seed)
    # a trend or high volatility for some seeds, so the labels differ; a symbol with too few bars today
    bars = bars.assign(close=bars["close"] * np.exp(drift * bars.groupby("symbol").cumcount()))
    bars = bars[(bars["symbol"] != "QUIET") | (bars["timestamp"] < DAY + pd.Timedelta(minutes=5))]
    shuffled = bars.sample(frac=1.0, random_state=seed)  # the closes' own order is not relied on
    got = score._day_regime(DAY, DayBars(None, shuffled))
    assert got == _day_regime_by_frames(DAY, DayBars(None, shuffled))
    assert got != "unknown"
    before = bars[bars["timestamp"] < DAY]  # context only: nothing of the day
    assert score._day_regime(DAY, DayBars(None, before)) == "unknown"


def test_the_days_regimes_seen_differ():
    labels = set()
    for seed, drift in [(1, 0.0), (2, 0.0004), (3, -0.0004), (4, 0.004)]:
        bars = _bars(DAY, seed)
        bars = bars.assign(close=bars["close"] * np.exp(drift * bars.groupby("symbol").cumcount()))
        labels.add(score._day_regime(DAY, DayBars(None, bars)))
    assert len(labels) >= 3  # the regime test above compares more than one label


# ------------------------------------------------------------------------ every symbol's closes, in pieces


def _market_regime_by_groupby(bars: pd.DataFrame, end: pd.Timestamp) -> tuple[str | None, float]:
    """The triggers' market regime as it was computed (a groupby over the window of the whole frame)."""
    end = pd.Timestamp(end)
    ts = pd.to_datetime(bars["timestamp"], utc=True)
    window = bars[(ts >= end - pd.Timedelta(minutes=common.REGIME_BARS)) & (ts < end)]
    stats = []
    for _, g in window.sort_values(["symbol", "timestamp"], kind="stable").groupby("symbol", sort=True):
        close = g["close"].to_numpy(dtype="float64")
        if len(close) < common.REGIME_MIN_BARS or not np.all(close > 0):
            continue
        r = np.diff(np.log(close))
        sd = float(r.std(ddof=1)) if len(r) > 1 else 0.0
        stats.append(float(r.sum() / (sd * np.sqrt(len(r)))) if sd > 0 else 0.0)
    if not stats:
        return None, float("nan")
    z = float(np.mean(stats) * np.sqrt(len(stats)))
    return (
        "trending_up" if z > common.REGIME_Z else "trending_down" if z < -common.REGIME_Z else "ranging"
    ), z


def _last_bars_by_groupby(bars: pd.DataFrame, day: pd.Timestamp) -> dict[str, pd.Timestamp]:
    """The notes' last bar of the day per symbol as it was computed."""
    ts = pd.to_datetime(bars["timestamp"], utc=True)
    today = bars[(ts >= day) & (ts < day + pd.Timedelta(days=1))]
    return pd.to_datetime(today.groupby("symbol")["timestamp"].max(), utc=True).to_dict()


def _in_pieces(bars: pd.DataFrame, seed: int) -> list[pd.DataFrame]:
    """The bars cut into pieces of whole symbols (1 to 7 symbols each, in shuffled order), each piece's
    rows shuffled: what ``store.read_day_closes_in_pieces`` may hand over."""
    rng = np.random.default_rng(seed)
    symbols = [str(x) for x in rng.permutation(sorted(bars["symbol"].unique()))]
    pieces = []
    while symbols:
        n = int(rng.integers(1, 8))
        take, symbols = symbols[:n], symbols[n:]
        piece = bars[bars["symbol"].isin(take)]
        pieces.append(piece.sample(frac=1.0, random_state=seed).reset_index(drop=True))
    return pieces


def _closes_for(seed: int, drift: float) -> pd.DataFrame:
    """A day of closes with a trend (``drift``), a symbol with a few bars of the day only (QUIET) and one
    with the context bars only, none of the day (EQ07)."""
    bars = _bars(DAY, seed)
    bars = bars.assign(close=bars["close"] * np.exp(drift * bars.groupby("symbol").cumcount()))
    bars = bars[(bars["symbol"] != "QUIET") | (bars["timestamp"] < DAY + pd.Timedelta(minutes=5))]
    bars = bars[(bars["symbol"] != "EQ07") | (bars["timestamp"] < DAY)]
    return bars[["symbol", "timestamp", "close"]].reset_index(drop=True)


@pytest.mark.parametrize(("seed", "drift"), [(1, 0.0), (2, 0.0004), (3, -0.0004), (4, 0.004)])
def test_the_closes_figures_in_pieces_are_the_whole_frames(seed, drift):
    """Each symbol's figures reduced a piece at a time are the whole frame's, bit for bit, and the day's
    regime, the triggers' market regimes and the notes' last bars read from them are what the code before
    them computed from every bar at once."""
    closes = _closes_for(seed, drift)
    pieces = _in_pieces(closes, seed)
    assert len(pieces) > 4
    whole = closes_module.reduce_closes(DAY, closes)
    pieced = closes_module.reduce_pieces(DAY, pieces)
    assert_frame_equal(pieced.stats, whole.stats, check_exact=True)
    for name in ("trends_before", "trends_after", "last_bars"):
        assert_series_equal(getattr(pieced, name), getattr(whole, name), check_exact=True, obj=name)
    # EQ07 has context bars only: a trend before the day, no figure of the day; QUIET too few bars today
    assert "EQ07" in pieced.trends_before.index and "EQ07" not in pieced.stats.index
    assert "EQ07" not in pieced.last_bars.index and "QUIET" not in pieced.trends_after.index
    for end in (DAY, DAY + pd.Timedelta(days=1)):
        label, z = _market_regime_by_groupby(closes, end)
        assert label is not None and z != 0.0
        assert triggers.market_regime(pieced, end) == (label, z)
        assert triggers.market_regime(whole, end) == (label, z)
    assert score._day_regime(DAY, DayBars(None, pieced)) == _day_regime_by_frames(DAY, DayBars(None, closes))
    assert pieced.last_bars.to_dict() == _last_bars_by_groupby(closes, DAY)
    # the last bars in the closes' unit of time (microseconds as the database gives them), the same times
    for unit in ("us", "ns"):
        given = closes.assign(timestamp=closes["timestamp"].dt.as_unit(unit))
        last_bars = closes_module.reduce_pieces(DAY, _in_pieces(given, seed)).last_bars
        assert last_bars.dtype == f"datetime64[{unit}, UTC]"
        assert last_bars.to_dict() == _last_bars_by_groupby(closes, DAY)


def test_a_symbol_cut_across_pieces_is_refused():
    closes = _closes_for(1, 0.0)
    msft = closes["symbol"] == "MSFT"
    halves = [closes[~msft], closes[msft].iloc[:800], closes[msft].iloc[800:]]  # cut in the day
    with pytest.raises(ValueError, match="more than one piece"):
        closes_module.reduce_pieces(DAY, halves)
    with pytest.raises(ValueError, match="another day"):
        closes_module.combine(DAY, [closes_module.reduce_closes(DAY + pd.Timedelta(days=1), closes)])


def test_the_day_from_the_closes_figures_equals_the_day_from_every_close(synthetic_day):
    """``run_day`` given the closes' figures (a ``Future``, as the asset hands them) writes every table and
    note it writes given the closes themselves."""
    bars = synthetic_day["bars"]
    figures: Future[closes_module.DayCloses] = Future()
    figures.set_result(
        closes_module.reduce_pieces(DAY, _in_pieces(bars[["symbol", "timestamp", "close"]], 5))
    )
    inputs = (synthetic_day["events"], bars, synthetic_day["population"], pd.DataFrame())
    from_closes = run_day(DAY, *inputs)
    from_figures = run_day(DAY, *inputs, None, figures)
    notes = from_closes["bar_notes"]
    assert notes["module_learning_updates"].notna().any()  # the last bars were read
    assert from_closes["module_performance"]["market_regime"].notna().all()
    assert from_closes.keys() == from_figures.keys()
    for name in from_closes:
        assert_frame_equal(
            _without_wall_clock(from_figures[name]),
            _without_wall_clock(from_closes[name]),
            check_exact=True,
            obj=name,
        )


# ------------------------------------------------------------------------- the plans' bars, held once


def _prepared_by_sorting_copies(bars: pd.DataFrame) -> pd.DataFrame:
    """``prepare_bars`` as it was: a copy of the frame, then a sorted copy of it."""
    b = pd.DataFrame(
        {
            "symbol": bars["symbol"].astype("str").to_numpy(),
            "timestamp": naive_ns(bars["timestamp"]),
            **{c: bars[c].to_numpy(dtype="float64") for c in ("open", "high", "low", "close", "volume")},
        }
    )
    b = b.sort_values(["symbol", "timestamp"], kind="stable").reset_index(drop=True)
    b["timestamp"] = utc_series(b["timestamp"])
    return b


@pytest.mark.parametrize("seed", [1, 2])
def test_the_bars_sorted_by_one_take_are_the_sorted_copy(seed):
    bars = _bars(DAY, seed).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    bars = bars.assign(symbol=bars["symbol"].astype(object))  # as read_plan_bars gives them
    got = prepare_bars(bars)
    assert_frame_equal(got, _prepared_by_sorting_copies(bars), check_exact=True)
    assert got["symbol"].is_monotonic_increasing and len(got) == len(bars)


def test_events_found_in_their_symbols_blocks_are_the_merge_with_every_bars_keys():
    """``DayBars.rows_at`` finds each event's bar as the inner merge with a frame of every bar's (symbol,
    timestamp, row) did: the same rows, -1 (dropped by the merge) for an event without a bar (a gap, a
    symbol without bars, a time outside the bars)."""
    bars = _bars(DAY, 4)
    prepared = DayBars(bars.sample(frac=1.0, random_state=4))
    events = _events(bars, DAY, 300, 4)
    rng = np.random.default_rng(4)
    shifted = events["timestamp"] + pd.to_timedelta(rng.integers(0, 3, len(events)), unit="s") * 20
    events = events.assign(timestamp=shifted.where(rng.random(len(events)) < 0.3, events["timestamp"]))
    events.loc[events.index[:5], "symbol"] = "NOBARS"
    events.loc[events.index[5:8], "timestamp"] = DAY + pd.Timedelta(days=3)
    keys = prepared.bars[["symbol", "timestamp"]].assign(row=np.arange(len(prepared.bars)))
    ev = events[["event_id", "symbol", "timestamp"]].assign(
        symbol=events["symbol"].astype("str"), timestamp=utc_series(events["timestamp"])
    )
    merged = ev.merge(keys, on=["symbol", "timestamp"], how="inner")
    rows = prepared.rows_at(ev["symbol"], ev["timestamp"])
    found = ev[rows >= 0].assign(row=rows[rows >= 0]).reset_index(drop=True)
    assert_frame_equal(found, merged, check_exact=True)
    assert 100 < len(found) < len(ev) - 50  # many found, the shifted and the barless not
    assert (rows[:8] == -1).all()


def test_ids_are_uuid5_of_their_parts():
    rng = np.random.default_rng(7)
    for k in range(2000):
        parts = (str(uuid.UUID(int=int(rng.integers(0, 2**63)))), k, "é|x", None, 2.5)[: 1 + k % 5]
        name = "|".join(str(p) for p in parts)
        assert plan_uuid(*parts) == str(uuid.uuid5(PLANS_NAMESPACE, name))
        assert ecosystem_uuid(*parts) == str(uuid.uuid5(ECOSYSTEM_NAMESPACE, name))


def _plain_by_checks(v: Any) -> Any:
    """``plain`` as it was: the chain of isinstance checks only."""
    if isinstance(v, Mapping):
        return {str(k): _plain_by_checks(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_plain_by_checks(x) for x in v]
    if is_missing(v):
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating, decimal.Decimal)):
        return float(v)
    if isinstance(v, (pd.Timestamp, dt.datetime, dt.date)):
        return v.isoformat()
    return v


def test_plain_answers_as_its_checks_did():
    values = [
        "text", "", None, 0, -3, 2**70, True, False, 1.5, -0.0, float("nan"), float("inf"), np.float64(2.5),
        np.float64("nan"), np.int64(4), np.bool_(True), decimal.Decimal("1.25"), pd.Timestamp("2024-03-04",
        tz="UTC"), pd.NaT, dt.date(2024, 3, 4), [1, "a", None, float("nan")], (2, 3.5), np.array([1.0, 2.0]),
        {"a": {"b": [1, {"c": np.int64(3)}]}, 1: float("nan")},
    ]  # fmt: skip
    for v in values:
        got, expected = common.plain(v), _plain_by_checks(v)
        assert got == expected or (got is None and expected is None), v
        assert type(got) is type(expected), v
