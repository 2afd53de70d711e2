"""The day's ``module_intelligence_sharing`` rows (``share_intelligence``). Pure pandas.

Sharing (``share_intelligence``)
--------------------------------
* ``performance_update`` per module scored that day (day_end), scope **broadcast** (``target_modules``
  NULL: every module may read it): ``performance_score`` = its score, ``confidence_level`` = its
  ``consistency_score`` x min(1, n / 10), n = its scored days including today (the evidence behind the score:
  one good day is not ten); ``intelligence_data`` holds the scores, its specialty, genome and learning
  parameters (what a receiver learns from). ``sharing_priority`` 1 when the score is >= 0.70 or < 0.30 (a
  success to copy or a failure to avoid), else 3.
* ``learning_update`` when the day's own learning (``common.learned_genome``) changes its genome, scope
  **targeted** to the other live modules of its specialty (``target_modules``; broadcast when it has none):
  ``intelligence_data`` = the changed genes ``{gene: {"from", "to"}}``; priority 2.
* ``capability_update`` for a live module with ``created_at == day`` (its first trading day), scope
  **private** to its lineage (``target_modules`` = its live ancestors and descendants; a founder, which has
  none, broadcasts), with its genome and lineage; priority 2.
* ``sharing_id = uuid5("sharing|{type}|{module_id}|{day}")``.

Receivers use it in ``update_population`` (social learning, see ``update.py``).

"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from tis_pipeline.trading_day.ecosystem.common import (
    CONFIDENCE_DAYS,
    SHARING_COLUMNS,
    as_utc,
    day_end_stamp,
    day_start,
    hundredths,
    iso_day,
    learned_genome,
    population_records,
    rows_frame,
    rows_of_day,
)
from tis_pipeline.trading_day.population import (
    ecosystem_uuid,
    history_scores,
    is_live_record,
    is_missing,
    specialty,
    to_rate,
)


def _peers(recs: Sequence[Mapping[str, Any]], rec: Mapping[str, Any]) -> list[str]:
    spec = specialty(rec["module_type"], rec["genome"])
    return sorted(
        str(r["module_id"])
        for r in recs
        if is_live_record(r)
        and r["module_id"] != rec["module_id"]
        and specialty(r["module_type"], r["genome"]) == spec
    )


def _lineage(recs: Sequence[Mapping[str, Any]], rec: Mapping[str, Any]) -> list[str]:
    """The live ancestors and descendants of ``rec`` (through parent_modules), sorted."""
    parents = {str(r["module_id"]): [str(p) for p in r["parent_modules"]] for r in recs}
    children: dict[str, list[str]] = {}
    for child, ps in parents.items():
        for p in ps:
            children.setdefault(p, []).append(child)
    me = str(rec["module_id"])
    found: set[str] = set()
    for links in (parents, children):
        todo = list(links.get(me, []))
        while todo:
            m = todo.pop()
            if m not in found:
                found.add(m)
                todo += links.get(m, [])
    live = {str(r["module_id"]) for r in recs if is_live_record(r)}
    return sorted((found & live) - {me})


def share_intelligence(
    day: pd.Timestamp, performance: pd.DataFrame, population: pd.DataFrame
) -> pd.DataFrame:
    """The day's ``module_intelligence_sharing`` rows (exactly ``SHARING_COLUMNS``).

    Inputs: ``performance`` (module_performance columns; rows of the day are used), ``population`` at the
    start of the day. Sorted by timestamp, intelligence_type, sender.
    """
    day = day_start(day)
    day_end = day_end_stamp(day)
    recs = population_records(population)
    by_id = {str(r["module_id"]): r for r in recs}
    perf = rows_of_day(performance, day)
    rows: list[dict[str, Any]] = []

    def add(
        itype: str,
        rec: Mapping[str, Any],
        ts: pd.Timestamp,
        data: Mapping[str, Any],
        score: float | None,
        confidence: float | None,
        priority: int,
        scope: str,
    ) -> None:
        targets = (
            None
            if scope == "broadcast"
            else _peers(recs, rec)
            if scope == "targeted"
            else _lineage(recs, rec)
        )
        scope = scope if targets else "broadcast"
        rows.append(
            {
                "sharing_id": ecosystem_uuid("sharing", itype, rec["module_id"], iso_day(day)),
                "sender_module_id": str(rec["module_id"]),
                "timestamp": ts,
                "intelligence_type": itype,
                "intelligence_data": data,
                "performance_score": score,
                "confidence_level": confidence,
                "last_updated": ts,
                "target_modules": targets or None,
                "sharing_scope": scope,
                "sharing_priority": priority,
            }
        )

    for p in perf.to_dict("records"):
        rec = by_id.get(str(p["module_id"]))
        if rec is None:
            continue
        score = to_rate(p["performance_score"])
        days = len(history_scores(rec.get("performance_history"))) + 1
        consistency = (
            None
            if is_missing(p.get("consistency_score"))
            else to_rate(float(p["consistency_score"]) * min(1.0, days / CONFIDENCE_DAYS))
        )
        data = {
            k: p.get(k)
            for k in (
                "performance_id",
                "performance_score",
                "consistency_score",
                "trading_plan_success_rate",
                "execution_quality",
                "risk_adjusted_returns",
                "sharpe_ratio",
                "max_drawdown",
                "market_regime",
                "time_horizon",
            )
        }
        data["day"] = iso_day(day)
        data["specialty"] = specialty(rec["module_type"], rec["genome"])
        data["genome"] = rec["genome"]
        data["scored_days"] = days
        data.update({r: rec.get(r) for r in ("learning_rate", "adaptation_threshold")})
        s = hundredths(score)
        add(
            "performance_update",
            rec,
            day_end,
            data,
            score,
            consistency,
            1 if s >= 70 or s < 30 else 3,
            "broadcast",
        )
        learned = learned_genome(rec, p)
        changed = {
            g: {"from": rec["genome"].get(g), "to": v}
            for g, v in learned.items()
            if rec["genome"].get(g) != v
        }
        if changed:
            add(
                "learning_update",
                rec,
                day_end,
                {"genes": changed, "learning_rate": rec.get("learning_rate")},
                score,
                consistency,
                2,
                "targeted",
            )

    for rec in recs:
        if is_live_record(rec) and as_utc(pd.Timestamp(rec["created_at"])) == day:
            data = {
                "name": rec["name"],
                "module_type": rec["module_type"],
                "specialty": specialty(rec["module_type"], rec["genome"]),
                "genome": rec["genome"],
                "module_version": rec["module_version"],
                "generational_depth": rec["generational_depth"],
                "parent_modules": rec["parent_modules"],
            }
            add("capability_update", rec, day, data, None, None, 2, "private")

    frame = rows_frame(rows, "module_intelligence_sharing", SHARING_COLUMNS)
    return frame.sort_values(
        ["timestamp", "intelligence_type", "sender_module_id"], kind="stable"
    ).reset_index(drop=True)
