"""The population at the end of a day, before replication (``update_population``). Pure pandas/networkx.

Population update (``update_population``), for live modules; other rows are left as they were
---------------------------------------------------------------------------------------------
Messages of the day only; *direct* = delivered, with a receiver, sender != receiver.
* ``performance_history``: list of ``{"day", "score", "n", "rar", "below_peers"}``, today's entry appended
  (replacing an entry of the same day), entries older than 30 days (day - 29 .. day kept) dropped. ``n`` = the
  sample behind the score: the plans it took to their end today (delivered execution_feedback messages it
  received or sent; for a decision maker, its delivered decisions); ``rar`` = its ``risk_adjusted_returns``
  today; ``below_peers`` = its *trailing risk-adjusted return* R (the sum of ``rar`` over its last 10 entries,
  today's included) < the median R of the other live modules of its type scored today (absent without such
  a peer).
* genome: ``common.learned_genome`` (its own success rate), then **social learning** from the day's shared
  intelligence (``sharing``, the day's ``module_intelligence_sharing`` rows): when the mean of its last 3
  scores is below its ``adaptation_threshold``, from the ``performance_update``s it may read (broadcast, or
  naming it) of senders of its specialty that scored better today, each numeric mutable gene g moves to
  ``g + learning_rate * (sum w_i g_i / sum w_i - g)``, ``w_i = confidence_level_i * (score_i - its score)``,
  clipped and rounded to the gene's bounds. The lesson (day, senders, weights, learning_rate, genes from/to)
  is appended to ``learning_patterns['learned']`` (last 20 kept). It learns at the day's end: its plans change
  from the next day.
* ``innovation_score = min(1, D / 0.10)``, D = mean over the type's mutable genes of |g - g_founder| / span
  (``horizon_minutes``: index distance in (1, 5, 15, 60, 240) / 4), g_founder = the founder genome of its
  specialty: how far learning and evolution carried it.
* ``specialization_index``: normalised Herfindahl of the (symbol, anomaly type) of the plans the module
  touched today (plan ids in trading_plan / execution_feedback messages it sent or received):
  ``(H - 1/K) / (1 - 1/K)``, H = sum of squared shares, K = distinct (symbol, anomaly type) among all
  trading_plan messages of the day; unchanged when K <= 1 or it touched no plan.
* ``peer_ratings``: for each peer q it exchanged direct messages with today, ``rating = completed / touched``
  over the plan ids of the messages between the two (completed = an execution_feedback message exists for the
  plan); ratings from earlier days are kept, those of peers no longer live dropped.
* ``collaboration_score`` = mean of its peer_ratings (0 when it has none).
* ``network_centrality`` = ``networkx.degree_centrality`` of the undirected graph whose nodes are the day's
  live modules and whose edges join the ends of each delivered direct message (the bus's traffic).
* ``intelligence_sharing_rate = 0.8 * previous + 0.2 * b`` (b = 1 when it sent a delivered
  intelligence_broadcast today): an exponentially weighted share of days on which it shared.
* ``communication_latency_ms``: the bus's measurement, the median time from sending to handling (data time,
  ms) of the messages delivered to it today (queueing behind its capacity included); the base latency of its
  type (alpha 5, decision maker 2, trader 1 ms) on a day it received nothing. Its messages carry it
  tomorrow.
* ``message_throughput_per_sec``: the rate at which the bus moved its inbox today, messages per second of the
  time they spent in the bus: ``floor(1000 k / max(sum_i w_i, k))``, k = messages delivered to it today, w_i
  = handling time - sending time in whole ms (data time: the sender's latency, waits behind its capacity per
  minute, a night in the bus for a carried message). 0 on a day it received nothing. Data time, so a replay
  gives the same value; the floor keeps a module served in 1 ms at most 1,000 a second.
* lifecycle (on the history after today's entry; d = entries, S = the sum of its ``n``: plans taken to their
  end, all of them after its genome was made, so out of sample; minimum sample S >= 3):
  experimental -> active when d >= 3, S >= 3, R > 0 and R is not below its peers' today (evidence that it
  earns, risk-adjusted, at least what its peers do); experimental or active -> deprecated when S >= 3 and
  its R was below its peers' on each of its last **N = 5** entries (it stayed behind its peers for five
  scored days), or when d >= 5 and each of its last 5 scores < 0.30. Deprecated: status 'inactive', it stops
  trading and receives nothing (the bus fails messages to it). The last live module of a type is never
  deprecated (a day needs an alpha, a decision maker and a trader).
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
    LEARNED_KEPT,
    LIFECYCLE_MIN_SAMPLE,
    MESSAGE_COLUMNS,
    PROMOTE_DAYS,
    RAR_WINDOW,
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
    GENE_BOUNDS,
    MUTABLE_GENES,
    innovation_vs_founder,
    is_live_record,
    is_missing,
    specialty,
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


def _trailing_rar(history: Sequence[Mapping[str, Any]]) -> float:
    """Its trailing risk-adjusted return: the sum of ``rar`` over its last ``RAR_WINDOW`` history entries."""
    return float(sum(float(e.get("rar") or 0.0) for e in history[-RAR_WINDOW:]))


def _below_peers(
    recs: Sequence[Mapping[str, Any]],
    histories: Mapping[str, Sequence[Mapping[str, Any]]],
    scored: set[str],
) -> dict[str, bool]:
    """module_id -> whether its trailing risk-adjusted return (``_trailing_rar``, today's entry included) is
    below the median of the other live modules of its type scored today (only where it has such a peer)."""
    trailing = {
        str(r["module_id"]): (str(r["module_type"]), _trailing_rar(histories[str(r["module_id"])]))
        for r in recs
        if str(r["module_id"]) in scored
    }
    out = {}
    for mid, (mtype, x) in trailing.items():
        peers = [y for m, (t, y) in trailing.items() if t == mtype and m != mid]
        if peers:
            out[mid] = bool(round(x, 4) < round(float(np.median(peers)), 4))
    return out


def _lessons(sharing: pd.DataFrame | None, day: pd.Timestamp) -> list[dict[str, Any]]:
    """The day's performance updates a receiver may learn from: sender, score, confidence, specialty,
    genome, and who may read it (None: everyone)."""
    rows = rows_of_day(sharing, day)
    if rows.empty:
        return []
    rows = rows[rows["intelligence_type"] == "performance_update"]
    out = []
    for r in rows.to_dict("records"):
        data = r["intelligence_data"] if isinstance(r["intelligence_data"], Mapping) else {}
        if is_missing(r.get("performance_score")) or not isinstance(data.get("genome"), Mapping):
            continue
        out.append(
            {
                "sender": str(r["sender_module_id"]),
                "score": float(r["performance_score"]),
                "confidence": 0.0 if is_missing(r.get("confidence_level")) else float(r["confidence_level"]),
                "specialty": data.get("specialty"),
                "genome": data["genome"],
                "readers": None if r.get("target_modules") is None else set(r["target_modules"]),
            }
        )
    return out


def _social_lesson(
    rec: Mapping[str, Any],
    history: Sequence[Mapping[str, Any]],
    perf: Mapping[str, Any] | None,
    lessons: Sequence[Mapping[str, Any]],
) -> dict[str, Any] | None:
    """What ``rec`` learns from the day's shared performance (module docstring), None when nothing: it
    learns only when the mean of its last 3 scores is below its adaptation_threshold, from senders of its
    specialty that scored better than it today, moving each numeric gene by learning_rate toward their
    mean weighted by confidence_level x (their score - its score)."""
    scores = [float(e["score"]) for e in history]
    if not scores or perf is None or is_missing(perf.get("performance_score")) or not lessons:
        return None
    if hundredths(np.mean(scores[-3:])) >= hundredths(float(rec["adaptation_threshold"] or 0)):
        return None
    mine = float(perf["performance_score"])
    mid = str(rec["module_id"])
    spec = specialty(rec["module_type"], rec["genome"])
    better = [
        x
        for x in lessons
        if x["sender"] != mid
        and x["specialty"] == spec
        and x["score"] > mine
        and x["confidence"] > 0
        and (x["readers"] is None or mid in x["readers"])
    ]
    if not better:
        return None
    weights = {x["sender"]: x["confidence"] * (x["score"] - mine) for x in better}
    total = sum(weights.values())
    lr = float(rec["learning_rate"] or 0)
    genes = {}
    for gene in MUTABLE_GENES.get(str(rec["module_type"]), ()):
        if gene not in GENE_BOUNDS or gene not in rec["genome"]:
            continue
        lo, hi, dec = GENE_BOUNDS[gene]
        target = sum(weights[x["sender"]] * float(x["genome"].get(gene, rec["genome"][gene])) for x in better)
        old = float(rec["genome"][gene])
        new = round(min(hi, max(lo, old + lr * (target / total - old))), dec)
        if new != round(old, dec):
            genes[gene] = {"from": rec["genome"][gene], "to": int(new) if dec == 0 else new}
    if not genes:
        return None
    return {
        "from": sorted(weights),
        "weights": {k: round(v, 4) for k, v in sorted(weights.items())},
        "learning_rate": lr,
        "genes": genes,
    }


def _plan_id(data: Any) -> str | None:
    if isinstance(data, Mapping) and not is_missing(data.get("plan_id")):
        return str(data["plan_id"])
    return None


def update_population(
    day: pd.Timestamp,
    population: pd.DataFrame,
    performance: pd.DataFrame,
    messages: pd.DataFrame,
    sharing: pd.DataFrame | None = None,
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
        symbol=[
            f"{d.get('symbol')}|{d.get('anomaly_type')}"
            if isinstance(d, Mapping) and d.get("symbol")
            else None
            for d in msgs["message_data"]
        ],
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
    first_word = plan_msgs[plan_msgs["message_type"] == "trading_plan"].drop_duplicates("plan_id")
    plan_symbol = dict(zip(first_word["plan_id"], first_word["symbol"], strict=True))
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

    # the bus's own measurements (data time): how long its inbox took to hand it its messages, and how many
    # of them it moved per second they spent in the bus
    handled = msgs[delivered & msgs["last_delivery_attempt"].notna()]
    waits_ms = (
        (
            pd.to_datetime(handled["last_delivery_attempt"], utc=True)
            - pd.to_datetime(handled["timestamp"], utc=True)
        )
        .dt.total_seconds()
        .mul(1000)
    )
    inbox_ms = waits_ms.groupby(handled["receiver_module_id"]).median().to_dict() if len(handled) else {}
    broadcasters = set(
        msgs.loc[(msgs["message_type"] == "intelligence_broadcast") & delivered, "sender_module_id"].dropna()
    )
    throughput: dict[str, int] = {}
    if len(handled):
        inbox = pd.DataFrame({"m": handled["receiver_module_id"], "w": waits_ms}).dropna()
        for k, part in inbox.groupby("m"):
            n = len(part)  # whole ms: the bus's resolution (latencies are whole ms), no float residue
            throughput[str(k)] = int(1000 * n // max(round(float(part["w"].sum())), n))

    # the day's sample behind each score: the plans it took part in that reached their end (executed plans'
    # feedback for an author and for the trader that sent it; decisions delivered for the decision maker)
    fb = msgs[(msgs["message_type"] == "execution_feedback") & delivered]
    sample = pd.concat([fb["receiver_module_id"], fb["sender_module_id"]]).value_counts().to_dict()
    decisions = msgs[
        (msgs["message_type"] == "trading_plan")
        & delivered
        & msgs["message_data"].map(lambda d: isinstance(d, Mapping) and "decision" in d)
    ]
    for k, v in decisions["sender_module_id"].value_counts().items():
        sample[k] = sample.get(k, 0) + int(v)
    lessons_from = _lessons(sharing, day)

    last_birth: dict[str, pd.Timestamp] = {}
    for r in recs:
        born = as_utc(pd.Timestamp(r["created_at"]))
        for parent in r["parent_modules"]:
            if str(parent) not in last_birth or born > last_birth[str(parent)]:
                last_birth[str(parent)] = born
    cooldown_after = day + pd.Timedelta(days=1) - pd.Timedelta(days=COOLDOWN_DAYS)
    oldest_kept = iso_day(day - pd.Timedelta(days=HISTORY_DAYS - 1))

    # every live module's history with today's entry first: the peers' trailing returns are compared below
    histories: dict[str, list[dict[str, Any]]] = {}
    scored: set[str] = set()
    for rec in recs:
        mid = str(rec["module_id"])
        if mid not in live_set:
            continue
        p = perf.get(mid)
        history = [dict(e) for e in rec["performance_history"] if e.get("day") != iso_day(day)]
        if p is not None and not is_missing(p.get("performance_score")):
            rar = p.get("risk_adjusted_returns")
            history.append(
                {
                    "day": iso_day(day),
                    "score": to_rate(p["performance_score"]),
                    "n": sample.get(mid, 0),
                    "rar": 0.0 if is_missing(rar) else round(float(rar), 4),
                }
            )
            scored.add(mid)
        histories[mid] = sorted(
            (e for e in history if str(e.get("day")) >= oldest_kept), key=lambda e: str(e["day"])
        )
    for mid, below in _below_peers(recs, histories, scored).items():
        histories[mid][-1]["below_peers"] = below
    # a type keeps one live module: the day needs an alpha, a decision maker and a trader
    live_per_type: dict[str, int] = {}
    for rec in recs:
        if str(rec["module_id"]) in live_set:
            live_per_type[str(rec["module_type"])] = live_per_type.get(str(rec["module_type"]), 0) + 1

    for rec in recs:
        mid = str(rec["module_id"])
        if mid not in live_set:
            continue
        p = perf.get(mid)
        history = histories[mid]
        rec["performance_history"] = history
        rec["genome"] = learned_genome(rec, p)
        patterns = dict(rec["learning_patterns"]) if isinstance(rec["learning_patterns"], Mapping) else {}
        lesson = _social_lesson(rec, history, p, lessons_from)
        if lesson is not None:
            rec["genome"] = {**rec["genome"], **{g: c["to"] for g, c in lesson["genes"].items()}}
            patterns["learned"] = [*(patterns.get("learned") or []), {"day": iso_day(day), **lesson}][
                -LEARNED_KEPT:
            ]
        rec["learning_patterns"] = {**patterns, "name": rec["name"], "genome": copy.deepcopy(rec["genome"])}
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
            round(inbox_ms[mid]) if mid in inbox_ms else BASE_LATENCY_MS.get(rec["module_type"], 0)
        )
        rec["message_throughput_per_sec"] = throughput.get(mid, 0)

        cents = [hundredths(e["score"]) for e in history]
        n = len(cents)
        evidence = sum(int(e.get("n") or 0) for e in history)
        lagging = [bool(e.get("below_peers")) for e in history[-DEPRECATE_DAYS:]]
        failing = n >= DEPRECATE_DAYS and all(c < DEPRECATE_BELOW for c in cents[-DEPRECATE_DAYS:])
        outrun = evidence >= LIFECYCLE_MIN_SAMPLE and len(lagging) == DEPRECATE_DAYS and all(lagging)
        if (failing or outrun) and live_per_type[str(rec["module_type"])] > 1:
            rec["lifecycle_stage"], rec["status"] = "deprecated", "inactive"
            live_per_type[str(rec["module_type"])] -= 1
        elif (
            rec["lifecycle_stage"] == "experimental"
            and n >= PROMOTE_DAYS
            and evidence >= LIFECYCLE_MIN_SAMPLE
            and round(_trailing_rar(history), 4) > 0
            and not history[-1].get("below_peers", False)
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
