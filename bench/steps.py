"""The Dagster steps' spans of a run, from its event log: the benchmarks' one way to time a step.

A step's span runs from its STEP_START event to its STEP_SUCCESS or STEP_FAILURE event (epoch seconds, the
event log's timestamps); a step retried keeps its last start and end. The benchmarks run this in the process
that ran the run or, for runs of another process, in a ``python -c`` script started in the project's root
(``from bench.steps import step_spans``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import dagster as dg


def step_spans(instance: dg.DagsterInstance, run_id: str) -> dict[str, tuple[float, float]]:
    """step key -> (start, end) of the run's steps that started and ended, in the order of their first
    event."""
    spans: dict[str, list[float | None]] = {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or record.step_key is None:
            continue
        span = spans.setdefault(record.step_key, [None, None])
        if event.event_type_value == "STEP_START":
            span[0] = record.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
            span[1] = record.timestamp
    return {step: (a, b) for step, (a, b) in spans.items() if a is not None and b is not None}
