"""The module population, defined once for the plans and the ecosystem: which modules are live, which one acts
for a type, a module's specialty and score history, the genome's genes and the deterministic ids. Pure.

*Live* module: ``status == 'active'`` and ``lifecycle_stage in ('experimental', 'active')``; only live modules
take part in a day. *Specialty*: the genome's ``style`` for an alpha detector (momentum, reversal,
divergence), else the module type (decision_maker, trader); the five founders found the five specialties.
*Acting* module of a type (the decision maker, the trader): the live one with the best last
``performance_history`` score, ties by smallest module_id; a module without a score ranks after every scored
one.

Ids are UUIDv5 of natural keys under two namespaces, both kept because the ids are stored: ``plan_uuid``
(``PLANS_NAMESPACE``: plans, approvals, performance rows) and ``ecosystem_uuid`` (``ECOSYSTEM_NAMESPACE``:
modules, messages, sharing, triggers, replications).
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

PLANS_NAMESPACE = uuid.UUID("2f6b8c1e-4d7a-5e93-b0c4-9a1f3e7d5c28")
ECOSYSTEM_NAMESPACE = uuid.UUID("5b0e2c7e-6a1f-4f3a-9c55-2d8e4b7a1c90")

LIVE_STAGES = ("experimental", "active")
ALPHA, DECISION, TRADER = "alpha_detector", "decision_maker", "trader"
HORIZONS: tuple[int, ...] = (1, 5, 15, 60, 240)  # the steps a mutation moves ``horizon_minutes`` along
INNOVATION_SCALE = 0.10

# (lo, hi, decimals) of every gene replication may change; genes not listed (style, anomaly_types, capital)
# are facts of the specialty or the account and are inherited unchanged. No gene sets a cost: fills are
# charged by plans/costs.py, so a trader evolves when it enters (entry_delay_bars), never what a fill costs
GENE_BOUNDS: Mapping[str, tuple[float, float, int]] = {
    "min_edge": (0.0, 0.2, 4),
    "stop_atr": (0.5, 5.0, 2),
    "target_atr": (0.5, 5.0, 2),  # with stop_atr >= 0.5 the risk/reward stays <= 10
    "risk_pct": (0.01, 2.0, 2),  # % of capital lost at the stop
    "min_confidence": (0.0, 0.9, 2),
    "min_risk_reward": (0.5, 3.0, 2),
    "max_position_pct": (1.0, 100.0, 2),
    "max_plans_per_symbol": (1, 50, 0),
    "entry_delay_bars": (0, 3, 0),
}
MUTABLE_GENES: Mapping[str, tuple[str, ...]] = {
    ALPHA: ("min_edge", "stop_atr", "target_atr", "horizon_minutes", "risk_pct"),
    DECISION: ("min_confidence", "min_risk_reward", "max_position_pct", "max_plans_per_symbol"),
    TRADER: ("entry_delay_bars",),
}

FOUNDERS: tuple[tuple[str, str, Mapping[str, Any]], ...] = (
    (
        "momentum",
        ALPHA,
        {
            "style": "momentum",
            "anomaly_types": ["price_jump", "range_expansion"],
            "min_edge": 0.02,
            "stop_atr": 1.5,
            "target_atr": 2.5,
            "horizon_minutes": 15,
            "risk_pct": 0.05,
        },
    ),
    (
        "reversal",
        ALPHA,
        {
            "style": "reversal",
            "anomaly_types": ["volume_spike", "pattern"],
            "min_edge": 0.02,
            "stop_atr": 1.0,
            "target_atr": 1.5,
            "horizon_minutes": 5,
            "risk_pct": 0.05,
        },
    ),
    (
        "divergence",
        ALPHA,
        {
            "style": "divergence",
            "anomaly_types": ["divergence"],
            "min_edge": 0.02,
            "stop_atr": 2.0,
            "target_atr": 3.0,
            "horizon_minutes": 60,
            "risk_pct": 0.05,
        },
    ),
    (
        "risk_desk",
        DECISION,
        {
            "min_confidence": 0.3,
            "min_risk_reward": 1.2,
            "max_position_pct": 50.0,
            "max_plans_per_symbol": 20,
        },
    ),
    ("execution_sim", TRADER, {"capital": 1_000_000.0, "entry_delay_bars": 0}),
)
FOUNDER_GENOMES: Mapping[str, Mapping[str, Any]] = {
    (g["style"] if t == ALPHA else t): g for _, t, g in FOUNDERS
}
SPECIALTIES: tuple[str, ...] = tuple(FOUNDER_GENOMES)


# -------------------------------------------------------------------------------------------------- ids


def _stable_id(namespace: uuid.UUID, parts: tuple[object, ...]) -> str:
    """``uuid5(namespace, "|".join(parts))`` as text: RFC 4122's name-based id (the SHA-1 of the namespace's
    bytes and the name's UTF-8, its first 16 bytes with the version 5 and the variant bits set), what
    ``str(uuid.uuid5(...))`` gives, made without the ``UUID`` object (a day makes tens of thousands)."""
    name = "|".join([str(p) for p in parts]).encode("utf-8")
    b = bytearray(hashlib.sha1(namespace.bytes + name).digest()[:16])
    b[6] = (b[6] & 0x0F) | 0x50  # version 5
    b[8] = (b[8] & 0x3F) | 0x80  # variant RFC 4122
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def plan_uuid(*parts: object) -> str:
    """The id of a plan, approval or performance row: uuid5(PLANS_NAMESPACE, "|".join(parts))."""
    return _stable_id(PLANS_NAMESPACE, parts)


def ecosystem_uuid(*parts: object) -> str:
    """The id of a module, message, sharing, trigger or replication row: uuid5(ECOSYSTEM_NAMESPACE, ...)."""
    return _stable_id(ECOSYSTEM_NAMESPACE, parts)


# ------------------------------------------------------------------------------------------------ values


# types ``to_dict`` gives back as they are (its boxing turns numpy scalars, pandas' NA and numpy times into
# Python and pandas ones, and leaves these alone)
_NATIVE = frozenset((str, dict, list, type(None), float, int, bool, pd.Timestamp, type(pd.NaT)))


def frame_columns(frame: pd.DataFrame) -> dict[str, list[Any]]:
    """Each column's values as ``frame.to_dict("records")`` gives them (``frame_records``' columns, not zipped
    into a dict per row: for a caller that reads a few columns of every row). A column's values as iterating
    it gives them (``tolist``: Python scalars of a numpy column), which ``to_dict`` keeps as they are; an
    object or extension column holding anything else (numpy scalars or times, NA: ``to_dict`` boxes them) is
    taken from ``to_dict`` of that column alone, so that only such a column pays for the boxing. The names
    must be unique."""
    names = frame.columns.tolist()
    columns: dict[str, list[Any]] = {}
    for k in range(len(names)):
        s = frame.iloc[:, k]
        values = s.tolist()  # what iterating it gives (text columns: ten times as fast)
        boxed = s.dtype == object or isinstance(s.dtype, pd.api.extensions.ExtensionDtype)
        if boxed and not all(type(x) in _NATIVE for x in values):
            values = [r[names[k]] for r in frame.iloc[:, [k]].to_dict("records")]
        columns[names[k]] = values
    return columns


def frame_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """``frame.to_dict("records")``, built a column at a time (``frame_columns``): the same dicts of the same
    values, without a tuple per row."""
    names = frame.columns.tolist()
    if len(set(names)) != len(names):  # to_dict warns and keeps the last of each name
        return frame.to_dict("records")
    columns = list(frame_columns(frame).values())
    return (
        [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]
        if names
        else [{} for _ in range(len(frame))]
    )


def is_missing(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, (Mapping, list, tuple, set, np.ndarray)):
        return False
    return bool(pd.isna(v))


def to_rate(x: float) -> float:
    """A DECIMAL(3,2) rate: 2 places inside [0, 1]."""
    return float(min(1.0, max(0.0, round(float(x), 2))))


# --------------------------------------------------------------------------------------- live and acting


def is_live(population: pd.DataFrame) -> pd.Series:
    """True for the modules that take part in a day."""
    return (population["status"] == "active") & population["lifecycle_stage"].isin(LIVE_STAGES)


def is_live_record(rec: Mapping[str, Any]) -> bool:
    return rec.get("status") == "active" and rec.get("lifecycle_stage") in LIVE_STAGES


def live_modules(population: pd.DataFrame, module_type: str | None = None) -> pd.DataFrame:
    """The live modules (of ``module_type`` when given), sorted by module_id."""
    if population is None or population.empty:
        return pd.DataFrame(columns=["module_id", "module_type", "name", "genome"])
    mask = (population["status"] == "active") & population["lifecycle_stage"].isin(LIVE_STAGES)
    if module_type is not None:
        mask &= population["module_type"] == module_type
    return population[mask].sort_values("module_id", kind="stable").reset_index(drop=True)


def specialty(module_type: str, genome: Mapping[str, Any] | None) -> str:
    """An alpha detector's style, else its module type."""
    if module_type == ALPHA and genome and genome.get("style"):
        return str(genome["style"])
    return str(module_type)


def genome_of(value: Any) -> dict:
    """A module's genome as a dict (empty when it has none)."""
    return dict(value) if isinstance(value, Mapping) else {}


def history_scores(history: Any) -> list[float]:
    """The scores of a ``performance_history`` (a list of ``{"day", "score"}``), entries without one
    skipped."""
    entries = list(history) if isinstance(history, (list, tuple, np.ndarray)) else []
    return [float(e["score"]) for e in entries if not is_missing(e.get("score"))]


def last_score(history: Any, *, last_entry_only: bool) -> float | None:
    """The latest score of a ``performance_history``, None without one.

    ``last_entry_only``: only the last entry counts, and only a finite score in it (the plans' rule: a history
    that is not a list or tuple, or whose last entry has no finite score, has no score); otherwise the latest
    entry that has a score (None/NaN skipped, the ecosystem's rule). Every entry the pipeline writes has a
    score in [0, 1], so the two agree on every stored history.
    """
    if last_entry_only:
        if isinstance(history, (list, tuple)) and history and isinstance(history[-1], Mapping):
            score = history[-1].get("score")
            if score is not None and math.isfinite(float(score)):
                return float(score)
        return None
    scores = history_scores(history)
    return scores[-1] if scores else None


def mean_score(history: Any) -> float:
    """The mean score of a ``performance_history``; -1 without one (ranks below every score in [0, 1])."""
    scores = history_scores(history)
    return float(np.mean(scores)) if scores else -1.0


def acting_module(population: pd.DataFrame, module_type: str, *, last_entry_only: bool) -> pd.Series | None:
    """The acting module of a type: the live one with the best ``last_score``, modules without a score last,
    ties by module_id; None when no module of the type is live."""
    live = live_modules(population, module_type)
    if live.empty:
        return None
    scores = [
        last_score(h, last_entry_only=last_entry_only)
        for h in live.get("performance_history", [None] * len(live))
    ]
    order = sorted(
        range(len(live)),
        key=lambda i: (scores[i] is None, -(scores[i] or 0.0), str(live["module_id"].iat[i])),
    )
    return live.iloc[order[0]]


# ------------------------------------------------------------------------------------------- innovation


def horizon_index(minutes: Any) -> int:
    m = int(minutes)
    return min(range(len(HORIZONS)), key=lambda i: abs(HORIZONS[i] - m))


def _gene_distance(module_type: str, genome: Mapping[str, Any], ref: Mapping[str, Any]) -> float:
    parts = []
    for gene in MUTABLE_GENES.get(module_type, ()):
        if gene not in genome or gene not in ref:
            continue
        if gene == "horizon_minutes":
            parts.append(abs(horizon_index(genome[gene]) - horizon_index(ref[gene])) / (len(HORIZONS) - 1))
        else:
            lo, hi, _ = GENE_BOUNDS[gene]
            parts.append(abs(float(genome[gene]) - float(ref[gene])) / (hi - lo))
    return float(np.mean(parts)) if parts else 0.0


def innovation_vs_founder(module_type: str, genome: Mapping[str, Any]) -> float:
    """How far learning and evolution carried a genome: min(1, D / 0.10), D = mean over the type's mutable
    genes of |g - g_founder| / span, g_founder = the founder genome of its specialty (0 without one); a
    rate."""
    ref = FOUNDER_GENOMES.get(specialty(module_type, genome))
    if ref is None:
        return 0.0
    return to_rate(min(1.0, _gene_distance(module_type, genome, ref) / INNOVATION_SCALE))


def innovation_vs_peers(active: pd.DataFrame) -> dict[str, float]:
    """module_id -> min(1, mean |g - m| / max(|m|, 1e-9)) over the numeric genome values g against the median
    m of the given modules of the same type and style (``style`` None counts as a style of its own)."""
    out: dict[str, float] = {}
    groups: dict[tuple[str, str], list[tuple[str, dict]]] = {}
    for r in active.itertuples(index=False):
        g = genome_of(r.genome)
        groups.setdefault((str(r.module_type), str(g.get("style"))), []).append((str(r.module_id), g))
    for members in groups.values():
        keys = sorted(
            {
                k
                for _, g in members
                for k, v in g.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)
            }
        )
        median = {k: float(np.median([float(g[k]) for _, g in members if k in g])) for k in keys}
        for mid, g in members:
            dist = [abs(float(g[k]) - median[k]) / max(abs(median[k]), 1e-9) for k in keys if k in g]
            out[mid] = min(1.0, float(np.mean(dist))) if dist else 0.0
    return out
