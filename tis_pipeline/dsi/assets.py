"""The DSI asset: scores every 1-minute bar of a day range, writes evidence and anomaly events; one step
(``dsi``), or split into symbol shards (``build_sharded_dsi``, below the ruler).
"""

import os
import pickle
import shutil
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from tis_pipeline.dsi import pipeline, shards
from tis_pipeline.dsi.logic.config import DsiConfig
from tis_pipeline.market_data.partitions import daily_partitions
from tis_pipeline.quality.checks import check_specs_for, frame_check_results
from tis_pipeline.resources import PostgresResource

DSI_DEPS = ["market_data_1m", "market_data_15m", "market_data_1h"]
DSI_WRITES = (
    "Also writes the mx_* columns of the bar tables: mx_evidence, mx_confirm and mx_expert_contributions of "
    "market_data_1m (each scored day partition rebuilt and swapped in), mx_evidence and mx_confirm of "
    "market_data_15m and market_data_1h, and the end-of-day state in dsi_state."
)


@dg.multi_asset(
    name="dsi",
    specs=[
        dg.AssetSpec(
            "dsi_evidence",
            deps=DSI_DEPS,
            group_name="dsi",
            kinds={"postgres", "numpy"},
            description="One row per anomaly event: the full expert breakdown behind it (DSI). " + DSI_WRITES,
        ),
        dg.AssetSpec(
            "anomaly_events",
            deps=DSI_DEPS,
            group_name="dsi",
            kinds={"postgres"},
            description="One row per (symbol, minute, anomaly type) flagged by the anomaly experts. "
            + DSI_WRITES,
        ),
    ],
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    check_specs=check_specs_for("dsi_evidence") + check_specs_for("anomaly_events"),
)
def dsi(
    context: dg.AssetExecutionContext, db: PostgresResource
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Scores every bar of the range and writes events with their evidence, the mx_* columns of market_data_1m
    (mx_evidence, mx_confirm, mx_expert_contributions), the 15m/1h rollups' mx_evidence and mx_confirm, and
    the state at the end of each day (``dsi_state``; ``pipeline.score_range`` says where a range starts
    from)."""
    window = context.partition_time_window
    start, end = pd.Timestamp(window.start).tz_convert("UTC"), pd.Timestamp(window.end).tz_convert("UTC")
    run = pipeline.score_range(db.engine, start, end, DsiConfig(), context.log.info)
    yield from dsi_results(run, start, end)


def dsi_results(
    run: pipeline.DsiRun, start: pd.Timestamp, end: pd.Timestamp, extra: dict | None = None
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """The materializations of dsi_evidence and anomaly_events and their checks, from what a run wrote
    (the one-step asset's and the sharded one's); ``extra``: more metadata of both."""
    bars_scored, events = run.bars_scored, run.event_rows
    shared = {
        "range": f"{run.begin.date()}..{(end - pd.Timedelta(days=1)).date()}",
        "bars_scored": bars_scored,
        "bars_per_second_with_writes": round(bars_scored / max(run.elapsed, 1e-9)),
        "bars_per_second_scoring_and_staging": round(bars_scored / max(run.scored_s, 1e-9)),
        "seconds_by_step": dg.MetadataValue.json({k: round(v, 3) for k, v in run.steps.items()}),
        **(extra or {}),
    }
    yield dg.MaterializeResult(
        asset_key="dsi_evidence",
        metadata={
            **shared,
            "dagster/row_count": run.n_evidence,
            "bars_updated": run.updated,
            "streaming_latency": dg.MetadataValue.json(run.latency),
            "out_of_sample": dg.MetadataValue.json(
                {k: (None if pd.isna(v) else v) for k, v in run.quality.items()}
            ),
            "confirmed_share": run.confirmed / bars_scored if bars_scored else 0.0,
            "plot": dg.MetadataValue.md(run.plot),
        },
    )
    yield dg.MaterializeResult(
        asset_key="anomaly_events",
        metadata={
            **shared,
            "dagster/row_count": run.n_events,
            "events_by_type": dg.MetadataValue.json(
                events["anomaly_type"].value_counts().to_dict() if len(events) else {}
            ),
            "preview": dg.MetadataValue.md(
                events.drop(columns=["signal_pack", "microstructure_validation"])
                .head(10)
                .to_markdown(index=False)
                if len(events)
                else "_no events_"
            ),
        },
    )
    yield from frame_check_results(run.evidence_rows, "dsi_evidence", (start, end), asset="dsi_evidence")
    yield from frame_check_results(events, "anomaly_events", (start, end), asset="anomaly_events")


# ------------------------------------------------------------------------------------------------------------
# The sharded asset
# ------------------------------------------------------------------------------------------------------------

# The ``dsi`` asset split into symbol shards: a graph of steps (plan, one step per shard, finish) with the
# asset keys, partitions, single-run backfill policy and checks of the one-step ``dsi`` above.
#
# Each shard step scores its symbols of the range apart from the others (a Celery task on any worker under the
# celery executor, a process under the multiprocess one); the finish step swaps every day in at once
# (``dsi.shards``). ``TIS_SYMBOL_SHARDS`` above 1 puts this asset in the Definitions instead of the one-step
# one; the Celery job of ``ops.scale_out`` always uses it.
#
# The steps hand their small results (the plan, each shard's events, day states and per-bar out-of-sample
# values; the bars themselves go through PostgreSQL) to the next through ``HandoffIOManager``: pickles under
# the Dagster instance's storage directory, one per run, step and output, whatever the partitions (Dagster's
# filesystem IO manager refuses an output of a partition range). Steps on several machines need that
# directory shared, or this IO manager swapped for one on an object store.

HANDOFF_IO_MANAGER = "dsi_handoff_io_manager"
_UNFINISHED = {
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
}


class HandoffIOManager(dg.ConfigurableIOManager):
    """Step outputs as pickles under ``<instance storage>/tis_handoff/<run>/<step>/<output>[/<mapping key>]``
    (``base_dir`` overrides the place); the finish step removes its run's directory."""

    base_dir: str = ""

    def _root(self, instance: dg.DagsterInstance | None) -> Path:
        if self.base_dir:
            return Path(self.base_dir)
        if instance is None:
            raise dg.DagsterInvariantViolationError("the handoff IO manager needs a Dagster instance")
        return Path(instance.storage_directory()) / "tis_handoff"

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        path = self._root(context.step_context.instance).joinpath(*context.get_identifier())
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + f".{os.getpid()}.part")
        with partial.open("wb") as out:
            pickle.dump(obj, out, protocol=pickle.HIGHEST_PROTOCOL)
        partial.replace(path)  # a reader never sees half a file

    def load_input(self, context: dg.InputContext) -> Any:
        upstream = context.upstream_output
        if upstream is None:
            raise dg.DagsterInvariantViolationError("the handoff IO manager loads step outputs only")
        with self._root(context.step_context.instance).joinpath(*upstream.get_identifier()).open("rb") as f:
            return pickle.load(f)

    def run_dir(self, instance: dg.DagsterInstance | None, run_id: str) -> Path:
        return self._root(instance) / run_id

    def forget_run(self, instance: dg.DagsterInstance, run_id: str) -> None:
        shutil.rmtree(self.run_dir(instance, run_id), ignore_errors=True)

    def forget_ended_runs(
        self, instance: dg.DagsterInstance | None, alive: Callable[[str], bool]
    ) -> list[str]:
        """Remove the directories of runs that ended without their finish step (failed, canceled, killed):
        only the finish step removes its own, so a failed run's plan and shard results would stay forever.
        The run ids whose directories were removed, sorted."""
        root = self._root(instance)
        ended = (
            sorted(d.name for d in root.iterdir() if d.is_dir() and not alive(d.name))
            if root.is_dir()
            else []
        )
        for run_id in ended:
            shutil.rmtree(root / run_id, ignore_errors=True)
        return ended


def _window(context: dg.OpExecutionContext) -> tuple[pd.Timestamp, pd.Timestamp]:
    window = context.partition_time_window
    return pd.Timestamp(window.start).tz_convert("UTC"), pd.Timestamp(window.end).tz_convert("UTC")


def _run_alive(instance: dg.DagsterInstance) -> Any:
    def alive(run_id: str) -> bool:
        run = instance.get_run_by_id(run_id)
        return run is not None and run.status in _UNFINISHED

    return alive


CHECK_SPECS = [*check_specs_for("dsi_evidence"), *check_specs_for("anomaly_events")]


def _buckets_path(instance: dg.DagsterInstance, run_id: str, shard: int) -> Path:
    """Where shard ``shard`` of the run leaves the 15-minute buckets of its bars for the finish step (beside
    the run's handoff pickles, which the finish step removes with them)."""
    return HandoffIOManager().run_dir(instance, run_id) / "dsi_buckets" / f"shard_{shard}.csv"


def build_sharded_dsi(shard_count: int) -> dg.AssetsDefinition:
    """The ``dsi`` asset as plan → ``shard_count`` shard steps → finish (at most one shard per symbol)."""
    if shard_count < 1:
        raise ValueError("at least one shard")

    # the plan and the shards read only the 1-minute bars, yet the plan waits for the rollups too: scoring
    # the shards beside the rollups bought nothing on two cores, where one Celery worker and PostgreSQL keep
    # both busy (bench/RESULTS.md, fifth round). On more cores, the plan waiting for market_data_1m alone
    # (and the finish, which writes the rollups' evidence, for the rollups) would let them overlap.
    @dg.op(
        name="dsi_plan",
        ins={key: dg.In(dg.Nothing) for key in DSI_DEPS},
        out={
            "plan": dg.Out(io_manager_key=HANDOFF_IO_MANAGER),
            "shards": dg.DynamicOut(io_manager_key=HANDOFF_IO_MANAGER),
        },
    )
    def dsi_plan(context: dg.OpExecutionContext, db: PostgresResource) -> Iterator[Any]:
        """The range's start, days and symbols cut into shards; the run's empty day tables. The handoff
        files of ended runs go, as their day tables do."""
        start, end = _window(context)
        forgotten = HandoffIOManager().forget_ended_runs(context.instance, _run_alive(context.instance))
        if forgotten:
            context.log.info(
                f"removed the handoff files of {len(forgotten)} ended runs: {', '.join(forgotten)}"
            )
        plan = shards.plan_range(
            db.engine,
            start,
            end,
            DsiConfig(),
            shard_count,
            context.run_id,
            _run_alive(context.instance),
            context.log.info,
        )
        context.log.info(
            f"{len(plan.days)} days, {len(plan.symbols)} symbols in {plan.shards} shards "
            f"(cut at ranks {plan.cuts})"
        )
        yield dg.Output(plan, output_name="plan")
        for k in range(plan.shards):
            yield dg.DynamicOutput(k, output_name="shards", mapping_key=f"shard_{k}")

    @dg.op(name="dsi_shard", out=dg.Out(io_manager_key=HANDOFF_IO_MANAGER))
    def dsi_shard(
        context: dg.OpExecutionContext, db: PostgresResource, plan: shards.RangePlan, shard: int
    ) -> shards.ShardResult:
        """One shard's symbols scored over the range into the run's day tables, the 15-minute buckets of its
        bars into a file of the run's handoff directory (written whole or not at all)."""
        path = _buckets_path(context.instance, context.run_id, shard)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + f".{os.getpid()}.part")
        with partial.open("w+b") as buckets:
            result = shards.score_shard(db.engine, plan, shard, DsiConfig(), buckets)
        partial.replace(path)
        context.log.info(f"shard {shard}: {sum(result.bars)} bars scored in {result.seconds:.1f} s")
        return result

    outs = {
        "dsi_evidence": dg.Out(dg.Nothing, is_required=False),
        "anomaly_events": dg.Out(dg.Nothing, is_required=False),
        **{spec.get_python_identifier(): dg.Out(dg.Nothing, is_required=False) for spec in CHECK_SPECS},
    }

    @dg.op(name="dsi_finish", out=outs)
    def dsi_finish(
        context: dg.OpExecutionContext,
        db: PostgresResource,
        plan: shards.RangePlan,
        results: list[shards.ShardResult],
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        """Every day swapped in with the events and states in one transaction; the asset's metadata."""
        start, end = _window(context)
        with ExitStack() as files:
            buckets = [
                files.enter_context(_buckets_path(context.instance, context.run_id, k).open("rb"))
                for k in range(plan.shards)
            ]
            run = shards.finish_range(db.engine, plan, results, DsiConfig(), context.log.info, buckets)
        HandoffIOManager().forget_run(context.instance, context.run_id)
        yield from dsi_results(run, start, end, extra={"symbol_shards": plan.shards})

    @dg.graph_multi_asset(
        name="dsi",
        outs={
            "dsi_evidence": dg.AssetOut(
                key="dsi_evidence",
                kinds={"postgres", "numpy"},
                description="One row per anomaly event: the full expert breakdown behind it (DSI), scored in "
                "symbol shards. " + DSI_WRITES,
            ),
            "anomaly_events": dg.AssetOut(
                key="anomaly_events",
                kinds={"postgres"},
                description="One row per (symbol, minute, anomaly type) flagged by the anomaly experts, "
                "scored in symbol shards. " + DSI_WRITES,
            ),
        },
        ins={key: dg.AssetIn(key=key, dagster_type=dg.Nothing) for key in DSI_DEPS},
        group_name="dsi",
        partitions_def=daily_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        check_specs=CHECK_SPECS,
        resource_defs={HANDOFF_IO_MANAGER: HandoffIOManager().get_resource_definition()},
    )
    def dsi_sharded(market_data_1m: Any, market_data_15m: Any, market_data_1h: Any) -> dict:
        plan, shard_keys = dsi_plan(
            market_data_1m=market_data_1m, market_data_15m=market_data_15m, market_data_1h=market_data_1h
        )
        results = shard_keys.map(lambda shard: dsi_shard(plan, shard)).collect()
        return dsi_finish(plan, results)._asdict()

    return dsi_sharded
