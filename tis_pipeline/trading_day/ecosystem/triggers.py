"""The day's ``module_replication_triggers`` rows (``replication_triggers``) and the market regime they
compare. Pure pandas/numpy.

Triggers (``replication_triggers``), stamped day_end, status 'active'
-------------------------------------------------------------------
* ``performance_threshold`` (priority 2): per live module with replication_readiness >= adaptation_threshold.
* ``diversity_gap``: per specialty with fewer than 2 live modules; module = the best live module of the
  specialty (else the best of its non-live ones); priority 1 when none is live, else 2.
* ``failure_recovery`` (priority 1): per specialty whose live modules were all scored today, all below 0.30;
  module = the best of the specialty; ``trigger_data['parents']`` = the two best modules of the specialty (any
  status, by mean history score: the archive may hold what worked before).
* ``regime_change`` (priority 3): ``market_regime(closes, day + 1 day) != market_regime(closes, day)``, both
  known; module = the best-scoring live alpha of the day.
* "best" = highest score (today's, else mean history score), ties by module_id. ``trigger_id =
  uuid5("trigger|{type}|{key}|{day}")``, key = module_id (performance_threshold), specialty (diversity_gap,
  failure_recovery) or "market" (regime_change). Rows sorted by priority, type, module_id.

Market regime: over the 120 one-minute bars before ``end`` (same window length on both sides, so the two
labels are comparable), per symbol with >= 30 bars: t = sum of log returns / (std of log returns * sqrt(n)) (0
when flat); pooled z = mean(t) * sqrt(symbols); 'trending_up' if z > 1.5, 'trending_down' if z < -1.5, else
'ranging'. ``day``'s window is the two hours of context before it: the regime at the previous day's close.

"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from tis_pipeline.trading_day.closes import DayCloses
from tis_pipeline.trading_day.ecosystem.common import (
    FAILURE_BELOW,
    MIN_LIVE_PER_SPECIALTY,
    READINESS_WINDOW,
    REGIME_BARS,
    REGIME_Z,
    TRIGGER_COLUMNS,
    TRIGGER_TYPES,
    as_utc,
    best_first,
    day_end_stamp,
    day_start,
    hundredths,
    iso_day,
    population_records,
    rows_frame,
    rows_of_day,
)
from tis_pipeline.trading_day.population import (
    ALPHA,
    SPECIALTIES,
    ecosystem_uuid,
    history_scores,
    is_live_record,
    is_missing,
    specialty,
)


def market_regime(closes: DayCloses, end: pd.Timestamp) -> tuple[str | None, float]:
    """The regime label and pooled trend z of the 120 bars before ``end`` (None, NaN without enough bars),
    from every symbol's closes' figures (``closes.DayCloses``: each symbol's trend t)."""
    trends = closes.trends(as_utc(pd.Timestamp(end)))
    if trends.empty:
        return None, float("nan")
    # the mean over the symbols in their order, as the per-symbol groupby gave them
    z = float(np.mean(trends.to_numpy(dtype="float64")) * math.sqrt(len(trends)))
    label = "trending_up" if z > REGIME_Z else "trending_down" if z < -REGIME_Z else "ranging"
    return label, z


def replication_triggers(
    day: pd.Timestamp, population: pd.DataFrame, performance: pd.DataFrame, closes: DayCloses
) -> pd.DataFrame:
    """The day's ``module_replication_triggers`` rows (exactly ``TRIGGER_COLUMNS``), status 'active'.

    Inputs: ``population`` after ``update_population``, ``performance`` (the day's rows: module_id,
    performance_score), ``closes``: the figures of every symbol's closes of ``[day - 2 hours, day + 1 day)``
    (``closes.DayCloses``).
    """
    day = day_start(day)
    day_end = day_end_stamp(day)
    recs = population_records(population)
    perf = rows_of_day(performance, day)
    today = {
        str(m): float(s)
        for m, s in zip(perf.get("module_id", []), perf.get("performance_score", []), strict=True)
        if not is_missing(s)
    }
    rows: list[dict[str, Any]] = []

    def add(ttype: str, key: str, module_id: str, data: Mapping[str, Any], priority: int) -> None:
        rows.append(
            {
                "trigger_id": ecosystem_uuid("trigger", ttype, key, iso_day(day)),
                "module_id": module_id,
                "timestamp": day_end,
                "trigger_type": ttype,
                "trigger_data": data,
                "trigger_priority": priority,
                "status": "active",
                "processed_at": None,
                "replication_id": None,
            }
        )

    for rec in recs:
        if not is_live_record(rec):
            continue
        readiness, threshold = rec["replication_readiness"], rec["adaptation_threshold"]
        if hundredths(readiness) >= hundredths(threshold):
            add(
                "performance_threshold",
                str(rec["module_id"]),
                str(rec["module_id"]),
                {
                    "replication_readiness": readiness,
                    "adaptation_threshold": threshold,
                    "recent_scores": history_scores(rec.get("performance_history"))[-READINESS_WINDOW:],
                },
                2,
            )

    specs = list(SPECIALTIES) + sorted(
        {specialty(r["module_type"], r["genome"]) for r in recs} - set(SPECIALTIES)
    )
    for spec in specs:
        members = [r for r in recs if specialty(r["module_type"], r["genome"]) == spec]
        live = [r for r in members if is_live_record(r)]
        if not members:
            continue
        if len(live) < MIN_LIVE_PER_SPECIALTY:
            parent = best_first(live, today)[0] if live else best_first(members)[0]
            add(
                "diversity_gap",
                spec,
                str(parent["module_id"]),
                {
                    "specialty": spec,
                    "live_modules": len(live),
                    "required": MIN_LIVE_PER_SPECIALTY,
                },
                1 if not live else 2,
            )
        live_scores = [today.get(str(r["module_id"])) for r in live]
        if live and all(s is not None and hundredths(s) < FAILURE_BELOW for s in live_scores):
            parents = [str(r["module_id"]) for r in best_first(members)[:2]]
            best_live = best_first(live, today)[0]
            add(
                "failure_recovery",
                spec,
                str(best_live["module_id"]),
                {
                    "specialty": spec,
                    "scores": {str(r["module_id"]): s for r, s in zip(live, live_scores, strict=True)},
                    "below": FAILURE_BELOW / 100,
                    "parents": parents,
                },
                1,
            )

    before, z_before = market_regime(closes, day)
    after, z_after = market_regime(closes, day + pd.Timedelta(days=1))
    if before is not None and after is not None and before != after:
        alphas = [r for r in recs if is_live_record(r) and r["module_type"] == ALPHA]
        scored = [r for r in alphas if str(r["module_id"]) in today]
        pool = scored or alphas
        if pool:
            parent = best_first(pool, today if scored else None)[0]
            add(
                "regime_change",
                "market",
                str(parent["module_id"]),
                {
                    "previous_regime": before,
                    "regime": after,
                    "previous_z": round(z_before, 4),
                    "z": round(z_after, 4),
                    "window_minutes": REGIME_BARS,
                },
                3,
            )

    frame = rows_frame(rows, "module_replication_triggers", TRIGGER_COLUMNS)
    order = frame["trigger_type"].map({t: i for i, t in enumerate(TRIGGER_TYPES)})
    frame = frame.assign(_order=order).sort_values(
        ["trigger_priority", "_order", "module_id", "trigger_id"], kind="stable"
    )
    return frame.drop(columns="_order").reset_index(drop=True)
