"""The column-at-a-time builders of the trading day give what their row-at-a-time forms give, value for value:
times as ``iso`` writes them, numbers as ``json_number`` rounds them, JSON as ``to_json`` writes it, frames as
``rows_frame`` builds them, the bar join as the search per symbol finds it, the desk's fills as the full fill,
and the plans' and decisions' messages as ``_message`` made them one plan at a time."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from tis_pipeline.trading_day import store
from tis_pipeline.trading_day.ecosystem import messages
from tis_pipeline.trading_day.ecosystem.common import (
    MESSAGE_COLUMNS,
    as_utc,
    columns_frame,
    plain,
    plain_values,
    rows_frame,
)
from tis_pipeline.trading_day.plans.approve import _clip_pct, approve_plans
from tis_pipeline.trading_day.plans.common import iso, iso_utc, json_number, json_numbers
from tis_pipeline.trading_day.plans.execute import fill_arrays, open_book
from tis_pipeline.trading_day.plans.generate import generate_plans
from tis_pipeline.trading_day.plans.market import DayBars
from tis_pipeline.trading_day.population import frame_columns, frame_records
from tis_pipeline_tests.trading_day.test_plans import DAY, population, walk_bars, walk_events

# ------------------------------------------------------------------------------------------- values


@pytest.mark.parametrize(
    "values",
    [
        pd.Series(pd.to_datetime(["2024-03-04 00:01", None, "1999-12-31 23:59"], utc=True)).dt.as_unit("ns"),
        pd.Series(
            pd.to_datetime(["2024-03-04 00:01:00.500000000", "2024-03-04 00:01:00.000000001"], utc=True)
        ),
        pd.Series(pd.to_datetime(["2024-03-04 00:01"], utc=True)).dt.as_unit("us"),
        pd.Series(pd.to_datetime(["2024-03-04 00:01", None])).dt.as_unit("ns"),  # naive
        pd.Series(pd.to_datetime(["2024-03-04 00:01"]).tz_localize("Europe/Paris")),
        pd.to_datetime(["2024-03-04 00:01", None]).to_numpy(),  # naive datetime64[ns]
        pd.Series(["2024-03-04 00:01", None], dtype=object),
    ],
)
def test_iso_utc_writes_each_time_as_iso_does(values):
    expected = [iso(x) for x in pd.Series(values)]
    assert iso_utc(values) == expected
    assert expected[0] is not None and expected[0].startswith("2024-03-0")


def test_json_numbers_round_each_value_as_json_number_does():
    values = np.array([1.23456789, np.nan, np.inf, -np.inf, -0.5, 2.675, 1e-12, 123456.123456789])
    for places in (0, 2, 4, 8):
        assert json_numbers(values, places) == [json_number(x, places) for x in values]
    mixed = [1, None, 2.5, np.float64(0.125)]
    assert json_numbers(mixed, 2) == [json_number(x, 2) for x in mixed] == [1.0, None, 2.5, 0.12]


def test_plain_values_and_to_json_values_match_their_one_value_forms():
    ts = pd.Timestamp("2024-03-04 00:01", tz="UTC")
    values = ["a", None, 1, 1.5, float("nan"), True, np.float64(2.5), np.int64(3), ts, pd.NaT, {"k": [1, ts]}]
    assert plain_values(values) == [plain(v) for v in values]
    encodable = [v for v in values if v is not pd.NaT]  # NaT: neither form encodes it
    assert store.to_json_values(encodable) == [store.to_json(v) for v in encodable]
    assert store.to_json_values(pd.Series([{"b": 1, "a": 0.5}, None])) == ['{"a":0.5,"b":1}', None]


def test_frame_columns_are_to_dict_records_by_column():
    frame = pd.DataFrame(
        {
            "text": pd.Series(["a", None, "c"], dtype="str"),
            "number": [1.0, np.nan, 3.0],
            "when": pd.to_datetime(["2024-03-04", None, "2024-03-05"], utc=True),
            "json": [{"a": 1}, None, [np.int64(2)]],
            "count": pd.array([1, None, 3], dtype="Int64"),
        }
    )
    records = frame.to_dict("records")
    columns = frame_columns(frame)
    for name in frame.columns:
        assert [type(r[name]) for r in records] == [type(v) for v in columns[name]]
        assert [repr(r[name]) for r in records] == [repr(v) for v in columns[name]]
    assert [repr(r) for r in frame_records(frame)] == [repr(r) for r in records]


def test_columns_frame_builds_what_rows_frame_builds():
    ts = pd.Timestamp("2024-03-04 00:01", tz="UTC")
    rows = [
        {"message_id": "m1", "sender_module_id": "s", "timestamp": ts, "message_type": "t",
         "message_data": {"x": np.float64(1.5), "at": ts}, "priority": np.int64(2), "ttl_seconds": 60,
         "status": "pending", "delivery_attempts": 0},
        {"message_id": "m2", "sender_module_id": None, "timestamp": ts + pd.Timedelta(minutes=1),
         "message_type": "t", "message_data": None, "priority": 3, "ttl_seconds": 1, "status": "pending",
         "delivery_attempts": 1, "last_delivery_attempt": ts, "error_message": "late"},
    ]  # fmt: skip
    expected = rows_frame(rows, "module_messages", MESSAGE_COLUMNS)
    columns = {c: [r.get(c) for r in rows] for c in MESSAGE_COLUMNS}
    assert_frame_equal(columns_frame(columns, "module_messages", MESSAGE_COLUMNS), expected)
    # times as a Series, JSON already plain, absent columns None
    given = {c: v for c, v in columns.items() if c not in ("last_delivery_attempt", "error_message")}
    given = {**given, "timestamp": pd.Series([r["timestamp"] for r in rows]), "message_data": [
        plain(r["message_data"]) for r in rows]}  # fmt: skip
    got = columns_frame(given, "module_messages", MESSAGE_COLUMNS, plain_json=True)
    assert_frame_equal(got.drop(columns=["last_delivery_attempt", "error_message"]),
                       expected.drop(columns=["last_delivery_attempt", "error_message"]))  # fmt: skip
    assert got["last_delivery_attempt"].isna().all() and got["error_message"].isna().all()
    empty = rows_frame([], "module_messages", MESSAGE_COLUMNS)
    assert_frame_equal(
        columns_frame({c: [] for c in MESSAGE_COLUMNS}, "module_messages", MESSAGE_COLUMNS), empty
    )


# ------------------------------------------------------------------------------------------- the day


def _per_symbol_rows(bars: DayBars, symbols: pd.Series, timestamps: pd.Series) -> np.ndarray:
    """The row of each (symbol, timestamp) by a search in the symbol's block (the join's definition)."""
    ts = pd.Series(pd.to_datetime(timestamps, utc=True)).dt.tz_localize(None).to_numpy("datetime64[ns]")
    out = np.full(len(ts), -1, dtype="int64")
    for k, (symbol, t) in enumerate(zip(symbols.astype(str), ts, strict=True)):
        lo, hi = bars.blocks.get(symbol, (0, 0))
        at = lo + int(np.searchsorted(bars.ts[lo:hi], t, side="left"))
        if at < hi and bars.ts[at] == t:
            out[k] = at
    return out


def test_rows_at_joins_as_the_search_per_symbol():
    raw = walk_bars(("AAPL", "BTCUSD", "EURUSD"))
    raw = raw.drop(index=raw.index[::7]).sample(frac=1.0, random_state=3)  # gaps, and not in order
    bars = DayBars(raw)
    rng = np.random.default_rng(5)
    stamps = DAY - pd.Timedelta(hours=3) + pd.to_timedelta(rng.integers(0, 29 * 60, 500), unit="min")
    symbols = pd.Series(rng.choice(["AAPL", "BTCUSD", "EURUSD", "MSFT"], 500))
    found = bars.rows_at(symbols, pd.Series(stamps))
    assert bars._keys is not None  # the one search over every bar's keys, not the fallback
    np.testing.assert_array_equal(found, _per_symbol_rows(bars, symbols, pd.Series(stamps)))
    assert (found >= 0).sum() > 200 and (found == -1).sum() > 50


def _per_symbol_book(bars: DayBars, plans: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each plan's window [start, stop_at) and its symbol's block end, by a search in the symbol's block."""
    ts = pd.Series(plans["timestamp"]).dt.tz_localize(None).to_numpy("datetime64[ns]")
    vu = pd.Series(plans["valid_until"]).dt.tz_localize(None).to_numpy("datetime64[ns]")
    out = np.zeros((3, len(plans)), dtype="int64")
    for k, symbol in enumerate(plans["symbol"].astype(str)):
        lo, hi = bars.blocks.get(symbol, (0, 0))
        block = bars.ts[lo:hi]
        out[:, k] = (lo + np.searchsorted(block, ts[k]), lo + np.searchsorted(block, vu[k]), hi)
    return out[0], out[1], out[2]


def test_the_book_finds_each_plans_window_as_the_search_per_symbol():
    raw = walk_bars(("AAPL", "BTCUSD", "EURUSD"))
    bars = DayBars(raw.drop(index=raw.index[::5]))
    plans = generate_plans(DAY, walk_events(walk_bars(("AAPL", "BTCUSD", "EURUSD"))), bars, population())
    # a symbol without bars, and windows starting before and ending after every bar
    odd = pd.DataFrame(
        {
            "symbol": ["MSFT", "AAPL", "EURUSD"],
            "timestamp": pd.to_datetime(
                ["2024-03-04 10:00", "2024-03-01 00:00", "2024-03-04 23:00"], utc=True
            ),
            "valid_until": pd.to_datetime(
                ["2024-03-04 11:00", "2024-03-04 00:30", "2024-03-09 00:00"], utc=True
            ),
        }
    )
    for frame in (plans, odd):
        found = bars.block_search(frame["symbol"].astype(str).to_numpy(), (
            pd.Series(frame["timestamp"]).dt.tz_localize(None).to_numpy("datetime64[ns]"),
            pd.Series(frame["valid_until"]).dt.tz_localize(None).to_numpy("datetime64[ns]"),
        ))  # fmt: skip
        assert found is not None
        (start, stop_at), end = found
        for got, want in zip((start, stop_at, end), _per_symbol_book(bars, frame), strict=True):
            np.testing.assert_array_equal(got, want)
    book = open_book(plans, bars)
    for got, want in zip(
        (book.start, book.stop_at, book.block_end), _per_symbol_book(bars, plans), strict=True
    ):
        np.testing.assert_array_equal(got, want)


def test_clip_pct_is_numpys_clip():
    values = [float("nan"), -0.0, 0.0, 100.0, 150.0, -5.0, float("inf"), -float("inf"), 1e-300, 99.999]
    values += np.random.default_rng(1).uniform(-200, 200, 2000).tolist()
    for x in values:
        want = float(np.clip(x, 0.0, 100.0))
        got = _clip_pct(x)
        assert repr(got) == repr(want) and np.copysign(1.0, got) == np.copysign(1.0, want)


def test_the_desks_fills_are_the_full_fills_numbers():
    bars = walk_bars()
    pop = population()
    plans = generate_plans(DAY, walk_events(bars), bars, pop)
    book = open_book(plans, DayBars(bars))
    sizes = plans["position_size"].to_numpy(dtype="float64")
    trader = {"capital": 1_000_000.0, "entry_delay_bars": 1}
    full = fill_arrays(book, np.arange(len(plans)), sizes, trader)
    lean = fill_arrays(book, np.arange(len(plans)), sizes, trader, outcome_only=True)
    assert set(lean) == {"filled", "pnl", "exit_time"} and full["filled"].any()
    for name in lean:
        np.testing.assert_array_equal(lean[name], full[name])
    one = fill_arrays(book, np.array([3]), np.array([sizes[3] / 2]), trader, outcome_only=True)
    whole = fill_arrays(book, np.array([3]), np.array([sizes[3] / 2]), trader)
    for name in one:
        np.testing.assert_array_equal(one[name], whole[name])


def _plan_messages_one_by_one(plans: pd.DataFrame, pop: pd.DataFrame) -> pd.DataFrame:
    """``plan_messages`` as it was written, a plan at a time through ``_message``."""
    desk = messages.acting_module(pop, messages.DECISION, last_entry_only=True)
    receiver = None if desk is None else str(desk["module_id"])
    latency = messages._latencies(pop)
    rows = []
    for p in frame_records(plans):
        ts = as_utc(pd.Timestamp(p["timestamp"]))
        valid_until = (
            None if messages.is_missing(p.get("valid_until")) else as_utc(pd.Timestamp(p["valid_until"]))
        )
        ttl = max(1, int((valid_until - ts).total_seconds())) if valid_until is not None else 3600
        data = {k: p.get(k) for k in messages.PLAN_KEYS}
        conditions = p.get("entry_conditions")
        data["anomaly_type"] = conditions.get("anomaly_type") if isinstance(conditions, Mapping) else None
        priority = messages._priority(p.get("signal_strength"))
        key, sender = str(p["plan_id"]), str(p["module_id"])
        rows.append(
            messages._message("trading_plan", key, sender, receiver, ts, data, priority, ttl, latency)
        )
    return messages._frame(rows)


def _decision_messages_one_by_one(plans, approvals, handled_at, pop) -> pd.DataFrame:
    """``decision_messages`` as it was written, a plan at a time through ``_message``."""
    trader = messages.acting_module(pop, messages.TRADER, last_entry_only=True)
    latency = messages._latencies(pop)
    decided = {str(a["plan_id"]): a for a in frame_records(approvals)}
    rows = []
    for p in frame_records(plans):
        pid = str(p["plan_id"])
        if p.get("validation_status") != "validated" or pid not in decided or pid not in handled_at:
            continue
        a = decided[pid]
        ts = as_utc(pd.Timestamp(handled_at[pid]))
        valid_until = as_utc(pd.Timestamp(p["valid_until"]))
        data = {**{k: p.get(k) for k in messages.PLAN_KEYS}, "decision": a.get("approval_status"),
                "approval_id": a.get("approval_id")}  # fmt: skip
        rows.append(messages._message("trading_plan", f"decision|{pid}", str(a["decision_maker_module_id"]),
                                      None if trader is None else str(trader["module_id"]), ts, data,
                                      messages._priority(p.get("signal_strength")),
                                      max(1, int((valid_until - ts).total_seconds())), latency))  # fmt: skip
    return messages._frame(rows)


def test_plan_and_decision_messages_are_those_made_one_plan_at_a_time():
    bars = walk_bars()
    pop = population()
    pop = pop.assign(communication_latency_ms=1 + np.arange(len(pop)) % 5)
    plans = generate_plans(DAY, walk_events(bars), bars, pop)
    assert len(plans) > 20
    # a plan without a valid_until and one without a signal: the message's defaults
    odd = plans.copy()
    odd.loc[0, "valid_until"] = pd.NaT
    odd.loc[1, "signal_strength"] = np.nan
    for frame in (plans, odd):
        assert_frame_equal(messages.plan_messages(DAY, frame, pop), _plan_messages_one_by_one(frame, pop))
    decided, approvals = approve_plans(DAY, plans, pop, bars)
    handled = {
        pid: t + pd.Timedelta(seconds=k % 50)
        for k, (pid, t) in enumerate(zip(decided["plan_id"], decided["timestamp"], strict=True))
        if k % 5
    }
    got = messages.decision_messages(DAY, decided, approvals, handled, pop)
    assert len(got) > 10
    assert_frame_equal(got, _decision_messages_one_by_one(decided, approvals, handled, pop))
    assert len(messages.decision_messages(DAY, decided, approvals, {}, pop)) == 0


def _merged_one_by_one(bounds: pd.DataFrame) -> pd.DataFrame:
    """The stretches as a walk over the sorted rows makes them, extending the last one while they overlap."""
    b = bounds.sort_values(["symbol", "lo", "hi"], kind="stable")
    out: list[list] = []
    for symbol, lo, hi in zip(b["symbol"], b["lo"], b["hi"], strict=True):
        if out and out[-1][0] == symbol and lo <= out[-1][2]:
            out[-1][2] = max(out[-1][2], hi)
        else:
            out.append([symbol, lo, hi])
    return pd.DataFrame(out, columns=["symbol", "lo", "hi"]).astype({"symbol": object})


@pytest.mark.parametrize("unit", ["us", "ns"])
def test_plan_bar_stretches_merge_as_a_walk_over_them(unit):
    rng = np.random.default_rng(2)
    for _ in range(30):
        n = int(rng.integers(1, 300))
        lo = DAY + pd.to_timedelta(rng.integers(0, 1440, n), unit="min")
        hi = lo + pd.to_timedelta(rng.integers(0, 300, n), unit="min")
        bounds = pd.DataFrame(
            {
                "symbol": rng.choice(["AAPL", "BTCUSD", "EURUSD"], n).astype(object),
                "lo": pd.Series(lo).dt.as_unit(unit),
                "hi": pd.Series(hi).dt.as_unit(unit),
            }
        )
        assert_frame_equal(store._merged(bounds), _merged_one_by_one(bounds))
