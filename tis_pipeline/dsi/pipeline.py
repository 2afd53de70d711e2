"""The DSI run over a day range: score each day from the carried state, build its partition while the next
part is scored, then swap the days in and write the rollups' evidence, the events and the states in one
transaction.

No Dagster here: the ``dsi`` asset calls ``score_range`` and turns its ``DsiRun`` into metadata.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import sqlalchemy as sa

from tis_pipeline import plots
from tis_pipeline.dsi import frames, store
from tis_pipeline.dsi.evaluation import evaluate
from tis_pipeline.dsi.logic import score
from tis_pipeline.dsi.logic.config import DsiConfig
from tis_pipeline.dsi.logic.events import detect_events
from tis_pipeline.dsi.logic.state import DsiState
from tis_pipeline.market_data import store as bar_store
from tis_pipeline.pg.day_partitions import BuiltDays, discard, drop_dead_scratch_tables_of

# bars timed one at a time on the streaming path per run: each costs 2-4 ms of the run (the scoring of a whole
# day in the batch path takes 0.1 s), and 64 give the p50 and, by its 4th-largest value, the p95
STREAMING_SAMPLE = 64
SCORE_GROUPS = 4  # parts of a day scored and handed to its build one after another
STEPS = (
    "read",
    "score",
    "latency_and_events",
    "figures_alongside_the_builds_and_swap",
    "wait_for_builds_and_swap",
    "commit",
)


def _symbol_groups(bars: pd.DataFrame, parts: int) -> Iterator[pd.DataFrame]:
    """``bars`` (sorted by symbol) in about ``parts`` slices of whole symbols."""
    symbol = bars["symbol"].to_numpy()
    starts = np.flatnonzero(np.r_[True, symbol[1:] != symbol[:-1]]) if len(bars) else np.zeros(0, "int64")
    wanted = np.linspace(0, len(bars), parts + 1)[1:-1]
    cuts = (
        np.unique(starts[np.minimum(np.searchsorted(starts, wanted), len(starts) - 1)]) if len(starts) else []
    )
    for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(bars)], strict=True):
        if b > a:
            yield bars.iloc[a:b]


_KEPT = [
    "symbol",
    "timestamp",
    "close",
    "mx_evidence",
    "mx_confirm",
]  # of every scored bar, for IC and the plot


@dataclass
class _Found:
    """What scoring the days of a run leaves for after them: events, the bars' evidence, the first part
    scored."""

    events: list[pd.DataFrame] = field(default_factory=list)
    kept: list[pd.DataFrame] = field(default_factory=list)
    sample: pd.DataFrame | None = None


def _score_day(
    bars: pd.DataFrame, state: DsiState | None, config: DsiConfig, rows: store.RowStream, found: _Found
) -> DsiState | None:
    """Score a day's ``bars`` from ``state`` into ``rows`` (its build) and ``found``; the state after the day.

    A few symbols at a time: each symbol's state is its own, so the values are those of the whole day at once,
    and PostgreSQL builds the day while the rest is scored. Leaving ``rows`` ends the build's stream, or fails
    it.
    """
    with rows:
        for part in _symbol_groups(bars, SCORE_GROUPS):
            scores, state = score.score_bars(part, state, config)
            rows.put(store.encode_scored(scores[frames.BAR_UPDATE_INPUTS]))
            found.events.append(detect_events(scores, config))
            found.kept.append(scores[_KEPT])
            if found.sample is None:
                found.sample = scores
    return state


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
    evidence_rows: pd.DataFrame,
    event_rows: pd.DataFrame,
    states: list[dict],
) -> tuple[int, int, int]:
    """(bars written, evidence rows, events), once every build has finished (a failed one raises here)."""
    updated = sum(build.result() for build in builds)
    store.attach_scored_days(conn, built)
    store.update_rollup_evidence(conn, begin, end)
    n_evidence, n_events = store.replace_events(conn, evidence_rows, event_rows, begin, end)
    store.save_states(conn, states)
    return updated, n_evidence, n_events


@dataclass
class DsiRun:
    """What a run wrote and measured: the figures of the asset's metadata."""

    begin: pd.Timestamp  # first day scored (before the range when the state of the day before it was missing)
    scored: pd.DataFrame  # symbol, timestamp, close, mx_evidence, mx_confirm of every scored bar
    evidence_rows: pd.DataFrame  # as written to dsi_evidence
    event_rows: pd.DataFrame  # as written to anomaly_events
    updated: int  # bars written to market_data_1m
    n_evidence: int
    n_events: int
    latency: dict  # measure_streaming_latency's figures
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
            states, found = [], _Found()
            timed = None
            steps = dict.fromkeys(STEPS, 0.0)
            lap = time.perf_counter()

            def clock(step: str) -> None:  # seconds per step, for the metadata: where a run's time went
                nonlocal lap
                now = time.perf_counter()
                steps[step] += now - lap
                lap = now

            # Each scored day is built as a new table on a connection of its own (PostgreSQL COPYs and indexes
            # it while this thread scores the rest of the day and the next ones, detects events and times the
            # streaming path); this transaction then swaps the days in and writes the rollups' evidence, the
            # events and the state, on the builder's thread while this one computes the out-of-sample figures
            # and the plot: all of it commits together or not at all.
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tis-dsi-build") as builder:
                builds: list[Future] = []
                for day in bar_store.days_with_bars(conn, "market_data_1m", begin, end):
                    name, exists = store.lock_day(conn, day, partitions)
                    carry = store.rows_with_module_columns(conn, day) > 0
                    bars = bar_store.read_bars_in_two(engine, conn, day, day + pd.Timedelta(days=1))
                    clock("read")
                    if timed is None:
                        timed = (
                            bars,
                            state,
                        )  # the streaming path is timed on the first day, from the state before it
                    if len(builds) >= 2:  # at most two days' rows wait in memory for their build
                        builds[-2].result()
                    built.append((day, name, f"{name}_{tag}", exists))
                    rows = store.RowStream()
                    builds.append(
                        builder.submit(store.build_scored_day, engine, day, built[-1][2], rows, carry)
                    )
                    state = _score_day(bars, state, config, rows, found)
                    states.append(
                        {
                            "day": day.date(),
                            "config_fingerprint": config.fingerprint(),
                            "symbols": len(state.symbols),
                            "bars": len(bars),
                            "state": state.to_bytes(),
                        }
                    )
                    clock("score")
                scored_s = time.perf_counter() - started
                latency = (
                    score.measure_streaming_latency(
                        timed[0], timed[1], config, n=min(STREAMING_SAMPLE, len(timed[0]))
                    )
                    if timed is not None
                    else {"latency_p50_ms": 1, "latency_p95_ms": 1, "throughput_per_second": 1}
                )
                events = pd.concat(found.events, ignore_index=True) if found.events else pd.DataFrame()
                evidence_rows, event_rows = frames.event_rows(events, latency)
                clock("latency_and_events")
                # after the builds (the builder runs its tasks in order), PostgreSQL swaps the days in and
                # writes the rollups' evidence, the events and the state on this transaction's connection,
                # while this thread computes the out-of-sample figures and the plot (it touches the connection
                # again only after ``writing`` is done)
                writing = builder.submit(
                    _swap_and_write, conn, builds, built, begin, end, evidence_rows, event_rows, states
                )
                scored = (
                    pd.concat(found.kept, ignore_index=True) if found.kept else pd.DataFrame(columns=_KEPT)
                )
                quality = (
                    evaluate(scored, scored, horizon=config.horizon, warmup=config.tail_rows)
                    if len(scored)
                    else {}
                )
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
        scored=scored,
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
