"""What the modules leave on the bars (``bar_notes``): ``market_data_1m.module_intelligence`` on the bars
where modules acted, ``market_data_1m.module_learning_updates`` on the bars where they learned. Pure pandas.

* **acted**: a plan is a module's conclusion about its event's bar (``entry_conditions['event_timestamp']``,
  else the plan's timestamp - 1 minute, on the plan's symbol): ``{"acted": [{module_id, plan_id, direction,
  signal_strength, confidence_score, decision}]}``, ``decision`` = the decision maker's approval status, or
  what the bus said when the plan never reached a decision ("not decided"). Sorted by module_id, plan_id.
* **learned**: a module learns at the day's end; the lesson is written on the last bar of the day of each
  symbol it planned on that day (a module that planned nothing learned about no bar, and its lesson stays in
  ``learning_patterns`` only): ``{"learned": [{module_id, kind, genes, from?}]}``, kind 'own' (its success
  rate tuned ``min_edge``: the day's ``learning_update`` rows) or 'shared' (from others' performance: the
  lessons of the day in ``learning_patterns['learned']``).

Columns: symbol, timestamp, module_intelligence, module_learning_updates (dicts or None).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from tis_pipeline.trading_day.closes import DayCloses
from tis_pipeline.trading_day.ecosystem.common import (
    day_start,
    iso_day,
    plain,
    plain_values,
    population_records,
    rows_of_day,
)
from tis_pipeline.trading_day.population import frame_columns

NOTE_COLUMNS = ("symbol", "timestamp", "module_intelligence", "module_learning_updates")


def _event_bar(plan: Mapping[str, Any]) -> pd.Timestamp:
    conditions = plan.get("entry_conditions")
    if isinstance(conditions, Mapping) and conditions.get("event_timestamp"):
        return pd.Timestamp(conditions["event_timestamp"]).tz_convert("UTC")
    return pd.Timestamp(plan["timestamp"]).tz_convert("UTC") - pd.Timedelta(minutes=1)


def bar_notes(
    day: pd.Timestamp,
    plans: pd.DataFrame,
    approvals: pd.DataFrame,
    sharing: pd.DataFrame,
    population: pd.DataFrame,
    closes: DayCloses,
) -> pd.DataFrame:
    """The day's notes per (symbol, bar) (module docstring), sorted by symbol, timestamp. ``closes``: the
    figures of every symbol's closes of the day (``closes.DayCloses``: each symbol's last bar of the day)."""
    day = day_start(day)
    decided = (
        {}
        if approvals is None or approvals.empty
        else dict(zip(approvals["plan_id"].astype(str), approvals["approval_status"], strict=True))
    )
    acted: dict[tuple[str, pd.Timestamp], list[dict[str, Any]]] = {}
    traded: dict[str, set[str]] = {}
    read = [
        c
        for c in (
            "symbol",
            "timestamp",
            "entry_conditions",
            "module_id",
            "plan_id",
            "direction",
            "signal_strength",
            "confidence_score",
        )
        if plans is not None and c in plans.columns
    ]  # the columns read below: a plan's other JSON columns are not converted for nothing
    # the event bar's time is read from the plan's timestamp only when its entry conditions lack it
    col = {} if plans is None or plans.empty else frame_columns(plans[[c for c in read if c != "timestamp"]])
    n = len(plans) if col else 0
    # a column at a time: the values ``plain`` makes of each plan's note (text, numbers and None), and each
    # event bar's time parsed once per distinct text (a minute holds many events)
    direction, strength, confidence = (
        plain_values(col[c]) if c in col else [None] * n
        for c in ("direction", "signal_strength", "confidence_score")
    )
    conditions = col.get("entry_conditions", [None] * n)
    parsed: dict[str, pd.Timestamp] = {}
    for i in range(n):
        symbol, mid, pid = str(col["symbol"][i]), str(col["module_id"][i]), str(col["plan_id"][i])
        c = conditions[i]
        text = c.get("event_timestamp") if isinstance(c, Mapping) else None
        if text and type(text) is str:
            bar = parsed.get(text)
            if bar is None:
                bar = parsed[text] = pd.Timestamp(text).tz_convert("UTC")
        else:
            bar = _event_bar({"entry_conditions": c, "timestamp": plans["timestamp"].iloc[i]})
        acted.setdefault((symbol, bar), []).append(
            {
                "module_id": mid,
                "plan_id": pid,
                "direction": direction[i],
                "signal_strength": strength[i],
                "confidence_score": confidence[i],
                "decision": plain(decided.get(pid, "not decided")),
            }
        )
        traded.setdefault(mid, set()).add(symbol)

    lessons: dict[str, list[dict[str, Any]]] = {}
    own = rows_of_day(sharing, day)
    if not own.empty:
        own = own[own["intelligence_type"] == "learning_update"]
        for sender, data in zip(own["sender_module_id"], own["intelligence_data"], strict=True):
            genes = data.get("genes") if isinstance(data, Mapping) else None
            lessons.setdefault(str(sender), []).append(
                {"module_id": str(sender), "kind": "own", "genes": genes}
            )
    for r in population_records(population):
        patterns = r["learning_patterns"] if isinstance(r["learning_patterns"], Mapping) else {}
        for lesson in patterns.get("learned") or []:
            if lesson.get("day") == iso_day(day):
                lessons.setdefault(str(r["module_id"]), []).append(
                    {
                        "module_id": str(r["module_id"]),
                        "kind": "shared",
                        "genes": lesson.get("genes"),
                        "from": lesson.get("from"),
                    }
                )
    learned: dict[tuple[str, pd.Timestamp], list[dict[str, Any]]] = {}
    if lessons:
        last_bar = closes.last_bars.to_dict()
        for mid, items in lessons.items():
            for symbol in sorted(traded.get(mid, ())):
                if symbol in last_bar:
                    learned.setdefault((symbol, last_bar[symbol]), []).extend(plain(items))

    keys = sorted(set(acted) | set(learned))
    rows = [
        {
            "symbol": s,
            "timestamp": t,
            "module_intelligence": {
                "acted": sorted(acted[(s, t)], key=lambda a: (a["module_id"], a["plan_id"]))
            }
            if (s, t) in acted
            else None,
            "module_learning_updates": {
                "learned": sorted(learned[(s, t)], key=lambda a: (a["module_id"], a["kind"]))
            }
            if (s, t) in learned
            else None,
        }
        for s, t in keys
    ]
    frame = pd.DataFrame(rows, columns=list(NOTE_COLUMNS))
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    return frame.astype({"symbol": object, "module_intelligence": object, "module_learning_updates": object})
