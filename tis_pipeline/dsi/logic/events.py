"""Events: scores per type, greedy cooling de-duplication (carried across calls), and their rows with the
evidence.

Scores per type ``volume_spike``=a_volume, ``price_jump``=a_return, ``range_expansion``=a_range,
``divergence`` = a_multivariate when sign(r_t) opposes both sign(htf_15m) and sign(htf_1h), ``pattern`` =
max_i |2 p_fsm_i - 1| * a_multivariate; an event when the score passes its threshold and no kept event of the
same symbol and type lies within ``cooling_minutes`` before it (greedy, carried across calls).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from tis_pipeline.dsi.logic.config import (
    ANOMALY_DIRECTION,
    ANOMALY_EXPERTS,
    EVENT_TYPES,
    EXPERTS,
    FAMILIES,
    FSM_EXPERTS,
    MINUTE_NS,
    NO_EVENT,
    DsiConfig,
)
from tis_pipeline.dsi.logic.numeric import on_vote_grid

_PRICE_COLS = ("open", "high", "low", "close", "volume")
_PACK_FEATURES = ("ret", "range_rel", "volume_z")


def event_scores(
    anom: list[np.ndarray],
    fsm: np.ndarray | list[np.ndarray],
    r: np.ndarray,
    h15: np.ndarray,
    h60: np.ndarray,
) -> list[np.ndarray]:
    """Scores per EVENT_TYPES from the anomaly magnitudes, fsm votes, bar return and 15m/1h returns."""
    sr = np.sign(r)
    div = np.where((sr != 0) & (np.sign(h15) == -sr) & (np.sign(h60) == -sr), anom[3], 0.0)
    fint = np.abs(2.0 * fsm[0] - 1.0)
    for p in fsm[1:]:
        fint = np.maximum(fint, np.abs(2.0 * p - 1.0))
    return [anom[2], anom[0], anom[1], div, fint * anom[3]]


def event_candidates(
    anom: list[np.ndarray], fsm: np.ndarray, r: np.ndarray, h15: np.ndarray, h60: np.ndarray, cfg: DsiConfig
) -> list[np.ndarray]:
    """Per EVENT_TYPES: the rows whose score passes its threshold (before de-duplication)."""
    thrs = (cfg.event_threshold,) * 3 + (cfg.divergence_threshold, cfg.pattern_threshold)
    # divergence and pattern scores never exceed a_multivariate: score only the rows that can pass
    lo_th = min(thrs[3:])
    sub = np.flatnonzero(anom[3] >= lo_th) if lo_th > 0 else np.arange(len(anom[3]))
    sub_sc = event_scores([a[sub] for a in anom], fsm[:, sub], r[sub], h15[sub], h60[sub])
    cands = [np.flatnonzero(a >= th) for a, th in zip((anom[2], anom[0], anom[1]), thrs[:3], strict=True)]
    cands += [sub[sc >= th] for sc, th in zip(sub_sc[3:], thrs[3:], strict=True)]
    return cands


def mark_events(
    cands: list[np.ndarray],
    ts: np.ndarray,
    firsts: np.ndarray,
    last_event: np.ndarray,
    cooling_minutes: int,
    event_mask: np.ndarray,
) -> np.ndarray:
    """Keep, per segment (``firsts``: its first row) and type, the candidates at least a cooling span after
    the last kept one (``last_event``: segments x types, epoch ns, carried), as bits of ``event_mask``; the
    new last times."""
    cool = cooling_minutes * MINUTE_NS
    new_last = last_event.copy()
    event_mask[:] = 0
    for k, cand in enumerate(cands):
        bounds = np.searchsorted(cand, np.append(firsts, len(ts)))
        for j in np.flatnonzero(np.diff(bounds)):
            ct = ts[cand[bounds[j] : bounds[j + 1]]]
            last = new_last[j, k]
            pos = 0 if last == NO_EVENT else int(np.searchsorted(ct, last + cool))
            if pos < len(ct):
                nxt = np.searchsorted(
                    ct, ct + cool
                ).tolist()  # the greedy walk needs only this successor table
                kept = []
                while pos < len(ct):
                    kept.append(pos)
                    pos = nxt[pos]
                event_mask[cand[bounds[j] + np.array(kept)]] |= 1 << k
                new_last[j, k] = ct[kept[-1]]
    return new_last


def contributions_dict(row: Mapping, survival_window: int | None = None) -> dict:
    """Per-family expert outputs, weights, survival rates and signed contributions w_i (p_i - 0.5) of one
    row.

    ``survival``: ``{"window_bars": W, "rates": {expert: rate}}`` from the row's ``survival_rates`` (an event
    row's: the share of the symbol's last W bars at which the expert's weight was >= the weight floor; see
    ``score``); a row without them gives each expert's alive flag (1.0 / 0.0) at that bar."""
    out: dict[str, Any] = {
        fam: {n: round(float(row[f"{fam}__{n}"]), 4) for n in names} for fam, names in FAMILIES.items()
    }
    mask, sgn = int(row["alive_mask"]), float(np.sign(row["ret"]))
    weights, contrib = {}, {}
    for i, name in enumerate(EXPERTS):
        p = float(row[name])
        if name.startswith("anomaly__"):
            p = float(on_vote_grid(np.float64(0.5 + 0.3 * ANOMALY_DIRECTION[i - 7] * p * sgn)))
        w = float(row["w__" + name])
        weights[name], contrib[name] = round(w, 4), round(w * (p - 0.5), 4)
    rates = row.get("survival_rates")
    if rates is None:
        rates, survival_window = tuple(float(mask >> i & 1) for i in range(len(EXPERTS))), 1
    survival = {"window_bars": survival_window, "rates": dict(zip(EXPERTS, map(float, rates), strict=True))}
    out.update(weights=weights, survival=survival, contributions=contrib)
    return out


def detect_events(scores: pd.DataFrame, config: DsiConfig | None = None) -> pd.DataFrame:
    """One row per (bar, event type) flagged by ``score_bars`` (cooling de-dup already applied there)."""
    cfg = config or DsiConfig()
    ev = scores[scores["event_mask"].to_numpy() > 0]
    cols = [
        "symbol",
        "timestamp",
        "anomaly_type",
        "anomaly_score",
        "signal_pack",
        "microstructure_validation",
        "mx_microtape_hash",
        "mx_evidence",
        "mx_confirm",
        "mx_confirm_rate",
        "mx_evidence_boost",
        "mx_expert_survival_rate",
        "mx_confidence_interval",
        "mx_expert_contributions",
        "mx_fsm_experts",
        "mx_classifier_experts",
        "mx_anomaly_experts",
        "mx_divergence_experts",
        "mx_expert_weights",
        "mx_expert_survival_rates",
    ]
    if ev.empty:
        return pd.DataFrame(columns=cols)
    sc = event_scores(
        [ev[f"anomaly__{n}"].to_numpy() for n in ANOMALY_EXPERTS],
        [ev[f"fsm__{n}"].to_numpy() for n in FSM_EXPERTS],
        ev["ret"].to_numpy(),
        ev["htf_15m_ret"].to_numpy(),
        ev["htf_1h_ret"].to_numpy(),
    )
    recs = []
    for pos, row in enumerate(ev.to_dict("records")):
        cd = contributions_dict(row, cfg.survival_window)
        ci = {
            "low": round(float(row["ci_low"]), 4),
            "high": round(float(row["ci_high"]), 4),
            "level": cfg.ci_level,
        }
        pack = {
            "bar": {k: float(row[k]) for k in _PRICE_COLS},
            "features": {k: float(row[k]) for k in _PACK_FEATURES},
            "experts": {f: cd[f] for f in FAMILIES},
            "context": {"htf_15m_ret": float(row["htf_15m_ret"]), "htf_1h_ret": float(row["htf_1h_ret"])},
            "mx_evidence": float(row["mx_evidence"]),
            "microtape_hash": row["microtape_hash"],
        }
        valid = {
            "mx_confirm": bool(row["mx_confirm"]),
            "mx_confirm_rate": float(row["mx_confirm_rate"]),
            "survival_rate": float(row["survival_rate"]),
            "confidence_interval": ci,
        }
        for k, typ in enumerate(EVENT_TYPES):
            if int(row["event_mask"]) >> k & 1:
                recs.append(
                    [
                        row["symbol"],
                        row["timestamp"],
                        typ,
                        round(min(max(float(sc[k][pos]), 0.0), 0.9999), 4),
                        pack,
                        valid,
                        row["microtape_hash"],
                        float(row["mx_evidence"]),
                        bool(row["mx_confirm"]),
                        float(row["mx_confirm_rate"]),
                        float(row["mx_evidence_boost"]),
                        float(row["survival_rate"]),
                        ci,
                        cd["contributions"],
                        cd["fsm"],
                        cd["classifier"],
                        cd["anomaly"],
                        cd["divergence"],
                        cd["weights"],
                        cd["survival"],
                    ]
                )
    return pd.DataFrame(recs, columns=cols)
