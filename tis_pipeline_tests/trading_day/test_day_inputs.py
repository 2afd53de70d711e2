"""The trading day's narrowed inputs (``store.read_plan_bars`` + the figures of
``store.read_day_closes_in_pieces``, prepared once as ``DayBars``) give every table of the day bit for bit as
the whole window of bars did (``run_day`` with the bars of ``[day - 2 h, day + 1 day)``, the old input), on
synthetic days with many plans, gaps in the bars, a symbol whose data ends early and a symbol without events;
read from a real PostgreSQL."""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from pandas.testing import assert_frame_equal

from tis_pipeline.market_data import store as bar_store
from tis_pipeline.pg.copy import copy_frame
from tis_pipeline.pg.engine import engine, raw_connection
from tis_pipeline.trading_day import closes as closes_module
from tis_pipeline.trading_day import store
from tis_pipeline.trading_day.day import CONTEXT_BEFORE, run_day
from tis_pipeline.trading_day.ecosystem.founders import founding_population
from tis_pipeline.trading_day.plans.generate import horizons_by_type, longest_horizon
from tis_pipeline.trading_day.plans.market import DayBars

NS = uuid.UUID("6f1d3c1e-2a47-4f5b-9d0e-7c3b1a2e4d5f")
# equities, crypto and FX (their fees differ), MSFT whose data ends early, QUIET without events
SYMBOLS = ("BTCUSD", "EURUSD", "ETHUSD", "MSFT", "QUIET", *(f"EQ{i:02d}" for i in range(35)))
WALL_CLOCK = {"creation_time_ms", "validation_time_ms", "initialization_time_ms"}  # measured, not derived


def _bars(day: pd.Timestamp, seed: int) -> pd.DataFrame:
    """Random walks over the day and its context; volumes small enough that the desk's liquidity limit cuts
    some sizes ('modified': a fill re-run at another size); minutes missing at random (gaps), MSFT's data
    ending at 20:00 (partial windows, plans without a bar)."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range(day - CONTEXT_BEFORE, day + pd.Timedelta(days=1), freq="1min", inclusive="left")
    frames = []
    for i, symbol in enumerate(SYMBOLS):
        close = 20.0 * (i + 1) * np.exp(np.cumsum(rng.normal(0, 0.0012, len(ts))))
        open_ = np.concatenate([[close[0]], close[:-1]])
        frame = pd.DataFrame(
            {
                "symbol": symbol,
                "timestamp": ts,
                "open": open_.round(8),
                "high": (np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 0.0005, len(ts))))).round(8),
                "low": (np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.0005, len(ts))))).round(8),
                "close": close.round(8),
                "volume": rng.uniform(50, 5000, len(ts)).round(2),
            }
        )
        keep = rng.random(len(ts)) > 0.03
        if symbol == "MSFT":
            keep &= ts < day + pd.Timedelta(hours=20)
        frames.append(frame[keep])
    return pd.concat(frames, ignore_index=True)


def _events(bars: pd.DataFrame, day: pd.Timestamp, n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed + 1)
    today = bars[(bars["timestamp"] >= day) & (bars["symbol"] != "QUIET")].reset_index(drop=True)
    pick = today.iloc[np.sort(rng.choice(len(today), n, replace=False))]
    types = rng.choice(["volume_spike", "price_jump", "range_expansion", "divergence", "pattern"], n)
    rows = [
        {
            "event_id": str(uuid.uuid5(NS, f"{seed}|{k}")),
            "symbol": sym,
            "timestamp": ts,
            "anomaly_type": t,
            "anomaly_score": round(float(rng.uniform(0.3, 1)), 4),
            "dsi_evidence_id": str(uuid.uuid5(NS, f"{seed}|{k}|evidence")),
            "mx_evidence": round(float(rng.uniform(0.2, 0.8)), 2),
            "mx_confirm": bool(rng.random() < 0.6),
            "mx_confirm_rate": round(float(rng.uniform(0.3, 1)), 2),
            "mx_evidence_boost": 0.01,
            "ci_low": float(rng.uniform(0.2, 0.5)),
            "ci_high": float(rng.uniform(0.5, 0.8)),
            "htf_15m_ret": float(rng.normal(0, 0.002)),
            "htf_1h_ret": float(rng.normal(0, 0.004)),
        }
        for k, (ts, t, sym) in enumerate(zip(pick["timestamp"], types, pick["symbol"], strict=True))
    ]
    frame = pd.DataFrame(rows)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    return frame.sort_values(["timestamp", "event_id"], kind="stable").reset_index(drop=True)


def _without_wall_clock(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[[c for c in frame.columns if c not in WALL_CLOCK]]


@pytest.mark.parametrize("horizon", ["longest", "by_type"])
@pytest.mark.parametrize(("day", "seed"), [("2024-03-04", 3), ("2024-03-05", 8)])
def test_narrowed_inputs_give_the_whole_windows_tables_bit_for_bit(migrated_database_url, day, seed, horizon):
    """The plans' bars read with the longest horizon of the day's alphas, or per event with that of the
    alphas that plan its type (fewer bars), give the tables of the whole window."""
    day = pd.Timestamp(day, tz="UTC")
    window = (day - CONTEXT_BEFORE, day + pd.Timedelta(days=1))
    bars = _bars(day, seed)
    # bars of the day after, which neither input may read
    after = _bars(day + pd.Timedelta(days=1), seed + 100)
    after = after[after["timestamp"] >= window[1]]
    db = engine(migrated_database_url)
    with db.begin() as conn:
        copy_frame(raw_connection(conn), "market_data_1m", pd.concat([bars, after], ignore_index=True))
    events = _events(bars, day, 240, seed)  # ~6 a symbol, as on a synthetic exchange's day
    population = founding_population(day)
    history = pd.DataFrame()
    with db.connect() as conn:
        whole = bar_store.read_bars(conn, "market_data_1m", *window)
        narrow = store.read_plan_bars(conn, events, *window, longest_horizon(population))
        if horizon == "by_type":
            by_type = store.read_plan_bars(conn, events, *window, horizons_by_type(population))
            assert 0 < len(by_type) < 0.9 * len(narrow)  # the shorter horizons' stretches: fewer bars
            key = ["symbol", "timestamp"]
            assert set(map(tuple, by_type[key].to_numpy())) <= set(map(tuple, narrow[key].to_numpy()))
            narrow = by_type
        pieces = list(store.read_day_closes_in_pieces(conn, *window))  # as the asset reads them

    assert len(whole) == len(bars)
    assert 0 < len(narrow) < 0.5 * len(whole)  # the plans read a fraction of the day
    assert set(narrow["symbol"]) == set(events["symbol"])  # QUIET has no event: none of its bars
    assert narrow["timestamp"].min() >= window[0] and narrow["timestamp"].max() < window[1]
    assert sum(len(p) for p in pieces) == len(whole)
    assert set().union(*(set(p["symbol"]) for p in pieces)) == set(SYMBOLS)
    closes = closes_module.reduce_pieces(day, pieces)
    assert not narrow.duplicated(["symbol", "timestamp"]).any()  # overlapping stretches read once

    old = run_day(day, events, whole, population, history)
    new = run_day(day, events, narrow, population, history, None, closes)

    plans, approvals = old["trading_plans"], old["trading_plan_approvals"]
    assert len(plans) > 150  # many plans, every kind of outcome below
    assert {"executed", "cancelled"} <= set(plans["execution_status"])
    assert {"approved", "modified", "rejected"} <= set(approvals["approval_status"])
    assert old.keys() == new.keys()
    for name in old:
        assert_frame_equal(
            _without_wall_clock(new[name]), _without_wall_clock(old[name]), check_exact=True, obj=name
        )


def test_day_bars_prepare_once_and_keep_what_they_derive():
    """``DayBars`` sorts its bars, and gives the same derived figures however many stages ask for them."""
    day = pd.Timestamp("2024-03-04", tz="UTC")
    bars = _bars(day, 5)
    shuffled = bars.sample(frac=1.0, random_state=1).reset_index(drop=True)
    prepared = DayBars(shuffled)
    assert prepared.bars["symbol"].tolist() == sorted(prepared.bars["symbol"].tolist())
    ts = prepared.bars["timestamp"].to_numpy()
    same = prepared.bars["symbol"].to_numpy()[1:] == prepared.bars["symbol"].to_numpy()[:-1]
    assert (ts[1:][same] > ts[:-1][same]).all()
    assert prepared.columns is prepared.columns  # computed once
    lo, hi = prepared.blocks["MSFT"]
    assert (prepared.bars["symbol"].iloc[lo:hi] == "MSFT").all()
    assert hi - lo == int((bars["symbol"] == "MSFT").sum())
    symbol = prepared.bars["symbol"].to_numpy(dtype=object)
    rows_of = {s: np.flatnonzero(symbol == s) for s in SYMBOLS}
    assert prepared.blocks == {s: (int(r[0]), int(r[-1]) + 1) for s, r in sorted(rows_of.items())}
    assert list(prepared.blocks) == sorted(SYMBOLS)  # in the frame's order
    assert DayBars(prepared).blocks == prepared.blocks  # a DayBars of a DayBars keeps them
    assert prepared.closes is shuffled  # no closes given: the bars' own, as given
    sorted_closes = closes_module.sorted_closes(prepared.closes)
    assert sorted_closes["close"].tolist() == prepared.bars["close"].tolist()


def _stored_day(
    url: str, seed: int
) -> tuple[pd.Timestamp, tuple[pd.Timestamp, pd.Timestamp], pd.DataFrame, sa.Engine]:
    """A day's bars (``_bars``) stored in ``market_data_1m``: (day, its window with the context before, the
    bars, the engine)."""
    day = pd.Timestamp("2024-03-04", tz="UTC")
    window = (day - CONTEXT_BEFORE, day + pd.Timedelta(days=1))
    bars = _bars(day, seed)
    db = engine(url)
    with db.begin() as conn:
        copy_frame(raw_connection(conn), "market_data_1m", bars)
    return day, window, bars, db


def test_the_closes_read_in_pieces_are_every_stored_close_once(migrated_database_url):
    """``store.read_day_closes_in_pieces`` hands over every bar of the window once, each symbol whole in one
    piece of at most ``symbols`` symbols: the pieces together are the stored symbol, timestamp and close of
    every bar, by symbol and time."""
    _day, window, bars, db = _stored_day(migrated_database_url, 4)
    with db.connect() as conn:
        pieces = list(store.read_day_closes_in_pieces(conn, *window, symbols=7))
    assert [p["symbol"].nunique() for p in pieces] == [7] * 5 + [5]  # 40 symbols
    seen = [set(p["symbol"]) for p in pieces]
    assert sum(len(s) for s in seen) == len(set().union(*seen)) == len(SYMBOLS)  # each symbol in one piece
    together = pd.concat(pieces, ignore_index=True).sort_values("symbol", kind="stable")
    stored = bars[["symbol", "timestamp", "close"]].sort_values(["symbol", "timestamp"], kind="stable")
    stored = stored.astype({"symbol": object, "timestamp": together["timestamp"].dtype})
    assert_frame_equal(together.reset_index(drop=True), stored.reset_index(drop=True), check_exact=True)
    assert len(together) == len(bars)


def test_the_plans_bars_read_in_several_queries_are_those_read_in_one(migrated_database_url, monkeypatch):
    """``store.read_plan_bars`` cut into queries of a few stretches reads the same bars as one query."""
    day, window, bars, db = _stored_day(migrated_database_url, 6)
    events = _events(bars, day, 240, 6)
    horizon = longest_horizon(founding_population(day))
    queries = []
    real = store.fetch_column_arrays

    def counted(*args, **kwargs):
        queries.append(len(args[2]["symbols"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "fetch_column_arrays", counted)
    with db.connect() as conn:
        one = store.read_plan_bars(conn, events, *window, horizon)
        assert len(queries) == 1
        monkeypatch.setattr(store, "PLAN_BARS_PER_QUERY", 2_000)
        several = store.read_plan_bars(conn, events, *window, horizon)
    assert len(queries) > 5 and sum(queries[1:]) == queries[0]  # every stretch read once
    key = ["symbol", "timestamp"]
    assert not several.duplicated(key).any()
    several, one = (f.sort_values(key).reset_index(drop=True) for f in (several, one))
    assert_frame_equal(several, one, check_exact=True)
