"""DSI logic: no look-ahead, carried state, replay, streaming == batch, bounds, purging, hashes, events."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from functools import cache

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pandas.testing import assert_frame_equal

from bench.dsi_logic import make_bars
from tis_pipeline.dsi import evaluation
from tis_pipeline.dsi.logic import classifiers
from tis_pipeline.dsi.logic import score as logic
from tis_pipeline.dsi.logic.config import EXPERTS, FAMILIES, N_EXPERTS, DsiConfig
from tis_pipeline.dsi.logic.events import detect_events
from tis_pipeline.dsi.logic.microtape import microtape_hash
from tis_pipeline.dsi.logic.score import (
    frame_digest,
    measure_streaming_latency,
    microtape_hashes,
    score_bars,
    score_next_bar,
)
from tis_pipeline.dsi.logic.state import DsiState

# small windows' worth of data, so make retirements and events happen
CFG = DsiConfig(
    retire_span=30,
    weight_floor=0.04,
    eta=0.5,
    event_threshold=0.6,
    divergence_threshold=0.3,
    pattern_threshold=0.2,
    cooling_minutes=5,
)
EV_COLS = [
    "symbol",
    "timestamp",
    "anomaly_type",
    "anomaly_score",
    "mx_microtape_hash",
    "signal_pack",
    "mx_expert_contributions",
]


@cache
def _base():
    bars = make_bars(3 * 400, 3, seed=7)
    scores, _ = score_bars(bars, None, CFG)
    return bars, scores, detect_events(scores, CFG)


def _mutate(bars: pd.DataFrame, t: pd.Timestamp, mode: str, rng: np.random.Generator) -> pd.DataFrame:
    after = (bars["timestamp"] > t).to_numpy()
    b = bars.copy()
    if mode in ("perturb", "mixed"):
        f = rng.uniform(0.5, 2.0, after.sum())
        for col in ("open", "high", "low", "close"):
            b.loc[after, col] = b.loc[after, col] * f
        b.loc[after, "volume"] = b.loc[after, "volume"] * rng.uniform(0.0, 5.0, after.sum())
    if mode in ("delete", "mixed"):
        b = b[~(after & (rng.random(len(b)) < 0.5))]
    if mode == "truncate":
        b = b[~after]
    if mode in ("append", "mixed"):
        extra = make_bars(
            2 * 50,
            2,
            seed=int(rng.integers(1 << 30)),
            start=str(b["timestamp"].max().floor("D") + pd.Timedelta(days=1)),
        )
        extra["symbol"] = extra["symbol"].map({"SYM000": "SYM001", "SYM001": "ZZZ"})
        b = pd.concat([b, extra], ignore_index=True)
    return b.iloc[rng.permutation(len(b))]  # any input order


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cut=st.integers(5, 395),
    mode=st.sampled_from(["perturb", "delete", "append", "truncate", "mixed"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_no_lookahead(cut, mode, seed):
    bars, ref, ref_ev = _base()
    t = np.sort(bars["timestamp"].unique())[cut]
    got, _ = score_bars(_mutate(bars, t, mode, np.random.default_rng(seed)), None, CFG)
    a = ref[ref["timestamp"] <= t].reset_index(drop=True)
    b = got[got["timestamp"] <= t].reset_index(drop=True)
    assert len(a) > 0
    assert_frame_equal(a, b, check_exact=True)
    ea = ref_ev[ref_ev["timestamp"] <= t][EV_COLS].reset_index(drop=True)
    eb = detect_events(got, CFG)
    eb = eb[eb["timestamp"] <= t][EV_COLS].reset_index(drop=True) if len(eb) else eb.reindex(columns=EV_COLS)
    assert ea.to_dict("records") == eb.to_dict("records")


def _three_days():
    bars = make_bars(3 * 3 * 1440, 3, seed=11)
    day = bars["timestamp"].dt.floor("D")
    return bars[~((bars["symbol"] == "SYM002") & (day == day.min() + pd.Timedelta(days=1)))]


def test_range_equals_day_by_day_and_any_split(monkeypatch):
    bars = _three_days()
    full, st_full = score_bars(bars, None, CFG)
    assert (
        (full["survival_rate"] < 1).any() and (full["n_alive"] > 0).all() and (full["event_mask"] > 0).any()
    )
    parts, state = [], None
    for _, day in bars.groupby(bars["timestamp"].dt.floor("D")):
        state = None if state is None else DsiState.from_bytes(state.to_bytes())
        scores, state = score_bars(day, state, CFG)
        parts.append(scores)
    daily = pd.concat(parts).sort_values(["symbol", "timestamp"], kind="stable").reset_index(drop=True)
    assert_frame_equal(full, daily, check_exact=True)
    assert state.to_bytes() == st_full.to_bytes()
    # ragged pieces in live order (sizes 1..600) and tiny internal chunks
    monkeypatch.setattr(logic, "CHUNK_ROWS", 777)
    live = bars.sort_values(["timestamp", "symbol"], kind="stable")
    cuts = np.cumsum(np.random.default_rng(3).integers(1, 600, 200))
    parts, state = [], None
    for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(live)], strict=True):
        if a < len(live):
            scores, state = score_bars(live.iloc[a:b], state, CFG)
            parts.append(scores)
    ragged = pd.concat(parts).sort_values(["symbol", "timestamp"], kind="stable").reset_index(drop=True)
    assert_frame_equal(full, ragged, check_exact=True)
    assert state.to_bytes() == st_full.to_bytes()
    assert (
        detect_events(full, CFG)
        .drop(columns="timestamp")
        .equals(detect_events(ragged, CFG).drop(columns="timestamp"))
    )


def test_replay_determinism_across_processes():
    code = (
        "import hashlib; from bench.dsi_logic import make_bars; "
        "from tis_pipeline.dsi.logic.score import score_bars, frame_digest; "
        "s, st = score_bars(make_bars(20000, 4, seed=3)); "
        "print(frame_digest(s), hashlib.sha256(st.to_bytes()).hexdigest())"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": str(k)},
        ).stdout.strip()
        for k in (1, 2)
    }
    scores, state = score_bars(make_bars(20000, 4, seed=3))
    assert outs == {f"{frame_digest(scores)} {hashlib.sha256(state.to_bytes()).hexdigest()}"}


def test_streaming_equals_batch():
    bars = make_bars(3 * 500, 3, seed=5)
    t0 = bars["timestamp"].min() + pd.Timedelta(minutes=300)
    _, st0 = score_bars(bars[bars["timestamp"] < t0], None, CFG)
    rest = bars[bars["timestamp"] >= t0].sort_values(["timestamp", "symbol"], kind="stable")
    batch, st_batch = score_bars(rest, st0, CFG)
    state, rows = DsiState.from_bytes(st0.to_bytes()), []
    for rec in rest.to_dict("records"):
        row, state = score_next_bar(state, rec, CFG)
        rows.append(row)
    assert state.to_bytes() == st_batch.to_bytes()
    stream = sorted(rows, key=lambda r: (r["symbol"], r["timestamp"]))
    for col in batch.columns:
        want = batch[col].to_numpy()
        got = [r[col] for r in stream]
        if want.dtype.kind == "f":
            assert np.array_equal(want.astype(np.float64), np.array(got, np.float64), equal_nan=True), col
        else:
            # `is np.nan` is identity with the np.nan object an object column holds, on purpose
            assert [None if x is None or x is np.nan else x for x in want] == got, col  # noqa: PLW0177
    assert sum(r["event_mask"] > 0 for r in rows) > 0


def test_streaming_latency_figures(monkeypatch):
    bars = make_bars(2 * 200, 2, seed=9)
    _, st0 = score_bars(bars.groupby("symbol").head(150), None, CFG)
    rest = bars.groupby("symbol").tail(50)
    res = measure_streaming_latency(rest, st0, CFG, n=20)
    assert res["n"] == 20 and 1 <= res["latency_p50_ms"] <= res["latency_p95_ms"] <= 9999
    assert 1 <= res["throughput_per_second"] <= 9999 and res["latency_p50_ms"] >= res["latency_p50_ms_true"]
    clock = iter(range(0, 10**15, 20_000 * 10**6))  # every call 20 s apart
    monkeypatch.setattr(logic.time, "perf_counter_ns", lambda: next(clock))
    res = measure_streaming_latency(rest, st0, CFG, n=5)
    assert (
        res["latency_p95_ms"] == 9999
        and res["latency_p95_ms_clamped"]
        and res["latency_p95_ms_true"] == 20_000
    )
    assert res["throughput_per_second"] == 1 and res["throughput_per_second_clamped"]


def test_outputs_bounds_rounding_and_retirement():
    scores, _ = score_bars(_three_days(), None, CFG)
    e, rate, boost = scores["mx_evidence"], scores["mx_confirm_rate"], scores["mx_evidence_boost"]
    for col, dp in ((e, 2), (rate, 2), (scores["survival_rate"], 2), (boost, 4)):
        assert (col.round(dp) == col).all()
    assert e.between(0, 1).all() and rate.between(0, 1).all() and boost.abs().le(9.9999).all()
    assert (scores["ci_low"] <= scores["ci_high"]).all() and scores[["ci_low", "ci_high"]].stack().between(
        0, 1
    ).all()
    assert (scores[list(EXPERTS)].stack().between(0, 1)).all()
    assert scores["mx_confirm"].equals(
        (np.maximum(e, 1 - e) >= CFG.evidence_threshold) & (rate >= CFG.confirm_threshold)
    )
    mask = scores["alive_mask"].to_numpy().astype(np.int64)
    alive = (mask[:, None] >> np.arange(N_EXPERTS)) & 1
    assert np.array_equal(alive.sum(1), scores["n_alive"]) and np.allclose(
        scores["survival_rate"], np.round(alive.sum(1) / N_EXPERTS, 2)
    )
    w = scores[["w__" + n for n in EXPERTS]].to_numpy()
    assert (w[alive == 0] == 0).all() and (w >= 0).all() and np.allclose(w.sum(1), 1, atol=1e-5)
    for _, g in scores.groupby("symbol"):  # retired for good
        a = ((g["alive_mask"].to_numpy()[:, None] >> np.arange(N_EXPERTS)) & 1).astype(int)
        assert (np.diff(a, axis=0) <= 0).all()
    assert 0 < (alive == 0).mean() < 1
    numeric = scores[["mx_evidence", "mx_confirm_rate", "mx_evidence_boost"]].abs().max()
    assert numeric["mx_evidence"] < 10 and numeric["mx_evidence_boost"] < 10  # numeric(3,2) / numeric(5,4)


def _votes(scores: pd.DataFrame) -> np.ndarray:
    """Per bar and expert (EXPERTS order) the vote p_i, the anomaly experts' from their magnitude."""
    from tis_pipeline.dsi.logic.config import ANOMALY_DIRECTION
    from tis_pipeline.dsi.logic.numeric import on_vote_grid

    sign = np.sign(scores["ret"].to_numpy())
    out = []
    for name in EXPERTS:
        p = scores[name].to_numpy(np.float64)
        if name.startswith("anomaly__"):
            direction = ANOMALY_DIRECTION[["return", "range", "volume", "multivariate"].index(name[9:])]
            p = on_vote_grid(0.5 + 0.3 * direction * p * sign)
        out.append(p)
    return np.stack(out, axis=1)


def test_evidence_boost_is_the_factor_of_the_weighted_over_the_equal_weight_lean():
    scores, _ = score_bars(_three_days(), None, CFG)
    votes = _votes(scores)
    w = scores[["w__" + n for n in EXPERTS]].to_numpy(np.float64)
    e = (w * votes).sum(1) / w.sum(1)  # the unrounded evidence, up to the float32 weights
    base = votes.mean(1) - 0.5
    boost = scores["mx_evidence_boost"].to_numpy()
    clear = np.abs(base) > 0.02
    expected = np.clip((e - 0.5) / np.where(clear, base, 1.0), -9.9999, 9.9999)
    assert clear.sum() > 1000
    np.testing.assert_allclose(boost[clear], expected[clear], atol=2e-3, rtol=1e-3)
    # a factor, not a difference: above 1 where the weights lean further than the equal vote, below 0
    # where they reverse it
    assert (boost > 1).any() and (boost < 0).any() and (boost == 1).any()
    flat = base == 0
    assert set(np.unique(boost[flat])) <= {1.0, 9.9999, -9.9999}


def test_survival_rates_are_shares_of_the_window_recomputed_from_the_weights():
    bars = _three_days()
    scores, _ = score_bars(bars, None, CFG)
    events = detect_events(scores, CFG)
    assert len(events) > 20
    window = CFG.survival_window
    flags = pd.DataFrame(
        {n: scores["w__" + n] >= CFG.weight_floor for n in EXPERTS}, index=scores.index
    ).astype(float)
    rolling = flags.groupby(scores["symbol"]).rolling(window, min_periods=1)
    share = (rolling.sum() / rolling.count()).round(4).reset_index(level=0, drop=True).sort_index()
    on = scores.set_index(["symbol", "timestamp"]).index
    at = on.get_indexer(pd.MultiIndex.from_arrays([events["symbol"], events["timestamp"]]))
    fractional = 0
    for pos, stored in zip(at, events["mx_expert_survival_rates"], strict=True):
        assert stored["window_bars"] == window
        rates = stored["rates"]
        assert list(rates) == list(EXPERTS)
        assert all(0.0 <= r <= 1.0 for r in rates.values())
        assert [rates[n] for n in EXPERTS] == share.iloc[pos].tolist()
        fractional += any(0 < r < 1 for r in rates.values())
    assert fractional > 0, "rates, not flags"
    # the rates carry across calls: day-by-day scoring gives the same rates at the same bars
    parts, state = [], None
    for _, day in bars.groupby(bars["timestamp"].dt.floor("D")):
        part, state = score_bars(day, state, CFG)
        parts.append(detect_events(part, CFG))
    daily = pd.concat(parts, ignore_index=True).sort_values(["symbol", "timestamp", "anomaly_type"])
    both = events.sort_values(["symbol", "timestamp", "anomaly_type"])
    assert daily["mx_expert_survival_rates"].tolist() == both["mx_expert_survival_rates"].tolist()


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 60),
    h=st.integers(1, 6),
    n_ctx=st.integers(1, 4),
    n_seg=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_ngram_counts_use_only_elapsed_labels(n, h, n_ctx, n_seg, seed):
    rng = np.random.default_rng(seed)
    seg = np.sort(rng.integers(0, n_seg, n))
    ctx = rng.integers(0, n_ctx + 1, n).astype(np.int16)
    val = rng.integers(0, 1000, n).astype(np.int64)
    got = classifiers._ngram_counts(ctx, n_ctx, val, seg, h)
    want = [sum(val[s] for s in range(t - h) if seg[s] == seg[t] and ctx[s] == ctx[t]) for t in range(n)]
    assert got.tolist() == want


def test_classifier_ignores_unelapsed_labels_when_the_future_flips():
    bars = make_bars(500, 1, seed=21)
    t, h = 350, CFG.horizon
    variants = []
    for drift in (0.01, -0.01):
        b = bars.copy()
        k = np.arange(len(b)) > t
        f = np.exp(drift * np.cumsum(k))
        for col in ("open", "high", "low", "close"):
            b[col] = b[col] * f
        variants.append(b)
        assert (b["close"].iloc[t + h] > b["close"].iloc[t]) == (drift > 0)  # the label of bar t flips
    clf = [c for c in EXPERTS if c.startswith("classifier__")]
    (s_up, _), (s_dn, _) = (score_bars(v, None, CFG) for v in variants)
    assert s_up.loc[:t, clf].equals(s_dn.loc[:t, clf])
    assert not s_up.loc[t + h + 1 :, clf].equals(s_dn.loc[t + h + 1 :, clf])


def test_hedge_weights_at_t_use_only_losses_elapsed_before_t():
    bars = make_bars(600, 1, seed=13)
    t, h = 400, CFG.horizon
    moved = bars.copy()
    ref = bars.loc[t - h, "close"]
    new = ref * (0.97 if bars.loc[t, "close"] > ref else 1.03)  # flip the label of bar t-h (bar t's close)
    moved.loc[t, ["close", "high", "low"]] = [
        new,
        max(new, bars.loc[t, "high"]),
        min(new, bars.loc[t, "low"]),
    ]
    (a, _), (b, _) = (score_bars(x, None, CFG) for x in (bars, moved))
    wcols = [c for c in a.columns if c.startswith("w__")] + ["alive_mask"]
    assert a.loc[:t, wcols].equals(b.loc[:t, wcols]) and a.loc[t, "mx_evidence"] != b.loc[t, "mx_evidence"]
    assert not a.loc[t + 1 :, wcols].equals(b.loc[t + 1 :, wcols])


def test_microtape_hash_is_pinned():
    ts = (
        pd.DatetimeIndex(["2024-01-01 00:00", "2024-01-01 00:01", "2024-01-01 00:03"], tz="UTC")
        .as_unit("ns")
        .asi8
    )
    assert microtape_hash("BTCUSDT", ts, [12, 47, 89], 32) == (
        "9219f976236896ea17f3ca02df6dc526a1e6881422837955b7de827dee2d5ebe"
    )
    n = 40
    c = 100 + np.arange(n) % 7 * 0.5
    bars = pd.DataFrame(
        {
            "symbol": "ETHUSDT",
            "timestamp": pd.date_range("2024-01-01", periods=n, freq="min", tz="UTC"),
            "open": c - 0.2,
            "high": c + 0.5,
            "low": c - 0.6,
            "close": c,
            "volume": 1000.0 + (np.arange(n) % 5) * 300,
        }
    )
    assert microtape_hashes(bars.iloc[::-1], [0, n - 4], DsiConfig()) == [
        "872c983369e5827a8d865985832a2ab568afe144819f8883465adea60dc19881",
        "4a02d8b94bbf4283ecd791541bb05a7cd6e9aebcca6b5027c2c7e7635687b4d1",
    ]
    _, state = score_bars(bars.iloc[:30], None, DsiConfig())  # window across calls: same hash
    assert microtape_hashes(bars.iloc[30:], [n - 31], DsiConfig(), state) == microtape_hashes(bars, [n - 1])


def _spiky_bars():
    rng = np.random.default_rng(4)
    n = 400
    c = 100 * np.exp(np.cumsum(0.0005 * rng.standard_normal(n)))
    v = 1000 * np.exp(0.1 * rng.standard_normal(n))
    v[200:280:4] *= 500  # a spike every 4 minutes
    return pd.DataFrame(
        {
            "symbol": "AAA",
            "timestamp": pd.date_range("2024-03-01", periods=n, freq="min", tz="UTC"),
            "open": np.r_[c[0], c[:-1]],
            "high": c * 1.0004,
            "low": c * 0.9996,
            "close": c,
            "volume": v,
        }
    )


def test_events_deduplicated_within_cooling_window():
    cfg = DsiConfig(event_threshold=0.5)
    bars = _spiky_bars()
    scores, _ = score_bars(bars, None, cfg)
    events = detect_events(scores, cfg)
    spikes = events[events["anomaly_type"] == "volume_spike"]["timestamp"]
    cand = scores.loc[scores["anomaly__volume"] >= cfg.event_threshold, "timestamp"]
    assert len(spikes) >= 2 and len(cand) > len(spikes)
    assert (spikes.diff().dropna() >= pd.Timedelta(minutes=cfg.cooling_minutes)).all()
    suppressed = cand[~cand.isin(spikes)].to_numpy()  # each within the window of the last kept event
    prev = spikes.to_numpy()[np.searchsorted(spikes.to_numpy(), suppressed, side="right") - 1]
    assert (
        len(suppressed) == len(cand) - len(spikes) and ((suppressed - prev) < pd.Timedelta(minutes=15)).all()
    )
    assert (
        events["anomaly_score"].between(0, 0.9999).all()
        and (events["anomaly_score"].round(4) == events["anomaly_score"]).all()
    )
    assert events["mx_microtape_hash"].str.fullmatch("[0-9a-f]{64}").all()
    pack = events["signal_pack"].iloc[0]
    assert set(pack) >= {"bar", "features", "experts", "context"} and set(pack["experts"]) == set(FAMILIES)
    # the cooling clock is carried across calls
    s1, st = score_bars(bars.iloc[:222], None, cfg)
    s2, _ = score_bars(bars.iloc[222:], st, cfg)
    split = detect_events(pd.concat([s1, s2], ignore_index=True), cfg)
    assert split[EV_COLS].to_dict("records") == events[EV_COLS].to_dict("records")


def test_state_roundtrip_and_guards():
    bars = make_bars(2 * 300, 2, seed=2)
    _, state = score_bars(bars, None, CFG)
    again = DsiState.from_bytes(state.to_bytes())
    assert again.to_bytes() == state.to_bytes() and set(again.symbols) == {"SYM000", "SYM001"}
    assert len(again.symbols["SYM000"].ts) == CFG.tail_rows
    with pytest.raises(ValueError, match="another DsiConfig"):
        score_bars(bars.tail(5), state, DsiConfig())
    with pytest.raises(ValueError, match="newer"):
        score_bars(bars.tail(5), state, CFG)
    with pytest.raises(ValueError, match="duplicate"):
        score_bars(pd.concat([bars.head(3), bars.head(1)]), None, CFG)


def test_evaluation_ic_and_hit_rate():
    bars = make_bars(2 * 400, 2, seed=8)
    fwd = bars.groupby("symbol")["close"].shift(-5) / bars["close"] - 1
    perfect = bars[["symbol", "timestamp"]].assign(mx_evidence=0.5 + 0.4 * np.tanh(fwd.fillna(0) * 100))
    assert evaluation.information_coefficient(perfect, bars, 5) == pytest.approx(1.0)
    assert evaluation.hit_rate(perfect, bars, 5) == 1.0
    flipped = perfect.assign(mx_evidence=1 - perfect["mx_evidence"])
    assert evaluation.information_coefficient(flipped, bars, 5) == pytest.approx(-1.0)
    scores, _ = score_bars(bars, None, CFG)
    res = evaluation.evaluate(scores, bars, 5, warmup=50)
    assert res["n"] == 2 * (400 - 50 - 5) and -1 <= res["ic"] <= 1 and 0 <= res["naive_hit_rate"] <= 1
    assert res["naive_ic"] == evaluation.naive_information_coefficient(bars, 5, warmup=50)
    assert res["confirmed_n"] == int(
        scores["mx_confirm"].iloc[[i for s in (0, 400) for i in range(s + 50, s + 395)]].sum()
    )
    # confirmation as a filter: confirm exactly the bars the perfect signal calls right and only those are
    # hits
    calls = perfect.assign(
        mx_evidence=0.5 + 0.4 * np.sign(np.arange(len(bars)) % 2 - 0.5),
        mx_confirm=np.sign(np.arange(len(bars)) % 2 - 0.5) == np.sign(fwd.fillna(0)),
    )
    res = evaluation.evaluate(calls, bars, 5)
    assert res["confirmed_hit_rate"] == 1.0 and res["unconfirmed_hit_rate"] == 0.0


@pytest.mark.parametrize(
    "field,value",
    [
        ("cooling_minutes", 0),
        ("cooling_minutes", -5),
        ("window", 0),
        ("vol_window", 2),
        ("weight_floor", 0.0),
        ("ci_level", 1.0),
        ("eta", 0.0),
        ("survival_window", 0),
    ],
)
def test_config_rejects_values_the_scoring_cannot_run_with(field, value):
    from tis_pipeline.dsi.logic.config import DsiConfig

    with pytest.raises(ValueError, match=field.split("_")[0]):
        DsiConfig(**{field: value})


@pytest.mark.parametrize("n", [0, 1, 7, 64, 10_000])
def test_the_first_bars_in_time_are_those_of_a_full_sort(n):
    from tis_pipeline.dsi.logic.score import _first_in_time
    from tis_pipeline.market_data import synthetic

    day = pd.Timestamp("2024-03-04", tz="UTC")
    by_symbol = synthetic.bars(day, day + pd.Timedelta(hours=2), ["AAA", "BBB", "CCC"], seed=3)
    shuffled = by_symbol.sample(frac=1.0, random_state=1)
    repeated = pd.concat(
        [by_symbol, by_symbol.iloc[::5]]
    )  # repeated (timestamp, symbol) keys: ties keep frame order
    with_nat = by_symbol.assign(timestamp=by_symbol["timestamp"].where(by_symbol.index % 7 != 0))
    naive = by_symbol.assign(timestamp=by_symbol["timestamp"].dt.tz_localize(None))
    for frame in (by_symbol, shuffled, repeated, with_nat, naive):
        expected = frame.sort_values(["timestamp", "symbol"], kind="stable").head(n)
        pd.testing.assert_frame_equal(_first_in_time(frame, n), expected)
    assert len(_first_in_time(by_symbol, n)) == min(n, len(by_symbol))


@pytest.mark.parametrize("pieces_per_day", [1, 2, 3])
def test_out_of_sample_figures_piece_by_piece_equal_the_whole_frame_bit_for_bit(pieces_per_day):
    bars = _three_days()  # SYM002 misses the middle day: its forward returns span the gap
    parts, state = [], None
    for _, day in bars.groupby(bars["timestamp"].dt.floor("D")):
        symbols = sorted(day["symbol"].unique())
        for group in np.array_split(np.array(symbols), pieces_per_day):
            if not len(group):
                continue
            scores, state = score_bars(day[day["symbol"].isin(group)], state, CFG)
            parts.append(scores[["symbol", "timestamp", "close", "mx_evidence", "mx_confirm"]])
    whole = pd.concat(parts, ignore_index=True)
    for warmup in (0, CFG.tail_rows):
        expected = evaluation.evaluate(whole, whole, CFG.horizon, warmup)
        pieces = evaluation.OutOfSample(CFG.horizon, warmup)
        for part in parts:
            pieces.add(part)
        got = pieces.result()
        assert got.keys() == expected.keys() and got["n"] > 1000
        for key, value in expected.items():
            assert got[key] == value or (np.isnan(got[key]) and np.isnan(value)), key


def test_out_of_sample_holds_two_days_of_bars_and_its_ic_is_the_mean_daily_ic():
    bars = make_bars(6 * 3 * 1440, 3, seed=12)  # six days of three symbols, over seven UTC days
    scores, _ = score_bars(bars, None, CFG)
    kept = scores[["symbol", "timestamp", "close", "mx_evidence", "mx_confirm"]]
    day = kept["timestamp"].dt.floor("D")
    pieces = evaluation.OutOfSample(CFG.horizon, 0)
    days = sorted(day.unique())
    for i, d in enumerate(days):
        pieces.add(kept[day == d])
        # the days before the one before this are evaluated and their bars dropped
        assert pieces.bars_held == int(day.isin(days[max(0, i - 1) : i + 1]).sum())
    got = pieces.result()
    assert pieces.bars_held == 0
    expected = evaluation.evaluate(kept, kept, CFG.horizon, 0)
    assert got.keys() == expected.keys()
    assert all(got[k] == v or (np.isnan(got[k]) and np.isnan(v)) for k, v in expected.items())
    # the mean of the daily rank correlations, each day's bars with their forward returns
    m = evaluation._aligned(kept, kept, CFG.horizon, 0)
    daily = [evaluation._ic(p["signal"], p["fwd"]) for _, p in m.groupby("day")]
    assert got["ic_days"] == len(days) >= 6
    assert got["ic"] == pytest.approx(np.mean(daily), abs=1e-15)
    assert got["ic_std"] == pytest.approx(np.std(daily, ddof=1), abs=1e-15)
    # a day already evaluated cannot take more bars
    with pytest.raises(ValueError, match="day order"):
        pieces.add(kept[day == days[0]])


def test_out_of_sample_refuses_a_symbol_going_back_in_time():
    bars = make_bars(2 * 300, 2, seed=4)
    scores, _ = score_bars(bars, None, CFG)
    kept = scores[["symbol", "timestamp", "close", "mx_evidence", "mx_confirm"]]
    later = kept["timestamp"] >= kept["timestamp"].min() + pd.Timedelta(minutes=200)
    pieces = evaluation.OutOfSample(5, 0)
    pieces.add(kept[later])
    with pytest.raises(ValueError, match="time order"):
        pieces.add(kept[~later])


def test_streaming_timings_cover_each_bar_once_in_groups():
    bars = make_bars(3 * 300, 3, seed=6)
    _, state = score_bars(bars.groupby("symbol").head(200), None, CFG)
    later = bars.groupby("symbol").tail(100).sample(40, random_state=2)
    timed = logic.time_streaming(later, state, CFG, batch=16)
    assert len(timed) == 40 and timed["batch_bars"].tolist() == [16] * 32 + [8] * 8
    assert (timed["latency_ns"] > 0).all()
    assert timed.groupby(np.arange(40) // 16)["latency_ns"].nunique().eq(1).all(), "a group shares its call"
    ordered = later.sort_values(["timestamp", "symbol"], kind="stable")
    assert timed["symbol"].tolist() == ordered["symbol"].tolist()
    assert timed["timestamp"].tolist() == ordered["timestamp"].tolist()


def test_a_row_stream_whose_build_stops_reading_fails_the_writer_instead_of_blocking():
    from tis_pipeline.dsi import store

    rows = store.RowStream(depth=1)
    rows.put("first")  # type: ignore[arg-type]
    rows.close()  # the build ended without reading on
    with pytest.raises(RuntimeError, match="stopped reading"):
        rows.put("second")  # type: ignore[arg-type]


@pytest.mark.parametrize("level", [0.90, 0.95, 0.5, 0.999])
def test_the_ci_table_is_scipy_stats_beta_ppf_bit_for_bit(level):
    """``hedge._ci_table`` computes scipy.stats.beta.ppf(q, a, b) as scipy.special.betaincinv(a, b, q) (an
    import of 0.15 s instead of 0.7 s): the same float64 bits for every (n_up, n_down) of up to 30 experts."""
    from scipy.stats import beta

    from tis_pipeline.dsi.logic import hedge

    for n in (0, 1, N_EXPERTS, 30):
        table = hedge._ci_table(n, level)
        a, b = np.meshgrid(np.arange(n + 1) + 1.0, np.arange(n + 1) + 1.0, indexing="ij")
        q = (1 - level) / 2
        expected = np.stack([beta.ppf(q, a, b).ravel(), beta.ppf(1 - q, a, b).ravel()])
        assert table.shape == (2, (n + 1) ** 2)
        assert np.array_equal(table.view(np.int64), expected.view(np.int64)), n
        assert (table[0] < table[1]).all() and (table > 0).all() and (table < 1).all()
