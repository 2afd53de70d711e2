"""The market-data domain's Definitions: the 1-minute ingest, its rollups, their checks (stale rollup days,
expected symbols, freshness and its sensor, Great Expectations' step over the 1-minute rows a run wrote) and
the bar source."""

import queue
from collections.abc import Generator
from contextlib import ExitStack, closing

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from tis_pipeline.market_data.assets import market_data_1h, market_data_1m, market_data_15m
from tis_pipeline.market_data.checks import market_data_checks, market_data_freshness_sensor
from tis_pipeline.market_data.ingest import made_ahead
from tis_pipeline.market_data.partitions import daily_partitions
from tis_pipeline.market_data.sources import BarSource
from tis_pipeline.market_data.store import BAR_READ_COLUMNS, read_bars, symbol_counts, symbol_pieces
from tis_pipeline.quality.checks import CheckInput, build_checks
from tis_pipeline.quality.rules import rules_for
from tis_pipeline.settings import settings

GX_PREFIX = "gx_"  # the GE step's checks beside the asset's own (pandas) checks of the same rules
# pieces read at once by the GE step, each on a connection of its own: the read is the server's work (~2 µs a
# row: the heap's tuples and their numeric columns as float8), more than the judging's, so two backends read
# side by side while this process judges the piece before
GX_READERS = 2


def _rows_the_run_wrote(context: dg.AssetCheckExecutionContext) -> Generator[CheckInput, None, None]:
    """The run's window of market_data_1m read back in pieces of whole symbols of about
    ``settings().check_piece_rows`` rows (every series whole over the window, so the series rules see it all),
    limited to the symbols the run's materialization wrote (another source's symbols in the same days are not
    this run's); run on its own, the whole window. At least one piece, empty when there is no row.

    The next ``GX_READERS`` pieces are read while the caller judges the current one (reader threads, each
    with a connection of its own): the reads are PostgreSQL's work and the judging is Python's, so the step
    costs about the larger of the two instead of their sum, for ``GX_READERS`` more pieces in memory (~0.15 kB
    a row while read, ~70 bytes a row once read)."""
    window = context.partition_time_window
    start, end = pd.Timestamp(window.start), pd.Timestamp(window.end)
    event = context.instance.get_latest_materialization_event(dg.AssetKey("market_data_1m"))
    materialization = event.asset_materialization if event is not None else None
    written: set[str] | None = None
    if event is not None and event.run_id == context.run.run_id and materialization is not None:
        symbols = materialization.metadata.get("symbols")
        if symbols is not None:
            written = {s for s in str(symbols.value).split(", ") if s}
    columns = (*BAR_READ_COLUMNS, "mx_evidence")
    with context.resources.db.connect() as conn:
        counts = symbol_counts(conn, "market_data_1m", start, end)
    if written is not None:
        counts = [(symbol, n) for symbol, n in counts if symbol in written]
    pieces = symbol_pieces(counts, settings().check_piece_rows) if counts else [(None, None)]
    with ExitStack() as connections:
        # a connection per reader thread, each used by one read at a time; closing the pieces waits for the
        # reads in flight before the connections are closed
        idle: queue.SimpleQueue[sa.Connection] = queue.SimpleQueue()
        for _ in range(min(GX_READERS, len(pieces))):
            idle.put(connections.enter_context(context.resources.db.connect()))

        def read(bounds: tuple[str | None, str | None]) -> pd.DataFrame:
            low, below = bounds
            conn = idle.get()
            try:
                frame = read_bars(
                    conn, "market_data_1m", start, end, columns, symbols_from=low, symbols_below=below
                )
            finally:
                idle.put(conn)
            if written is not None:
                kept = frame["symbol"].isin(written).to_numpy()
                if not kept.all():  # another source's symbol between the run's: left out
                    frame = frame[kept].reset_index(drop=True)
            return frame

        with closing(made_ahead(read, pieces, ahead=GX_READERS, thread_name="gx-read")) as frames:
            for frame in frames:
                yield CheckInput(frame=frame, partition_range=(start, end))


# GE judges the rows each run of market_data_1m wrote, as a step of that run beside the asset's own step
# (whose pandas checks block): GE inside the ingest's step would halve its rows per second (bench/RESULTS.md).
# Not blocking, so that the rollups do not wait for it; the rules whose columns the table does not keep (the
# files read, values beyond the scale) are judged in the asset's step only.
market_data_1m_gx_checks = build_checks(
    "market_data_1m",
    "market_data_1m",
    _rows_the_run_wrote,
    required_resource_keys={"db"},
    name="market_data_1m_gx_checks",
    partitions_def=daily_partitions,
    rules=[
        r
        for r in rules_for("market_data_1m")
        if r.name not in ("market_data_1m_source_files_readable", "market_data_1m_values_fit_scale")
    ],
    prefix=GX_PREFIX,
    blocking=False,
)

defs = dg.Definitions(
    assets=[market_data_1m, market_data_15m, market_data_1h],
    asset_checks=[*market_data_checks, *market_data_1m_gx_checks],
    sensors=[market_data_freshness_sensor],
    resources={"bars": BarSource()},
)
