"""Dagster backfills that ``tis backfill`` submits to a running daemon (`tis dev` runs one): listed in the
UI's Backfills tab, their runs launched from the code location, so they are on the overview timeline like any
other run. Dagster 1.13 has no public API for submitting one outside the UI; these are the calls the UI's
"Materialize..." dialog and "Daemons" page make."""

from __future__ import annotations

import time
from datetime import date, timedelta
from typing import TYPE_CHECKING

from tis_pipeline.cli.failures import error_line

if TYPE_CHECKING:
    from dagster import AssetKey, DagsterInstance
    from dagster._core.definitions.assets.graph.base_asset_graph import BaseAssetGraph

# ---------------------------------------------------------------------------------------------------------
# Dagster backfills submitted to a running daemon (`tis dev` runs one): listed in the UI's Backfills tab,
# their runs launched from the code location, so they are on the overview timeline like any other run
# ---------------------------------------------------------------------------------------------------------

BACKFILL_POLL_S = 2.0


def daemon_runs_backfills(instance: DagsterInstance) -> bool:
    """Whether a dagster-daemon whose backfill daemon heartbeats into ``instance`` is running now."""
    # dagster 1.13 has no public call for this; the UI's "Daemons" page reads the same statuses
    from dagster._daemon.controller import get_daemon_statuses

    try:
        status = get_daemon_statuses(instance, ["BACKFILL"], ignore_errors=True)["BACKFILL"]
    except Exception:  # no heartbeats table yet, storage unreachable: no daemon we could rely on
        return False
    return bool(status.healthy)


def backfills_done(instance: DagsterInstance, ident: str) -> set[str]:
    """The chunks of backfill ``ident`` that a daemon's Dagster backfill completed successfully."""
    from dagster._core.execution.backfill import BulkActionsFilter, BulkActionStatus

    from tis_pipeline.ops.backfill import BACKFILL_TAG, CHUNK_TAG

    backfills = instance.get_backfills(
        filters=BulkActionsFilter(statuses=[BulkActionStatus.COMPLETED_SUCCESS], tags={BACKFILL_TAG: ident})
    )
    return {b.tags[CHUNK_TAG] for b in backfills if CHUNK_TAG in b.tags}


def submit_backfill(
    instance: DagsterInstance,
    asset_graph: BaseAssetGraph,
    keys: list[AssetKey],
    first: date,
    last: date,
    tags: dict[str, str],
) -> str:
    """A Dagster asset backfill of ``keys`` over first..last (inclusive), as the UI's "Materialize" dialog
    makes one, added to ``instance`` for its daemon to run; its id."""
    from dagster._core.execution.backfill import PartitionBackfill
    from dagster._core.utils import make_new_backfill_id

    from tis_pipeline.ops.backfill import backfill_title

    days = [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id=make_new_backfill_id(),
        asset_graph=asset_graph,
        partition_names=days,
        asset_selection=keys,
        backfill_timestamp=time.time(),
        tags=tags,
        dynamic_partitions_store=instance,
        all_partitions=False,
        title=backfill_title(first, last),
        description="submitted by `tis backfill`",
        run_config=None,
    )
    instance.add_backfill(backfill)
    return backfill.backfill_id


def wait_for_backfill(instance: DagsterInstance, backfill_id: str) -> tuple[bool, list[str], int]:
    """Wait until the daemon has finished backfill ``backfill_id``: (succeeded, what failed, 1-minute rows
    written by its runs)."""
    import dagster as dg
    from dagster._core.execution.backfill import BulkActionStatus

    finished = {
        BulkActionStatus.COMPLETED,
        BulkActionStatus.COMPLETED_SUCCESS,
        BulkActionStatus.COMPLETED_FAILED,
        BulkActionStatus.FAILED,
        BulkActionStatus.CANCELED,
    }
    while (backfill := instance.get_backfill(backfill_id)) is not None and backfill.status not in finished:
        time.sleep(BACKFILL_POLL_S)
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
    failures, rows = [], 0
    for run in runs:
        for record in instance.get_records_for_run(run.run_id).records:
            entry = record.event_log_entry
            event = entry.dagster_event
            if event is None:
                continue
            if event.is_step_failure and event.step_failure_data is not None:
                failures.append(f"{event.step_key}: {error_line(event.step_failure_data.error)}")
            elif isinstance(evaluation := event.event_specific_data, dg.AssetCheckEvaluation):
                if not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR:
                    failures.append(
                        f"blocking check {evaluation.check_name} on "
                        f"{evaluation.asset_key.to_user_string()} failed"
                    )
            elif event.is_step_materialization and entry.asset_materialization is not None:
                mat = entry.asset_materialization
                value = mat.metadata.get("rows_written_by_run")
                if mat.asset_key.to_user_string() == "market_data_1m" and value is not None:
                    rows = max(rows, int(value.value))  # a range run repeats it on every partition
        if run.status != dg.DagsterRunStatus.SUCCESS and not failures:
            failures.append(f"run {run.run_id} ended {run.status.value}")
    status = backfill.status if backfill is not None else None
    succeeded = status in (BulkActionStatus.COMPLETED_SUCCESS, BulkActionStatus.COMPLETED) and not failures
    if not succeeded and not failures:
        failures.append(f"backfill {backfill_id} ended {status.value if status else 'deleted'}")
    return succeeded, failures, rows
