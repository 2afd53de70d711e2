"""Children for the day's triggers (``replicate``). Pure pandas/numpy; random draws from seeded generators.

Replication (``replicate``)
---------------------------
Triggers in order; each makes a child while fewer than 3 were made today and fewer than 30 modules are live
(children included), else it expires. A child: ``replication_id = uuid5("replication|{trigger_id}")``, child
id ``uuid5("module|{replication_id}")``;
* recombination (failure_recovery with two parents A, B): each mutable gene comes from B when a uniform draw
  < 0.5 (``recombination_applied`` lists them), else from A;
* mutation: each mutable gene mutates when a uniform draw < the primary parent's ``mutation_rate`` (at least
  the gene with the smallest draw mutates, so a child is never a clone): numeric genes move by N(0, 0.1 *
  span), reflected into their bounds and rounded (one rounding unit further if the rounding undid the move);
  ``horizon_minutes`` moves one step along (1, 5, 15, 60, 240). ``mutation_applied = {gene: {"from", "to"}}``
  holds exactly the genes that differ from the (recombined) parent genome.
* a single parent takes a mate (the best other module of its specialty) when a uniform draw < its
  ``recombination_rate``;
* learning parameters (``_child_rates``): self-adaptive, the parents' mean mutated (mutation_rate
  log-normally, the others by a step proportional to the child's mutation_rate), in [0.01, 0.99];
  ``inherited_intelligence['rates_mutated']`` says which moved;
* columns: ``generational_depth`` = max parents' + 1, ``module_version = "1.0.0+g{depth}"``, parent_modules,
  ``parent_performance``, innovation from its genome, seed defaults otherwise; ``lifecycle_stage``
  experimental, ``created_at = last_updated = day + 1 day``; name ``"{founder name}~{child id[:8]}"``.
  Parents: offspring_modules + child, offspring_count + 1.
* replication rows: timestamp day_end, status 'completed', ``creation_time_ms`` / ``validation_time_ms`` /
  ``initialization_time_ms`` None (the asset measures them). Triggers: ``processed`` + replication_id +
  processed_at = day_end, or ``expired``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from tis_pipeline.trading_day.ecosystem.common import (
    CROSSOVER_P,
    FAILURE_BELOW,
    MAX_REPLICATIONS_PER_DAY,
    MIN_LIVE_PER_SPECIALTY,
    MUTATION_SIGMA,
    POPULATION_CAP,
    REPLICATION_COLUMNS,
    SEED_DEFAULTS,
    TRIGGER_COLUMNS,
    day_end_stamp,
    day_start,
    iso_day,
    population_frame,
    population_records,
    rows_frame,
    seeded_rng,
)
from tis_pipeline.trading_day.population import (
    GENE_BOUNDS,
    HORIZONS,
    MUTABLE_GENES,
    ecosystem_uuid,
    history_scores,
    horizon_index,
    innovation_vs_founder,
    is_live_record,
    mean_score,
    specialty,
)


def _step_gene(gene: str, old: Any, z: float) -> Any:
    """One mutation of ``gene`` from ``old`` by the standard-normal draw ``z`` (always a different value)."""
    direction = 1 if z >= 0 else -1
    if gene == "horizon_minutes":
        i = horizon_index(old) + direction
        if not 0 <= i < len(HORIZONS):
            i = horizon_index(old) - direction
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
        recombination = {
            "parents": [str(p["module_id"]) for p in parents[:2]],
            "crossover_p": CROSSOVER_P,
            "from_second_parent": taken,
        }
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


RATES: tuple[str, ...] = ("learning_rate", "adaptation_threshold", "mutation_rate", "recombination_rate")
RATE_BOUNDS = (0.01, 0.99)
TAU = 0.5  # log-normal step of mutation_rate, the strategy parameter
RATE_SIGMA = 0.5  # the other rates move by N(0, (RATE_SIGMA * the child's mutation_rate)^2)


def _reflect(x: float, lo: float, hi: float) -> float:
    if x > hi:
        x = 2 * hi - x
    if x < lo:
        x = 2 * lo - x
    return min(hi, max(lo, x))


def _child_rates(
    parents: Sequence[Mapping[str, Any]], rng: np.random.Generator
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """The child's learning parameters, self-adaptive as in evolution strategies: the parents' mean
    (intermediate recombination), then ``mutation_rate`` moves log-normally (x exp(0.5 z)) and each other rate
    by N(0, (0.5 x the new mutation_rate)^2), reflected into [0.01, 0.99] and rounded to 2 places. Four normal
    draws, always made. Returns (rates, {rate: {"from", "to"}} of those that changed)."""
    lo, hi = RATE_BOUNDS
    z = rng.standard_normal(len(RATES))
    base = {r: float(np.mean([float(p[r]) for p in parents])) for r in RATES}
    out = dict(base)
    out["mutation_rate"] = round(_reflect(base["mutation_rate"] * float(np.exp(TAU * z[2])), lo, hi), 2)
    sigma = RATE_SIGMA * out["mutation_rate"]
    for i, r in enumerate(RATES):
        if r != "mutation_rate":
            out[r] = round(_reflect(base[r] + sigma * float(z[i]), lo, hi), 2)
    changed = {r: {"from": round(base[r], 4), "to": out[r]} for r in RATES if round(base[r], 2) != out[r]}
    return out, changed


def _mate(recs: Sequence[Mapping[str, Any]], primary: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The best other live module of the primary's specialty (mean history score, ties by module_id)."""
    spec = specialty(primary["module_type"], primary["genome"])
    others = [
        r
        for r in recs
        if is_live_record(r)
        and r["module_id"] != primary["module_id"]
        and specialty(r["module_type"], r["genome"]) == spec
    ]
    if not others:
        return None
    return sorted(others, key=lambda r: (-mean_score(r.get("performance_history")), str(r["module_id"])))[0]


def replicate(
    day: pd.Timestamp, triggers: pd.DataFrame, population: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Children for the day's triggers, within the caps; formulas in the module docstring.

    Inputs: ``triggers`` from ``replication_triggers`` (processed in their order), ``population`` after
    ``update_population``. Output: (``module_replications`` rows = ``REPLICATION_COLUMNS``, the triggers with
    status / processed_at / replication_id set = ``TRIGGER_COLUMNS``, the population with the children
    appended and the parents' offspring updated = ``POPULATION_COLUMNS``).
    """
    day = day_start(day)
    day_end = day_end_stamp(day)
    birth = day + pd.Timedelta(days=1)
    recs = population_records(population)
    by_id = {str(r["module_id"]): r for r in recs}
    live = sum(1 for r in recs if is_live_record(r))
    made = 0
    replications: list[dict[str, Any]] = []
    out_triggers: list[dict[str, Any]] = []
    trigger_rows = [] if triggers is None or triggers.empty else triggers.to_dict("records")

    for trigger in trigger_rows:
        t = {c: copy.deepcopy(trigger.get(c)) for c in TRIGGER_COLUMNS}
        data = t["trigger_data"] if isinstance(t["trigger_data"], Mapping) else {}
        parent_ids = [str(p) for p in data.get("parents") or [t["module_id"]]]
        # a failed module (its step raised) passes nothing on
        parents = [by_id[p] for p in parent_ids if p in by_id and by_id[p]["status"] != "failed"]
        if made >= MAX_REPLICATIONS_PER_DAY or live >= POPULATION_CAP or not parents:
            t["status"], t["processed_at"], t["replication_id"] = "expired", None, None
            out_triggers.append(t)
            continue
        primary = parents[0]
        ttype = str(t["trigger_type"])
        replication_id = ecosystem_uuid("replication", t["trigger_id"])
        child_id = ecosystem_uuid("module", replication_id)
        rng = seeded_rng(primary["module_id"], iso_day(day), ttype)
        # recombination_rate: the chance a child of one parent takes a mate, the best other module of its
        # specialty (failure_recovery always names two)
        if len(parents) == 1 and float(rng.random()) < float(primary["recombination_rate"]):
            mate = _mate(recs, primary)
            if mate is not None:
                parents = [primary, mate]
        genome, mutation, recombination = _child_genome(
            primary["module_type"], parents, float(primary["mutation_rate"]), rng
        )
        rates, rates_changed = _child_rates(parents, rng)
        depth = max(int(p["generational_depth"]) for p in parents) + 1
        base_name = str(primary["name"]).split("~")[0]
        spec = specialty(primary["module_type"], primary["genome"])
        child = {
            **SEED_DEFAULTS,
            "module_id": child_id,
            "module_type": primary["module_type"],
            "module_version": f"1.0.0+g{depth}",
            "parent_modules": [str(p["module_id"]) for p in parents],
            "offspring_modules": [],
            "generational_depth": depth,
            **rates,
            "performance_history": [],
            "learning_patterns": {"name": f"{base_name}~{child_id[:8]}", "genome": copy.deepcopy(genome)},
            "innovation_score": innovation_vs_founder(primary["module_type"], genome),
            "peer_ratings": {},
            "parent_performance": {
                str(p["module_id"]): {
                    "last_score": history_scores(p.get("performance_history"))[-1]
                    if history_scores(p.get("performance_history"))
                    else None,
                    "mean_score": round(mean_score(p.get("performance_history")), 4)
                    if history_scores(p.get("performance_history"))
                    else None,
                    "scored_days": len(history_scores(p.get("performance_history"))),
                }
                for p in parents
            },
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
        threshold = (
            primary["adaptation_threshold"]
            if ttype == "performance_threshold"
            else FAILURE_BELOW / 100
            if ttype == "failure_recovery"
            else None
        )
        same = [r for r in recs if is_live_record(r) and specialty(r["module_type"], r["genome"]) == spec]
        replications.append(
            {
                "replication_id": replication_id,
                "parent_module_id": str(primary["module_id"]),
                "child_module_id": child_id,
                "timestamp": day_end,
                "trigger_type": ttype,
                "trigger_data": data,
                "replication_reason": _reason(ttype, data, primary),
                "target_capabilities": {
                    "module_type": primary["module_type"],
                    "specialty": spec,
                    "anomaly_types": genome.get("anomaly_types"),
                    "genes": list(MUTABLE_GENES.get(primary["module_type"], ())),
                },
                "performance_threshold": threshold,
                "diversity_requirements": {
                    "specialty": spec,
                    "min_live_per_specialty": MIN_LIVE_PER_SPECIALTY,
                    "live_with_child": len(same),
                },
                "replication_status": "completed",
                "creation_time_ms": None,
                "validation_time_ms": None,
                "initialization_time_ms": None,
                "inherited_intelligence": {
                    "genome": primary["genome"],
                    "learning_rate": primary["learning_rate"],
                    "adaptation_threshold": primary["adaptation_threshold"],
                    "mutation_rate": primary["mutation_rate"],
                    "recombination_rate": primary["recombination_rate"],
                    "generational_depth": int(primary["generational_depth"]),
                    "rates_mutated": rates_changed,
                },
                "mutation_applied": mutation,
                "recombination_applied": recombination,
            }
        )
        t["status"], t["processed_at"], t["replication_id"] = "processed", day_end, replication_id
        out_triggers.append(t)

    return (
        rows_frame(replications, "module_replications", REPLICATION_COLUMNS),
        rows_frame(out_triggers, "module_replication_triggers", TRIGGER_COLUMNS),
        population_frame(recs),
    )


def _reason(ttype: str, data: Mapping[str, Any], parent: Mapping[str, Any]) -> str:
    if ttype == "performance_threshold":
        return (
            f"replication readiness {data.get('replication_readiness')} reached the adaptation threshold "
            f"{data.get('adaptation_threshold')} of {parent['name']}"
        )
    if ttype == "diversity_gap":
        return (
            f"specialty {data.get('specialty')} has {data.get('live_modules')} live module(s), fewer than "
            f"{data.get('required')}"
        )
    if ttype == "failure_recovery":
        return (
            f"every live module of {data.get('specialty')} scored below {data.get('below')}: "
            "recombine the best"
        )
    return f"market regime changed from {data.get('previous_regime')} to {data.get('regime')}"


# ------------------------------------------------------------------ validation and initialization of a child


def validate_child(
    child: Mapping[str, Any], parents: Sequence[Mapping[str, Any]], trial_plans: pd.DataFrame | None
) -> list[str]:
    """What is wrong with a new child (empty: valid): genes inside their bounds, learning parameters inside
    [0, 1], lineage consistent with its parents (ids, depth), and the plans its genome makes on the day's
    events in a dry run (``trial_plans``: None for a type that makes no plans) inside the table's rules
    (0 < position_size <= 100, 0 < risk_reward_ratio <= 10, stop and target on either side of the entry)."""
    problems = []
    genome = child.get("genome") or {}
    for gene in MUTABLE_GENES.get(str(child["module_type"]), ()):
        if gene not in genome:
            problems.append(f"gene {gene} missing")
        elif gene == "horizon_minutes":
            if int(genome[gene]) not in HORIZONS:
                problems.append(f"horizon_minutes {genome[gene]} not one of {HORIZONS}")
        else:
            lo, hi, _ = GENE_BOUNDS[gene]
            if not lo <= float(genome[gene]) <= hi:
                problems.append(f"gene {gene} = {genome[gene]} outside [{lo}, {hi}]")
    for rate in RATES:
        if not 0 <= float(child[rate]) <= 1:
            problems.append(f"{rate} = {child[rate]} outside [0, 1]")
    if sorted(child["parent_modules"]) != sorted(str(p["module_id"]) for p in parents):
        problems.append("parent_modules do not name its parents")
    if int(child["generational_depth"]) != max(int(p["generational_depth"]) for p in parents) + 1:
        problems.append("generational_depth is not its parents' + 1")
    if trial_plans is not None and len(trial_plans):
        size = trial_plans["position_size"].astype(float)
        rr = trial_plans["risk_reward_ratio"].astype(float)
        sign = np.where(trial_plans["direction"] == "long", 1.0, -1.0)
        entry = trial_plans["entry_price"].astype(float)
        bad = (
            ~size.between(0, 100, inclusive="right")
            | ~rr.between(0, 10, inclusive="right")
            | (sign * (trial_plans["take_profit"].astype(float) - entry) <= 0)
            | (sign * (entry - trial_plans["stop_loss"].astype(float)) <= 0)
        )
        if bad.any():
            problems.append(f"{int(bad.sum())} of {len(trial_plans)} trial plans break the plan rules")
    return problems


def initialize_child(
    child: Mapping[str, Any], parents: Sequence[Mapping[str, Any]], base_latency_ms: int
) -> dict[str, Any]:
    """The child's starting state: its primary parent's peer ratings (inherited trust, for peers still
    named), the base latency of its type, and in ``learning_patterns`` its name, genome, an empty record of
    what it will learn and the last lessons its parents learned (``inherited_lessons``)."""
    rec = copy.deepcopy(dict(child))
    primary = parents[0]
    rec["peer_ratings"] = dict(sorted((primary.get("peer_ratings") or {}).items()))
    rec["communication_latency_ms"] = int(base_latency_ms)
    lessons = []
    for p in parents:
        patterns = p.get("learning_patterns") if isinstance(p.get("learning_patterns"), Mapping) else {}
        lessons += [dict(e, parent=str(p["module_id"])) for e in (patterns.get("learned") or [])[-3:]]
    rec["learning_patterns"] = {
        "name": rec["name"],
        "genome": copy.deepcopy(rec["genome"]),
        "learned": [],
        "inherited_lessons": lessons,
    }
    return rec
