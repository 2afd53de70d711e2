"""Plans logic: dealing, plan geometry, approval rules, execution on hand-built bars, look-ahead, scores,
bounds."""

from __future__ import annotations

import math
import uuid

import empyrical
import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from tis_pipeline.quality.evaluate import evaluate_frame
from tis_pipeline.trading_day.plans import score as logic
from tis_pipeline.trading_day.plans.approve import approve_plans
from tis_pipeline.trading_day.plans.common import APPROVAL_COLUMNS, PERFORMANCE_COLUMNS, PLAN_FRAME_COLUMNS
from tis_pipeline.trading_day.plans.execute import simulate_execution
from tis_pipeline.trading_day.plans.generate import generate_plans
from tis_pipeline.trading_day.plans.score import score_modules
from tis_pipeline.trading_day.population import PLANS_NAMESPACE as NAMESPACE

DAY = pd.Timestamp("2024-03-04", tz="UTC")
END = DAY + pd.Timedelta(days=1)
MIN = pd.Timedelta(minutes=1)
CONTEXT_START = DAY - pd.Timedelta(hours=2)
TEST_NS = uuid.UUID("0b5e7c52-95a4-4c0e-8d6c-3f0f4a1b2c3d")

GENOMES = {
    "momentum": {
        "style": "momentum",
        "anomaly_types": ["price_jump", "range_expansion"],
        "min_edge": 0.02,
        "stop_atr": 1.5,
        "target_atr": 2.5,
        "horizon_minutes": 15,
        "risk_pct": 0.5,
    },
    "reversal": {
        "style": "reversal",
        "anomaly_types": ["volume_spike", "pattern"],
        "min_edge": 0.02,
        "stop_atr": 1.0,
        "target_atr": 1.5,
        "horizon_minutes": 5,
        "risk_pct": 0.5,
    },
    "divergence": {
        "style": "divergence",
        "anomaly_types": ["divergence"],
        "min_edge": 0.02,
        "stop_atr": 2.0,
        "target_atr": 3.0,
        "horizon_minutes": 60,
        "risk_pct": 0.5,
    },
    "risk_desk": {
        "min_confidence": 0.4,
        "min_risk_reward": 1.2,
        "max_position_pct": 20.0,
        "max_plans_per_symbol": 50,
    },
    "execution_sim": {"capital": 1_000_000.0, "entry_delay_bars": 0},
}
TYPES = {
    "momentum": "alpha_detector",
    "reversal": "alpha_detector",
    "divergence": "alpha_detector",
    "risk_desk": "decision_maker",
    "execution_sim": "trader",
}


@pytest.fixture(autouse=True)
def simple_costs(monkeypatch):
    """A cost model simple enough to write the expected figures by hand: the spread at its floor of 2 bp (1 bp
    per market order; the hand-built bars have too few pairs for the estimator or a spread below the floor),
    no impact, 2 bp fee per side. ``test_economics.py`` tests the model itself."""
    for name, value in {
        "TIS_COST_SPREAD_FLOOR_BPS": "2",
        "TIS_COST_IMPACT_COEF": "0",
        "TIS_COST_UNKNOWN_VOLUME_IMPACT_BPS": "0",
        "TIS_COST_FEE_BPS_EQUITY": "2",
        "TIS_COST_FEE_BPS_CRYPTO": "2",
    }.items():
        monkeypatch.setenv(name, value)


# ------------------------------------------------------------------------------------------------ builders


def module(
    name: str,
    module_type: str | None = None,
    genome: dict | None = None,
    *,
    module_id: str | None = None,
    history: list | None = None,
    stage: str = "experimental",
    status: str = "active",
) -> dict:
    """One population row with the ``modules`` columns plus ``name`` and ``genome`` (as docs/ecosystem.md)."""
    module_type = module_type or TYPES[name]
    genome = dict(genome if genome is not None else GENOMES[name])
    return {
        "module_id": module_id or str(uuid.uuid5(TEST_NS, f"{module_type}:{name}")),
        "module_type": module_type,
        "module_version": "1.0.0",
        "parent_modules": [],
        "offspring_modules": [],
        "generational_depth": 0,
        "learning_rate": 0.01,
        "adaptation_threshold": 0.7,
        "performance_history": list(history or []),
        "learning_patterns": {"name": name, "genome": genome},
        "innovation_score": 0.0,
        "specialization_index": 0.0,
        "communication_latency_ms": 0,
        "message_throughput_per_sec": 0,
        "intelligence_sharing_rate": 0.0,
        "collaboration_score": 0.0,
        "peer_ratings": {},
        "network_centrality": 0.0,
        "replication_readiness": 0.0,
        "parent_performance": {},
        "mutation_rate": 0.1,
        "recombination_rate": 0.1,
        "offspring_count": 0,
        "lifecycle_stage": stage,
        "created_at": DAY,
        "last_updated": DAY,
        "status": status,
        "name": name,
        "genome": genome,
    }


def population(*extra: dict, founders: tuple[str, ...] = tuple(GENOMES)) -> pd.DataFrame:
    return pd.DataFrame([module(n) for n in founders] + list(extra))


def mid(name: str) -> str:
    return str(uuid.uuid5(TEST_NS, f"{TYPES[name]}:{name}"))


def flat_bars(
    symbol: str = "AAPL", start: pd.Timestamp = CONTEXT_START, end: pd.Timestamp = END, price: float = 100.0
) -> pd.DataFrame:
    """Flat one-minute bars: open = close = price, high/low 0.5 away, so every true range is 1.0."""
    ts = pd.date_range(start, end, freq="1min", inclusive="left")
    return pd.DataFrame(
        {
            "symbol": symbol,
            "timestamp": ts,
            "open": price,
            "high": price + 0.5,
            "low": price - 0.5,
            "close": price,
            "volume": 1e5,  # 10 % of it is 10-20 % of the capital: the liquidity limit rarely binds
        }
    )


def set_bar(bars: pd.DataFrame, ts: pd.Timestamp, symbol: str = "AAPL", **ohlc: float) -> pd.DataFrame:
    out = bars.copy()
    at = (out["symbol"] == symbol) & (out["timestamp"] == ts)
    assert at.sum() == 1
    for k, v in ohlc.items():
        out.loc[at, k] = v
    return out


def event(
    ts: pd.Timestamp,
    anomaly_type: str = "price_jump",
    symbol: str = "AAPL",
    *,
    mx: float = 0.7,
    score: float = 0.8,
    confirm: bool = True,
    rate: float = 0.8,
    ci: tuple[float, float] = (0.6, 0.8),
    h15: float = 0.001,
    h1: float = 0.002,
    key: str | None = None,
) -> dict:
    key = key or f"{symbol}|{ts.isoformat()}|{anomaly_type}"
    return {
        "event_id": str(uuid.uuid5(TEST_NS, key)),
        "symbol": symbol,
        "timestamp": ts,
        "anomaly_type": anomaly_type,
        "anomaly_score": score,
        "dsi_evidence_id": str(uuid.uuid5(TEST_NS, key + "|evidence")),
        "mx_evidence": mx,
        "mx_confirm": confirm,
        "mx_confirm_rate": rate,
        "mx_evidence_boost": 0.01,
        "ci_low": ci[0],
        "ci_high": ci[1],
        "htf_15m_ret": h15,
        "htf_1h_ret": h1,
    }


def events(*rows: dict) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows))
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    return frame.sort_values(["timestamp", "event_id"], kind="stable").reset_index(drop=True)


def plan_uuid(event_id: str, module_id: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{event_id}|{module_id}"))


def walk_bars(symbols=("AAPL", "BTCUSD"), seed: int = 7) -> pd.DataFrame:
    """A reproducible random walk over the day and its 2 h of context (a local generator, no global RNG)."""
    rng = np.random.default_rng(seed)
    frames = []
    for i, symbol in enumerate(symbols):
        ts = pd.date_range(DAY - pd.Timedelta(hours=2), END, freq="1min", inclusive="left")
        close = (100.0 * (i + 1)) * np.exp(np.cumsum(rng.normal(0, 0.0008, len(ts))))
        open_ = np.concatenate([[close[0]], close[:-1]])
        high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 0.0004, len(ts))))
        low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.0004, len(ts))))
        frames.append(
            pd.DataFrame(
                {
                    "symbol": symbol,
                    "timestamp": ts,
                    "open": open_.round(8),
                    "high": high.round(8),
                    "low": low.round(8),
                    "close": close.round(8),
                    "volume": 1e5,  # 10 % of it is 10-20 % of the capital: the liquidity limit rarely binds
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def walk_events(bars: pd.DataFrame, n: int = 240, seed: int = 11) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    day_bars = bars[bars["timestamp"] >= DAY].reset_index(drop=True)
    pick = day_bars.iloc[np.sort(rng.choice(len(day_bars), n, replace=False))]
    types = rng.choice(["volume_spike", "price_jump", "range_expansion", "divergence", "pattern"], n)
    rows = [
        event(
            ts,
            t,
            sym,
            mx=round(float(rng.uniform(0.3, 0.7)), 2),
            score=round(float(rng.uniform(0.3, 1)), 4),
            confirm=bool(rng.random() < 0.5),
            rate=round(float(rng.uniform(0.3, 1)), 2),
            ci=(float(rng.uniform(0.2, 0.5)), float(rng.uniform(0.5, 0.8))),
            h15=float(rng.normal(0, 0.002)),
            h1=float(rng.normal(0, 0.004)),
            key=f"walk{k}",
        )
        for k, (ts, t, sym) in enumerate(zip(pick["timestamp"], types, pick["symbol"], strict=True))
    ]
    return events(*rows)


def run_day(evs, bars, pop, history=None):
    plans = generate_plans(DAY, evs, bars, pop)
    plans, approvals = approve_plans(DAY, plans, pop, bars)
    plans = simulate_execution(DAY, plans, bars, pop)
    perf = score_modules(DAY, plans, approvals, pop, history if history is not None else pd.DataFrame(), bars)
    return plans, approvals, perf


# ------------------------------------------------------------------------------------------------- dealing


def _dealing_events(n: int) -> pd.DataFrame:
    times = DAY + pd.Timedelta(hours=1) + MIN * (np.arange(n) % 1200)
    return events(*[event(t, "price_jump", key=f"deal{k}") for k, t in enumerate(times)])


def test_dealing_is_rendezvous_hashing_fair_and_stable():
    bars = flat_bars()
    evs = _dealing_events(900)
    kids = [
        module(
            f"momentum_child{k}",
            "alpha_detector",
            GENOMES["momentum"],
            module_id=str(uuid.uuid5(TEST_NS, f"child{k}")),
        )
        for k in (1, 2)
    ]
    pop = population(*kids)
    specialty = [mid("momentum"), *(k["module_id"] for k in kids)]
    plans = generate_plans(DAY, evs, bars, pop)
    assert len(plans) == 900  # every event planned: flat bars, edge 0.2, direction long
    for row in plans.itertuples():
        assert row.plan_id == min(plan_uuid(row.event_id, m) for m in specialty)
        assert row.plan_id == plan_uuid(row.event_id, row.module_id)
    counts = plans["module_id"].value_counts()
    assert set(counts.index) == set(specialty)
    # binomial(900, 1/3): sd ~ 14; a fair deal lies within 300 +- 60 (4 sd) -- and children get their share
    assert counts.between(240, 360).all(), counts.to_dict()

    newcomer = module(
        "momentum_child3", "alpha_detector", GENOMES["momentum"], module_id=str(uuid.uuid5(TEST_NS, "child3"))
    )
    after = generate_plans(DAY, evs, bars, population(*kids, newcomer))
    before_owner = dict(zip(plans["event_id"], plans["module_id"], strict=True))
    after_owner = dict(zip(after["event_id"], after["module_id"], strict=True))
    moved = {e for e in before_owner if before_owner[e] != after_owner[e]}
    assert all(after_owner[e] == newcomer["module_id"] for e in moved)  # nobody else's events reshuffled
    assert 150 <= len(moved) <= 300  # binomial(900, 1/4) ~ 225

    # same rows whatever the row order of events and population
    shuffled = generate_plans(
        DAY, evs.sample(frac=1, random_state=3), bars, population(*kids).sample(frac=1, random_state=4)
    )
    assert_frame_equal(plans, shuffled)


def test_dealing_respects_specialties_and_activity():
    bars = flat_bars()
    t = DAY + pd.Timedelta(hours=3)
    evs = events(
        event(t, "divergence", h1=-0.01), event(t, "volume_spike", key="vs"), event(t, "price_jump", key="pj")
    )
    sleeping = module(
        "momentum_old",
        "alpha_detector",
        GENOMES["momentum"],
        module_id="00000000-0000-0000-0000-000000000001",
        stage="deprecated",
    )
    failed = module(
        "momentum_bad",
        "alpha_detector",
        GENOMES["momentum"],
        module_id="00000000-0000-0000-0000-000000000002",
        status="failed",
    )
    plans = generate_plans(DAY, evs, bars, population(sleeping, failed))
    owners = dict(zip(plans["event_id"], plans["module_id"], strict=True))
    assert owners[evs["event_id"][evs["anomaly_type"] == "divergence"].item()] == mid("divergence")
    assert owners[evs["event_id"][evs["anomaly_type"] == "price_jump"].item()] == mid("momentum")
    # volume_spike goes to reversal, which fades a flat bar: no direction, no plan
    assert len(plans) == 2
    no_momentum = population(founders=("reversal", "divergence", "risk_desk", "execution_sim"))
    assert set(generate_plans(DAY, evs, bars, no_momentum)["module_id"]) == {mid("divergence")}


# ---------------------------------------------------------------------------------------------- plan fields


def test_momentum_plan_fields_long_and_short_exact():
    bars = flat_bars()
    t_long, t_short = DAY + pd.Timedelta(hours=3), DAY + pd.Timedelta(hours=4)
    evs = events(
        event(t_long, mx=0.7, score=0.8, rate=0.8, ci=(0.6, 0.8), h15=0.001),
        event(t_short, mx=0.3, score=0.8, rate=0.8, ci=(0.6, 0.8), h15=0.001),
    )
    plans = generate_plans(DAY, evs, bars, population()).set_index("direction")
    assert list(plans.index) == ["long", "short"]
    long, short = plans.loc["long"], plans.loc["short"]
    # flat bars: ATR(14) = 1, entry = 100, stop 1.5 ATR, target 2.5 ATR, both x sqrt(15 minutes)
    sd, td = round(1.5 * math.sqrt(15), 8), round(2.5 * math.sqrt(15), 8)
    assert (long["entry_price"], long["stop_loss"], long["take_profit"]) == (
        100.0,
        round(100 - sd, 8),
        round(100 + td, 8),
    )
    assert (short["entry_price"], short["stop_loss"], short["take_profit"]) == (
        100.0,
        round(100 + sd, 8),
        round(100 - td, 8),
    )
    assert long["stop_loss"] < long["entry_price"] < long["take_profit"]
    assert short["take_profit"] < short["entry_price"] < short["stop_loss"]
    for p in (long, short):
        assert p["risk_reward_ratio"] == 1.67  # 2.5 / 1.5
        assert p["position_size"] == round(0.5 / (sd / 100), 2) == 8.61  # 0.5% risk / 5.81% stop distance
        assert p["signal_strength"] == 0.6  # 0.5 * 0.8 + 0.5 * min(1, 2 * 0.2)
        assert p["time_horizon"] == "15m"
        assert p["validation_status"] == "pending"
        assert pd.isna(p["execution_status"]) and np.isnan(p["pnl"])
        assert p["module_intelligence"]["genome"] == GENOMES["momentum"]
        assert p["microstructure_evidence"]["dsi_evidence_id"] == p["dsi_evidence_id"]
    # long: evidence on its side, 15m trend agrees: 0.35*0.4 + 0.25*0.8 + 0.15 + 0.10 + 0.15*0.8
    assert long["confidence_score"] == 0.71
    # short: evidence 0.3 is on its side too, 15m trend (+) disagrees: 0.14 + 0.2 + 0.15 + 0 + 0.12
    assert short["confidence_score"] == 0.61
    assert long["timestamp"] == t_long + MIN and long["valid_until"] == t_long + MIN + pd.Timedelta(
        minutes=15
    )
    assert long["regime_context"]["regime"] == "ranging"  # flat bars: no move, no volatility
    assert long["risk_assessment"]["atr"] == 1.0


def test_reversal_and_divergence_directions_and_skips():
    t = DAY + pd.Timedelta(hours=5)
    bars = set_bar(flat_bars(), t, open=100.0, close=100.2, high=100.5, low=99.5)  # an up bar, TR still 1
    evs = events(
        event(t, "volume_spike", mx=0.3, key="rev"),  # fade the up bar: short
        event(t, "divergence", h1=-0.004, mx=0.6, key="div"),  # 1h trend down: short
        event(t, "price_jump", mx=0.5, key="neutral"),  # no edge: no plan
        event(t, "range_expansion", mx=0.51, key="thin"),  # edge 0.01 < 0.02: no plan
        event(t + MIN, "pattern", mx=0.3, key="flatbar"),  # reversal of a flat bar: no direction
        event(END - MIN, "price_jump", key="last-minute"),  # its plan would be stamped at the day end
        event(DAY - MIN, "price_jump", key="yesterday"),  # not the day's event
    )
    plans = generate_plans(DAY, evs, bars, population())
    by_module = plans.set_index("module_id")
    assert len(plans) == 2
    rev, div = by_module.loc[mid("reversal")], by_module.loc[mid("divergence")]
    assert rev["direction"] == "short" and rev["entry_price"] == 100.2
    # 1.0 / 1.5 ATR x sqrt(5 minutes)
    assert (rev["stop_loss"], rev["take_profit"]) == (
        round(100.2 + math.sqrt(5), 8),
        round(100.2 - 1.5 * math.sqrt(5), 8),
    )
    assert rev["risk_reward_ratio"] == 1.5 and rev["time_horizon"] == "5m"
    assert div["direction"] == "short" and (div["stop_loss"], div["take_profit"]) == (
        round(100.2 + 2 * math.sqrt(60), 8),
        round(100.2 - 3 * math.sqrt(60), 8),
    )
    assert div["valid_until"] == t + MIN + pd.Timedelta(hours=1)
    # divergence short with evidence 0.6 (against it): side rate 1 - 0.8, no confirm credit, 15m (+) disagrees
    assert div["confidence_score"] == round(0.25 * 0.2 + 0.15 * 0.8, 2)


def test_valid_until_is_capped_at_the_day_end():
    bars = flat_bars()
    t = END - pd.Timedelta(minutes=10)
    plans = generate_plans(DAY, events(event(t, "divergence", h1=0.01)), bars, population())
    assert plans["valid_until"].tolist() == [END]


def test_plan_fields_do_not_depend_on_later_bars():
    bars = walk_bars()
    evs = walk_events(bars)
    pop = population()
    plans = generate_plans(DAY, evs, bars, pop)
    assert len(plans) > 50
    cut = DAY + pd.Timedelta(hours=12)
    early = plans[plans["timestamp"] <= cut + MIN].reset_index(drop=True)
    later = bars["timestamp"] > cut
    changed = bars.copy()
    changed.loc[later, ["open", "high", "low", "close"]] *= 1.37
    again = generate_plans(DAY, evs, changed, pop)
    assert_frame_equal(early, again[again["timestamp"] <= cut + MIN].reset_index(drop=True))
    truncated = generate_plans(DAY, evs[evs["timestamp"] <= cut], bars[~later], pop)
    assert_frame_equal(early, truncated)


# ------------------------------------------------------------------------------------------------ approval


def _plan(
    key: str,
    *,
    conf: float = 0.6,
    rr: float = 1.67,
    size: float = 10.0,
    symbol: str = "AAPL",
    minute: int = 0,
    direction: str = "long",
) -> dict:
    ts = DAY + pd.Timedelta(hours=10, minutes=minute)
    return {
        "plan_id": str(uuid.uuid5(TEST_NS, key)),
        "module_id": mid("momentum"),
        "symbol": symbol,
        "timestamp": ts,
        "signal_strength": 0.6,
        "direction": direction,
        "entry_price": 100.0,
        "position_size": size,
        "stop_loss": 98.0 if direction == "long" else 102.0,
        "take_profit": 102.0 if direction == "long" else 98.0,
        "time_horizon": "15m",
        "risk_reward_ratio": rr,
        "confidence_score": conf,
        "valid_until": ts + pd.Timedelta(minutes=15),
        "validation_status": "pending",
        "event_id": str(uuid.uuid5(TEST_NS, key + "e")),
        "dsi_evidence_id": str(uuid.uuid5(TEST_NS, key + "d")),
    }


def test_approval_rules_exact():
    rows = [
        _plan("low-confidence", conf=0.35, minute=0),
        _plan("low-rr", rr=1.0, minute=1),
        _plan("oversized", size=33.33, minute=2),
        _plan("fine", size=10.0, minute=3),
        _plan("third-of-symbol", minute=4),
        _plan("other-symbol", symbol="SPY", minute=5),
    ]
    desk = module("risk_desk", genome=dict(GENOMES["risk_desk"], max_plans_per_symbol=2))
    pop = population(desk, founders=("momentum", "execution_sim"))
    plans, approvals = approve_plans(DAY, pd.DataFrame(rows), pop)
    assert list(approvals.columns) == list(APPROVAL_COLUMNS)
    assert list(plans.columns) == list(PLAN_FRAME_COLUMNS)
    key = {
        str(uuid.uuid5(TEST_NS, r)): r
        for r in ("low-confidence", "low-rr", "oversized", "fine", "third-of-symbol", "other-symbol")
    }
    a = approvals.assign(key=approvals["plan_id"].map(key)).set_index("key")
    p = plans.assign(key=plans["plan_id"].map(key)).set_index("key")
    assert a["approval_status"].to_dict() == {
        "low-confidence": "rejected",
        "low-rr": "rejected",
        "oversized": "modified",
        "fine": "approved",
        "third-of-symbol": "rejected",
        "other-symbol": "approved",
    }
    assert p["validation_status"].to_dict() == {
        "low-confidence": "failed",
        "low-rr": "failed",
        "oversized": "validated",
        "fine": "validated",
        "third-of-symbol": "failed",
        "other-symbol": "validated",
    }
    assert p.loc["oversized", "position_size"] == 20.0 and p.loc["fine", "position_size"] == 10.0
    assert a.loc["oversized", "modifications"] == {
        "position_size": {"from": 33.33, "to": 20.0, "limit": "max_position_pct"}
    }
    assert a.loc["fine", "modifications"] is None
    assert a["decision_confidence"].to_dict() == {
        "low-confidence": 0.56,  # 0.5 + 0.5 * (0.4 - 0.35) / 0.4
        "low-rr": 0.58,  # 0.5 + 0.5 * (1.2 - 1.0) / 1.2
        "oversized": 0.53,  # 0.5 + 0.5 * min(0.2 / 0.6, 0.47 / 8.8)
        "fine": 0.53,
        "third-of-symbol": 1.0,  # the symbol limit is a rule
        "other-symbol": 0.53,
    }
    assert "confidence 0.35 below 0.40" in a.loc["low-confidence", "approval_reason"]
    assert "risk/reward 1.00 below 1.20" in a.loc["low-rr", "approval_reason"]
    assert "symbol limit" in a.loc["third-of-symbol", "approval_reason"]
    assert a.loc["third-of-symbol", "decision_factors"]["symbol_rank"] == 3  # the rejected ones do not count
    assert (a["decision_maker_module_id"] == mid("risk_desk")).all()
    assert (a["timestamp"] == p.loc[a.index, "timestamp"]).all()
    assert a.loc["fine", "approval_id"] == str(uuid.uuid5(NAMESPACE, f"{a.loc['fine', 'plan_id']}|approval"))
    # without bars every approved plan is open until its valid_until: 20 (oversized, cut) + 10
    assert a.loc["fine", "portfolio_impact"]["after"]["symbol_exposure_pct"] == 30.0
    assert a.loc["other-symbol", "portfolio_impact"]["before"]["symbol_exposure_pct"] == 0.0
    assert a.loc["other-symbol", "portfolio_impact"]["after"]["gross_exposure_pct"] == 40.0
    assert len(a.loc["other-symbol", "portfolio_impact"]["open_positions"]) == 2


def test_decision_maker_choice_and_absence():
    rows = pd.DataFrame([_plan("a", conf=0.45)])
    strict = dict(GENOMES["risk_desk"], min_confidence=0.5)
    best = module(
        "desk_best",
        "decision_maker",
        strict,
        module_id="ffffffff-0000-0000-0000-000000000000",
        history=[{"day": "2024-03-02", "score": 0.2}, {"day": "2024-03-03", "score": 0.8}],
    )
    worse = module(
        "desk_worse",
        "decision_maker",
        GENOMES["risk_desk"],
        module_id="00000000-0000-0000-0000-00000000000a",
        history=[{"day": "2024-03-03", "score": 0.6}],
    )
    retired = module(
        "desk_retired",
        "decision_maker",
        GENOMES["risk_desk"],
        history=[{"day": "x", "score": 0.99}],
        module_id="00000000-0000-0000-0000-00000000000b",
        stage="deprecated",
    )
    pop = population(best, worse, retired, founders=("momentum", "execution_sim"))
    _, approvals = approve_plans(DAY, rows, pop)
    assert approvals["decision_maker_module_id"].tolist() == [best["module_id"]]
    assert approvals["approval_status"].tolist() == ["rejected"]  # the strict genome decided
    tie = module(
        "desk_tie",
        "decision_maker",
        GENOMES["risk_desk"],
        module_id="00000000-0000-0000-0000-000000000001",
        history=[{"day": "2024-03-03", "score": 0.8}],
    )
    _, approvals = approve_plans(DAY, rows, population(best, tie, founders=()))
    assert approvals["decision_maker_module_id"].tolist() == [tie["module_id"]]  # tie: smallest module_id
    fresh = module(
        "desk_fresh", "decision_maker", GENOMES["risk_desk"], module_id="00000000-0000-0000-0000-000000000002"
    )
    _, approvals = approve_plans(DAY, rows, population(fresh, worse, founders=()))
    assert approvals["decision_maker_module_id"].tolist() == [worse["module_id"]]  # no history ranks last

    plans, approvals = approve_plans(DAY, rows, population(founders=("momentum", "execution_sim")))
    assert approvals.empty and list(approvals.columns) == list(APPROVAL_COLUMNS)
    assert plans["validation_status"].tolist() == ["pending"]
    executed = simulate_execution(DAY, plans, flat_bars(), population())
    assert executed["execution_status"].tolist() == ["cancelled"]


# ----------------------------------------------------------------------------------------------- execution

T0 = DAY + pd.Timedelta(hours=10)
TRADER = GENOMES["execution_sim"]


def _exec_bars(rows: list[tuple[int, float, float, float, float]], symbol: str = "AAPL") -> pd.DataFrame:
    """Bars at T0 + minute: (minute, open, high, low, close)."""
    return pd.DataFrame(
        [
            {
                "symbol": symbol,
                "timestamp": T0 + MIN * m,
                "open": o,
                "high": h,
                "low": lo,
                "close": c,
                "volume": 1.0,
            }
            for m, o, h, lo, c in rows
        ]
    )


def _execute(
    bars: pd.DataFrame,
    direction: str = "long",
    size: float = 10.0,
    status: str = "validated",
    trader: dict | None = None,
) -> pd.Series:
    plan = _plan("exec", direction=direction, size=size)
    plan["validation_status"] = status
    pop = population(module("execution_sim", genome=trader or TRADER), founders=("momentum", "risk_desk"))
    out = simulate_execution(DAY, pd.DataFrame([plan]), bars, pop)
    assert list(out.columns) == list(PLAN_FRAME_COLUMNS)
    return out.iloc[0]


def _expected(
    direction: str, entry_ref: float, exit_ref: float, market_exit: bool, size: float = 10.0
) -> dict:
    """The simple cost model of this file (``simple_costs``): 1 bp half-spread per market order, no impact,
    2 bp fee per side; the target is a limit order (no spread)."""
    d = 1 if direction == "long" else -1
    exit_cost = 1.0 if market_exit else 0.0
    entry = round(entry_ref * (1 + d * 1.0 / 1e4), 8)
    exit_ = round(exit_ref * (1 - d * exit_cost / 1e4), 8)
    qty = round(1_000_000 * size / 100 / entry_ref, 8)
    fees = 2.0 / 1e4 * qty * (entry + exit_)
    slip_cost = qty * (abs(entry - entry_ref) + abs(exit_ref - exit_))
    return {
        "executed_price": entry,
        "exit_price": exit_,
        "executed_quantity": qty,
        "pnl": round(d * (exit_ - entry) * qty - fees, 8),
        "execution_cost": round(fees + slip_cost, 8),
        "slippage": round(1.0 + exit_cost, 4),
    }


def _check(row: pd.Series, exp: dict, reason: str, status: str = "executed") -> None:
    assert row["execution_status"] == status
    assert row["performance_metrics"]["exit_reason"] == reason
    assert row["performance_metrics"]["exit_price"] == exp["exit_price"]
    for k in ("executed_price", "executed_quantity", "pnl", "execution_cost", "slippage"):
        assert row[k] == pytest.approx(exp[k], abs=1e-8), k
    att = row["attribution_analysis"]
    assert att["net_pnl"] == pytest.approx(att["gross_pnl"] - att["slippage_cost"] - att["fees"], abs=1e-6)
    # re-anchored at the fill by the planned distances (2 and 2): never beyond either at entry
    d = 1 if row["direction"] == "long" else -1
    assert row["stop_loss"] == round(row["executed_price"] - d * 2.0, 8)
    assert row["take_profit"] == round(row["executed_price"] + d * 2.0, 8)
    assert row["performance_metrics"]["planned_stop_loss"] == 100.0 - d * 2.0


def test_target_hit_exact():
    bars = _exec_bars(
        [
            (0, 100.0, 100.5, 99.5, 100.2),
            (1, 100.2, 101.0, 100.0, 100.8),
            (2, 100.8, 102.3, 100.7, 102.1),
            (3, 102.1, 103.0, 96.0, 97.0),
        ]
    )
    row = _execute(bars)
    # entry: open 100 + 1 bp half-spread -> 100.01; target re-anchored to 102.01, filled as is
    assert row["executed_price"] == 100.01
    exp = _expected("long", 100.0, 102.01, market_exit=False)
    _check(row, exp, "target")
    assert row["pnl"] == pytest.approx(
        (102.01 - 100.01) * exp["executed_quantity"] - 0.0002 * exp["executed_quantity"] * (100.01 + 102.01),
        abs=1e-8,
    )
    assert row["pnl"] > 0
    m = row["performance_metrics"]
    assert m["exit_time"] == (T0 + 2 * MIN).isoformat() and m["minutes_held"] == 2.0 and m["bars_held"] == 3
    assert m["mfe"] == pytest.approx((102.3 - 100.01) / 100.01, abs=1e-8)
    assert m["mae"] == pytest.approx((100.01 - 99.5) / 100.01, abs=1e-8)


def test_entry_bar_touching_the_stop_exits_at_the_stop():
    # issue 17 §3: the entry bar dips below the stop after the fill at its open: stopped in the entry bar
    # (the old reading ignored the entry bar and booked the target two bars later)
    bars = _exec_bars(
        [(0, 100.0, 100.5, 97.0, 100.2), (1, 100.2, 100.4, 99.9, 100.1), (2, 100.1, 103.0, 100.0, 102.5)]
    )
    row = _execute(bars)
    exp = _expected("long", 100.0, 98.01, market_exit=True)
    assert exp["exit_price"] == 98.000199
    _check(row, exp, "stop")
    assert row["performance_metrics"]["bars_held"] == 1
    assert row["performance_metrics"]["exit_time"] == T0.isoformat()
    assert row["pnl"] < 0


def test_entry_bar_reaching_both_is_the_stop_and_the_target_alone_is_the_target():
    both = _exec_bars([(0, 100.0, 102.5, 97.5, 100.0), (1, 100.0, 100.5, 99.5, 100.0)])
    _check(_execute(both), _expected("long", 100.0, 98.01, market_exit=True), "stop")
    _check(_execute(both, "short"), _expected("short", 100.0, 101.99, market_exit=True), "stop")
    target = _exec_bars([(0, 100.0, 102.5, 99.5, 102.2), (1, 102.2, 102.5, 95.0, 96.0)])
    _check(_execute(target), _expected("long", 100.0, 102.01, market_exit=False), "target")


def test_stop_gap_fills_at_the_open():
    bars = _exec_bars([(0, 100.0, 100.5, 99.5, 100.0), (1, 97.5, 97.8, 97.0, 97.2)])
    _check(_execute(bars), _expected("long", 100.0, 97.5, market_exit=True), "stop")


def test_stop_and_target_in_one_bar_is_the_stop():
    bars = _exec_bars([(0, 100.0, 100.5, 99.5, 100.0), (1, 100.0, 102.5, 97.5, 101.0)])
    _check(_execute(bars), _expected("long", 100.0, 98.01, market_exit=True), "stop")
    short = _exec_bars([(0, 100.0, 100.5, 99.5, 100.0), (1, 100.0, 102.5, 97.5, 101.0)])
    _check(_execute(short, "short"), _expected("short", 100.0, 101.99, market_exit=True), "stop")


def test_short_target_exact():
    bars = _exec_bars([(0, 100.0, 100.4, 99.6, 99.9), (5, 99.0, 99.2, 97.9, 98.0)])
    row = _execute(bars, "short")
    exp = _expected("short", 100.0, 97.99, market_exit=False)
    assert row["executed_price"] == pytest.approx(100.0 * (1 - 1.0 / 1e4))  # sold 1 bp under the open
    _check(row, exp, "target")
    assert row["pnl"] > 0


def test_horizon_exit_at_the_last_close():
    rows = [(m, 100.0, 100.5, 99.5, 100.0) for m in range(15)]
    rows[-1] = (14, 100.0, 100.6, 99.8, 100.4)
    bars = pd.concat([_exec_bars(rows), _exec_bars([(15, 100.0, 150.0, 50.0, 120.0)])])  # after valid_until
    row = _execute(bars)
    _check(row, _expected("long", 100.0, 100.4, market_exit=True), "horizon")
    assert row["performance_metrics"]["exit_time"] == (T0 + 15 * MIN).isoformat()
    assert row["performance_metrics"]["minutes_held"] == 15.0


def test_data_ending_early_is_partial():
    rows = [(m, 100.0, 100.5, 99.5, 100.0) for m in range(11)]
    rows[-1] = (10, 100.0, 100.5, 99.5, 100.1)  # last bar 10:10 of 10:15
    row = _execute(_exec_bars(rows))
    _check(row, _expected("long", 100.0, 100.1, market_exit=True), "data_end", status="partial")


def test_no_entry_bar_fails_and_rejected_is_cancelled():
    late = _exec_bars(
        [(15, 100.0, 100.5, 99.5, 100.0), (16, 100.0, 100.5, 99.5, 100.0)]
    )  # from valid_until on
    row = _execute(late)
    assert row["execution_status"] == "failed"
    assert np.isnan(row["executed_price"]) and np.isnan(row["pnl"]) and row["attribution_analysis"] is None
    early = _exec_bars([(-5, 100.0, 100.5, 99.5, 100.0)])  # only before the plan
    assert _execute(early)["execution_status"] == "failed"
    bars = _exec_bars([(0, 100.0, 100.5, 99.5, 100.0), (1, 100.0, 103.0, 99.0, 102.0)])
    row = _execute(bars, status="failed")
    assert row["execution_status"] == "cancelled" and np.isnan(row["pnl"])
    assert row["performance_metrics"] == {"reason": "rejected by the decision maker"}


def test_entry_waits_for_the_first_bar_at_or_after_the_plan():
    bars = _exec_bars([(-1, 90.0, 95.0, 85.0, 92.0), (2, 101.0, 101.5, 100.5, 101.2)])  # minutes 0, 1 missing
    row = _execute(bars)
    assert row["performance_metrics"]["entry_time"] == (T0 + 2 * MIN).isoformat()
    _check(row, _expected("long", 101.0, 101.2, market_exit=True), "data_end", status="partial")


def test_execution_ignores_bars_after_valid_until_and_after_the_day():
    bars = walk_bars()
    evs = walk_events(bars)
    pop = population()
    plans, _ = approve_plans(DAY, generate_plans(DAY, evs, bars, pop), pop)
    executed = simulate_execution(DAY, plans, bars, pop)
    assert executed["execution_status"].isin(["executed", "cancelled"]).all()
    assert (executed["execution_status"] == "executed").sum() >= 5
    # wreck every bar from each plan's valid_until on (per symbol, the earliest valid_until of its plans is
    # too strict: use the plan's own window by re-running plan by plan on bars cut at its valid_until)
    for _, plan in plans[plans["validation_status"] == "validated"].head(15).iterrows():
        after = (bars["symbol"] == plan["symbol"]) & (bars["timestamp"] >= plan["valid_until"])
        wrecked = bars.copy()
        wrecked.loc[after, ["open", "high", "low", "close"]] *= 0.5
        one = simulate_execution(DAY, plans[plans["plan_id"] == plan["plan_id"]], wrecked, pop)
        assert_frame_equal(one, executed[executed["plan_id"] == plan["plan_id"]].reset_index(drop=True))
    today = bars[bars["timestamp"] >= DAY]
    next_day = today.assign(
        timestamp=today["timestamp"] + pd.Timedelta(days=1), open=1.0, high=1e6, low=0.5, close=2.0
    )
    assert_frame_equal(executed, simulate_execution(DAY, plans, pd.concat([bars, next_day]), pop))


def test_vectorised_exits_match_a_bar_by_bar_reading():
    # many overlapping plans on one symbol, in both directions: the join + groupby must agree with a plain
    # walk
    bars = walk_bars(("AAPL",))
    rows = []
    for k in range(40):
        ts = DAY + pd.Timedelta(hours=1, minutes=7 * k)
        close = bars.loc[bars["timestamp"] == ts - MIN, "close"].item()
        rows.append(
            {
                **_plan(f"many{k}", direction="long" if k % 2 else "short"),
                "timestamp": ts,
                "valid_until": ts + pd.Timedelta(minutes=30),
                "entry_price": close,
                "stop_loss": close * (0.998 if k % 2 else 1.002),
                "take_profit": close * (1.003 if k % 2 else 0.997),
                "validation_status": "validated",
            }
        )
    out = simulate_execution(DAY, pd.DataFrame(rows), bars, population())
    for k, row in out.iterrows():
        window = bars[(bars["timestamp"] >= row["timestamp"]) & (bars["timestamp"] < row["valid_until"])]
        d = 1 if row["direction"] == "long" else -1
        first = window.iloc[0]
        assert row["performance_metrics"]["entry_reference_price"] == round(first["open"], 8)
        reason = "horizon"
        for _, bar in window.iterrows():  # the entry bar too: every price in it but the open is later
            stop = bar["low"] <= row["stop_loss"] if d > 0 else bar["high"] >= row["stop_loss"]
            target = bar["high"] >= row["take_profit"] if d > 0 else bar["low"] <= row["take_profit"]
            if stop or target:
                reason = "stop" if stop else "target"
                break
        m = row["performance_metrics"]
        assert m["exit_reason"] == reason, k
        if reason == "target":
            assert m["exit_reference_price"] == round(row["take_profit"], 8)
        elif reason == "stop":
            gap = bar["open"] < row["stop_loss"] if d > 0 else bar["open"] > row["stop_loss"]
            assert m["exit_reference_price"] == round(bar["open"] if gap else row["stop_loss"], 8)
        else:
            assert m["exit_reference_price"] == round(window.iloc[-1]["close"], 8)


# ------------------------------------------------------------------------------------------------- scoring


def test_score_modules_alpha_scores_and_empyrical():
    t = DAY + pd.Timedelta(hours=3)
    # stop 1.5 and target 2.5 ATR x sqrt(15) from the fill (100.01 long, 99.99 short)
    bars = set_bar(flat_bars(), t + 2 * MIN, high=110.0)  # the long's target (109.69) is hit
    bars = set_bar(
        bars, DAY + pd.Timedelta(hours=4, minutes=3), high=106.0
    )  # the short's stop (105.80) is hit
    evs = events(event(t), event(DAY + pd.Timedelta(hours=4), mx=0.3, h15=-0.001))
    pop = population()
    prior = [
        (k, round(0.5 + ((k * 7) % 5 - 2) / 20, 2), round(((k * 37) % 11 - 5) / 10, 4)) for k in range(1, 25)
    ]
    history = pd.DataFrame(
        [
            {
                "module_id": mid("momentum"),
                "timestamp": DAY - k * pd.Timedelta(days=1) + pd.Timedelta(hours=23, minutes=59),
                "performance_score": s,
                "risk_adjusted_returns": r,
            }
            for k, s, r in [*prior, (40, 0.9, 999.0)]
        ]
    )
    plans, _approvals, perf = run_day(evs, bars, pop, history)
    assert list(perf.columns) == list(PERFORMANCE_COLUMNS)
    assert perf["module_id"].tolist() == sorted(m for m in pop["module_id"])
    assert plans["execution_status"].tolist() == ["executed", "executed"]
    assert plans["performance_metrics"].map(lambda m: m["exit_reason"]).tolist() == ["target", "stop"]
    row = perf.set_index("module_id").loc[mid("momentum")]
    r = plans["pnl"].sum() / 1_000_000
    # the day's return in units of the module's risk per trade (risk_pct 0.5 %): its R-multiple
    assert row["risk_adjusted_returns"] == round(r / 0.005, 4)
    perf_score = round(0.4 * (0.5 + 0.5 * math.tanh(r / 0.005)) + 0.3 * 0.5 + 0.3 * 1.0, 2)
    assert row["performance_score"] == perf_score
    assert row["trading_plan_success_rate"] == 0.5 and row["execution_quality"] == 1.0
    assert row["collaboration_score"] == 1.0 and row["intelligence_sharing_effectiveness"] == 0.5
    assert row["specialization_score"] == 1.0  # both plans on price_jump
    # the 40-day-old row is outside the trailing window; 24 days before + today = 25 >= 20 daily returns
    past = sorted(prior, reverse=True)
    series = np.array([rr for _, _, rr in past] + [round(r / 0.005, 4)]) * 0.005
    assert len(series) == 25
    assert row["sharpe_ratio"] == round(float(empyrical.sharpe_ratio(series, annualization=252)), 4)
    assert row["max_drawdown"] == round(float(empyrical.max_drawdown(series)), 4)
    assert row["max_drawdown"] < 0
    scores = np.array([sc for _, sc, _ in past] + [perf_score])
    assert row["consistency_score"] == round(1 - 2 * scores.std(), 2)
    assert row["learning_effectiveness"] == round(
        0.5 + 0.5 * math.tanh((perf_score - scores[:-1].mean()) / 0.1), 2
    )
    slope = np.polyfit([-4, -3, -2, -1, 0], scores[-5:], 1)[0]
    assert row["adaptation_speed"] == round(0.5 + 0.5 * math.tanh(slope / 0.05), 2)
    assert row["timestamp"] == END - MIN
    assert row["time_horizon"] == "15m" and row["asset_class"] == "equity"
    assert perf.set_index("module_id").loc[mid("momentum"), "performance_id"] == str(
        uuid.uuid5(NAMESPACE, f"{mid('momentum')}|{DAY.isoformat()}")
    )
    idle = perf.set_index("module_id").loc[mid("reversal")]
    assert idle["performance_score"] == 0.35  # 0.4 * 0.5 + 0.3 * 0.5 + 0.3 * 0 (no plans, no credit)
    assert np.isnan(idle["trading_plan_success_rate"]) and np.isnan(idle["sharpe_ratio"])
    assert idle["risk_adjusted_returns"] == 0.0 and idle["max_drawdown"] == 0.0
    assert idle["specialization_score"] == 0.5 and pd.isna(idle["asset_class"])


def test_score_modules_roles_match_the_day_and_counterfactuals():
    bars = walk_bars()
    evs = walk_events(bars)
    lax = module(
        "desk_lax",
        "decision_maker",
        dict(GENOMES["risk_desk"], min_confidence=0.0, max_plans_per_symbol=100),
        module_id="ffffffff-ffff-ffff-ffff-ffffffffffff",
    )
    cheap = module(
        "trader_cheap",
        "trader",
        dict(TRADER, slippage_bps=0.0, fee_bps=0.0, range_factor=0.0),  # assumes free fills: no effect
        module_id="ffffffff-ffff-ffff-ffff-fffffffffff0",
    )
    late = module(
        "trader_late",
        "trader",
        dict(TRADER, entry_delay_bars=2),  # a tactic: enters two bars later
        module_id="ffffffff-ffff-ffff-ffff-fffffffffff1",
    )
    pop = population(lax, cheap, late)
    plans, approvals, perf = run_day(evs, bars, pop)
    by = perf.set_index("module_id")
    assert (approvals["decision_maker_module_id"] == mid("risk_desk")).all()  # no history: smallest id acts
    traded = plans["execution_status"].isin(["executed", "partial"])
    # the acting trader's figures are the day's real execution
    trader = by.loc[mid("execution_sim")]
    assert trader["risk_adjusted_returns"] == round(plans.loc[traded, "pnl"].sum() / 1e6 / 0.01, 4)
    fill = traded.sum() / (plans["validation_status"] == "validated").sum()
    d = np.where(plans["direction"] == "long", 1.0, -1.0)
    shortfall = (d * (plans["executed_price"] - plans["entry_price"]) / plans["entry_price"] * 1e4)[traded]
    assert trader["execution_quality"] == round(0.5 * fill + 0.5 / (1 + max(0.0, shortfall.mean()) / 10), 2)
    assert trader["performance_score"] == trader["execution_quality"]
    # issue 17 §1: a trader that assumes lower costs scores exactly as the one that does not
    assert by.loc[cheap["module_id"]].drop("performance_id").equals(trader.drop("performance_id"))
    # a tactic changes the fills, and so what the trader made
    assert by.loc[late["module_id"], "risk_adjusted_returns"] != trader["risk_adjusted_returns"]
    # the acting desk's counterfactual is its real decision; its return is that of what it let through
    desk = by.loc[mid("risk_desk")]
    assert desk["risk_adjusted_returns"] == pytest.approx(
        plans.loc[traded, "pnl"].sum() / 1e6 / 0.01, abs=1e-4
    )
    approved = (approvals["approval_status"] != "rejected").sum()
    assert desk["collaboration_score"] == round(approved / len(plans), 2)
    assert by.loc[lax["module_id"], "collaboration_score"] > desk["collaboration_score"]
    for alpha in ("momentum", "reversal", "divergence"):
        mine = plans["module_id"] == mid(alpha)
        assert by.loc[mid(alpha), "risk_adjusted_returns"] == round(
            plans.loc[mine & traded, "pnl"].sum() / 1e6 / 0.005, 4
        )
    assert by["market_regime"].nunique() == 1
    assert by.loc[mid("risk_desk"), "asset_class"] == "multi_asset"  # AAPL and BTCUSD


# -------------------------------------------------------------------------------------- bounds, determinism


def _assert_scaled(frame: pd.DataFrame, columns: dict[str, int]) -> None:
    for column, places in columns.items():
        v = frame[column].dropna().to_numpy(dtype="float64")
        assert np.array_equal(v, np.round(v, places)), column


def test_outputs_within_the_rules_and_scales():
    bars = walk_bars()
    evs = walk_events(bars, n=400)
    kid = module(
        "momentum_kid",
        "alpha_detector",
        dict(GENOMES["momentum"], target_atr=40.0, risk_pct=5.0),
        module_id="00000000-0000-0000-0000-000000000abc",
    )
    pop = population(kid)
    plans, approvals, perf = run_day(evs, bars, pop)
    assert len(plans) > 100 and len(approvals) == len(plans) and len(perf) == 6
    for frame, table in (
        (plans, "trading_plans"),
        (approvals, "trading_plan_approvals"),
        (perf, "module_performance"),
    ):
        report = evaluate_frame(frame, table)
        assert report.passed, [(r.rule.name, r.unexpected_count) for r in report.failed]
        assert not report.skipped, [r.rule.name for r in report.skipped]
    assert plans["risk_reward_ratio"].max() == 10.0  # target_atr 40 is clamped to 10 x the stop
    assert plans["position_size"].max() <= 100 and plans["position_size"].min() > 0
    assert set(plans["execution_status"]) <= {"executed", "partial", "failed", "cancelled"}
    assert (plans["valid_until"] <= END).all() and (plans["timestamp"] < END).all()
    assert (plans["timestamp"] > plans["valid_until"] - pd.Timedelta(hours=4, minutes=1)).all()
    _assert_scaled(
        plans,
        {
            "signal_strength": 2,
            "confidence_score": 2,
            "position_size": 2,
            "risk_reward_ratio": 2,
            "entry_price": 8,
            "stop_loss": 8,
            "take_profit": 8,
            "executed_price": 8,
            "executed_quantity": 8,
            "execution_cost": 8,
            "pnl": 8,
            "slippage": 4,
        },
    )
    _assert_scaled(approvals, {"decision_confidence": 2})
    unit = [
        "performance_score",
        "consistency_score",
        "innovation_score",
        "specialization_score",
        "collaboration_score",
        "trading_plan_success_rate",
        "execution_quality",
        "learning_effectiveness",
        "adaptation_speed",
        "intelligence_sharing_effectiveness",
    ]
    _assert_scaled(
        perf, {**dict.fromkeys(unit, 2), "risk_adjusted_returns": 4, "sharpe_ratio": 4, "max_drawdown": 4}
    )
    for column in ("risk_adjusted_returns", "sharpe_ratio", "max_drawdown", "slippage"):
        frame = plans if column == "slippage" else perf
        assert (frame[column].dropna().abs() < 10_000).all()
    assert perf.loc[perf["module_id"] == kid["module_id"], "innovation_score"].item() > 0
    # JSON payloads: plain Python, no NaN (jsonb has none)
    import json

    for frame in (plans, approvals):
        for column in frame.columns:
            if frame[column].dtype == object:
                for value in frame[column]:
                    json.dumps(value, allow_nan=False)


def test_deterministic_and_input_order_free():
    bars = walk_bars()
    evs = walk_events(bars)
    pop = population()
    first = run_day(evs, bars, pop)
    second = run_day(evs.copy(), bars.copy(), pop.copy())
    shuffled = run_day(
        evs.sample(frac=1, random_state=1),
        bars.sample(frac=1, random_state=2),
        pop.sample(frac=1, random_state=3),
    )
    for a, b, c in zip(first, second, shuffled, strict=True):
        assert_frame_equal(a, b)
        assert_frame_equal(a, c)


def test_empty_inputs_give_typed_empty_frames():
    pop = population()
    empty_events = events(event(DAY - MIN, key="x")).iloc[0:0]
    plans, approvals, perf = run_day(empty_events, flat_bars(), pop)
    assert plans.empty and list(plans.columns) == list(PLAN_FRAME_COLUMNS)
    assert approvals.empty and list(approvals.columns) == list(APPROVAL_COLUMNS)
    assert str(plans["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert len(perf) == 5 and perf["performance_score"].notna().all()
    full = generate_plans(DAY, events(event(DAY + pd.Timedelta(hours=3))), flat_bars(), pop)
    assert (plans.dtypes == full.dtypes).all()


def test_with_the_ecosystem_founders():
    from tis_pipeline.trading_day.ecosystem.founders import founding_population

    founders = founding_population(DAY)
    bars = walk_bars()
    plans, _approvals, perf = run_day(walk_events(bars), bars, founders)
    assert len(plans) > 0 and len(perf) == len(founders)
    assert evaluate_frame(plans, "trading_plans").passed and evaluate_frame(perf, "module_performance").passed
    assert set(plans["module_id"]) <= set(
        founders.loc[founders["module_type"] == "alpha_detector", "module_id"]
    )


def test_day_regime_labels():
    up = flat_bars(start=DAY)
    rng = np.random.default_rng(5)
    close = 100 * np.exp(np.cumsum(0.0005 + rng.normal(0, 0.0002, len(up))))
    up = up.assign(close=close, open=close, high=close * 1.0001, low=close * 0.9999)
    assert logic._day_regime(DAY, up) == "trending_up"
    down = up.assign(close=close[::-1].copy(), open=close[::-1].copy())
    assert logic._day_regime(DAY, down) == "trending_down"
    wild = up.assign(close=100 * np.exp(np.cumsum(rng.normal(0, 0.01, len(up)))))
    assert logic._day_regime(DAY, wild) == "high_volatility"
    assert logic._day_regime(DAY, up.iloc[0:0]) == "unknown"
