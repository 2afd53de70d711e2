"""The module ecosystem of one trading day: founders, messages, sharing, population update, replication.

Pure: pandas/numpy (networkx for graph measures) in, pandas out; no Dagster, no SQL, no wall clock, no global
random state. The daily loop that calls these functions, and the frames it passes, are in ``docs/ecosystem.md``.

Public API
----------
``founding_population(start) -> population``
``build_messages(day, plans, approvals, population) -> module_messages rows``
``share_intelligence(day, performance, population) -> module_intelligence_sharing rows``
``update_population(day, population, performance, messages) -> population``
``replication_triggers(day, population, performance, bars) -> module_replication_triggers rows``
``replicate(day, triggers, population) -> (module_replications rows, triggers, population)``
``population_rows(population) -> modules rows``
helpers: ``specialty(module_type, genome)``, ``is_live(population)``, ``market_regime(bars, end)``.

Conventions
-----------
``day`` is 00:00 UTC; the day is ``[day, day + 1 day)``. End-of-day rows (broadcasts, sharing, triggers,
replications, ``last_updated``) are stamped ``day_end = day + 23:59``. A child is born at ``day + 1 day``
(``created_at``): it trades from the next day. Ids are UUIDv5 under ``NAMESPACE`` of natural keys; random draws
come from ``numpy.random.default_rng`` seeded by SHA-256 of ``"{parent_id}|{YYYY-MM-DD}|{trigger_type}"``.
Rates are DECIMAL(3,2): rounded to 2 places and clipped to [0, 1]. Threshold comparisons on 2-place values are
made in integer hundredths so that 0.50 means exactly 0.50. JSON columns hold dicts/lists of plain Python
values (no numpy scalars, no NaN).

*Live* module: ``status == 'active'`` and ``lifecycle_stage in ('experimental', 'active')``; only live modules
take part in a day. *Specialty*: the genome's ``style`` for an alpha detector (momentum, reversal, divergence),
else the module type (decision_maker, trader); the five founders found the five specialties. *Acting* module
of a type (the decision maker, the trader): the live one with the best last performance (last
``performance_history`` score, none = -1), ties by smallest module_id -- the rule plans use for the decision
maker. *Executed* plan: ``execution_status in ('executed', 'partial')`` (it traded).

Messages (``build_messages``)
-----------------------------
* ``trading_plan`` per plan: alpha (plan's module) -> the decision maker of its approval row; timestamp = plan
  timestamp; ``ttl_seconds`` = seconds from timestamp to ``valid_until`` (at least 60; 3600 without one).
* ``execution_feedback`` per executed plan: acting trader -> the plan's module; timestamp = exit time
  (``performance_metrics['exit_time']``, else ``valid_until``, else the plan timestamp) clipped into
  [plan timestamp, day_end]; ttl 3600.
* ``intelligence_broadcast`` per live module at day_end, receiver NULL, ttl 86400, priority 3.
* priority from the plan's signal strength s: 1 if s >= 0.70, 2 if s >= 0.40, else 3.
* status ``delivered`` when the receiver is live (or NULL for a broadcast); else ``failed`` with an
  ``error_message`` (receiver inactive / unknown / missing). Every message made one attempt:
  ``delivery_attempts = 1``, ``last_delivery_attempt = timestamp + sender's communication_latency_ms``.
* ``message_id = uuid5("message|{type}|{plan_id}")`` (broadcast: ``"message|intelligence_broadcast|{module_id}|
  {YYYY-MM-DD}"``).

Sharing (``share_intelligence``)
--------------------------------
* ``performance_update`` per module scored that day (day_end): ``performance_score`` = its score,
  ``confidence_level`` = its ``consistency_score``; ``sharing_priority`` 1 when the score is >= 0.70 or < 0.30
  (a success to copy or a failure to avoid), else 3.
* ``learning_update`` when the day's learning (below) changes a genome: ``intelligence_data`` = the changed
  genes ``{gene: {"from", "to"}}``; priority 2. ``update_population`` applies the same ``_learned_genome``.
* ``capability_update`` for a live module with ``created_at == day`` (its first trading day: founders on the
  start day, children the day after their birth), stamped created_at, genome and lineage; priority 2.
* scope ``targeted`` with ``target_modules`` = sorted ids of the other live modules of the same specialty when
  there is one, else ``broadcast`` with ``target_modules`` NULL.
* ``sharing_id = uuid5("sharing|{type}|{module_id}|{day}")``.

Learning: an alpha module scored with a ``trading_plan_success_rate`` r tunes its entry filter ``min_edge`` by its
``learning_rate`` lr: r < 0.50 -> min_edge + lr (fewer, stronger signals), r >= 0.60 -> min_edge - lr (more
trades), else unchanged; clipped to the gene's bounds, 4 places. Other modules do not learn (their genomes are a
risk policy and a cost model, changed only by replication).

Population update (``update_population``), for live modules; other rows are left as they were
---------------------------------------------------------------------------------------------
Messages of the day only; *direct* = delivered, with a receiver, sender != receiver.
* ``performance_history``: list of ``{"day": "YYYY-MM-DD", "score": s}``, today's score appended (replacing an
  entry of the same day), entries older than 30 days (day - 29 .. day kept) dropped.
* genome: ``_learned_genome`` (above).
* ``innovation_score = min(1, D / 0.10)``, D = mean over the type's mutable genes of |g - g_founder| / span
  (``horizon_minutes``: index distance in (1, 5, 15, 60, 240) / 4), g_founder = the founder genome of its
  specialty: how far learning and evolution carried it.
* ``specialization_index``: normalised Herfindahl of the symbols of the plans the module touched today (plan ids
  in trading_plan / execution_feedback messages it sent or received): ``(H - 1/K) / (1 - 1/K)``,
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
  mean of the last 3 scores >= 0.50; experimental or active -> deprecated (status 'inactive': it stops trading)
  when n >= 5 and each of the last 5 scores < 0.30. (The contract names active -> deprecated; an experimental
  module failing as long is retired too, or it would trade for ever without ever graduating.)
* ``replication_readiness`` = 0 when not live, n < 3, or an offspring was born within the last 5 days
  (created_at > day + 1 day - 5 days, a cool-down); else ``mean(s) * (1 - std(s)) * min(1, n / 5)`` over the last
  <= 5 scores s (population std): good, steady and proven.
* ``last_updated`` = day_end.

Triggers (``replication_triggers``), stamped day_end, status 'active'
-------------------------------------------------------------------
* ``performance_threshold`` (priority 2): per live module with replication_readiness >= adaptation_threshold.
* ``diversity_gap``: per specialty with fewer than 2 live modules; module = the best live module of the
  specialty (else the best of its non-live ones); priority 1 when none is live, else 2.
* ``failure_recovery`` (priority 1): per specialty whose live modules were all scored today, all below 0.30;
  module = the best of the specialty; ``trigger_data['parents']`` = the two best modules of the specialty (any
  status, by mean history score: the archive may hold what worked before).
* ``regime_change`` (priority 3): ``market_regime(bars, day + 1 day) != market_regime(bars, day)``, both known;
  module = the best-scoring live alpha of the day.
* "best" = highest score (today's, else mean history score), ties by module_id. ``trigger_id =
  uuid5("trigger|{type}|{key}|{day}")``, key = module_id (performance_threshold), specialty (diversity_gap,
  failure_recovery) or "market" (regime_change). Rows sorted by priority, type, module_id.

Market regime: over the 120 one-minute bars before ``end`` (same window length on both sides, so the two labels
are comparable), per symbol with >= 30 bars: t = sum of log returns / (std of log returns * sqrt(n)) (0 when
flat); pooled z = mean(t) * sqrt(symbols); 'trending_up' if z > 1.5, 'trending_down' if z < -1.5, else
'ranging'. ``day``'s window is the two hours of context before it: the regime at the previous day's close.

Replication (``replicate``)
---------------------------
Triggers in order; each makes a child while fewer than 3 were made today and fewer than 30 modules are live
(children included), else it expires. A child: ``replication_id = uuid5("replication|{trigger_id}")``, child id
``uuid5("module|{replication_id}")``;
* recombination (failure_recovery with two parents A, B): each mutable gene comes from B when a uniform draw
  < 0.5 (``recombination_applied`` lists them), else from A;
* mutation: each mutable gene mutates when a uniform draw < the primary parent's ``mutation_rate`` (at least the
  gene with the smallest draw mutates, so a child is never a clone): numeric genes move by N(0, 0.1 * span),
  reflected into their bounds and rounded (one rounding unit further if the rounding undid the move);
  ``horizon_minutes`` moves one step along (1, 5, 15, 60, 240). ``mutation_applied = {gene: {"from", "to"}}``
  holds exactly the genes that differ from the (recombined) parent genome.
* columns: ``generational_depth`` = max parents' + 1, ``module_version = "1.0.0+g{depth}"``, parent_modules,
  learning/adaptation/mutation/recombination rates of the primary parent, ``parent_performance``, innovation
  from its genome, seed defaults otherwise; ``lifecycle_stage`` experimental, ``created_at = last_updated =
  day + 1 day``; name ``"{founder name}~{child id[:8]}"``. Parents: offspring_modules + child, offspring_count + 1.
* replication rows: timestamp day_end, status 'completed', ``creation_time_ms`` / ``validation_time_ms`` /
  ``initialization_time_ms`` None (the asset measures them). Triggers: ``processed`` + replication_id +
  processed_at = day_end, or ``expired``.
"""

from __future__ import annotations

import copy
import datetime as dt
import decimal
import hashlib
import json
import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd

NAMESPACE = uuid.UUID("5b0e2c7e-6a1f-4f3a-9c55-2d8e4b7a1c90")

MODULE_COLUMNS: tuple[str, ...] = (
    "module_id", "module_type", "module_version", "parent_modules", "offspring_modules", "generational_depth",
    "learning_rate", "adaptation_threshold", "performance_history", "learning_patterns", "innovation_score",
    "specialization_index", "communication_latency_ms", "message_throughput_per_sec",
    "intelligence_sharing_rate", "collaboration_score", "peer_ratings", "network_centrality",
    "replication_readiness", "parent_performance", "mutation_rate", "recombination_rate", "offspring_count",
    "lifecycle_stage", "created_at", "last_updated", "status",
)
POPULATION_COLUMNS: tuple[str, ...] = (*MODULE_COLUMNS, "name", "genome")
MESSAGE_COLUMNS: tuple[str, ...] = (
    "message_id", "sender_module_id", "receiver_module_id", "timestamp", "message_type", "message_data",
    "priority", "ttl_seconds", "status", "delivery_attempts", "last_delivery_attempt", "error_message",
)
SHARING_COLUMNS: tuple[str, ...] = (
    "sharing_id", "sender_module_id", "timestamp", "intelligence_type", "intelligence_data", "performance_score",
    "confidence_level", "last_updated", "target_modules", "sharing_scope", "sharing_priority",
)
REPLICATION_COLUMNS: tuple[str, ...] = (
    "replication_id", "parent_module_id", "child_module_id", "timestamp", "trigger_type", "trigger_data",
    "replication_reason", "target_capabilities", "performance_threshold", "diversity_requirements",
    "replication_status", "creation_time_ms", "validation_time_ms", "initialization_time_ms",
    "inherited_intelligence", "mutation_applied", "recombination_applied",
)
TRIGGER_COLUMNS: tuple[str, ...] = (
    "trigger_id", "module_id", "timestamp", "trigger_type", "trigger_data", "trigger_priority", "status",
    "processed_at", "replication_id",
)

# column kinds: s = str (nullable), t = UTC timestamp, i = int64, I = nullable Int64, f = float64, j = JSON
_KINDS: dict[str, dict[str, str]] = {
    "modules": {
        **dict.fromkeys(MODULE_COLUMNS, "f"),
        **dict.fromkeys(("module_id", "module_type", "module_version", "lifecycle_stage", "status"), "s"),
        **dict.fromkeys(("parent_modules", "offspring_modules", "performance_history", "learning_patterns",
                         "peer_ratings", "parent_performance"), "j"),
        **dict.fromkeys(("generational_depth", "communication_latency_ms", "message_throughput_per_sec",
                         "offspring_count"), "i"),
        **dict.fromkeys(("created_at", "last_updated"), "t"),
    },
    "module_messages": {
        **dict.fromkeys(("message_id", "sender_module_id", "receiver_module_id", "message_type", "status",
                         "error_message"), "s"),
        "timestamp": "t", "last_delivery_attempt": "t", "message_data": "j",
        **dict.fromkeys(("priority", "ttl_seconds", "delivery_attempts"), "i"),
    },
    "module_intelligence_sharing": {
        **dict.fromkeys(("sharing_id", "sender_module_id", "intelligence_type", "sharing_scope"), "s"),
        "timestamp": "t", "last_updated": "t", "intelligence_data": "j", "target_modules": "j",
        "performance_score": "f", "confidence_level": "f", "sharing_priority": "i",
    },
    "module_replications": {
        **dict.fromkeys(("replication_id", "parent_module_id", "child_module_id", "trigger_type",
                         "replication_reason", "replication_status"), "s"),
        "timestamp": "t", "performance_threshold": "f",
        **dict.fromkeys(("trigger_data", "target_capabilities", "diversity_requirements",
                         "inherited_intelligence", "mutation_applied", "recombination_applied"), "j"),
        **dict.fromkeys(("creation_time_ms", "validation_time_ms", "initialization_time_ms"), "I"),
    },
    "module_replication_triggers": {
        **dict.fromkeys(("trigger_id", "module_id", "trigger_type", "status", "replication_id"), "s"),
        "timestamp": "t", "processed_at": "t", "trigger_data": "j", "trigger_priority": "i",
    },
}
_KINDS["population"] = {**_KINDS["modules"], "name": "s", "genome": "j"}
# the columns holding Python dicts/lists, per table (the store serialises them with json.dumps(sort_keys=True))
JSON_COLUMNS: Mapping[str, tuple[str, ...]] = {
    table: tuple(c for c, k in kinds.items() if k == "j") for table, kinds in _KINDS.items()
}

LIVE_STAGES = ("experimental", "active")
ALPHA, DECISION, TRADER = "alpha_detector", "decision_maker", "trader"
HORIZONS: tuple[int, ...] = (1, 5, 15, 60, 240)
BASE_LATENCY_MS: Mapping[str, int] = {ALPHA: 5, DECISION: 2, TRADER: 1}

HISTORY_DAYS = 30
PROMOTE_DAYS, PROMOTE_MIN = 3, 50  # hundredths
DEPRECATE_DAYS, DEPRECATE_BELOW = 5, 30  # hundredths
FAILURE_BELOW = 30  # hundredths
READINESS_MIN_DAYS, READINESS_WINDOW, COOLDOWN_DAYS = 3, 5, 5
MIN_LIVE_PER_SPECIALTY = 2
MAX_REPLICATIONS_PER_DAY = 3
POPULATION_CAP = 30
SHARING_DECAY = 0.8
INNOVATION_SCALE = 0.10
MUTATION_SIGMA = 0.10  # of the gene's span
CROSSOVER_P = 0.5
REGIME_BARS, REGIME_MIN_BARS, REGIME_Z = 120, 30, 1.5
TRIGGER_TYPES: tuple[str, ...] = ("failure_recovery", "diversity_gap", "performance_threshold", "regime_change")

# (lo, hi, decimals) of every gene replication may change; genes not listed (style, anomaly_types, capital,
# fee_bps) are facts of the specialty or the venue and are inherited unchanged
GENE_BOUNDS: Mapping[str, tuple[float, float, int]] = {
    "min_edge": (0.0, 0.2, 4),
    "stop_atr": (0.5, 5.0, 2),
    "target_atr": (0.5, 5.0, 2),  # with stop_atr >= 0.5 the risk/reward stays <= 10
    "risk_pct": (0.1, 2.0, 2),
    "min_confidence": (0.0, 0.9, 2),
    "min_risk_reward": (0.5, 3.0, 2),
    "max_position_pct": (1.0, 100.0, 2),
    "max_plans_per_symbol": (1, 50, 0),
    "slippage_bps": (0.0, 10.0, 2),
}
MUTABLE_GENES: Mapping[str, tuple[str, ...]] = {
    ALPHA: ("min_edge", "stop_atr", "target_atr", "horizon_minutes", "risk_pct"),
    DECISION: ("min_confidence", "min_risk_reward", "max_position_pct", "max_plans_per_symbol"),
    TRADER: ("slippage_bps",),
}

FOUNDERS: tuple[tuple[str, str, Mapping[str, Any]], ...] = (
    ("momentum", ALPHA, {
        "style": "momentum", "anomaly_types": ["price_jump", "range_expansion"], "min_edge": 0.02,
        "stop_atr": 1.5, "target_atr": 2.5, "horizon_minutes": 15, "risk_pct": 0.5,
    }),
    ("reversal", ALPHA, {
        "style": "reversal", "anomaly_types": ["volume_spike", "pattern"], "min_edge": 0.02,
        "stop_atr": 1.0, "target_atr": 1.5, "horizon_minutes": 5, "risk_pct": 0.5,
    }),
    ("divergence", ALPHA, {
        "style": "divergence", "anomaly_types": ["divergence"], "min_edge": 0.02,
        "stop_atr": 2.0, "target_atr": 3.0, "horizon_minutes": 60, "risk_pct": 0.5,
    }),
    ("risk_desk", DECISION, {
        "min_confidence": 0.3, "min_risk_reward": 1.2, "max_position_pct": 10.0, "max_plans_per_symbol": 20,
    }),
    ("execution_sim", TRADER, {"capital": 1_000_000.0, "slippage_bps": 1.0, "fee_bps": 2.0}),
)
FOUNDER_GENOMES: Mapping[str, Mapping[str, Any]] = {
    (g["style"] if t == ALPHA else t): g for _, t, g in FOUNDERS
}
SPECIALTIES: tuple[str, ...] = tuple(FOUNDER_GENOMES)

_SEED_DEFAULTS: Mapping[str, Any] = {
    "generational_depth": 0, "learning_rate": 0.01, "adaptation_threshold": 0.7, "innovation_score": 0.0,
    "specialization_index": 0.0, "communication_latency_ms": 0, "message_throughput_per_sec": 0,
    "intelligence_sharing_rate": 0.0, "collaboration_score": 0.0, "network_centrality": 0.0,
    "replication_readiness": 0.0, "mutation_rate": 0.1, "recombination_rate": 0.1, "offspring_count": 0,
    "lifecycle_stage": "experimental", "status": "active",
}

# ------------------------------------------------------------------------------------------------ helpers


def _uuid(*parts: object) -> str:
    return str(uuid.uuid5(NAMESPACE, "|".join(str(p) for p in parts)))


def _day(day: pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(day)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.floor("D")


def _day_end(day: pd.Timestamp) -> pd.Timestamp:
    return day + pd.Timedelta(days=1) - pd.Timedelta(minutes=1)


def _iso_day(day: pd.Timestamp) -> str:
    return day.strftime("%Y-%m-%d")


def _rng(*parts: object) -> np.random.Generator:
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def _unit(x: float) -> float:
    """A DECIMAL(3,2) rate: 2 places inside [0, 1]."""
    return float(min(1.0, max(0.0, round(float(x), 2))))


def _hundredths(x: float) -> int:
    return int(round(float(x) * 100))


def _missing(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, (Mapping, list, tuple, set, np.ndarray)):
        return False
    return bool(pd.isna(v))


def _plain(v: Any) -> Any:
    """A JSON-serialisable plain Python value (numpy scalars unwrapped, NaN/NaT -> None, times ISO)."""
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_plain(x) for x in v]
    if _missing(v):
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating, decimal.Decimal)):  # Decimal: state read back from NUMERIC columns
        return float(v)
    if isinstance(v, (pd.Timestamp, dt.datetime, dt.date)):
        return v.isoformat()
    return v


def _frame(rows: Sequence[Mapping[str, Any]], table: str, columns: Sequence[str]) -> pd.DataFrame:
    """Rows -> a frame with exactly ``columns`` in order and the table's dtypes (also when empty)."""
    kinds = _KINDS[table]
    data: dict[str, Any] = {}
    for col in columns:
        values = [r.get(col) for r in rows]
        kind = kinds[col]
        if kind == "t":
            data[col] = pd.to_datetime(pd.Series(values, dtype="object"), utc=True).astype("datetime64[ns, UTC]")
        elif kind == "i":
            data[col] = pd.Series([int(v) for v in values], dtype="int64")
        elif kind == "I":
            data[col] = pd.Series(values, dtype="Int64")
        elif kind == "f":
            data[col] = pd.Series([np.nan if _missing(v) else float(v) for v in values], dtype="float64")
        elif kind == "j":
            data[col] = pd.Series([None if v is None else _plain(v) for v in values], dtype="object")
        else:
            data[col] = pd.Series([None if _missing(v) else str(v) for v in values], dtype="object")
    return pd.DataFrame(data, columns=list(columns))


def _records(population: pd.DataFrame) -> list[dict[str, Any]]:
    """Deep copies of the population rows: logic never mutates its inputs."""
    out = []
    for row in population.to_dict("records"):
        rec = {c: copy.deepcopy(row.get(c)) for c in POPULATION_COLUMNS}
        for c in ("parent_modules", "offspring_modules", "performance_history"):
            rec[c] = list(rec[c]) if isinstance(rec[c], (list, tuple, np.ndarray)) else []
        for c in ("peer_ratings", "parent_performance", "genome"):
            rec[c] = dict(rec[c]) if isinstance(rec[c], Mapping) else {}
        out.append(rec)
    return out


def _population_frame(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    return _frame(records, "population", POPULATION_COLUMNS)


def specialty(module_type: str, genome: Mapping[str, Any] | None) -> str:
    """An alpha detector's style, else its module type."""
    if module_type == ALPHA and genome and genome.get("style"):
        return str(genome["style"])
    return str(module_type)


def _is_live(rec: Mapping[str, Any]) -> bool:
    return rec.get("status") == "active" and rec.get("lifecycle_stage") in LIVE_STAGES


def is_live(population: pd.DataFrame) -> pd.Series:
    """True for the modules that take part in a day."""
    return (population["status"] == "active") & population["lifecycle_stage"].isin(LIVE_STAGES)


def _scores(rec: Mapping[str, Any]) -> list[float]:
    return [float(e["score"]) for e in rec.get("performance_history") or [] if not _missing(e.get("score"))]


def _last_score(rec: Mapping[str, Any]) -> float:
    s = _scores(rec)
    return s[-1] if s else -1.0


def _mean_score(rec: Mapping[str, Any]) -> float:
    s = _scores(rec)
    return float(np.mean(s)) if s else -1.0


def _best(recs: Iterable[Mapping[str, Any]], score: Mapping[str, float] | None = None) -> list[Mapping[str, Any]]:
    """Best first: today's score if given (else mean history score), ties by module_id."""
    def key(r: Mapping[str, Any]) -> tuple[float, str]:
        s = score.get(r["module_id"]) if score else None
        return (-(s if s is not None else _mean_score(r)), str(r["module_id"]))
    return sorted(recs, key=key)


def _acting(recs: Sequence[Mapping[str, Any]], module_type: str) -> Mapping[str, Any] | None:
    live = [r for r in recs if r["module_type"] == module_type and _is_live(r)]
    if not live:
        return None
    return sorted(live, key=lambda r: (-_last_score(r), str(r["module_id"])))[0]


def _day_rows(frame: pd.DataFrame | None, day: pd.Timestamp, column: str = "timestamp") -> pd.DataFrame:
    """The rows of ``frame`` stamped inside the day (nothing of a later day is ever read)."""
    if frame is None or frame.empty:
        return pd.DataFrame(columns=[] if frame is None else frame.columns)
    ts = pd.to_datetime(frame[column], utc=True)
    return frame[(ts >= day) & (ts < day + pd.Timedelta(days=1))]


def _gene_distance(module_type: str, genome: Mapping[str, Any], ref: Mapping[str, Any]) -> float:
    parts = []
    for gene in MUTABLE_GENES.get(module_type, ()):
        if gene not in genome or gene not in ref:
            continue
        if gene == "horizon_minutes":
            parts.append(abs(_horizon_index(genome[gene]) - _horizon_index(ref[gene])) / (len(HORIZONS) - 1))
        else:
            lo, hi, _ = GENE_BOUNDS[gene]
            parts.append(abs(float(genome[gene]) - float(ref[gene])) / (hi - lo))
    return float(np.mean(parts)) if parts else 0.0


def _innovation(module_type: str, genome: Mapping[str, Any]) -> float:
    ref = FOUNDER_GENOMES.get(specialty(module_type, genome))
    if ref is None:
        return 0.0
    return _unit(min(1.0, _gene_distance(module_type, genome, ref) / INNOVATION_SCALE))


def _horizon_index(minutes: Any) -> int:
    m = int(minutes)
    return min(range(len(HORIZONS)), key=lambda i: abs(HORIZONS[i] - m))


def _learned_genome(rec: Mapping[str, Any], perf: Mapping[str, Any] | None) -> dict[str, Any]:
    """The genome after the day's learning (see the module docstring); a copy, changed or not."""
    genome = copy.deepcopy(dict(rec.get("genome") or {}))
    if perf is None or rec.get("module_type") != ALPHA or "min_edge" not in genome:
        return genome
    rate = perf.get("trading_plan_success_rate")
    if _missing(rate):
        return genome
    lr = float(rec.get("learning_rate") or 0.0)
    r = _hundredths(rate)
    step = lr if r < 50 else -lr if r >= 60 else 0.0
    if step:
        lo, hi, dec = GENE_BOUNDS["min_edge"]
        genome["min_edge"] = round(min(hi, max(lo, float(genome["min_edge"]) + step)), dec)
    return genome


def _peers(recs: Sequence[Mapping[str, Any]], rec: Mapping[str, Any]) -> list[str]:
    spec = specialty(rec["module_type"], rec["genome"])
    return sorted(
        str(r["module_id"]) for r in recs
        if _is_live(r) and r["module_id"] != rec["module_id"] and specialty(r["module_type"], r["genome"]) == spec
    )


# ----------------------------------------------------------------------------------------------- founders


def founding_population(start: pd.Timestamp) -> pd.DataFrame:
    """The five founders, born at ``start``.

    Output: the population frame (``POPULATION_COLUMNS``: every ``modules`` column plus ``name``, ``genome``).
    ``module_id = uuid5(NAMESPACE, "{module_type}:{name}")``: the same in every call and process.
    """
    ts = pd.Timestamp(start)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    rows = []
    for name, module_type, genome in FOUNDERS:
        rows.append({
            **_SEED_DEFAULTS,
            "module_id": str(uuid.uuid5(NAMESPACE, f"{module_type}:{name}")),
            "module_type": module_type,
            "module_version": "1.0.0",
            "parent_modules": [],
            "offspring_modules": [],
            "performance_history": [],
            "learning_patterns": {"name": name, "genome": copy.deepcopy(dict(genome))},
            "peer_ratings": {},
            "parent_performance": {},
            "created_at": ts,
            "last_updated": ts,
            "name": name,
            "genome": copy.deepcopy(dict(genome)),
        })
    return _population_frame(rows)


# ----------------------------------------------------------------------------------------------- messages


def _priority(signal_strength: Any) -> int:
    if _missing(signal_strength):
        return 3
    s = _hundredths(signal_strength)
    return 1 if s >= 70 else 2 if s >= 40 else 3


def _exit_time(plan: Mapping[str, Any]) -> pd.Timestamp | None:
    metrics = plan.get("performance_metrics")
    if isinstance(metrics, Mapping):
        for key in ("exit_time", "exit_timestamp"):
            if not _missing(metrics.get(key)):
                return pd.Timestamp(metrics[key])
    if not _missing(plan.get("valid_until")):
        return pd.Timestamp(plan["valid_until"])
    return None


def _utc(ts: pd.Timestamp) -> pd.Timestamp:
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def build_messages(
    day: pd.Timestamp, plans: pd.DataFrame, approvals: pd.DataFrame, population: pd.DataFrame
) -> pd.DataFrame:
    """The day's ``module_messages`` rows (exactly ``MESSAGE_COLUMNS``), sorted by timestamp, type, id.

    Inputs: ``plans`` (trading_plans columns with execution filled: plan_id, module_id, symbol, timestamp,
    signal_strength, direction, confidence_score, entry_price, stop_loss, take_profit, position_size,
    time_horizon, valid_until, execution_status, executed_price, executed_quantity, execution_cost, slippage,
    pnl, performance_metrics, ...), ``approvals`` (plan_id, decision_maker_module_id, approval_status, ...),
    ``population`` at the start of the day.
    """
    day = _day(day)
    day_end = _day_end(day)
    recs = _records(population)
    by_id = {str(r["module_id"]): r for r in recs}
    latency = {mid: int(r.get("communication_latency_ms") or 0) for mid, r in by_id.items()}
    decider: dict[str, str] = {}
    if approvals is not None and not approvals.empty:
        for plan_id, dm in zip(approvals["plan_id"], approvals["decision_maker_module_id"], strict=True):
            if not _missing(dm):
                decider[str(plan_id)] = str(dm)
    trader = _acting(recs, TRADER)
    rows: list[dict[str, Any]] = []

    def add(mtype: str, key: str, sender: str | None, receiver: str | None, ts: pd.Timestamp,
            data: Mapping[str, Any], priority: int, ttl: int, missing_receiver: str | None = None) -> None:
        if receiver is None and missing_receiver is not None:
            status, error = "failed", missing_receiver
        elif receiver is None or (receiver in by_id and _is_live(by_id[receiver])):
            status, error = "delivered", None
        elif receiver in by_id:
            r = by_id[receiver]
            status = "failed"
            error = f"receiver {receiver} is not active (status {r['status']}, lifecycle {r['lifecycle_stage']})"
        else:
            status, error = "failed", f"receiver {receiver} is not a known module"
        rows.append({
            "message_id": _uuid("message", mtype, key),
            "sender_module_id": sender,
            "receiver_module_id": receiver,
            "timestamp": ts,
            "message_type": mtype,
            "message_data": _plain(data),
            "priority": priority,
            "ttl_seconds": ttl,
            "status": status,
            "delivery_attempts": 1,
            "last_delivery_attempt": ts + pd.Timedelta(milliseconds=latency.get(str(sender), 0)),
            "error_message": error,
        })

    plan_rows = [] if plans is None or plans.empty else plans.to_dict("records")
    for p in plan_rows:
        plan_id, module_id = str(p["plan_id"]), str(p["module_id"])
        ts = _utc(pd.Timestamp(p["timestamp"]))
        valid_until = None if _missing(p.get("valid_until")) else _utc(pd.Timestamp(p["valid_until"]))
        ttl = max(60, int((valid_until - ts).total_seconds())) if valid_until is not None else 3600
        data = {k: p.get(k) for k in (
            "plan_id", "symbol", "direction", "signal_strength", "confidence_score", "entry_price", "stop_loss",
            "take_profit", "position_size", "time_horizon", "risk_reward_ratio", "valid_until", "event_id",
        )}
        add("trading_plan", plan_id, module_id, decider.get(plan_id), ts, data, _priority(p.get("signal_strength")),
            ttl, missing_receiver="no decision maker decided this plan")
        if p.get("execution_status") in ("executed", "partial"):
            exit_ts = _exit_time(p)
            fb_ts = ts if exit_ts is None else min(max(_utc(exit_ts), ts), day_end)
            feedback = {k: p.get(k) for k in (
                "plan_id", "symbol", "execution_status", "executed_price", "executed_quantity", "execution_cost",
                "slippage", "pnl",
            )}
            metrics = p.get("performance_metrics")
            if isinstance(metrics, Mapping):
                feedback["performance_metrics"] = metrics
            add("execution_feedback", plan_id, None if trader is None else str(trader["module_id"]), module_id,
                fb_ts, feedback, _priority(p.get("signal_strength")), 3600)

    plans_by_module: dict[str, list[Mapping[str, Any]]] = {}
    for p in plan_rows:
        plans_by_module.setdefault(str(p["module_id"]), []).append(p)
    for r in recs:
        if not _is_live(r):
            continue
        mid = str(r["module_id"])
        own = plans_by_module.get(mid, [])
        executed = [p for p in own if p.get("execution_status") in ("executed", "partial")]
        pnl = sum(float(p["pnl"]) for p in executed if not _missing(p.get("pnl")))
        data = {
            "module_id": mid, "name": r["name"], "module_type": r["module_type"],
            "specialty": specialty(r["module_type"], r["genome"]), "day": _iso_day(day),
            "plans": len(own), "executed": len(executed), "pnl": round(pnl, 8), "genome": r["genome"],
        }
        add("intelligence_broadcast", f"{mid}|{_iso_day(day)}", mid, None, day_end, data, 3, 86_400)

    frame = _frame(rows, "module_messages", MESSAGE_COLUMNS)
    return frame.sort_values(["timestamp", "message_type", "message_id"], kind="stable").reset_index(drop=True)


# ----------------------------------------------------------------------------------------------- sharing


def share_intelligence(day: pd.Timestamp, performance: pd.DataFrame, population: pd.DataFrame) -> pd.DataFrame:
    """The day's ``module_intelligence_sharing`` rows (exactly ``SHARING_COLUMNS``).

    Inputs: ``performance`` (module_performance columns; rows of the day are used), ``population`` at the start
    of the day. Sorted by timestamp, intelligence_type, sender.
    """
    day = _day(day)
    day_end = _day_end(day)
    recs = _records(population)
    by_id = {str(r["module_id"]): r for r in recs}
    perf = _day_rows(performance, day)
    rows: list[dict[str, Any]] = []

    def add(itype: str, rec: Mapping[str, Any], ts: pd.Timestamp, data: Mapping[str, Any],
            score: float | None, confidence: float | None, priority: int) -> None:
        peers = _peers(recs, rec)
        rows.append({
            "sharing_id": _uuid("sharing", itype, rec["module_id"], _iso_day(day)),
            "sender_module_id": str(rec["module_id"]),
            "timestamp": ts,
            "intelligence_type": itype,
            "intelligence_data": data,
            "performance_score": score,
            "confidence_level": confidence,
            "last_updated": ts,
            "target_modules": peers or None,
            "sharing_scope": "targeted" if peers else "broadcast",
            "sharing_priority": priority,
        })

    for p in perf.to_dict("records"):
        rec = by_id.get(str(p["module_id"]))
        if rec is None:
            continue
        score = _unit(p["performance_score"])
        consistency = None if _missing(p.get("consistency_score")) else _unit(p["consistency_score"])
        data = {k: p.get(k) for k in (
            "performance_id", "performance_score", "consistency_score", "trading_plan_success_rate",
            "execution_quality", "risk_adjusted_returns", "sharpe_ratio", "max_drawdown", "market_regime",
            "time_horizon",
        )}
        data["day"] = _iso_day(day)
        data["specialty"] = specialty(rec["module_type"], rec["genome"])
        s = _hundredths(score)
        add("performance_update", rec, day_end, data, score, consistency, 1 if s >= 70 or s < 30 else 3)
        learned = _learned_genome(rec, p)
        changed = {g: {"from": rec["genome"].get(g), "to": v} for g, v in learned.items()
                   if rec["genome"].get(g) != v}
        if changed:
            add("learning_update", rec, day_end, {"genes": changed, "learning_rate": rec.get("learning_rate")},
                score, consistency, 2)

    for rec in recs:
        if _is_live(rec) and _utc(pd.Timestamp(rec["created_at"])) == day:
            data = {
                "name": rec["name"], "module_type": rec["module_type"],
                "specialty": specialty(rec["module_type"], rec["genome"]), "genome": rec["genome"],
                "module_version": rec["module_version"], "generational_depth": rec["generational_depth"],
                "parent_modules": rec["parent_modules"],
            }
            add("capability_update", rec, day, data, None, None, 2)

    frame = _frame(rows, "module_intelligence_sharing", SHARING_COLUMNS)
    return frame.sort_values(["timestamp", "intelligence_type", "sender_module_id"], kind="stable").reset_index(
        drop=True
    )


# ------------------------------------------------------------------------------------- population update


def _message_graph(live: Sequence[str], direct: pd.DataFrame) -> nx.Graph:
    graph = nx.Graph()
    graph.add_nodes_from(live)
    nodes = set(live)
    for s, r in zip(direct["sender_module_id"], direct["receiver_module_id"], strict=True):
        if s in nodes and r in nodes and s != r:
            graph.add_edge(s, r)
    return graph


def _plan_id(data: Any) -> str | None:
    if isinstance(data, Mapping) and not _missing(data.get("plan_id")):
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
    day = _day(day)
    day_end = _day_end(day)
    recs = _records(population)
    perf = {str(p["module_id"]): p for p in _day_rows(performance, day).to_dict("records")}
    msgs = _day_rows(messages, day)
    live_ids = [str(r["module_id"]) for r in recs if _is_live(r)]
    live_set = set(live_ids)

    if msgs.empty:
        msgs = pd.DataFrame(columns=list(MESSAGE_COLUMNS))
    msgs = msgs.assign(
        plan_id=[_plan_id(d) for d in msgs["message_data"]],
        symbol=[d.get("symbol") if isinstance(d, Mapping) else None for d in msgs["message_data"]],
    )
    delivered = msgs["status"] == "delivered"
    direct = msgs[delivered & msgs["receiver_module_id"].notna()
                  & (msgs["sender_module_id"] != msgs["receiver_module_id"])]
    plan_msgs = msgs[msgs["message_type"].isin(["trading_plan", "execution_feedback"]) & msgs["plan_id"].notna()]
    completed = set(msgs.loc[msgs["message_type"] == "execution_feedback", "plan_id"].dropna())
    plan_symbol = dict(zip(plan_msgs["plan_id"], plan_msgs["symbol"], strict=True))
    n_symbols = msgs.loc[msgs["message_type"] == "trading_plan", "symbol"].dropna().nunique()

    centrality = nx.degree_centrality(_message_graph(live_ids, direct)) if live_ids else {}

    # plan ids each module touched, and per (module, peer) pair
    touched: dict[str, set[str]] = {}
    pair_plans: dict[tuple[str, str], set[str]] = {}
    for s, r, pid in zip(plan_msgs["sender_module_id"], plan_msgs["receiver_module_id"], plan_msgs["plan_id"],
                         strict=True):
        for m in (s, r):
            if not _missing(m):
                touched.setdefault(str(m), set()).add(pid)
    for s, r, pid in zip(direct["sender_module_id"], direct["receiver_module_id"], direct["plan_id"], strict=True):
        if pid is None:
            continue
        pair_plans.setdefault((str(s), str(r)), set()).add(pid)
        pair_plans.setdefault((str(r), str(s)), set()).add(pid)

    received = msgs["receiver_module_id"].dropna().value_counts().to_dict()
    broadcasters = set(msgs.loc[(msgs["message_type"] == "intelligence_broadcast") & delivered,
                                "sender_module_id"].dropna())
    ends = pd.concat([
        pd.DataFrame({"m": msgs["sender_module_id"], "t": msgs["timestamp"]}),
        pd.DataFrame({"m": msgs["receiver_module_id"], "t": msgs["timestamp"]}),
    ]).dropna()
    if ends.empty:
        throughput: dict[str, int] = {}
    else:
        ends["sec"] = pd.to_datetime(ends["t"], utc=True).dt.floor("s")
        throughput = {str(k): int(v) for k, v in ends.groupby(["m", "sec"]).size().groupby(level=0).max().items()}

    last_birth: dict[str, pd.Timestamp] = {}
    for r in recs:
        born = _utc(pd.Timestamp(r["created_at"]))
        for parent in r["parent_modules"]:
            if str(parent) not in last_birth or born > last_birth[str(parent)]:
                last_birth[str(parent)] = born
    cooldown_after = day + pd.Timedelta(days=1) - pd.Timedelta(days=COOLDOWN_DAYS)
    oldest_kept = _iso_day(day - pd.Timedelta(days=HISTORY_DAYS - 1))

    for rec in recs:
        mid = str(rec["module_id"])
        if mid not in live_set:
            continue
        p = perf.get(mid)
        history = [e for e in rec["performance_history"] if e.get("day") != _iso_day(day)]
        if p is not None and not _missing(p.get("performance_score")):
            history.append({"day": _iso_day(day), "score": _unit(p["performance_score"])})
        history = sorted((e for e in history if str(e.get("day")) >= oldest_kept), key=lambda e: str(e["day"]))
        rec["performance_history"] = history
        rec["genome"] = _learned_genome(rec, p)
        rec["learning_patterns"] = {"name": rec["name"], "genome": copy.deepcopy(rec["genome"])}
        rec["innovation_score"] = _innovation(rec["module_type"], rec["genome"])

        mine = touched.get(mid, set())
        if n_symbols > 1 and mine:
            shares = pd.Series([plan_symbol.get(pid) for pid in sorted(mine)]).value_counts(normalize=True)
            hhi = float((shares**2).sum())
            rec["specialization_index"] = _unit((hhi - 1 / n_symbols) / (1 - 1 / n_symbols))

        ratings = {q: v for q, v in rec["peer_ratings"].items() if q in live_set and q != mid}
        for (a, q), plan_ids in pair_plans.items():
            if a == mid and q in live_set:
                ratings[q] = _unit(len(plan_ids & completed) / len(plan_ids))
        rec["peer_ratings"] = dict(sorted(ratings.items()))
        rec["collaboration_score"] = _unit(np.mean(list(ratings.values()))) if ratings else 0.0
        rec["network_centrality"] = _unit(centrality.get(mid, 0.0))
        shared = 1.0 if mid in broadcasters else 0.0
        rec["intelligence_sharing_rate"] = _unit(
            SHARING_DECAY * float(rec["intelligence_sharing_rate"] or 0.0) + (1 - SHARING_DECAY) * shared
        )
        rec["communication_latency_ms"] = BASE_LATENCY_MS.get(rec["module_type"], 0) + int(received.get(mid, 0)) // 10
        rec["message_throughput_per_sec"] = throughput.get(mid, 0)

        cents = [_hundredths(e["score"]) for e in history]
        n = len(cents)
        if n >= DEPRECATE_DAYS and all(c < DEPRECATE_BELOW for c in cents[-DEPRECATE_DAYS:]):
            rec["lifecycle_stage"], rec["status"] = "deprecated", "inactive"
        elif (rec["lifecycle_stage"] == "experimental" and n >= PROMOTE_DAYS
              and sum(cents[-PROMOTE_DAYS:]) >= PROMOTE_MIN * PROMOTE_DAYS):
            rec["lifecycle_stage"] = "active"

        cooling = mid in last_birth and last_birth[mid] > cooldown_after
        if not _is_live(rec) or n < READINESS_MIN_DAYS or cooling:
            rec["replication_readiness"] = 0.0
        else:
            window = np.array(cents[-READINESS_WINDOW:], dtype=float) / 100
            rec["replication_readiness"] = _unit(
                window.mean() * (1 - window.std()) * min(1.0, n / READINESS_WINDOW)
            )
        rec["last_updated"] = day_end
    return _population_frame(recs)


# ----------------------------------------------------------------------------------------------- triggers


def market_regime(bars: pd.DataFrame, end: pd.Timestamp) -> tuple[str | None, float]:
    """The regime label and pooled trend z of the 120 bars before ``end`` (None, NaN without enough bars)."""
    if bars is None or bars.empty:
        return None, float("nan")
    end = _utc(pd.Timestamp(end))
    ts = pd.to_datetime(bars["timestamp"], utc=True)
    window = bars[(ts >= end - pd.Timedelta(minutes=REGIME_BARS)) & (ts < end)]
    stats = []
    for _, g in window.sort_values(["symbol", "timestamp"], kind="stable").groupby("symbol", sort=True):
        close = g["close"].to_numpy(dtype="float64")
        if len(close) < REGIME_MIN_BARS or not np.all(close > 0):
            continue
        r = np.diff(np.log(close))
        sd = float(r.std(ddof=1)) if len(r) > 1 else 0.0
        stats.append(float(r.sum() / (sd * math.sqrt(len(r)))) if sd > 0 else 0.0)
    if not stats:
        return None, float("nan")
    z = float(np.mean(stats) * math.sqrt(len(stats)))
    label = "trending_up" if z > REGIME_Z else "trending_down" if z < -REGIME_Z else "ranging"
    return label, z


def replication_triggers(
    day: pd.Timestamp, population: pd.DataFrame, performance: pd.DataFrame, bars: pd.DataFrame
) -> pd.DataFrame:
    """The day's ``module_replication_triggers`` rows (exactly ``TRIGGER_COLUMNS``), status 'active'.

    Inputs: ``population`` after ``update_population``, ``performance`` (the day's rows: module_id,
    performance_score), ``bars`` (symbol, timestamp, close; ``[day - 2 hours, day + 1 day)``).
    """
    day = _day(day)
    day_end = _day_end(day)
    recs = _records(population)
    perf = _day_rows(performance, day)
    today = {str(m): float(s) for m, s in zip(perf.get("module_id", []), perf.get("performance_score", []),
                                               strict=True) if not _missing(s)}
    rows: list[dict[str, Any]] = []

    def add(ttype: str, key: str, module_id: str, data: Mapping[str, Any], priority: int) -> None:
        rows.append({
            "trigger_id": _uuid("trigger", ttype, key, _iso_day(day)), "module_id": module_id,
            "timestamp": day_end, "trigger_type": ttype, "trigger_data": data, "trigger_priority": priority,
            "status": "active", "processed_at": None, "replication_id": None,
        })

    for rec in recs:
        if not _is_live(rec):
            continue
        readiness, threshold = rec["replication_readiness"], rec["adaptation_threshold"]
        if _hundredths(readiness) >= _hundredths(threshold):
            add("performance_threshold", str(rec["module_id"]), str(rec["module_id"]), {
                "replication_readiness": readiness, "adaptation_threshold": threshold,
                "recent_scores": _scores(rec)[-READINESS_WINDOW:],
            }, 2)

    specs = list(SPECIALTIES) + sorted({specialty(r["module_type"], r["genome"]) for r in recs} - set(SPECIALTIES))
    for spec in specs:
        members = [r for r in recs if specialty(r["module_type"], r["genome"]) == spec]
        live = [r for r in members if _is_live(r)]
        if not members:
            continue
        if len(live) < MIN_LIVE_PER_SPECIALTY:
            parent = _best(live, today)[0] if live else _best(members)[0]
            add("diversity_gap", spec, str(parent["module_id"]), {
                "specialty": spec, "live_modules": len(live), "required": MIN_LIVE_PER_SPECIALTY,
            }, 1 if not live else 2)
        live_scores = [today.get(str(r["module_id"])) for r in live]
        if live and all(s is not None and _hundredths(s) < FAILURE_BELOW for s in live_scores):
            parents = [str(r["module_id"]) for r in _best(members)[:2]]
            best_live = _best(live, today)[0]
            add("failure_recovery", spec, str(best_live["module_id"]), {
                "specialty": spec, "scores": {str(r["module_id"]): s for r, s in zip(live, live_scores,
                                                                                     strict=True)},
                "below": FAILURE_BELOW / 100, "parents": parents,
            }, 1)

    before, z_before = market_regime(bars, day)
    after, z_after = market_regime(bars, day + pd.Timedelta(days=1))
    if before is not None and after is not None and before != after:
        alphas = [r for r in recs if _is_live(r) and r["module_type"] == ALPHA]
        scored = [r for r in alphas if str(r["module_id"]) in today]
        pool = scored or alphas
        if pool:
            parent = _best(pool, today if scored else None)[0]
            add("regime_change", "market", str(parent["module_id"]), {
                "previous_regime": before, "regime": after, "previous_z": round(z_before, 4),
                "z": round(z_after, 4), "window_minutes": REGIME_BARS,
            }, 3)

    frame = _frame(rows, "module_replication_triggers", TRIGGER_COLUMNS)
    order = frame["trigger_type"].map({t: i for i, t in enumerate(TRIGGER_TYPES)})
    frame = frame.assign(_order=order).sort_values(
        ["trigger_priority", "_order", "module_id", "trigger_id"], kind="stable"
    )
    return frame.drop(columns="_order").reset_index(drop=True)


# -------------------------------------------------------------------------------------------- replication


def _step_gene(gene: str, old: Any, z: float) -> Any:
    """One mutation of ``gene`` from ``old`` by the standard-normal draw ``z`` (always a different value)."""
    direction = 1 if z >= 0 else -1
    if gene == "horizon_minutes":
        i = _horizon_index(old) + direction
        if not 0 <= i < len(HORIZONS):
            i = _horizon_index(old) - direction
        return HORIZONS[i]
    lo, hi, dec = GENE_BOUNDS[gene]
    unit = 10.0**-dec
    new = float(old) + z * MUTATION_SIGMA * (hi - lo)
    if new > hi:
        new = 2 * hi - new
    if new < lo:
        new = 2 * lo - new
    new = round(min(hi, max(lo, new)), dec)
    if new == round(float(old), dec):
        new = round(float(old) + direction * unit, dec)
        if not lo <= new <= hi:
            new = round(float(old) - direction * unit, dec)
    return int(new) if dec == 0 else float(new)


def _child_genome(
    module_type: str, parents: Sequence[Mapping[str, Any]], rate: float, rng: np.random.Generator
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
    genome = copy.deepcopy(dict(parents[0]["genome"]))
    genes = [g for g in MUTABLE_GENES.get(module_type, ()) if g in genome]
    # every draw is made whatever its outcome, so one gene's fate never shifts another's random numbers
    cross = rng.random(len(genes))
    u = rng.random(len(genes))
    z = rng.standard_normal(len(genes))
    recombination = None
    if len(parents) > 1:
        other = parents[1]["genome"]
        taken = {}
        for gene, c in zip(genes, cross, strict=True):
            if c < CROSSOVER_P and gene in other and other[gene] != genome[gene]:
                taken[gene] = copy.deepcopy(other[gene])
                genome[gene] = copy.deepcopy(other[gene])
        recombination = {"parents": [str(p["module_id"]) for p in parents[:2]], "crossover_p": CROSSOVER_P,
                         "from_second_parent": taken}
    mutated = u < rate
    if genes and not mutated.any():
        mutated[int(np.argmin(u))] = True
    applied = {}
    for gene, m, zi in zip(genes, mutated, z, strict=True):
        if m:
            new = _step_gene(gene, genome[gene], float(zi))
            if new != genome[gene]:
                applied[gene] = {"from": genome[gene], "to": new}
                genome[gene] = new
    return genome, applied, recombination


def replicate(
    day: pd.Timestamp, triggers: pd.DataFrame, population: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Children for the day's triggers, within the caps; formulas in the module docstring.

    Inputs: ``triggers`` from ``replication_triggers`` (processed in their order), ``population`` after
    ``update_population``. Output: (``module_replications`` rows = ``REPLICATION_COLUMNS``, the triggers with
    status / processed_at / replication_id set = ``TRIGGER_COLUMNS``, the population with the children appended
    and the parents' offspring updated = ``POPULATION_COLUMNS``).
    """
    day = _day(day)
    day_end = _day_end(day)
    birth = day + pd.Timedelta(days=1)
    recs = _records(population)
    by_id = {str(r["module_id"]): r for r in recs}
    live = sum(1 for r in recs if _is_live(r))
    made = 0
    replications: list[dict[str, Any]] = []
    out_triggers: list[dict[str, Any]] = []
    trigger_rows = [] if triggers is None or triggers.empty else triggers.to_dict("records")

    for t in trigger_rows:
        t = {c: copy.deepcopy(t.get(c)) for c in TRIGGER_COLUMNS}
        data = t["trigger_data"] if isinstance(t["trigger_data"], Mapping) else {}
        parent_ids = [str(p) for p in data.get("parents") or [t["module_id"]]]
        parents = [by_id[p] for p in parent_ids if p in by_id]
        if made >= MAX_REPLICATIONS_PER_DAY or live >= POPULATION_CAP or not parents:
            t["status"], t["processed_at"], t["replication_id"] = "expired", None, None
            out_triggers.append(t)
            continue
        primary = parents[0]
        ttype = str(t["trigger_type"])
        replication_id = _uuid("replication", t["trigger_id"])
        child_id = _uuid("module", replication_id)
        rng = _rng(primary["module_id"], _iso_day(day), ttype)
        genome, mutation, recombination = _child_genome(
            primary["module_type"], parents, float(primary["mutation_rate"]), rng
        )
        depth = max(int(p["generational_depth"]) for p in parents) + 1
        base_name = str(primary["name"]).split("~")[0]
        spec = specialty(primary["module_type"], primary["genome"])
        child = {
            **_SEED_DEFAULTS,
            "module_id": child_id,
            "module_type": primary["module_type"],
            "module_version": f"1.0.0+g{depth}",
            "parent_modules": [str(p["module_id"]) for p in parents],
            "offspring_modules": [],
            "generational_depth": depth,
            "learning_rate": primary["learning_rate"],
            "adaptation_threshold": primary["adaptation_threshold"],
            "performance_history": [],
            "learning_patterns": {"name": f"{base_name}~{child_id[:8]}", "genome": copy.deepcopy(genome)},
            "innovation_score": _innovation(primary["module_type"], genome),
            "peer_ratings": {},
            "parent_performance": {
                str(p["module_id"]): {
                    "last_score": _scores(p)[-1] if _scores(p) else None,
                    "mean_score": round(_mean_score(p), 4) if _scores(p) else None,
                    "scored_days": len(_scores(p)),
                } for p in parents
            },
            "mutation_rate": primary["mutation_rate"],
            "recombination_rate": primary["recombination_rate"],
            "created_at": birth,
            "last_updated": birth,
            "name": f"{base_name}~{child_id[:8]}",
            "genome": genome,
        }
        for p in parents:
            p["offspring_modules"] = [*p["offspring_modules"], child_id]
            p["offspring_count"] = int(p["offspring_count"]) + 1
        recs.append(child)
        by_id[child_id] = child
        live += 1
        made += 1
        threshold = (primary["adaptation_threshold"] if ttype == "performance_threshold"
                     else FAILURE_BELOW / 100 if ttype == "failure_recovery" else None)
        same = [r for r in recs if _is_live(r) and specialty(r["module_type"], r["genome"]) == spec]
        replications.append({
            "replication_id": replication_id,
            "parent_module_id": str(primary["module_id"]),
            "child_module_id": child_id,
            "timestamp": day_end,
            "trigger_type": ttype,
            "trigger_data": data,
            "replication_reason": _reason(ttype, data, primary),
            "target_capabilities": {
                "module_type": primary["module_type"], "specialty": spec,
                "anomaly_types": genome.get("anomaly_types"),
                "genes": list(MUTABLE_GENES.get(primary["module_type"], ())),
            },
            "performance_threshold": threshold,
            "diversity_requirements": {
                "specialty": spec, "min_live_per_specialty": MIN_LIVE_PER_SPECIALTY, "live_with_child": len(same),
            },
            "replication_status": "completed",
            "creation_time_ms": None,
            "validation_time_ms": None,
            "initialization_time_ms": None,
            "inherited_intelligence": {
                "genome": primary["genome"], "learning_rate": primary["learning_rate"],
                "adaptation_threshold": primary["adaptation_threshold"],
                "mutation_rate": primary["mutation_rate"], "recombination_rate": primary["recombination_rate"],
                "generational_depth": int(primary["generational_depth"]),
            },
            "mutation_applied": mutation,
            "recombination_applied": recombination,
        })
        t["status"], t["processed_at"], t["replication_id"] = "processed", day_end, replication_id
        out_triggers.append(t)

    return (
        _frame(replications, "module_replications", REPLICATION_COLUMNS),
        _frame(out_triggers, "module_replication_triggers", TRIGGER_COLUMNS),
        _population_frame(recs),
    )


def _reason(ttype: str, data: Mapping[str, Any], parent: Mapping[str, Any]) -> str:
    if ttype == "performance_threshold":
        return (f"replication readiness {data.get('replication_readiness')} reached the adaptation threshold "
                f"{data.get('adaptation_threshold')} of {parent['name']}")
    if ttype == "diversity_gap":
        return (f"specialty {data.get('specialty')} has {data.get('live_modules')} live module(s), fewer than "
                f"{data.get('required')}")
    if ttype == "failure_recovery":
        return f"every live module of {data.get('specialty')} scored below {data.get('below')}: recombine the best"
    return f"market regime changed from {data.get('previous_regime')} to {data.get('regime')}"


# ----------------------------------------------------------------------------------------------- writing


def population_rows(population: pd.DataFrame) -> pd.DataFrame:
    """The ``modules`` rows to write (exactly ``MODULE_COLUMNS``): name and genome folded into
    ``learning_patterns = {"name": name, "genome": genome}``."""
    recs = _records(population)
    for r in recs:
        r["learning_patterns"] = {"name": r["name"], "genome": r["genome"]}
    return _frame(recs, "modules", MODULE_COLUMNS)


def population_to_json(population: pd.DataFrame) -> str:
    """The population as canonical JSON text (sorted keys, times ISO): the carried state between days."""
    recs = [{c: _plain(r[c]) for c in POPULATION_COLUMNS} for r in _records(population)]
    return json.dumps(recs, sort_keys=True, separators=(",", ":"))


def population_from_json(text: str) -> pd.DataFrame:
    """The inverse of ``population_to_json``: the same frame, column kinds included."""
    return _population_frame(json.loads(text))
