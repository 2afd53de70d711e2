"""Market-data assets: 1-minute bars and their 15-minute and 1-hour rollups, one UTC day per partition."""


from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import dagster as dg
import pandas as pd

from tis_pipeline.market_data import logic, store
from tis_pipeline.market_data.partitions import daily_partitions
from tis_pipeline.market_data.sources import BarSource
from tis_pipeline.plots import markdown_image
from tis_pipeline.quality.checks import check_results, check_specs_for
from tis_pipeline.resources import PostgresResource
from tis_pipeline.settings import settings

T = TypeVar("T")


def prefetched(pieces: Iterator[T]) -> Iterator[T]:
    """``pieces``, with the next one made on a thread while the caller works on the current one.

    The synthetic source draws its numbers with numpy, which releases the GIL while it fills the arrays, so
    day d + 1 is drawn on the second core while day d is validated.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tis-read") as pool:
        coming = pool.submit(next, pieces, None)
        while (piece := coming.result()) is not None:
            coming = pool.submit(next, pieces, None)
            yield piece


def window_of(context: dg.AssetExecutionContext) -> tuple[pd.Timestamp, pd.Timestamp]:
    window = context.partition_time_window
    return pd.Timestamp(window.start).tz_convert("UTC"), pd.Timestamp(window.end).tz_convert("UTC")


def _preview(frame: pd.DataFrame, rows: int = 10) -> dg.MetadataValue:
    return dg.MetadataValue.md(frame.head(rows).to_markdown(index=False) if len(frame) else "_no rows_")


@dg.asset(
    name="market_data_1m",
    group_name="market_data",
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    kinds={"postgres", "pandas"},
    check_specs=check_specs_for("market_data_1m"),
)
def market_data_1m(context: dg.AssetExecutionContext, bars: BarSource, db: PostgresResource):
    """One-minute OHLCV bars, one row per (symbol, minute the bar opens), UTC; bad rows go to quarantine."""
    from tis_pipeline.pg.memory import retain_freed_memory
    from tis_pipeline.quality.evaluate import evaluate_frame

    retain_freed_memory()
    start, end = window_of(context)
    limit = settings().max_quarantine_share
    pieces: list[logic.Validated] = []
    symbols, notes, skipped = set(), [], []
    # PostgreSQL builds each day's partition as soon as its rows are validated, while this process reads and
    # validates the next piece, then judges all the rows by the registry's rules (errors prove the write,
    # warnings report gaps and jumps): reading, checking and writing overlap instead of taking turns
    builds = store.DayBuilds(db.engine, start, end)
    try:
        for read in prefetched(bars.read_pieces(start, end)):
            symbols.update(read.symbols)
            notes += read.notes
            skipped += read.skipped
            checked = logic.validate_bars(logic.normalise_bars(read.frame), partition_date=start)
            shares = logic.quarantine_share_by_day(checked.clean, checked.quarantine)
            over = shares[shares > limit]
            if len(over):
                sample = checked.quarantine.head(5)[["source_file", "source_line", "rule"]].to_dict("records")
                raise dg.Failure(
                    description=(
                        f"{len(over)} partition day(s) have more than {limit:.0%} bad rows "
                        f"({', '.join(f'{d}: {s:.1%}' for d, s in over.items())}); nothing was written. "
                        f"Rules broken: {checked.counts}. First rows: {sample}"
                    ),
                    metadata={"quarantine_by_rule": checked.counts},
                )
            builds.add(checked.clean)
            pieces.append(checked)
        checked = logic.Validated.concat(pieces)
        pieces.clear()  # concat copied them; the builds hold their own days
        # the rules validation quarantined by are not judged again: no clean row breaks them
        report = evaluate_frame(checked.clean, "market_data_1m", enforced=checked.enforced)
        facts = logic.summary(checked.clean)
    except BaseException:
        builds.abandon()
        raise
    built = builds.finish()
    try:
        with db.begin() as conn:
            deleted, written = store.swap_built_days(conn, built, start, end, sorted(symbols))
            quarantined = store.replace_quarantine(conn, checked.quarantine, start, end)
    finally:
        store.discard(db.engine, built)
    volume_missing = int(checked.clean["volume_missing"].sum())
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": written,
            "rows_replaced": deleted,
            "symbols": ", ".join(facts["symbols"]),
            "first_timestamp": facts["first_timestamp"] or "",
            "last_timestamp": facts["last_timestamp"] or "",
            "missing_minutes_by_symbol": dg.MetadataValue.json(facts["missing_by_symbol"]),
            "quarantined_rows": quarantined,
            "quarantine_by_rule": dg.MetadataValue.json(checked.counts),
            "rows_without_volume": volume_missing,
            "source": dg.MetadataValue.json(bars.describe()),
            "bar_label": bars.bar_label,
            "notes": dg.MetadataValue.md("\n".join(f"- {n}" for n in notes) or "_none_"),
            "skipped_files": dg.MetadataValue.md(
                "\n".join(f"- `{p}`: {why}" for p, why in skipped) or "_none_"),
            "preview": _preview(checked.clean[logic.BAR_COLUMNS]),
        }
    )
    yield from check_results(report, (start, end))


def _rollup(context: dg.AssetExecutionContext, db: PostgresResource, table: str):
    from tis_pipeline.plots import pyplot
    from tis_pipeline.quality.checks import table_metadata
    from tis_pipeline.quality.rules import rule

    start, end = window_of(context)
    consistency = rule(f"{table}_rollup_consistent")
    title = f"{table} {start.date()}"
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tis-pyplot") as pool:
        pool.submit(pyplot)  # matplotlib's first import (a second) overlaps the SQL instead of following it
        expected = None
        try:
            with db.begin() as conn:
                # the pieces start on their own connections, all reading this transaction's snapshot
                expected = store.stage_expected_rollup(db.engine, table, start, end, store.export_snapshot(conn))
                written = store.rebuild_rollup(conn, expected, start, end)
                plot_frame = store.read_bars(conn, table, start, min(end, start + pd.Timedelta(days=3)))
                # drawn on the thread (after the import) while PostgreSQL counts gaps, compares the bars and
                # commits: those queries wait without the GIL, so most of the figure's time hides behind them
                drawing = pool.submit(lambda: logic.price_volume_png(plot_frame, title) if len(plot_frame) else b"")
                fill = store.bucket_fill(conn, expected)
                mismatches = store.rollup_mismatches(conn, expected, start, end)
        finally:
            if expected is not None:
                store.discard_expected(db.engine, expected)
        yield dg.AssetCheckResult(
            check_name=consistency.name,
            passed=mismatches.empty,
            severity=dg.AssetCheckSeverity.ERROR,
            description=f"{len(mismatches)} of {written} bars differ from the rollup of their 1-minute source",
            metadata={"partition_start": start.isoformat(), "partition_end": end.isoformat(),
                      "bars_checked": written, "failing_rows": len(mismatches),
                      **({"failing_rows_sample": table_metadata(mismatches.head(20).astype(str))}
                         if len(mismatches) else {})},
        )
        png = drawing.result()
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": written,
            "symbols": ", ".join(sorted(plot_frame["symbol"].unique())) if len(plot_frame) else "",
            "first_timestamp": plot_frame["timestamp"].min().isoformat() if len(plot_frame) else "",
            "last_timestamp": plot_frame["timestamp"].max().isoformat() if len(plot_frame) else "",
            "buckets_by_symbol": dg.MetadataValue.md(fill.to_markdown(index=False) if len(fill) else "_none_"),
            "partial_buckets": int(fill["partial_buckets"].sum()) if len(fill) else 0,
            "missing_minutes": int(fill["missing_minutes"].sum()) if len(fill) else 0,
            "preview": _preview(plot_frame),
            "plot": dg.MetadataValue.md(
                markdown_image(png, table) if png else "_no rows_"),
        }
    )


@dg.asset(
    name="market_data_15m",
    group_name="market_data",
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=["market_data_1m"],
    kinds={"postgres"},
    check_specs=[dg.AssetCheckSpec("market_data_15m_rollup_consistent", asset="market_data_15m", blocking=True,
                                   description="every bar equals the rollup of its 1-minute source")],
)
def market_data_15m(context: dg.AssetExecutionContext, db: PostgresResource):
    """15-minute bars rolled up from market_data_1m: open first, high max, low min, close last, volume sum."""
    yield from _rollup(context, db, "market_data_15m")


@dg.asset(
    name="market_data_1h",
    group_name="market_data",
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=["market_data_15m"],
    kinds={"postgres"},
    check_specs=[dg.AssetCheckSpec("market_data_1h_rollup_consistent", asset="market_data_1h", blocking=True,
                                   description="every bar equals the rollup of its 1-minute source")],
)
def market_data_1h(context: dg.AssetExecutionContext, db: PostgresResource):
    """1-hour bars (from the 15-minute ones, equal to the 1-minute rollup): open first, high max, low min, close last, volume sum."""
    yield from _rollup(context, db, "market_data_1h")
