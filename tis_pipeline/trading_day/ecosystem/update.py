"""The population at the end of a day, before replication (``update_population``). Pure pandas/networkx.

Population update (``update_population``), for live modules; other rows are left as they were
---------------------------------------------------------------------------------------------
Messages of the day only; *direct* = delivered, with a receiver, sender != receiver.
* ``performance_history``: list of ``{"day": "YYYY-MM-DD", "score": s}``, today's score appended (replacing an
  entry of the same day), entries older than 30 days (day - 29 .. day kept) dropped.
* genome: ``_learned_genome`` (above).
* ``innovation_score = min(1, D / 0.10)``, D = mean over the type's mutable genes of |g - g_founder| / span
  (``horizon_minutes``: index distance in (1, 5, 15, 60, 240) / 4), g_founder = the founder genome of its
  specialty: how far learning and evolution carried it.
* ``specialization_index``: normalised Herfindahl of the symbols of the plans the module touched today (plan
  ids in trading_plan / execution_feedback messages it sent or received): ``(H - 1/K) / (1 - 1/K)``,
  H = sum of squared symbol shares, K = distinct symbols among all trading_plan messages of the day; unchanged
  when K <= 1 or it touched no plan.
* ``peer_ratings``: for each peer q it exchanged direct messages with today, ``rating = completed / touched``
  over the plan ids of the messages between the two (completed = an execution_feedback message exists for the
  plan); ratings from earlier days are kept, those of peers no longer live dropped.
* ``collaboration_score`` = mean of its peer_ratings (0 when it has none).
* ``network_centrality`` = ``networkx.degree_centrality`` of the undirected graph whose nodes are the day's
  live modules and whose edges join the ends of each direct message.
* ``intelligence_sharing_rate = 0.8 * previous + 0.2 * b`` (b = 1 when it sent a delivered
  intelligence_broadcast today): an exponentially weighted share of days on which it shared.
* ``communication_latency_ms = BASE_LATENCY_MS[type] + messages received today // 10`` (a modelled cost:
  alpha 5, decision maker 2, trader 1 ms, plus 1 ms per 10 messages of queue).
* ``message_throughput_per_sec`` = the most messages it sent or received within one second of the day.
* lifecycle (on the history after today's entry; n = entries): experimental -> active when n >= 3 and the
  mean of the last 3 scores >= 0.50; experimental or active -> deprecated (status 'inactive': it stops
  trading) when n >= 5 and each of the last 5 scores < 0.30. (The contract names active -> deprecated; an
  experimental module failing as long is retired too, or it would trade for ever without ever graduating.)
* ``replication_readiness`` = 0 when not live, n < 3, or an offspring was born within the last 5 days
  (created_at > day + 1 day - 5 days, a cool-down); else ``mean(s) * (1 - std(s)) * min(1, n / 5)`` over the
  last <= 5 scores s (population std): good, steady and proven.
* ``last_updated`` = day_end.

"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd

from tis_pipeline.trading_day.ecosystem.common import (
    BASE_LATENCY_MS,
    COOLDOWN_DAYS,
    DEPRECATE_BELOW,
    DEPRECATE_DAYS,
    HISTORY_DAYS,
    MESSAGE_COLUMNS,
    PROMOTE_DAYS,
    PROMOTE_MIN,
    READINESS_MIN_DAYS,
    READINESS_WINDOW,
    SHARING_DECAY,
    as_utc,
    day_end_stamp,
    day_start,
    hundredths,
    iso_day,
    learned_genome,
    population_frame,
    population_records,
    rows_of_day,
)
from tis_pipeline.trading_day.population import (
    innovation_vs_founder,
    is_live_record,
    is_missing,
    to_rate,
)


def _message_graph(live: Sequence[str], direct: pd.DataFrame) -> nx.Graph:
    graph = nx.Graph()
    graph.add_nodes_from(live)
    nodes = set(live)
    for s, r in zip(direct["sender_module_id"], direct["receiver_module_id"], strict=True):
        if s in nodes and r in nodes and s != r:
            graph.add_edge(s, r)
    return graph


def _plan_id(data: Any) -> str | None:
    if isinstance(data, Mapping) and not is_missing(data.get("plan_id")):
        return str(data["plan_id"])
    return None


def update_population(
    day: pd.Timestamp, population: pd.DataFrame, performance: pd.DataFrame, messages: pd.DataFrame
) -> pd.DataFrame:
    """The population at the end of ``day`` (before replication); formulas in the module docstring.

    Inputs: ``population`` at the start of the day, ``performance`` (module_performance rows; the day's are
    used: module_id, performance_score, trading_plan_success_rate), ``messages`` (module_messages rows; the
    day's are used). Output: the population frame (``POPULATION_COLUMNS``), same rows in the same order.
    """
    day = day_start(day)
    day_end = day_end_stamp(day)
    recs = population_records(population)
    perf = {str(p["module_id"]): p for p in rows_of_day(performance, day).to_dict("records")}
    msgs = rows_of_day(messages, day)
    live_ids = [str(r["module_id"]) for r in recs if is_live_record(r)]
    live_set = set(live_ids)

    if msgs.empty:
        msgs = pd.DataFrame(columns=list(MESSAGE_COLUMNS))
    msgs = msgs.assign(
        plan_id=[_plan_id(d) for d in msgs["message_data"]],
        symbol=[d.get("symbol") if isinstance(d, Mapping) else None for d in msgs["message_data"]],
    )
    delivered = msgs["status"] == "delivered"
    direct = msgs[
        delivered
        & msgs["receiver_module_id"].notna()
        & (msgs["sender_module_id"] != msgs["receiver_module_id"])
    ]
    plan_msgs = msgs[
        msgs["message_type"].isin(["trading_plan", "execution_feedback"]) & msgs["plan_id"].notna()
    ]
    completed = set(msgs.loc[msgs["message_type"] == "execution_feedback", "plan_id"].dropna())
    plan_symbol = dict(zip(plan_msgs["plan_id"], plan_msgs["symbol"], strict=True))
    n_symbols = msgs.loc[msgs["message_type"] == "trading_plan", "symbol"].dropna().nunique()

    centrality = nx.degree_centrality(_message_graph(live_ids, direct)) if live_ids else {}

    # plan ids each module touched, and per (module, peer) pair
    touched: dict[str, set[str]] = {}
    pair_plans: dict[tuple[str, str], set[str]] = {}
    for s, r, pid in zip(
        plan_msgs["sender_module_id"], plan_msgs["receiver_module_id"], plan_msgs["plan_id"], strict=True
    ):
        for m in (s, r):
            if not is_missing(m):
                touched.setdefault(str(m), set()).add(pid)
    for s, r, pid in zip(
        direct["sender_module_id"], direct["receiver_module_id"], direct["plan_id"], strict=True
    ):
        if pid is None:
            continue
        pair_plans.setdefault((str(s), str(r)), set()).add(pid)
        pair_plans.setdefault((str(r), str(s)), set()).add(pid)

    received = msgs["receiver_module_id"].dropna().value_counts().to_dict()
    broadcasters = set(
        msgs.loc[(msgs["message_type"] == "intelligence_broadcast") & delivered, "sender_module_id"].dropna()
    )
    ends = pd.concat(
        [
            pd.DataFrame({"m": msgs["sender_module_id"], "t": msgs["timestamp"]}),
            pd.DataFrame({"m": msgs["receiver_module_id"], "t": msgs["timestamp"]}),
        ]
    ).dropna()
    if ends.empty:
        throughput: dict[str, int] = {}
    else:
        ends["sec"] = pd.to_datetime(ends["t"], utc=True).dt.floor("s")
        throughput = {
            str(k): int(v) for k, v in ends.groupby(["m", "sec"]).size().groupby(level=0).max().items()
        }

    last_birth: dict[str, pd.Timestamp] = {}
    for r in recs:
        born = as_utc(pd.Timestamp(r["created_at"]))
        for parent in r["parent_modules"]:
            if str(parent) not in last_birth or born > last_birth[str(parent)]:
                last_birth[str(parent)] = born
    cooldown_after = day + pd.Timedelta(days=1) - pd.Timedelta(days=COOLDOWN_DAYS)
    oldest_kept = iso_day(day - pd.Timedelta(days=HISTORY_DAYS - 1))

    for rec in recs:
        mid = str(rec["module_id"])
        if mid not in live_set:
            continue
        p = perf.get(mid)
        history = [e for e in rec["performance_history"] if e.get("day") != iso_day(day)]
        if p is not None and not is_missing(p.get("performance_score")):
            history.append({"day": iso_day(day), "score": to_rate(p["performance_score"])})
        history = sorted(
            (e for e in history if str(e.get("day")) >= oldest_kept), key=lambda e: str(e["day"])
        )
        rec["performance_history"] = history
        rec["genome"] = learned_genome(rec, p)
        rec["learning_patterns"] = {"name": rec["name"], "genome": copy.deepcopy(rec["genome"])}
        rec["innovation_score"] = innovation_vs_founder(rec["module_type"], rec["genome"])

        mine = touched.get(mid, set())
        if n_symbols > 1 and mine:
            shares = pd.Series([plan_symbol.get(pid) for pid in sorted(mine)]).value_counts(normalize=True)
            hhi = float((shares**2).sum())
            rec["specialization_index"] = to_rate((hhi - 1 / n_symbols) / (1 - 1 / n_symbols))

        ratings = {q: v for q, v in rec["peer_ratings"].items() if q in live_set and q != mid}
        for (a, q), plan_ids in pair_plans.items():
            if a == mid and q in live_set:
                ratings[q] = to_rate(len(plan_ids & completed) / len(plan_ids))
        rec["peer_ratings"] = dict(sorted(ratings.items()))
        rec["collaboration_score"] = to_rate(np.mean(list(ratings.values()))) if ratings else 0.0
        rec["network_centrality"] = to_rate(centrality.get(mid, 0.0))
        shared = 1.0 if mid in broadcasters else 0.0
        rec["intelligence_sharing_rate"] = to_rate(
            SHARING_DECAY * float(rec["intelligence_sharing_rate"] or 0.0) + (1 - SHARING_DECAY) * shared
        )
        rec["communication_latency_ms"] = (
            BASE_LATENCY_MS.get(rec["module_type"], 0) + int(received.get(mid, 0)) // 10
        )
        rec["message_throughput_per_sec"] = throughput.get(mid, 0)

        cents = [hundredths(e["score"]) for e in history]
        n = len(cents)
        if n >= DEPRECATE_DAYS and all(c < DEPRECATE_BELOW for c in cents[-DEPRECATE_DAYS:]):
            rec["lifecycle_stage"], rec["status"] = "deprecated", "inactive"
        elif (
            rec["lifecycle_stage"] == "experimental"
            and n >= PROMOTE_DAYS
            and sum(cents[-PROMOTE_DAYS:]) >= PROMOTE_MIN * PROMOTE_DAYS
        ):
            rec["lifecycle_stage"] = "active"

        cooling = mid in last_birth and last_birth[mid] > cooldown_after
        if not is_live_record(rec) or n < READINESS_MIN_DAYS or cooling:
            rec["replication_readiness"] = 0.0
        else:
            window = np.array(cents[-READINESS_WINDOW:], dtype=float) / 100
            rec["replication_readiness"] = to_rate(
                window.mean() * (1 - window.std()) * min(1.0, n / READINESS_WINDOW)
            )
        rec["last_updated"] = day_end
    return population_frame(recs)
