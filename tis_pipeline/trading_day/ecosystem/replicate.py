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
* columns: ``generational_depth`` = max parents' + 1, ``module_version = "1.0.0+g{depth}"``, parent_modules,
  learning/adaptation/mutation/recombination rates of the primary parent, ``parent_performance``, innovation
  from its genome, seed defaults otherwise; ``lifecycle_stage`` experimental, ``created_at = last_updated =
  day + 1 day``; name ``"{founder name}~{child id[:8]}"``. Parents: offspring_modules + child,
  offspring_count + 1.
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
        parents = [by_id[p] for p in parent_ids if p in by_id]
        if made >= MAX_REPLICATIONS_PER_DAY or live >= POPULATION_CAP or not parents:
            t["status"], t["processed_at"], t["replication_id"] = "expired", None, None
            out_triggers.append(t)
            continue
        primary = parents[0]
        ttype = str(t["trigger_type"])
        replication_id = ecosystem_uuid("replication", t["trigger_id"])
        child_id = ecosystem_uuid("module", replication_id)
        rng = seeded_rng(primary["module_id"], iso_day(day), ttype)
        genome, mutation, recombination = _child_genome(
            primary["module_type"], parents, float(primary["mutation_rate"]), rng
        )
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
            "learning_rate": primary["learning_rate"],
            "adaptation_threshold": primary["adaptation_threshold"],
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
