"""The DSI run over a day range: score each day from the carried state, build its partition while the next
part is scored, then swap the days in and write the rollups' evidence, the events and the states in one
transaction.

No Dagster here: the ``dsi`` asset calls ``score_range`` and turns its ``DsiRun`` into metadata.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Callable, Generator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from typing import IO, Protocol

import pandas as pd
import sqlalchemy as sa

from tis_pipeline import plots
from tis_pipeline.dsi import frames, store
from tis_pipeline.dsi.evaluation import OutOfSample
from tis_pipeline.dsi.logic import score
from tis_pipeline.dsi.logic.config import DsiConfig
from tis_pipeline.dsi.logic.events import detect_events
from tis_pipeline.dsi.logic.state import DsiState
from tis_pipeline.market_data import store as bar_store
from tis_pipeline.pg.day_partitions import (
    BuiltDays,
    discard,
    drop_dead_scratch_tables_of,
    export_snapshot,
    in_snapshot,
)
from tis_pipeline.settings import settings

SCORE_GROUPS = 4  # a day is scored in at least this many pieces, handed to its build one after another
LATENCY_BATCH = 16  # event bars per timed streaming call (logic.score.time_streaming)
STEPS = (
    "read_and_score",
    "latency_and_events",
    "figures_alongside_the_builds_and_swap",
    "wait_for_builds_and_swap",
    "commit",
)
_KEPT = ["symbol", "timestamp", "close", "mx_evidence", "mx_confirm"]  # of every scored bar, for the figures
_SAMPLE = ["symbol", "timestamp", "close", "mx_evidence"]  # of the first piece, for the plot
_BUCKETED = ["symbol", "timestamp", "mx_evidence", "mx_confirm"]  # of every scored bar, for the rollups


class PieceSink(Protocol):
    """Where the scored pieces go for the out-of-sample figures: an ``OutOfSample``, or what a shard keeps
    for its finisher (``dsi.shards``)."""

    def add(self, scores: pd.DataFrame) -> None: ...


@dataclass
class _Found:
    """What scoring the days of a run leaves for after them: events (with the streaming latency of their
    bars), the out-of-sample figures so far, counts, the first piece scored (for the plot)."""

    oos: PieceSink
    evidence: list[pd.DataFrame] = field(default_factory=list)  # frames.event_rows, a piece at a time
    anomalies: list[pd.DataFrame] = field(default_factory=list)
    marks: list[pd.DataFrame] = field(default_factory=list)  # symbol, timestamp of the events (for the plot)
    timed: list[pd.DataFrame] = field(default_factory=list)
    sample: pd.DataFrame | None = None
    # the 15-minute buckets of the scored bars (store.rollup_bucket_rows), for the rollups' evidence
    buckets: IO[bytes] | None = None
    bars: int = 0
    confirmed: int = 0


def _read_pieces(
    engine: sa.Engine, conn: sa.Connection, day: pd.Timestamp, bounds: list[tuple[str | None, str | None]]
) -> Generator[pd.DataFrame, None, None]:
    """The day's bars piece by piece (``store.day_pieces``), each read while the one before is scored: on a
    connection of its own in the snapshot of ``conn``'s transaction (which holds the day locked), so the
    same rows as on ``conn``. A transaction that has written reads on ``conn`` itself, a piece at a time."""

    def read(on: sa.Connection, bound: tuple[str | None, str | None]) -> pd.DataFrame:
        end = day + pd.Timedelta(days=1)
        return bar_store.read_bars(
            on, "market_data_1m", day, end, symbols_from=bound[0], symbols_below=bound[1]
        )

    if len(bounds) == 1 or store.has_written(conn):
        for bound in bounds:
            yield read(conn, bound)
        return
    snapshot = export_snapshot(conn)
    with (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="tis-dsi-read") as reader,
        engine.connect() as side,
        side.begin(),
    ):
        in_snapshot(side, snapshot)
        ahead = reader.submit(read, side, bounds[0])
        for bound in bounds[1:]:
            piece = ahead.result()
            ahead = reader.submit(read, side, bound)
            yield piece
            del piece
        yield ahead.result()


def _score_day(
    pieces: Generator[pd.DataFrame, None, None],
    state: DsiState | None,
    config: DsiConfig,
    rows: store.RowStream,
    found: _Found,
) -> DsiState | None:
    """Score a day's ``pieces`` from ``state`` into ``rows`` (its build) and ``found``; the state after the
    day.

    A piece at a time: each symbol's state is its own, so the values are those of the whole day at once, and
    PostgreSQL builds the day while the rest is read and scored. The event bars of each piece are scored once
    more on the streaming path, from the state before the piece, to time it (``time_streaming``). Leaving
    ``rows`` ends the build's stream, or fails it.
    """
    with rows, closing(pieces):  # a failure ends the reads (and their connection) here, not at collection
        for bars in pieces:
            before = state
            scores, state = score.score_bars(bars, state, config)
            rows.put(store.encode_scored(scores[frames.BAR_UPDATE_INPUTS]))
            events = detect_events(scores, config)
            if len(events):
                hit = scores.loc[scores["event_mask"].to_numpy() > 0, list(bar_store.BAR_READ_COLUMNS)]
                timed = score.time_streaming(hit, before, config, LATENCY_BATCH)
                found.timed.append(timed)
                events = events.merge(
                    timed, on=["symbol", "timestamp"], how="left", validate="many_to_one", sort=False
                )
                evidence, anomalies = frames.event_rows(events)
                found.evidence.append(evidence)
                found.anomalies.append(anomalies)
                found.marks.append(events[["symbol", "timestamp"]])
            if found.buckets is not None:
                found.buckets.write(store.rollup_bucket_rows(scores[_BUCKETED]))
            found.oos.add(scores[_KEPT])
            found.bars += len(scores)
            found.confirmed += int(scores["mx_confirm"].sum())
            if found.sample is None:
                found.sample = scores[_SAMPLE].copy()
    return state


def _concat(frames_: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(frames_, ignore_index=True) if frames_ else pd.DataFrame()


def _latency(timed: list[pd.DataFrame]) -> dict:
    """The run's streaming figures over its timed event bars: p50 / p95 of their latencies, bars per second of
    the timed calls."""
    if not timed:
        return {"n": 0}
    every = pd.concat(timed, ignore_index=True)
    lat, size = every["latency_ns"].to_numpy(), every["batch_bars"].to_numpy()
    seconds = float((lat / size).sum()) / 1e9  # each call once: its time shared by its bars
    return score.latency_figures(lat, len(lat) / max(seconds, 1e-12))


def _plot(scores: pd.DataFrame, events: pd.DataFrame) -> str:
    """Close and evidence of the first symbol with its events, titled with its days drawn and how many of the
    sample's symbols it leaves out; laid out by hand with fixed hour ticks (the automatic date ticks and the
    tight crop drew the figure three times: most of the plot's cost)."""
    from matplotlib import dates  # matplotlib is slow to import: only when a run draws

    symbols = sorted(scores["symbol"].astype(str).unique())
    symbol = symbols[0]
    part = scores[scores["symbol"] == symbol]
    times = pd.to_datetime(part["timestamp"], utc=True)
    first, last = times.min().date(), times.max().date()
    days = f"{first}" if first == last else f"{first}..{last}"
    title = f"{symbol} {days}: 1 of {len(symbols)} symbols shown"
    fig, (top, bottom) = plots.pyplot().subplots(
        2, 1, figsize=(8, 4.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    fig.subplots_adjust(left=0.09, right=0.98, top=0.93, bottom=0.1, hspace=0.08)
    top.set_title(title, fontsize=10)
    top.plot(part["timestamp"], part["close"], linewidth=0.7, label=f"{symbol} close")
    marks = events[events["symbol"] == symbol] if len(events) else events
    if len(marks):
        closes = part.set_index("timestamp")["close"].reindex(pd.to_datetime(marks["timestamp"], utc=True))
        top.scatter(closes.index, closes.to_numpy(), color="red", s=12, label="anomaly events", zorder=3)
    bottom.plot(part["timestamp"], part["mx_evidence"], linewidth=0.6, color="purple")
    bottom.axhline(0.5, color="grey", linewidth=0.5)
    bottom.set_ylabel("mx_evidence")
    span_h = max(1, int((part["timestamp"].iloc[-1] - part["timestamp"].iloc[0]) / pd.Timedelta(hours=1)))
    bottom.xaxis.set_major_locator(dates.HourLocator(interval=max(1, span_h // 6)))
    bottom.xaxis.set_major_formatter(dates.DateFormatter("%H:%M" if span_h <= 24 else "%m-%d"))
    bottom.tick_params(axis="x", labelsize=7)
    top.legend(loc="upper left", fontsize=7)
    return f"{plots.markdown_image(plots.figure_png(fig, tight=False), title)}\n\n{title}."


def _swap_and_write(
    conn: sa.Connection,
    builds: list[Future],
    built: list[tuple[pd.Timestamp, str, str, bool]],
    begin: pd.Timestamp,
    end: pd.Timestamp,
    rollups: Future,
    evidence_rows: pd.DataFrame,
    event_rows: pd.DataFrame,
    states: list[dict],
) -> tuple[int, int, int]:
    """(bars written, evidence rows, events), once every build has finished and ``rollups`` (the rollups'
    evidence, written on ``conn`` meanwhile) is done; a failed one raises here."""
    updated = sum(build.result() for build in builds)
    rollups.result()
    store.attach_scored_days(conn, built)
    n_evidence, n_events = store.replace_events(conn, evidence_rows, event_rows, begin, end)
    store.save_states(conn, states)
    return updated, n_evidence, n_events


@dataclass
class DsiRun:
    """What a run wrote and measured: the figures of the asset's metadata."""

    begin: pd.Timestamp  # first day scored (before the range when the state of the day before it was missing)
    bars_scored: int
    confirmed: int  # bars scored with mx_confirm
    evidence_rows: pd.DataFrame  # as written to dsi_evidence
    event_rows: pd.DataFrame  # as written to anomaly_events
    updated: int  # bars written to market_data_1m
    n_evidence: int
    n_events: int
    latency: dict  # latency_figures of the event bars' streaming timings
    quality: dict  # evaluation.evaluate's out-of-sample figures
    plot: str  # markdown with the embedded PNG
    steps: dict[str, float]  # seconds per step
    scored_s: float  # seconds until every day was scored and staged
    elapsed: float  # seconds of the whole run, commit included


def score_range(
    engine: sa.Engine, start: pd.Timestamp, end: pd.Timestamp, config: DsiConfig, log: Callable[[str], None]
) -> DsiRun:
    """Score every bar of the days in [start, end) and write them (the ``mx_*`` columns of ``market_data_1m``,
    the rollups' evidence), their events (``anomaly_events``, ``dsi_evidence``) and each day's end state
    (``dsi_state``), all in one transaction.

    A range starts from the state of the day before it, and if that is missing, from the last stored state (or
    the first bar), so a range run, day-by-day runs and a fresh database give the same values.
    """
    started = time.perf_counter()
    built: list[tuple[pd.Timestamp, str, str, bool]] = []  # (day, partition, new table, partition exists)
    tag = uuid.uuid4().hex[:8]  # two runs building the same day never collide on a name
    if dropped := drop_dead_scratch_tables_of(engine):  # the tables of runs killed before they swapped them
        log(f"dropped {len(dropped)} scratch tables of dead runs: {', '.join(dropped)}")
    try:
        with engine.begin() as conn:
            partitions = store.lock_days(conn)
            previous = store.previous_state(conn, start, config.fingerprint())
            if previous is not None:
                begin, state = previous[0] + pd.Timedelta(days=1), DsiState.from_bytes(previous[1])
            else:
                first = store.first_bar_day(conn)
                begin, state = (min(first, start) if first is not None else start), None
            if begin < start:
                log(f"no DSI state for the day before {start.date()}: scoring from {begin.date()}")
            oos = OutOfSample(horizon=config.horizon, warmup=config.tail_rows)
            states, found = [], _Found(oos)
            chunk = settings().dsi_chunk_bars
            steps = dict.fromkeys(STEPS, 0.0)
            lap = time.perf_counter()

            def clock(step: str) -> None:  # seconds per step, for the metadata: where a run's time went
                nonlocal lap
                now = time.perf_counter()
                steps[step] += now - lap
                lap = now

            # Each scored day is built as a new table on a connection of its own (PostgreSQL COPYs and indexes
            # it while this thread reads and scores the rest of the day and the next ones, piece by piece, and
            # times the streaming path on their event bars); this transaction then swaps the days in and
            # writes the rollups' evidence, the events and the state, on the builder's thread while this one
            # computes the out-of-sample figures and the plot: all of it commits together or not at all.
            with (
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="tis-dsi-build") as builder,
                tempfile.TemporaryFile(prefix="tis-dsi-states-") as spill,  # the days' states, until written
                tempfile.TemporaryFile(prefix="tis-dsi-buckets-") as buckets,  # the rollups' buckets, as well
                # left first: waits for the rollups' update before the files close and the transaction ends
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="tis-dsi-rollups") as roller,
            ):
                found.buckets = buckets
                builds: list[Future] = []
                for day in bar_store.days_with_bars(conn, "market_data_1m", begin, end):
                    name, exists = store.lock_day(conn, day, partitions)
                    carry = store.rows_with_module_columns(conn, day) > 0
                    if len(builds) >= 2:  # at most two days' builds in flight
                        builds[-2].result()
                    bars_before = found.bars
                    counts = store.symbol_counts(conn, day)
                    target = max(1, min(chunk, -(-sum(n for _, n in counts) // SCORE_GROUPS)))
                    pieces = _read_pieces(engine, conn, day, store.day_pieces(counts, target))
                    built.append((day, name, f"{name}_{tag}", exists))
                    rows = store.RowStream()
                    builds.append(
                        builder.submit(store.build_scored_day, engine, day, built[-1][2], rows, carry)
                    )
                    state = _score_day(pieces, state, config, rows, found)
                    states.append(
                        {
                            "day": day.date(),
                            "config_fingerprint": config.fingerprint(),
                            "symbols": len(state.symbols) if state is not None else 0,
                            "bars": found.bars - bars_before,
                            "state": store.SpilledBytes(
                                spill, state.to_bytes() if state is not None else b""
                            ),
                        }
                    )
                    clock("read_and_score")
                # the last day's state (~10 kB a symbol) is in the spill now: not held through the figures
                state = None
                scored_s = time.perf_counter() - started
                latency = _latency(found.timed)
                evidence_rows = frames.with_run_latency(_concat(found.evidence), latency)
                event_rows = _concat(found.anomalies)
                events = _concat(found.marks)
                clock("latency_and_events")
                # every read is done: PostgreSQL writes the rollups' evidence (from the scored buckets, not
                # the days being built) on this transaction's connection while the builds finish their rows
                # and keys; after both (the builder runs its tasks in order) it swaps the days in and writes
                # the events and the state, while this thread computes the out-of-sample figures and the plot
                # (it touches the connection again only after ``writing`` is done)
                rollups = roller.submit(store.update_rollup_evidence_from, conn, [buckets], begin, end)
                writing = builder.submit(
                    _swap_and_write,
                    conn,
                    builds,
                    built,
                    begin,
                    end,
                    rollups,
                    evidence_rows,
                    event_rows,
                    states,
                )
                quality = oos.result()
                plot = (
                    _plot(found.sample, events)
                    if found.sample is not None and len(found.sample)
                    else "_no bars_"
                )
                clock("figures_alongside_the_builds_and_swap")
                updated, n_evidence, n_events = writing.result()
                clock("wait_for_builds_and_swap")
    finally:
        # after the transaction: the tables it attached have their partitions' names now; the others are
        # dropped
        discard(engine, BuiltDays(tag, [(day, name, new) for day, name, new, _ in built]))
    clock("commit")
    return DsiRun(
        begin=begin,
        bars_scored=found.bars,
        confirmed=found.confirmed,
        evidence_rows=evidence_rows,
        event_rows=event_rows,
        updated=updated,
        n_evidence=n_evidence,
        n_events=n_events,
        latency=latency,
        quality=quality,
        plot=plot,
        steps=steps,
        scored_s=scored_s,
        elapsed=time.perf_counter() - started,
    )
