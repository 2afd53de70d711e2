"""Rows for the database from DSI scores: per-bar updates, ``dsi_evidence`` and ``anomaly_events``. Pandas,
pyarrow.

Per bar, ``mx_expert_contributions`` holds each expert's signed contribution ``w_i (p_i - 0.5)`` (4 dp), as
arrays per family in the order of ``logic.config.FAMILIES``. Its JSON text is built here column by column
(pyarrow string kernels, no loop over bars) and parsed by COPY: building it in PostgreSQL with
``jsonb_build_object`` over 15 float columns took 0.4-0.5 s of the UPDATE's 1.3-1.7 s for a day of 50 symbols,
parsing the text takes 0.2 s (bench/RESULTS.md). The text is the one PostgreSQL itself builds from the float8
values (``contribution_text``), so the stored jsonb is the same, digit for digit.

Identifiers are UUIDv5 of (symbol, minute, type), so re-scoring the same bars yields the very same rows.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tis_pipeline.dsi.logic.config import ANOMALY_DIRECTION, ANOMALY_EXPERTS, EXPERTS, FAMILIES, N_EXPERTS
from tis_pipeline.dsi.logic.numeric import on_vote_grid
from tis_pipeline.dsi.logic.score import legal_ms

_OHLCV = ["open", "high", "low", "close", "volume"]
# a scored day partition's columns, in the order of its binary COPY: text, timestamptz, numerics, boolean,
# jsonb
BAR_UPDATE_COLUMNS = ["symbol", "timestamp", *_OHLCV, "mx_evidence", "mx_confirm", "mx_expert_contributions"]
# the columns of the scores that ``bar_updates`` reads
BAR_UPDATE_INPUTS = [
    "symbol",
    "timestamp",
    *_OHLCV,
    "mx_evidence",
    "mx_confirm",
    "ret",
    *EXPERTS,
    *(f"w__{name}" for name in EXPERTS),
]
# The columns of dsi_evidence that are wall-clock measurements, not functions of the bars: the one thing a
# replay changes (the determinism tests compare every other column), with the key of mx_expert_contributions
# that holds the same measurements unclamped.
WALL_CLOCK_COLUMNS = (
    "mx_processing_latency_ms",
    "mx_latency_p50",
    "mx_latency_p95",
    "mx_throughput_per_second",
)
WALL_CLOCK_CONTRIBUTIONS_KEY = "latency"
_NAMESPACE = uuid.UUID("7f1e9a52-3b0c-4c8e-9d53-1c2b7a9e0d11")


def contributions(scores: pd.DataFrame) -> np.ndarray:
    """Per bar and expert (columns in ``logic.config.EXPERTS`` order): the signed contribution
    ``w_i (p_i - 0.5)``, 4 dp."""
    ret_sign = np.sign(scores["ret"].to_numpy(dtype="float64"))
    out = np.empty((len(scores), N_EXPERTS), dtype="float64")
    for i, name in enumerate(EXPERTS):
        p = scores[name].to_numpy(dtype="float64")
        if name.startswith("anomaly__"):
            direction = ANOMALY_DIRECTION[ANOMALY_EXPERTS.index(name.split("__", 1)[1])]
            p = on_vote_grid(0.5 + 0.3 * direction * p * ret_sign)
        weight = scores["w__" + name].to_numpy(dtype="float64")
        out[:, i] = np.round(weight * (p - 0.5), 4)
    return out


def _decimal_text(k: np.ndarray) -> pa.Array:
    """k / 10^4 as decimal text with no trailing zeros (``12300`` -> ``1.23``, ``-5`` -> ``-0.0005``, 0 ->
    ``0``)."""
    whole = pc.cast(pa.array(np.abs(k) // 10_000), pa.string())
    frac = pc.utf8_rtrim(pc.utf8_lpad(pc.cast(pa.array(np.abs(k) % 10_000), pa.string()), 4, "0"), "0")
    return pc.binary_join_element_wise(
        pc.if_else(pa.array(k < 0), "-", ""),
        whole,
        pc.if_else(pc.equal(frac, ""), "", pc.binary_join_element_wise(".", frac, "")),
        "",
    )


def contribution_text(values: np.ndarray) -> list[pa.Array]:
    """Per column of ``values`` (rounded to 4 dp): JSON numbers as PostgreSQL writes such float8 into jsonb.

    ``jsonb_build_array(float8)`` stores ``numeric_in(float8out(x))``: the shortest decimal that reads back as
    x, with no trailing zeros, no exponent above 1e-4 and ``-0`` read as 0. For x = round(v, 4) that decimal
    is k / 10^4 with k = rint(x 10^4). The few distinct k are written once and looked up per bar. The
    infinities become the strings PostgreSQL stores for them and NaN becomes ``null``, as when the floats were
    staged (pyarrow wrote a NaN as an empty CSV field, NULL in PostgreSQL).
    """
    values = np.atleast_2d(np.asarray(values, dtype="float64").T).T
    finite = np.isfinite(values)
    if np.any(np.abs(values[finite]) >= 1e11):
        raise ValueError("contributions out of range for 4-dp text")
    k = np.rint(np.where(finite, values, 0.0) * 1e4).astype(np.int64)
    lo, hi = (int(k.min()), int(k.max())) if k.size else (0, 0)
    if hi - lo > 4 * k.size:  # a lookup table larger than the data: write every value
        lo, table = 0, None
    else:
        table = _decimal_text(np.arange(lo, hi + 1, dtype=np.int64))
    out = []
    for j in range(values.shape[1]):
        text = _decimal_text(k[:, j]) if table is None else pc.take(table, pa.array(k[:, j] - lo))
        if not finite[:, j].all():
            v = values[:, j]
            special = pa.array(np.where(np.isnan(v), "null", np.where(v > 0, '"Infinity"', '"-Infinity"')))
            text = pc.if_else(pa.array(finite[:, j]), text, special)
        out.append(text)
    return out


def contributions_json(values: np.ndarray) -> pa.Array:
    """``mx_expert_contributions`` as JSON text per bar: ``{"<family>": [c, ...], ...}``
    (``logic.config.FAMILIES`` order)."""
    numbers = contribution_text(values)
    pieces, i = [], 0
    for family, names in FAMILIES.items():
        pieces.append(("{" if i == 0 else "],") + f'"{family}":[')
        for k in range(len(names)):
            if k:
                pieces.append(",")
            pieces.append(numbers[i + k])
        i += len(names)
    pieces.append("]}")
    return pc.binary_join_element_wise(*pieces, "")


def bar_updates(scores: pd.DataFrame) -> pd.DataFrame:
    """Per bar: the bar as read, its evidence, confirmation and the contributions' JSON text (columns
    ``BAR_UPDATE_COLUMNS``): the rows of the day partition the DSI asset writes.

    Reads only the columns ``BAR_UPDATE_INPUTS`` of ``scores``.
    """
    return pd.DataFrame(
        {
            # the columns as they are: .to_numpy() of a zone-aware column boxes every value into a Timestamp
            "symbol": scores["symbol"].reset_index(drop=True),
            "timestamp": scores["timestamp"].reset_index(drop=True),
            **{column: scores[column].to_numpy(dtype="float64") for column in _OHLCV},
            "mx_evidence": scores["mx_evidence"].to_numpy(dtype="float64"),
            "mx_confirm": scores["mx_confirm"].to_numpy(dtype=bool),
            "mx_expert_contributions": pd.Series(
                pd.arrays.ArrowExtensionArray(contributions_json(contributions(scores))), copy=False
            ),
        }
    )


def _id(*parts: object) -> str:
    return str(uuid.uuid5(_NAMESPACE, "|".join(str(p) for p in parts)))


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def event_rows(events: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(dsi_evidence rows, anomaly_events rows) for the events of ``logic.events.detect_events``, the run's
    latency figures still to add (``with_run_latency``): built a piece at a time, they are all a run keeps of
    its events.

    ``events["latency_ns"]`` / ``events["batch_bars"]``: the wall time of the streaming call that scored the
    event's bar and how many bars that call scored (``logic.score.time_streaming``); it becomes the row's
    ``mx_processing_latency_ms`` (ceil, clamped into [1, 9999]); the true value, the clamping flag and the
    call's bars go into ``mx_expert_contributions["latency"]`` (``bar_ms_true``, ``bar_ms_clamped``,
    ``bar_batch_bars``).
    """
    if events.empty:
        return pd.DataFrame(), pd.DataFrame()
    ts = pd.to_datetime(events["timestamp"], utc=True)
    keys = list(zip(events["symbol"], ts.dt.strftime("%Y-%m-%dT%H:%M"), events["anomaly_type"], strict=True))
    evidence_ids = [_id(*k, "evidence") for k in keys]
    bar_ms = events["latency_ns"].to_numpy(np.int64) / 1e6
    legal = [legal_ms(x) for x in bar_ms.tolist()]  # per event row (sparse): not a loop over bars
    blocks = [
        {"bar_ms_true": x, "bar_ms_clamped": clamped, "bar_batch_bars": int(k)}
        for x, (_, clamped), k in zip(bar_ms.tolist(), legal, events["batch_bars"].tolist(), strict=True)
    ]
    evidence = pd.DataFrame(
        {
            "evidence_id": evidence_ids,
            "timestamp": ts,
            "mx_evidence": events["mx_evidence"].astype("float64"),
            "mx_confirm": events["mx_confirm"].astype(bool),
            "mx_expert_contributions": [
                _json({"contributions": c, WALL_CLOCK_CONTRIBUTIONS_KEY: b})
                for c, b in zip(events["mx_expert_contributions"], blocks, strict=True)
            ],
            "mx_microtape_hash": events["mx_microtape_hash"],
            "mx_processing_latency_ms": np.array([v for v, _ in legal], np.int64),
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
        }
    )
    anomalies = pd.DataFrame(
        {
            "event_id": [_id(*k, "event") for k in keys],
            "symbol": events["symbol"].astype(str),
            "timestamp": ts,
            "anomaly_type": events["anomaly_type"],
            "anomaly_score": events["anomaly_score"].astype("float64"),
            "signal_pack": [_json(p) for p in events["signal_pack"]],
            "dsi_evidence_id": evidence_ids,
            "microstructure_validation": [_json(v) for v in events["microstructure_validation"]],
        }
    )
    return evidence, anomalies


def with_run_latency(evidence: pd.DataFrame, latency: dict) -> pd.DataFrame:
    """``evidence`` (``event_rows``) with the run's figures (``logic.score.latency_figures`` over the timings
    of its event bars): ``mx_latency_p50``, ``mx_latency_p95``, ``mx_throughput_per_second`` (clamped), and
    all of them, true values and clamping flags, under ``mx_expert_contributions["latency"]["run"]``."""
    if evidence.empty:
        return evidence
    run = _json(latency)
    # the row's JSON ends with its latency object and the whole object: "...}}" (jsonb keeps no key order)
    text = evidence["mx_expert_contributions"]
    if not text.str.endswith("}}").all():
        raise ValueError("mx_expert_contributions does not end with its latency object")
    return evidence.assign(
        mx_expert_contributions=text.str.slice(stop=-2) + ',"run":' + run + "}}",
        mx_latency_p50=latency["latency_p50_ms"],
        mx_latency_p95=latency["latency_p95_ms"],
        mx_throughput_per_second=latency["throughput_per_second"],
    )
