"""Issue 17, a peer's check: one module's plans, executed by ``plans.execute``, replayed with backtesting.py
(kernc/backtesting.py, a maintained backtester that shares no code with ours) on the same bars, give the same
entry, the same exit bar and exit reason for every trade, and the same P&L before costs.

How each rule of ``execute.py`` is expressed in backtesting.py (one ``Backtest`` per plan, as our plans are
executed independently of each other, ``size=1`` unit, no commission and no spread):

- entry at the open of the entry bar: a market order sent in ``next()`` of the bar before the entry bar
  (backtesting.py fills market orders at the next bar's open). backtesting.py checks ``sl < price < tp``
  against the close of the bar the order is sent on, which a gap into the entry bar can put beyond the
  re-anchored stop: the two bars before the entry bar (they only send the order, nothing is traded on them)
  are replayed flat at the entry bar's open;
- stop and target: the plan's stored ``stop_loss`` / ``take_profit``, i.e. *after* the re-anchoring to the
  fill, passed as the order's ``sl`` / ``tp`` (a stop-market order and a resting limit order);
- the entry bar checked after the fill: backtesting.py re-processes the SL/TP orders of a market order in the
  bar it filled in (its issue 119);
- stop first when one bar reaches both: backtesting.py queues the SL order before the TP order;
- a stop gapped through fills at the bar's open (both);
- horizon exit at the close of the last bar before valid_until: backtesting.py has no market-on-close order
  without ``trade_on_close=True``, which would also move the entry to the close of the bar before the entry
  bar. So the replay's data end with one extra bar after the window's last bar, at the time our exit is
  booked (last bar + 1 minute) and with open = high = low = close = the last bar's close, and the replay
  closes the position in ``next()`` of the last bar: it fills at that extra bar's open, the last close.
  The extra bar cannot reach a stop or target the last bar did not (its only price is the last bar's close).

Where backtesting.py differs and the test says so instead of hiding it:

- a *target gapped through* (a bar opening beyond the target): backtesting.py fills its limit at the better
  open, ours at the target (a resting limit filled at its price, the conservative reading). Exit bar and
  reason agree; the price differs by exactly the gap, in backtesting.py's favour. The test counts these.
- ``data_end`` (the window's data end before valid_until) is a horizon exit at the last close for
  backtesting.py, which knows no valid_until.

P&L: backtesting.py runs without costs, so its P&L per unit times our quantity is our *gross* P&L
(``attribution_analysis.gross_pnl`` = d (exit reference - entry reference) qty); the cost model's difference
is exactly the recorded ``slippage_cost`` (spread and impact) plus ``fees``: net ``pnl`` = gross - both.

``test_backtesting_py_agrees_on_the_edge_rules`` replays hand-built windows for the rules a random walk may
not reach (one bar reaching both levels, on the entry bar and later, gaps through either level), both
directions.

The risk desk is bypassed (every plan of the day validated at the size its module proposed) so that the replay
covers many trades: the desk decides whether and how much, not how a trade exits.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from tis_pipeline.trading_day.plans.execute import simulate_execution
from tis_pipeline.trading_day.plans.generate import generate_plans
from tis_pipeline_tests.trading_day.test_plans import (
    DAY,
    MIN,
    T0,
    TRADER,
    _plan,
    module,
    population,
    walk_bars,
    walk_events,
)

backtesting = pytest.importorskip("backtesting", reason="backtesting.py is in the dev extra")


def gapped_bars(seed: int = 5) -> pd.DataFrame:
    """``walk_bars`` with one bar in ten opening away from the close before it (so stops and targets can be
    gapped through, not only touched)."""
    bars = walk_bars()
    rng = np.random.default_rng(seed)
    before = bars.groupby("symbol")["close"].shift(1).fillna(bars["open"])
    gap = np.where(rng.random(len(bars)) < 0.1, rng.normal(0, 0.002, len(bars)), 0.0)
    opens = (before * (1 + gap)).round(8)
    return bars.assign(
        open=opens, high=np.maximum(bars["high"], opens), low=np.minimum(bars["low"], opens)
    ).sort_values(["symbol", "timestamp"], ignore_index=True)


def executed_plans(bars: pd.DataFrame) -> pd.DataFrame:
    pop = population()
    plans = generate_plans(DAY, walk_events(bars, n=400), bars, pop)
    out = simulate_execution(DAY, plans.assign(validation_status="validated"), bars, pop)
    return out[out["execution_status"].isin(["executed", "partial"])].reset_index(drop=True)


class Replay(backtesting.Strategy):
    """Enter at the open after the first bar, stop/target as given, close on the last window bar."""

    direction = 1
    stop = 0.0
    target = 0.0
    bars = 0  # rows of the replay's data, the extra bar included

    def init(self) -> None:
        pass

    def next(self) -> None:
        n = len(self.data)
        if n == 2:  # the bar before the entry bar (next() starts at the second bar)
            order = self.buy if self.direction > 0 else self.sell
            order(size=1, sl=self.stop, tp=self.target)
        elif n == self.bars - 1 and self.position:  # the window's last bar: out at its close
            self.position.close()


def replay(plan: pd.Series, bars: pd.DataFrame) -> pd.Series:
    """backtesting.py's trade for ``plan``: its entry/exit time and price and P&L per unit."""
    m = plan["performance_metrics"]
    sym = bars[bars["symbol"] == plan["symbol"]].reset_index(drop=True)
    entry = int(np.flatnonzero(sym["timestamp"] == pd.Timestamp(m["entry_time"]))[0])
    last = int(np.flatnonzero(sym["timestamp"] < plan["valid_until"])[-1])  # the window's last bar
    assert entry >= 2
    window = sym.iloc[entry - 2 : last + 1].copy()
    # the two bars before the entry bar only send the order (next() starts at the second bar): flat at the
    # entry bar's open, the price the order fills at, since backtesting.py checks sl < price < tp against the
    # close of the bar the order is sent on, and a gap into the entry bar may have moved that close past the
    # re-anchored stop
    window.iloc[:2, window.columns.get_indexer(["open", "high", "low", "close"])] = sym["open"].iat[entry]
    close = float(window["close"].iloc[-1])
    extra = pd.DataFrame(
        {"timestamp": [window["timestamp"].iloc[-1] + MIN], "open": close, "high": close, "low": close}
    ).assign(close=close, volume=0.0)
    data = (
        pd.concat([window, extra], ignore_index=True)
        .rename(columns=str.capitalize)
        .set_index("Timestamp")[["Open", "High", "Low", "Close", "Volume"]]
    )
    data.index = data.index.tz_convert(None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = backtesting.Backtest(
            data, Replay, cash=100 * float(data["High"].max()), commission=0.0, spread=0.0
        ).run(
            direction=1 if plan["direction"] == "long" else -1,
            stop=float(plan["stop_loss"]),
            target=float(plan["take_profit"]),
            bars=len(data),
        )
    trades = stats["_trades"]
    assert len(trades) == 1, trades
    t = trades.iloc[0]
    d = 1 if plan["direction"] == "long" else -1
    exit_price = float(t["ExitPrice"])
    if t["ExitTime"] == data.index[-1]:
        reason = "horizon"
    elif d * (exit_price - float(plan["stop_loss"])) <= 0:
        reason = "stop"
    elif d * (exit_price - float(plan["take_profit"])) >= 0:
        reason = "target"
    else:
        reason = "unknown"
    return pd.Series(
        {
            "entry_time": pd.Timestamp(t["EntryTime"]).tz_localize("UTC"),
            "entry_price": float(t["EntryPrice"]),
            "exit_time": pd.Timestamp(t["ExitTime"]).tz_localize("UTC"),
            "exit_price": exit_price,
            "exit_open": float(data["Open"].loc[t["ExitTime"]]),
            "reason": reason,
            "pnl_per_unit": float(t["PnL"]),
        }
    )


def test_backtesting_py_replays_one_modules_trades_with_the_same_exits_and_gross_pnl():
    bars = gapped_bars()
    done = executed_plans(bars)
    module = done["module_id"].value_counts().sort_index().idxmax()  # the module with the most trades
    ours = done[done["module_id"] == module].reset_index(drop=True)
    peer = pd.DataFrame([replay(p, bars) for _, p in ours.iterrows()])
    m = ours["performance_metrics"]
    reason = m.map(lambda x: x["exit_reason"]).replace({"data_end": "horizon"})
    # enough trades, both directions, and every exit rule exercised (a stop on the entry bar included)
    assert len(ours) >= 50
    assert set(ours["direction"]) == {"long", "short"}
    assert {"stop", "target", "horizon"} <= set(reason)
    assert ((reason == "stop") & (m.map(lambda x: x["entry_time"] == x["exit_time"]))).any()

    # the same entry, exit bar and exit reason for every trade
    assert (peer["entry_time"] == pd.to_datetime(m.map(lambda x: x["entry_time"]), utc=True)).all()
    np.testing.assert_allclose(peer["entry_price"], m.map(lambda x: x["entry_reference_price"]), rtol=1e-12)
    assert (peer["exit_time"] == pd.to_datetime(m.map(lambda x: x["exit_time"]), utc=True)).all()
    assert peer["reason"].tolist() == reason.tolist()

    # the same exit price but where a target was gapped through: backtesting.py takes the better open
    d = np.where(ours["direction"] == "long", 1.0, -1.0)
    ref = m.map(lambda x: x["exit_reference_price"]).to_numpy(dtype="float64")
    gapped = (reason == "target").to_numpy() & (d * (peer["exit_open"] - ours["take_profit"]) > 0).to_numpy()
    np.testing.assert_allclose(peer["exit_price"][~gapped], ref[~gapped], rtol=1e-12)
    np.testing.assert_allclose(peer["exit_price"][gapped], peer["exit_open"][gapped], rtol=1e-12)
    assert (d[gapped] * (peer["exit_price"][gapped] - ref[gapped]) > 0).all()

    # P&L: backtesting.py without costs is our gross P&L (the gapped targets apart, by their gap exactly);
    # the cost model's difference is the recorded spread/impact and fees
    qty = ours["executed_quantity"].to_numpy(dtype="float64")
    gross = ours["attribution_analysis"].map(lambda a: a["gross_pnl"]).to_numpy(dtype="float64")
    gap_gain = np.where(gapped, d * (peer["exit_price"] - ref) * qty, 0.0)
    np.testing.assert_allclose(peer["pnl_per_unit"] * qty - gap_gain, gross, rtol=1e-9, atol=1e-6)
    slip = ours["attribution_analysis"].map(lambda a: a["slippage_cost"]).to_numpy(dtype="float64")
    fees = ours["attribution_analysis"].map(lambda a: a["fees"]).to_numpy(dtype="float64")
    np.testing.assert_allclose(ours["pnl"].to_numpy(dtype="float64"), gross - slip - fees, atol=2e-6)
    assert (slip + fees > 0).all()  # every trade pays something: net is below backtesting.py's gross


# Hand-built windows for the rules the random walk may not reach (a bar reaching both levels): (minute from
# the plan's time, open, high, low, close) for a long plan entered at 100 with stop and target 2 away from the
# fill; a short plan gets the same bars mirrored around 100.
CASES = {
    "entry bar reaches both": ([(0, 100.0, 103.0, 97.0, 100.0), (1, 100.0, 100.5, 99.5, 100.0)], "stop"),
    "later bar reaches both": ([(0, 100.0, 100.5, 99.5, 100.0), (1, 100.0, 103.0, 97.0, 101.0)], "stop"),
    "entry bar touches the stop": ([(0, 100.0, 100.5, 97.0, 100.2), (1, 100.2, 103.0, 100.0, 102.5)], "stop"),
    "stop gapped through": ([(0, 100.0, 100.5, 99.5, 100.0), (1, 97.5, 97.8, 97.0, 97.2)], "stop"),
    "target touched": ([(0, 100.0, 100.5, 99.5, 100.2), (1, 100.2, 102.6, 100.0, 102.1)], "target"),
    "target gapped through": ([(0, 100.0, 100.5, 99.5, 100.0), (1, 102.5, 102.8, 102.2, 102.6)], "target"),
    "neither: horizon": ([(m, 100.0, 100.6, 99.4, 100.0 + m / 100) for m in range(15)], "horizon"),
}


def hand_bars(rows: list[tuple[int, float, float, float, float]], direction: str) -> pd.DataFrame:
    """Two flat bars before the plan's time (the context), then ``rows``, mirrored for a short plan."""
    rows = [(-2, 100.0, 100.0, 100.0, 100.0), (-1, 100.0, 100.0, 100.0, 100.0), *rows]
    if direction == "short":
        rows = [(m, 200 - o, 200 - lo, 200 - h, 200 - c) for m, o, h, lo, c in rows]
    return pd.DataFrame(
        [
            {"symbol": "AAPL", "timestamp": T0 + MIN * m, "open": o, "high": h, "low": lo, "close": c}
            for m, o, h, lo, c in rows
        ]
    ).assign(volume=1e7)


@pytest.mark.parametrize("direction", ["long", "short"])
@pytest.mark.parametrize("case", list(CASES))
def test_backtesting_py_agrees_on_the_edge_rules(case, direction):
    rows, expected = CASES[case]
    bars = hand_bars(rows, direction)
    plan = dict(_plan("peer", direction=direction), validation_status="validated")
    pop = population(module("execution_sim", genome=TRADER), founders=("momentum", "risk_desk"))
    ours = simulate_execution(DAY, pd.DataFrame([plan]), bars, pop).iloc[0]
    m = ours["performance_metrics"]
    assert ours["execution_status"] == "executed" and m["exit_reason"] == expected
    peer = replay(ours, bars)
    assert peer["reason"] == expected
    assert peer["entry_time"] == pd.Timestamp(m["entry_time"]) == T0
    assert peer["entry_price"] == pytest.approx(m["entry_reference_price"], rel=1e-12)
    assert peer["exit_time"] == pd.Timestamp(m["exit_time"])
    d = 1 if direction == "long" else -1
    if case == "target gapped through":  # backtesting.py's limit takes the better open, ours the target
        assert peer["exit_price"] == pytest.approx(peer["exit_open"], rel=1e-12)
        assert d * (peer["exit_price"] - m["exit_reference_price"]) > 0
    else:
        assert peer["exit_price"] == pytest.approx(m["exit_reference_price"], rel=1e-12)
        gross = ours["attribution_analysis"]["gross_pnl"]
        assert peer["pnl_per_unit"] * ours["executed_quantity"] == pytest.approx(gross, abs=1e-6)
