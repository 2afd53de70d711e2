"""What the ecosystem modules share: the tables' columns and dtypes, the rules' constants, frame building,
the learning rule, and the population's stored forms (``modules`` rows, the JSON state carried between days).

Pure: pandas/numpy (networkx for graph measures) in, pandas out; no Dagster, no SQL, no wall clock, no global
random state. The daily loop that calls these functions, and the frames it passes, are in
``docs/ecosystem.md``.

Conventions
-----------
``day`` is 00:00 UTC; the day is ``[day, day + 1 day)``. End-of-day rows (broadcasts, sharing, triggers,
replications, ``last_updated``) are stamped ``day_end = day + 23:59``. A child is born at ``day + 1 day``
(``created_at``): it trades from the next day. Ids are UUIDv5 under ``population.ECOSYSTEM_NAMESPACE`` of
natural keys; random draws come from ``numpy.random.default_rng`` seeded by SHA-256 of
``"{parent_id}|{YYYY-MM-DD}|{trigger_type}"``. Rates are DECIMAL(3,2): rounded to 2 places and clipped to
[0, 1]. Threshold comparisons on 2-place values are made in integer hundredths so that 0.50 means exactly
0.50. JSON columns hold dicts/lists of plain Python values (no numpy scalars, no NaN).


Learning: an alpha module scored with a ``trading_plan_success_rate`` r tunes its entry filter ``min_edge`` by
its ``learning_rate`` lr: r < 0.50 -> min_edge + lr (fewer, stronger signals), r >= 0.60 -> min_edge - lr
(more trades), else unchanged; clipped to the gene's bounds, 4 places. Other modules do not learn (their
genomes are a risk policy and a cost model, changed only by replication).

"""

from __future__ import annotations

import copy
import datetime as dt
import decimal
import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from tis_pipeline.trading_day.population import (
    ALPHA,
    DECISION,
    GENE_BOUNDS,
    TRADER,
    is_missing,
    mean_score,
)
from tis_pipeline.trading_day.population import (
    is_live as is_live,  # noqa: PLC0414 -- explicit re-export: callers use common.is_live
)

MODULE_COLUMNS: tuple[str, ...] = (
    "module_id",
    "module_type",
    "module_version",
    "parent_modules",
    "offspring_modules",
    "generational_depth",
    "learning_rate",
    "adaptation_threshold",
    "performance_history",
    "learning_patterns",
    "innovation_score",
    "specialization_index",
    "communication_latency_ms",
    "message_throughput_per_sec",
    "intelligence_sharing_rate",
    "collaboration_score",
    "peer_ratings",
    "network_centrality",
    "replication_readiness",
    "parent_performance",
    "mutation_rate",
    "recombination_rate",
    "offspring_count",
    "lifecycle_stage",
    "created_at",
    "last_updated",
    "status",
)
POPULATION_COLUMNS: tuple[str, ...] = (*MODULE_COLUMNS, "name", "genome")
MESSAGE_COLUMNS: tuple[str, ...] = (
    "message_id",
    "sender_module_id",
    "receiver_module_id",
    "timestamp",
    "message_type",
    "message_data",
    "priority",
    "ttl_seconds",
    "status",
    "delivery_attempts",
    "last_delivery_attempt",
    "error_message",
)
SHARING_COLUMNS: tuple[str, ...] = (
    "sharing_id",
    "sender_module_id",
    "timestamp",
    "intelligence_type",
    "intelligence_data",
    "performance_score",
    "confidence_level",
    "last_updated",
    "target_modules",
    "sharing_scope",
    "sharing_priority",
)
REPLICATION_COLUMNS: tuple[str, ...] = (
    "replication_id",
    "parent_module_id",
    "child_module_id",
    "timestamp",
    "trigger_type",
    "trigger_data",
    "replication_reason",
    "target_capabilities",
    "performance_threshold",
    "diversity_requirements",
    "replication_status",
    "creation_time_ms",
    "validation_time_ms",
    "initialization_time_ms",
    "inherited_intelligence",
    "mutation_applied",
    "recombination_applied",
)
TRIGGER_COLUMNS: tuple[str, ...] = (
    "trigger_id",
    "module_id",
    "timestamp",
    "trigger_type",
    "trigger_data",
    "trigger_priority",
    "status",
    "processed_at",
    "replication_id",
)

# column kinds: s = str (nullable), t = UTC timestamp, i = int64, I = nullable Int64, f = float64, j = JSON
_KINDS: dict[str, dict[str, str]] = {
    "modules": {
        **dict.fromkeys(MODULE_COLUMNS, "f"),
        **dict.fromkeys(("module_id", "module_type", "module_version", "lifecycle_stage", "status"), "s"),
        **dict.fromkeys(
            (
                "parent_modules",
                "offspring_modules",
                "performance_history",
                "learning_patterns",
                "peer_ratings",
                "parent_performance",
            ),
            "j",
        ),
        **dict.fromkeys(
            (
                "generational_depth",
                "communication_latency_ms",
                "message_throughput_per_sec",
                "offspring_count",
            ),
            "i",
        ),
        **dict.fromkeys(("created_at", "last_updated"), "t"),
    },
    "module_messages": {
        **dict.fromkeys(
            (
                "message_id",
                "sender_module_id",
                "receiver_module_id",
                "message_type",
                "status",
                "error_message",
            ),
            "s",
        ),
        "timestamp": "t",
        "last_delivery_attempt": "t",
        "message_data": "j",
        **dict.fromkeys(("priority", "ttl_seconds", "delivery_attempts"), "i"),
    },
    "module_intelligence_sharing": {
        **dict.fromkeys(("sharing_id", "sender_module_id", "intelligence_type", "sharing_scope"), "s"),
        "timestamp": "t",
        "last_updated": "t",
        "intelligence_data": "j",
        "target_modules": "j",
        "performance_score": "f",
        "confidence_level": "f",
        "sharing_priority": "i",
    },
    "module_replications": {
        **dict.fromkeys(
            (
                "replication_id",
                "parent_module_id",
                "child_module_id",
                "trigger_type",
                "replication_reason",
                "replication_status",
            ),
            "s",
        ),
        "timestamp": "t",
        "performance_threshold": "f",
        **dict.fromkeys(
            (
                "trigger_data",
                "target_capabilities",
                "diversity_requirements",
                "inherited_intelligence",
                "mutation_applied",
                "recombination_applied",
            ),
            "j",
        ),
        **dict.fromkeys(("creation_time_ms", "validation_time_ms", "initialization_time_ms"), "I"),
    },
    "module_replication_triggers": {
        **dict.fromkeys(("trigger_id", "module_id", "trigger_type", "status", "replication_id"), "s"),
        "timestamp": "t",
        "processed_at": "t",
        "trigger_data": "j",
        "trigger_priority": "i",
    },
}
_KINDS["population"] = {**_KINDS["modules"], "name": "s", "genome": "j"}
# the columns holding Python dicts/lists, per table (the store serialises them with
# json.dumps(sort_keys=True))
JSON_COLUMNS: Mapping[str, tuple[str, ...]] = {
    table: tuple(c for c, k in kinds.items() if k == "j") for table, kinds in _KINDS.items()
}

BASE_LATENCY_MS: Mapping[str, int] = {ALPHA: 5, DECISION: 2, TRADER: 1}

HISTORY_DAYS = 30
PROMOTE_DAYS = 3  # scored days before a module may graduate
# plans taken to their end (the history's n) behind a promotion or a retirement on risk-adjusted return: the
# real data gives an alpha 2-6 trades over two months, so a larger bar would leave every module untested
LIFECYCLE_MIN_SAMPLE = 3
RAR_WINDOW = 10  # scored days summed into the trailing risk-adjusted return compared with the peers'
DEPRECATE_DAYS, DEPRECATE_BELOW = 5, 30  # hundredths
FAILURE_BELOW = 30  # hundredths
READINESS_MIN_DAYS, READINESS_WINDOW, COOLDOWN_DAYS = 3, 5, 5
MIN_LIVE_PER_SPECIALTY = 2
MAX_REPLICATIONS_PER_DAY = 3
POPULATION_CAP = 30
SHARING_DECAY = 0.8
CONFIDENCE_DAYS = 10  # scored days behind full confidence in a shared score
LEARNED_KEPT = 20  # lessons kept in learning_patterns['learned']
INNOVATION_SCALE = 0.10
MUTATION_SIGMA = 0.10  # of the gene's span
CROSSOVER_P = 0.5
REGIME_BARS, REGIME_MIN_BARS, REGIME_Z = 120, 30, 1.5
TRIGGER_TYPES: tuple[str, ...] = (
    "failure_recovery",
    "diversity_gap",
    "performance_threshold",
    "regime_change",
)

SEED_DEFAULTS: Mapping[str, Any] = {
    "generational_depth": 0,
    "learning_rate": 0.01,
    "adaptation_threshold": 0.7,
    "innovation_score": 0.0,
    "specialization_index": 0.0,
    "communication_latency_ms": 0,
    "message_throughput_per_sec": 0,
    "intelligence_sharing_rate": 0.0,
    "collaboration_score": 0.0,
    "network_centrality": 0.0,
    "replication_readiness": 0.0,
    "mutation_rate": 0.1,
    "recombination_rate": 0.1,
    "offspring_count": 0,
    "lifecycle_stage": "experimental",
    "status": "active",
}


def day_start(day: pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(day)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.floor("D")


def day_end_stamp(day: pd.Timestamp) -> pd.Timestamp:
    return day + pd.Timedelta(days=1) - pd.Timedelta(minutes=1)


def iso_day(day: pd.Timestamp) -> str:
    return day.strftime("%Y-%m-%d")


def seeded_rng(*parts: object) -> np.random.Generator:
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def hundredths(x: float) -> int:
    return round(float(x) * 100)


def plain(v: Any) -> Any:
    """A JSON-serialisable plain Python value (numpy scalars unwrapped, NaN/NaT -> None, times ISO)."""
    # the plain kinds most values are, answered before the chain of isinstance checks below (same answers)
    kind = type(v)
    if kind is str or v is None:
        return v
    if kind is float:
        return None if math.isnan(v) else v
    if kind is int:
        return v
    if kind is dict:
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, Mapping):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [plain(x) for x in v]
    if is_missing(v):
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


def rows_frame(rows: Sequence[Mapping[str, Any]], table: str, columns: Sequence[str]) -> pd.DataFrame:
    """Rows -> a frame with exactly ``columns`` in order and the table's dtypes (also when empty)."""
    return columns_frame({col: [r.get(col) for r in rows] for col in columns}, table, columns)


def columns_frame(
    values: Mapping[str, Any], table: str, columns: Sequence[str], plain_json: bool = False
) -> pd.DataFrame:
    """``rows_frame`` of the rows whose columns are ``values`` (a list, or a Series of times, per column; a
    column not in ``values``: None in every row, one row per value of the first column given).
    ``plain_json``: the JSON values are plain already (``plain`` of each is itself), taken as they are."""
    kinds = _KINDS[table]
    n = len(next(iter(values.values()))) if values else 0
    data: dict[str, Any] = {}
    for col in columns:
        column = values.get(col)
        kind = kinds[col]
        if kind == "t":
            times = (
                column.reset_index(drop=True)
                if isinstance(column, pd.Series)
                else pd.Series([None] * n if column is None else list(column), dtype="object")
            )
            data[col] = pd.to_datetime(times, utc=True).astype("datetime64[ns, UTC]")
            continue
        column = [None] * n if column is None else list(column)
        if kind == "i":
            data[col] = pd.Series([int(v) for v in column], dtype="int64")
        elif kind == "I":
            data[col] = pd.Series(column, dtype="Int64")
        elif kind == "f":
            data[col] = pd.Series([np.nan if is_missing(v) else float(v) for v in column], dtype="float64")
        elif kind == "j":
            data[col] = pd.Series(
                column if plain_json else [None if v is None else plain(v) for v in column], dtype="object"
            )
        else:
            data[col] = pd.Series([None if is_missing(v) else str(v) for v in column], dtype="object")
    return pd.DataFrame(data, columns=list(columns))


def plain_values(values: Iterable[Any]) -> list[Any]:
    """``plain`` of each value (text, numbers and None answered here, the rest by ``plain``)."""
    out: list[Any] = []
    for v in values:
        kind = type(v)
        if kind is str or kind is int or v is None:
            out.append(v)
        elif kind is float:
            out.append(None if math.isnan(v) else v)
        else:
            out.append(plain(v))
    return out


def population_records(population: pd.DataFrame) -> list[dict[str, Any]]:
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


def population_frame(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    return rows_frame(records, "population", POPULATION_COLUMNS)


def best_first(
    recs: Iterable[Mapping[str, Any]], score: Mapping[str, float] | None = None
) -> list[Mapping[str, Any]]:
    """Best first: today's score if given (else mean history score), ties by module_id."""

    def key(r: Mapping[str, Any]) -> tuple[float, str]:
        s = score.get(r["module_id"]) if score else None
        return (-(s if s is not None else mean_score(r.get("performance_history"))), str(r["module_id"]))

    return sorted(recs, key=key)


def rows_of_day(frame: pd.DataFrame | None, day: pd.Timestamp, column: str = "timestamp") -> pd.DataFrame:
    """The rows of ``frame`` stamped inside the day (nothing of a later day is ever read)."""
    if frame is None or frame.empty:
        return pd.DataFrame(columns=[] if frame is None else frame.columns)
    ts = pd.to_datetime(frame[column], utc=True)
    return frame[(ts >= day) & (ts < day + pd.Timedelta(days=1))]


def learned_genome(rec: Mapping[str, Any], perf: Mapping[str, Any] | None) -> dict[str, Any]:
    """The genome after the day's learning (see the module docstring); a copy, changed or not."""
    genome = copy.deepcopy(dict(rec.get("genome") or {}))
    if perf is None or rec.get("module_type") != ALPHA or "min_edge" not in genome:
        return genome
    rate = perf.get("trading_plan_success_rate")
    if is_missing(rate):
        return genome
    lr = float(rec.get("learning_rate") or 0.0)
    r = hundredths(rate)
    step = lr if r < 50 else -lr if r >= 60 else 0.0
    if step:
        lo, hi, dec = GENE_BOUNDS["min_edge"]
        genome["min_edge"] = round(min(hi, max(lo, float(genome["min_edge"]) + step)), dec)
    return genome


def as_utc(ts: pd.Timestamp) -> pd.Timestamp:
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def population_rows(population: pd.DataFrame) -> pd.DataFrame:
    """The ``modules`` rows to write (exactly ``MODULE_COLUMNS``): name and genome folded into
    ``learning_patterns = {"name": name, "genome": genome, ...}`` beside what it holds of learning."""
    recs = population_records(population)
    for r in recs:
        kept = r["learning_patterns"] if isinstance(r["learning_patterns"], Mapping) else {}
        r["learning_patterns"] = {**kept, "name": r["name"], "genome": r["genome"]}
    return rows_frame(recs, "modules", MODULE_COLUMNS)


def population_to_json(population: pd.DataFrame) -> str:
    """The population as canonical JSON text (sorted keys, times ISO): the carried state between days."""
    recs = [{c: plain(r[c]) for c in POPULATION_COLUMNS} for r in population_records(population)]
    return json.dumps(recs, sort_keys=True, separators=(",", ":"))


def population_from_json(text: str) -> pd.DataFrame:
    """The inverse of ``population_to_json``: the same frame, column kinds included."""
    return population_frame(json.loads(text))
