"""Modules whose step raises: found, marked 'failed', and the day goes on without them. Pure pandas.

Each module type has a step in the day: an alpha plans (``generate_plans``), the acting decision maker decides
(``approve_plans``) and the acting trader executes (``simulate_execution``). ``rehearse`` runs the acting
decision maker's and trader's steps on the day's plans before the day flows through the bus (a dry run, as a
child is validated at birth), so a step that raises does so before anything is sent; ``fail_raising_modules``
then finds the modules that raise:

* every live alpha whose planning alone (``generate_plans`` with it as the only alpha) raises;
* while the rehearsal raises: the acting trader, or else the acting decision maker, without which it goes
  through (the decision maker's step reads the trader's genome too), then the rehearsal again with the next
  acting ones.

A module found is set to status 'failed' (it stops taking part and receives nothing: the bus fails messages
to it), with ``learning_patterns['failure'] = {day, step, error}``. The day then runs with the others.

The rehearsal's output is kept (``Rehearsal``): on a day whose messages all arrive, the real decisions and
executions are the rehearsal's, not a second run of the same steps on the same plans.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import pandas as pd

from tis_pipeline.trading_day.ecosystem.common import population_frame, population_records
from tis_pipeline.trading_day.plans.approve import approve_plans
from tis_pipeline.trading_day.plans.execute import simulate_execution
from tis_pipeline.trading_day.plans.generate import generate_plans
from tis_pipeline.trading_day.population import ALPHA, DECISION, TRADER, acting_module, is_live_record


class Rehearsal(NamedTuple):
    """What the dry run made: the plans it was given, the decision maker's (plans, approvals) and the trader's
    plans. ``day.run_day``'s real pass takes a step's output from here when the bus hands that step the same
    frame (``same_frame``), and runs the step again on what it was handed otherwise."""

    plans: pd.DataFrame
    decided: pd.DataFrame
    approvals: pd.DataFrame
    executed: pd.DataFrame


def rehearse(day: pd.Timestamp, plans: pd.DataFrame, bars: Any, population: pd.DataFrame) -> Rehearsal:
    """The acting decision maker's and trader's steps on the day's plans; raises what they raise."""
    decided, approvals = approve_plans(day, plans, population, bars)
    return Rehearsal(plans, decided, approvals, simulate_execution(day, decided, bars, population))


def same_frame(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    """Whether ``a`` and ``b`` hold the same rows in the same order: same columns, dtypes and values (both
    steps are pure functions of their frame, the day, the bars and the population, so the same frame gives
    the same output)."""
    # DataFrame.equals compares the axes (the columns), each block's dtype and the values, NaN equal to NaN
    return a.reset_index(drop=True).equals(b.reset_index(drop=True))


def _failed(rec: dict[str, Any], day: pd.Timestamp, step: str, exc: Exception) -> None:
    patterns = dict(rec["learning_patterns"]) if isinstance(rec["learning_patterns"], dict) else {}
    patterns["failure"] = {"day": day.strftime("%Y-%m-%d"), "step": step, "error": repr(exc)}
    rec.update(status="failed", learning_patterns=patterns)


def fail_raising_modules(
    day: pd.Timestamp, events: pd.DataFrame, bars: Any, population: pd.DataFrame
) -> pd.DataFrame:
    """The population with every module whose step raises set to status 'failed' (module docstring)."""
    recs = population_records(population)
    others = population[population["module_type"] != ALPHA]
    for rec in recs:
        if rec["module_type"] != ALPHA or not is_live_record(rec):
            continue
        alone = pd.concat([population[population["module_id"] == rec["module_id"]], others])
        try:
            generate_plans(day, events, bars, alone)
        except Exception as exc:
            _failed(rec, day, "generate_plans", exc)
    population = population_frame(recs)
    plans = generate_plans(day, events, bars, population)
    by_id = {str(r["module_id"]): r for r in recs}
    for _ in range(len(recs)):
        try:
            rehearse(day, plans, bars, population)
            break
        except Exception as exc:
            culprit = _culprit(day, plans, bars, population)
            if culprit is None:
                raise  # no module's doing: the day cannot go on
            _failed(by_id[culprit[0]], day, culprit[1], exc)
            population = population_frame(recs)
    return population


def _culprit(
    day: pd.Timestamp, plans: pd.DataFrame, bars: Any, population: pd.DataFrame
) -> tuple[str, str] | None:
    """(module_id, step) of the acting trader or decision maker without which the rehearsal goes through,
    the trader first (the decision maker's step reads the trader's genome too; without a decision maker no
    genome is read at all). None when neither."""
    for module_type, step in ((TRADER, "simulate_execution"), (DECISION, "approve_plans")):
        acting = acting_module(population, module_type, last_entry_only=True)
        if acting is None:
            continue
        without = population.assign(
            status=population["status"].where(population["module_id"] != acting["module_id"], "failed")
        )
        try:
            rehearse(day, plans, bars, without)
        except Exception:
            continue
        return str(acting["module_id"]), step
    return None
