"""Rows for the database from DSI scores: per-bar updates, ``dsi_evidence`` and ``anomaly_events``. Pure pandas.

Per bar, ``mx_expert_contributions`` holds each expert's signed contribution ``w_i (p_i - 0.5)`` (4 dp), as arrays
per family in the order of ``logic.FAMILIES``; the JSON is assembled in PostgreSQL from the numeric columns
written here (``CONTRIBUTION_COLUMNS``), so the batch path builds no JSON per bar.

Identifiers are UUIDv5 of (symbol, minute, type), so re-scoring the same bars yields the very same rows.
"""

from __future__ import annotations

import json
import uuid

import numpy as np
import pandas as pd

from tis_pipeline.dsi import logic

CONTRIBUTION_COLUMNS = [f"c{i}" for i in range(logic.N_EXPERTS)]
BAR_UPDATE_COLUMNS = ["symbol", "timestamp", "mx_evidence", "mx_confirm", *CONTRIBUTION_COLUMNS]
_NAMESPACE = uuid.UUID("7f1e9a52-3b0c-4c8e-9d53-1c2b7a9e0d11")


def bar_updates(scores: pd.DataFrame) -> pd.DataFrame:
    """Per bar: evidence, confirmation and the 15 signed contributions (columns ``BAR_UPDATE_COLUMNS``)."""
    ret_sign = np.sign(scores["ret"].to_numpy(dtype="float64"))
    contributions = {}
    for i, name in enumerate(logic.EXPERTS):
        p = scores[name].to_numpy(dtype="float64")
        if name.startswith("anomaly__"):
            direction = logic.ANOMALY_DIRECTION[logic.ANOMALY_EXPERTS.index(name.split("__", 1)[1])]
            p = logic._grid(0.5 + 0.3 * direction * p * ret_sign)
        weight = scores["w__" + name].to_numpy(dtype="float64")
        contributions[f"c{i}"] = np.round(weight * (p - 0.5), 4)
    return pd.DataFrame({
        # the columns as they are: .to_numpy() of a zone-aware column boxes every value into a Timestamp
        "symbol": scores["symbol"].reset_index(drop=True),
        "timestamp": scores["timestamp"].reset_index(drop=True),
        "mx_evidence": scores["mx_evidence"].to_numpy(dtype="float64"),
        "mx_confirm": scores["mx_confirm"].to_numpy(dtype=bool),
        **contributions,
    })


def contributions_sql(alias: str) -> str:
    """The jsonb expression building ``mx_expert_contributions`` from the staged columns of ``alias``."""
    parts, i = [], 0
    for family, names in logic.FAMILIES.items():
        items = ", ".join(f"{alias}.c{i + k}" for k in range(len(names)))
        parts.append(f"'{family}', jsonb_build_array({items})")
        i += len(names)
    return f"jsonb_build_object({', '.join(parts)})"


def _id(*parts: object) -> str:
    return str(uuid.uuid5(_NAMESPACE, "|".join(str(p) for p in parts)))


def _json(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def event_rows(events: pd.DataFrame, latency: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(dsi_evidence rows, anomaly_events rows) for the events of ``logic.detect_events``.

    ``latency`` is ``logic.measure_streaming_latency``'s result: the stored figures are the legal (clamped)
    ones; the true figures and the clamping flags go into ``mx_expert_contributions["latency"]``.
    """
    if events.empty:
        return pd.DataFrame(), pd.DataFrame()
    ts = pd.to_datetime(events["timestamp"], utc=True)
    keys = list(zip(events["symbol"], ts.dt.strftime("%Y-%m-%dT%H:%M"), events["anomaly_type"], strict=True))
    evidence_ids = [_id(*k, "evidence") for k in keys]
    latency_block = {k: v for k, v in latency.items()}
    evidence = pd.DataFrame({
        "evidence_id": evidence_ids,
        "timestamp": ts,
        "mx_evidence": events["mx_evidence"].astype("float64"),
        "mx_confirm": events["mx_confirm"].astype(bool),
        "mx_expert_contributions": [_json({"contributions": c, "latency": latency_block})
                                    for c in events["mx_expert_contributions"]],
        "mx_microtape_hash": events["mx_microtape_hash"],
        "mx_processing_latency_ms": latency["latency_p50_ms"],
        "mx_confidence_interval": [_json(c) for c in events["mx_confidence_interval"]],
        "mx_fsm_experts": [_json(c) for c in events["mx_fsm_experts"]],
        "mx_classifier_experts": [_json(c) for c in events["mx_classifier_experts"]],
        "mx_anomaly_experts": [_json(c) for c in events["mx_anomaly_experts"]],
        "mx_divergence_experts": [_json(c) for c in events["mx_divergence_experts"]],
        "mx_expert_weights": [_json(c) for c in events["mx_expert_weights"]],
        "mx_expert_survival_rates": [_json(c) for c in events["mx_expert_survival_rates"]],
        "mx_evidence_boost": events["mx_evidence_boost"].astype("float64"),
        "mx_confirm_rate": events["mx_confirm_rate"].astype("float64"),
        "mx_expert_survival_rate": events["mx_expert_survival_rate"].astype("float64"),
        "mx_latency_p50": latency["latency_p50_ms"],
        "mx_latency_p95": latency["latency_p95_ms"],
        "mx_throughput_per_second": latency["throughput_per_second"],
    })
    anomalies = pd.DataFrame({
        "event_id": [_id(*k, "event") for k in keys],
        "symbol": events["symbol"].astype(str),
        "timestamp": ts,
        "anomaly_type": events["anomaly_type"],
        "anomaly_score": events["anomaly_score"].astype("float64"),
        "signal_pack": [_json(p) for p in events["signal_pack"]],
        "dsi_evidence_id": evidence_ids,
        "microstructure_validation": [_json(v) for v in events["microstructure_validation"]],
    })
    return evidence, anomalies
