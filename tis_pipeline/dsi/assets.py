"""The DSI asset: scores every 1-minute bar of a day range, writes evidence and anomaly events."""

from collections.abc import Iterator

import dagster as dg
import pandas as pd

from tis_pipeline.dsi import pipeline
from tis_pipeline.dsi.logic.config import DsiConfig
from tis_pipeline.market_data.partitions import daily_partitions
from tis_pipeline.quality.checks import check_specs_for, frame_check_results
from tis_pipeline.resources import PostgresResource

_DEPS = ["market_data_1m", "market_data_15m", "market_data_1h"]
_WRITES = (
    "Also writes the mx_* columns of the bar tables: mx_evidence, mx_confirm and mx_expert_contributions of "
    "market_data_1m (each scored day partition rebuilt and swapped in), mx_evidence and mx_confirm of "
    "market_data_15m and market_data_1h, and the end-of-day state in dsi_state."
)


@dg.multi_asset(
    name="dsi",
    specs=[
        dg.AssetSpec(
            "dsi_evidence",
            deps=_DEPS,
            group_name="dsi",
            kinds={"postgres", "numpy"},
            description="One row per anomaly event: the full expert breakdown behind it (DSI). " + _WRITES,
        ),
        dg.AssetSpec(
            "anomaly_events",
            deps=_DEPS,
            group_name="dsi",
            kinds={"postgres"},
            description="One row per (symbol, minute, anomaly type) flagged by the anomaly experts. "
            + _WRITES,
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
    config = DsiConfig()
    window = context.partition_time_window
    start, end = pd.Timestamp(window.start).tz_convert("UTC"), pd.Timestamp(window.end).tz_convert("UTC")
    run = pipeline.score_range(db.engine, start, end, config, context.log.info)
    bars_scored, events = run.bars_scored, run.event_rows
    shared = {
        "range": f"{run.begin.date()}..{(end - pd.Timedelta(days=1)).date()}",
        "bars_scored": bars_scored,
        "bars_per_second_with_writes": round(bars_scored / max(run.elapsed, 1e-9)),
        "bars_per_second_scoring_and_staging": round(bars_scored / max(run.scored_s, 1e-9)),
        "seconds_by_step": dg.MetadataValue.json({k: round(v, 3) for k, v in run.steps.items()}),
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
