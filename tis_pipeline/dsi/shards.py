"""DSI over a day range split into symbol shards that run apart (Dagster steps of their own, on Celery workers
or processes), with the very tables and figures of ``pipeline.score_range``. No Dagster here.

Three stages, each a step of the sharded ``dsi`` asset (``dsi.assets.build_sharded_dsi``):

* ``plan_range``: where the range starts (the stored state it starts from, as ``score_range`` decides), its
  days, every symbol in the table's order, the pieces ``score_range`` would score each day in, and the cut of
  the symbols into ``shards`` contiguous runs of about equal bars (on the first day's piece boundaries where
  it can, so that the first pieces are ``score_range``'s). It creates one empty table per day, owned by the
  Dagster run (``pg.day_partitions.create_day_table(run=...)``), which the shards fill side by side.
* ``score_shard``: a shard's symbols, day by day, from the part of the start state that is theirs (each
  symbol's state is its own): scored piece by piece exactly as ``score_range`` scores them, COPYed into the
  day tables (``store.fill_scored_rows``), with their events, the streaming timings of the event bars, each
  day's end state of the shard's symbols, the per-bar out-of-sample values (``OutOfSample``'s arrays) and
  the 15-minute buckets of its bars (a file of the run's, for the rollups' evidence).
* ``finish_range``: every day table given its primary key and statistics; then, in one transaction that
  first checks that no day was ingested since the plan (``market_data_day_versions``), the days swapped in,
  the rollups' evidence, the events and the day states (each the union of the shards': the bytes
  ``score_range`` writes) written. The out-of-sample figures pool every bar of the range: the shards' per-bar
  arrays are put back in ``score_range``'s order (day by day, the shards in the table's order of their
  symbols) and the figures computed once, bit for bit.

A shard that fails or is killed leaves the tables as they were: nothing is swapped in before the finisher's
commit, and its day tables go when the run has ended (``drop_dead_scratch_tables``' ``run_alive``).
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from typing import IO

import numpy as np
import pandas as pd
import sqlalchemy as sa

from tis_pipeline.dsi import frames, pipeline, store
from tis_pipeline.dsi.evaluation import OutOfSample
from tis_pipeline.dsi.logic.config import DsiConfig
from tis_pipeline.dsi.logic.state import DsiState
from tis_pipeline.market_data import store as bar_store
from tis_pipeline.pg.day_partitions import (
    BUILD_CONNECTIONS,
    BuiltDays,
    create_day_table,
    discard,
    drop_dead_scratch_tables_of,
    finish_day_table,
    partition_name,
)
from tis_pipeline.pg.engine import raw_connection
from tis_pipeline.settings import settings

SHARDS_VARIABLE = "TIS_SYMBOL_SHARDS"


def symbol_shards() -> int:
    """``settings().symbol_shards`` (``TIS_SYMBOL_SHARDS``, default 1: the one-step ``dsi`` asset), checked:
    symbol shards of the sharded asset."""
    shards = settings().symbol_shards
    if shards < 1:
        raise ValueError(f"{SHARDS_VARIABLE} must be at least 1, not {shards}")
    return shards


class BarsChanged(RuntimeError):
    """A day of the range was ingested again after the plan: the scores are of bars no longer there."""


@dataclass(frozen=True)
class RangePlan:
    """What every shard and the finisher share (``plan_range``)."""

    run_id: str
    tag: str  # the day tables are ``<partition>_<tag>``
    start: pd.Timestamp
    end: pd.Timestamp
    begin: pd.Timestamp  # first day scored (before start when the state of the day before it is missing)
    state_day: date | None  # the day of the stored state the range starts from; None: from no state
    fingerprint: str
    version: int  # highest market_data_day_versions version of the days before end, at planning
    days: list[pd.Timestamp]
    symbols: list[str]  # every symbol of the range's bars and of the start state, in the table's order
    day_bars: list[int]  # bars per day
    day_piece_starts: list[list[int]]  # per day: ranks (in symbols) where score_range's pieces start
    day_bars_below: list[np.ndarray]  # per day: bars of the symbols ranked below each rank (0..len(symbols))
    cuts: list[int]  # shard k holds symbols[cuts[k]:cuts[k + 1]]

    @property
    def shards(self) -> int:
        return len(self.cuts) - 1

    def table(self, i: int) -> str:
        return f"{partition_name(self.days[i])}_{self.tag}"

    def bound(self, rank: int) -> str | None:
        """The symbol at ``rank`` as a ``read_bars`` bound (None past the last)."""
        return self.symbols[rank] if rank < len(self.symbols) else None

    def shard_pieces(self, k: int, i: int) -> list[tuple[str | None, str | None]]:
        """The pieces of shard ``k`` on day ``i``: score_range's pieces of the day cut at the shard's edges,
        those with bars, as (from, below) symbol bounds (none: the shard has no bars that day)."""
        lo, hi = self.cuts[k], self.cuts[k + 1]
        starts = [lo, *(r for r in self.day_piece_starts[i] if lo < r < hi), hi]
        below = self.day_bars_below[i]
        return [(self.bound(a), self.bound(b)) for a, b in itertools.pairwise(starts) if below[b] > below[a]]


def _piece_starts(counts: list[tuple[str, int]], rank: dict[str, int]) -> list[int]:
    """The ranks at which ``score_range``'s pieces of a day with ``counts`` start (its first piece's start
    left out)."""
    total = sum(n for _, n in counts)
    target = max(1, min(settings().dsi_chunk_bars, -(-total // pipeline.SCORE_GROUPS)))
    return [rank[first] for first, _ in store.day_pieces(counts, target) if first is not None]


def _cuts(bars: np.ndarray, shards: int, preferred: list[int]) -> list[int]:
    """[0, ..., len(bars)]: ``shards`` runs of symbols (at most one per symbol) of about equal bars (``bars``:
    per symbol, in order), each cut at the ``preferred`` rank nearest to its share when there are enough of
    them, else at any rank."""
    n = len(bars)
    shards = max(1, min(shards, n))
    within = np.r_[0, np.cumsum(bars)]
    candidates = sorted(set(preferred) & set(range(1, n)))
    if len(candidates) < shards - 1:
        candidates = list(range(1, n))
    cuts = [0]
    for k in range(1, shards):
        goal = within[-1] * k / shards
        left = [c for c in candidates if c > cuts[-1] and n - c >= shards - k]
        if not left:
            break
        cuts.append(min(left, key=lambda c: (abs(within[c] - goal), c)))
    return [*cuts, n]


def _ordered(conn: sa.Connection, names: set[str]) -> list[str]:
    """``names`` in the table's order of symbols (the database's collation, as ``ORDER BY symbol``)."""
    return list(
        conn.execute(
            sa.text("SELECT s FROM unnest(CAST(:names AS varchar[])) AS s ORDER BY s"),
            {"names": sorted(names)},
        ).scalars()
    )


def _max_version(conn: sa.Connection, end: pd.Timestamp) -> int:
    return int(
        conn.execute(
            sa.text("SELECT coalesce(max(version), 0) FROM market_data_day_versions WHERE day < :end"),
            {"end": end.date()},
        ).scalar_one()
    )


def plan_range(
    engine: sa.Engine,
    start: pd.Timestamp,
    end: pd.Timestamp,
    config: DsiConfig,
    shards: int,
    run_id: str,
    run_alive: Callable[[str], bool] | None,
    log: Callable[[str], None],
) -> RangePlan:
    """Plan the scoring of [start, end) in ``shards`` symbol shards and create the run's empty day tables
    (module docstring). ``run_alive``: whether a Dagster run is still going (scratch tables of ended runs are
    dropped first)."""
    if dropped := drop_dead_scratch_tables_of(engine, run_alive):
        log(f"dropped {len(dropped)} scratch tables of dead runs: {', '.join(dropped)}")
    fingerprint = config.fingerprint()
    with engine.begin() as conn:
        conn.execute(sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        version = _max_version(conn, end)
        previous = store.previous_state(conn, start, fingerprint)
        names: set[str] = set()
        if previous is not None:
            state_day, begin = previous[0].date(), previous[0] + pd.Timedelta(days=1)
            names |= set(DsiState.from_bytes(previous[1]).symbols)
        else:
            first = store.first_bar_day(conn)
            state_day, begin = None, (min(first, start) if first is not None else start)
        if begin < start:
            log(f"no DSI state for the day before {start.date()}: scoring from {begin.date()}")
        days = bar_store.days_with_bars(conn, "market_data_1m", begin, end)
        counts = [store.symbol_counts(conn, day) for day in days]
        for day_counts in counts:
            names |= {s for s, _ in day_counts}
        symbols = _ordered(conn, names)
    rank = {s: i for i, s in enumerate(symbols)}
    per_symbol = np.zeros(len(symbols), np.int64)
    for day_counts in counts:
        for s, n in day_counts:
            per_symbol[rank[s]] += n
    starts = [_piece_starts(c, rank) for c in counts]
    below = []
    for day_counts in counts:
        bars = np.zeros(len(symbols), np.int64)
        bars[[rank[s] for s, _ in day_counts]] = [n for _, n in day_counts]
        below.append(np.r_[0, np.cumsum(bars)])
    plan = RangePlan(
        run_id=run_id,
        tag=uuid.uuid4().hex[:8],
        start=start,
        end=end,
        begin=begin,
        state_day=state_day,
        fingerprint=fingerprint,
        version=version,
        days=days,
        symbols=symbols,
        day_bars=[sum(n for _, n in c) for c in counts],
        day_piece_starts=starts,
        day_bars_below=below,
        cuts=_cuts(per_symbol, shards, starts[0] if starts else []) if symbols else [0, 0],
    )
    with engine.connect() as conn:
        raw = raw_connection(conn)
        with raw.cursor() as cur:
            for i, day in enumerate(days):
                create_day_table(cur, day, plan.table(i), run=run_id)
        raw.commit()
    return plan


class _Pieces:
    """Takes what ``pipeline._score_day`` gives the out-of-sample figures (``OutOfSample.add``) and keeps it
    for the finisher, which pools every shard's pieces in ``score_range``'s order: the figures pool the bars
    of every symbol of a day, so no shard can compute its part of them alone."""

    def __init__(self) -> None:
        self.into: list[pd.DataFrame] = []

    def add(self, scores: pd.DataFrame) -> None:
        # the symbols as codes into their names: a piece's few names pickled once, not a string per bar
        kept = scores.reset_index(drop=True)
        self.into.append(kept.assign(symbol=kept["symbol"].astype("category")))


@dataclass
class ShardResult:
    """What one shard hands to the finisher, per day of the plan (lists indexed like ``plan.days``)."""

    shard: int
    bars: list[int]
    written: list[int]
    confirmed: int
    evidence: list[list[pd.DataFrame]]  # frames.event_rows' evidence, a piece at a time
    anomalies: list[list[pd.DataFrame]]
    marks: list[list[pd.DataFrame]]
    timed: list[list[pd.DataFrame]]
    states: list[bytes]  # the shard's symbols' state after each day (b"": no state yet)
    oos: list[list[pd.DataFrame]]  # what each piece gave OutOfSample.add, per day
    sample: tuple[int, pd.DataFrame] | None  # (day, first piece scored) for the plot
    seconds: float = 0.0
    steps: dict[str, float] = field(default_factory=dict)


def _state_of_shard(conn: sa.Connection, plan: RangePlan, k: int) -> DsiState | None:
    """The start state's part that is shard ``k``'s symbols (None when the range starts from no state)."""
    if plan.state_day is None:
        return None
    data = conn.execute(
        sa.text("SELECT state FROM dsi_state WHERE day = :d AND config_fingerprint = :f"),
        {"d": plan.state_day, "f": plan.fingerprint},
    ).scalar_one_or_none()
    if data is None:
        raise BarsChanged(f"the DSI state of {plan.state_day} the plan starts from is gone")
    whole = DsiState.from_bytes(bytes(data))
    mine = set(plan.symbols[plan.cuts[k] : plan.cuts[k + 1]])
    return DsiState(whole.config, {s: v for s, v in whole.symbols.items() if s in mine})


def score_shard(
    engine: sa.Engine, plan: RangePlan, k: int, config: DsiConfig, buckets: IO[bytes]
) -> ShardResult:
    """Score shard ``k`` of ``plan`` over its days into the run's day tables (module docstring), the
    15-minute buckets of its bars into ``buckets`` (``store.rollup_bucket_rows``: what the finisher writes
    the rollups' evidence from)."""
    started = time.perf_counter()
    n_days = len(plan.days)
    pieces_seen = _Pieces()
    found = pipeline._Found(pieces_seen, buckets=buckets)
    result = ShardResult(
        shard=k,
        bars=[0] * n_days,
        written=[0] * n_days,
        confirmed=0,
        evidence=[[] for _ in range(n_days)],
        anomalies=[[] for _ in range(n_days)],
        marks=[[] for _ in range(n_days)],
        timed=[[] for _ in range(n_days)],
        states=[b""] * n_days,
        oos=[[] for _ in range(n_days)],
        sample=None,
    )
    lo, hi = plan.bound(plan.cuts[k]), plan.bound(plan.cuts[k + 1])
    with (
        engine.connect() as conn,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="tis-dsi-build") as builder,
        conn.begin(),
    ):  # one snapshot for every read of the shard
        conn.execute(sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
        if _max_version(conn, plan.end) != plan.version:
            raise BarsChanged("a day of the range was ingested again after the plan: run it again")
        state = _state_of_shard(conn, plan, k)
        builds: list[tuple[int, Future]] = []
        for i, day in enumerate(plan.days):
            lists = (found.evidence, found.anomalies, found.marks, found.timed)
            before = [len(x) for x in lists]
            bars_before = found.bars
            pieces = plan.shard_pieces(k, i)
            pieces_seen.into = result.oos[i]
            if pieces:  # else the shard has no bars that day: its state is carried as it is
                if len(builds) >= 2:  # at most two days' fills in flight
                    builds[-2][1].result()
                rows = store.RowStream()
                builds.append(
                    (i, builder.submit(store.fill_scored_rows, engine, day, plan.table(i), rows, lo, hi))
                )
                had_sample = found.sample is not None
                state = pipeline._score_day(
                    pipeline._read_pieces(engine, conn, day, pieces), state, config, rows, found
                )
                if not had_sample and found.sample is not None:
                    result.sample = (i, found.sample)
            for target, source, b in zip(
                (result.evidence[i], result.anomalies[i], result.marks[i], result.timed[i]),
                lists,
                before,
                strict=True,
            ):
                target.extend(source[b:])
            result.bars[i] = found.bars - bars_before
            result.states[i] = state.to_bytes() if state is not None else b""
        for i, build in builds:
            result.written[i] = build.result()
    result.confirmed = found.confirmed
    result.seconds = time.perf_counter() - started
    return result


def pooled_out_of_sample(results: list[ShardResult], config: DsiConfig) -> dict:
    """``OutOfSample.result()`` of the range as ``score_range`` computes it: the shards' pieces added in its
    order (day by day, the shards in the table's order of their symbols, each shard's pieces in order)."""
    pooled = OutOfSample(horizon=config.horizon, warmup=config.tail_rows)
    for i in range(len(results[0].oos) if results else 0):
        for r in results:
            for piece in r.oos[i]:
                pooled.add(piece)
    return pooled.result()


def merged_state(parts: list[bytes], fingerprint: str) -> tuple[bytes, int]:
    """The day's state of the whole range from the shards' parts (their symbols are disjoint): the bytes
    ``score_range`` stores, and its symbols."""
    states = [DsiState.from_bytes(p) for p in parts if p]
    if not states:
        return b"", 0
    symbols = {s: v for state in states for s, v in state.symbols.items()}
    return DsiState(states[0].config or fingerprint, symbols).to_bytes(), len(symbols)


def _finish_tables(engine: sa.Engine, tables: list[str]) -> None:
    """Primary key and statistics of the filled day tables, ``BUILD_CONNECTIONS`` at a time."""

    def finish(name: str) -> None:
        with engine.connect() as conn:
            raw = raw_connection(conn)
            with raw.cursor() as cur:
                finish_day_table(cur, name)
            raw.commit()

    with ThreadPoolExecutor(max_workers=BUILD_CONNECTIONS, thread_name_prefix="tis-dsi-finish") as pool:
        for done in [pool.submit(finish, t) for t in tables]:
            done.result()


def _figures(results: list[ShardResult], marks: pd.DataFrame, config: DsiConfig) -> tuple[dict, str]:
    """The out-of-sample figures and the plot (``score_range``'s: the first day's first piece)."""
    samples = [r.sample for r in results if r.sample is not None]
    sample = min(samples, key=lambda s: s[0])[1] if samples else None
    quality = pooled_out_of_sample(results, config)
    plot = pipeline._plot(sample, marks) if sample is not None and len(sample) else "_no bars_"
    return quality, plot


def finish_range(
    engine: sa.Engine,
    plan: RangePlan,
    results: list[ShardResult],
    config: DsiConfig,
    log: Callable[[str], None],
    buckets: Sequence[IO[bytes]],
) -> pipeline.DsiRun:
    """Swap the shards' days in and write the rollups' evidence (from the shards' ``buckets``), the events
    and the states in one transaction (module docstring); the run's figures as ``score_range`` gives them,
    computed on a thread while PostgreSQL builds the keys and swaps the days (as ``score_range`` computes
    them beside its swap)."""
    started = lap = time.perf_counter()
    steps: dict[str, float] = {"slowest_shard": max((r.seconds for r in results), default=0.0)}

    def clock(step: str) -> None:
        nonlocal lap
        now = time.perf_counter()
        steps[step] = now - lap
        lap = now

    results = sorted(results, key=lambda r: r.shard)
    if [r.shard for r in results] != list(range(plan.shards)):
        raise RuntimeError(f"expected the results of {plan.shards} shards, got {[r.shard for r in results]}")
    tables = [plan.table(i) for i in range(len(plan.days))]
    every = range(len(plan.days))
    marks = pipeline._concat([f for i in every for r in results for f in r.marks[i]])
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tis-dsi-figures") as pool:
        figures = pool.submit(_figures, results, marks, config)
        try:
            for i, day in enumerate(plan.days):
                written = sum(r.written[i] for r in results)
                if written != plan.day_bars[i]:
                    raise RuntimeError(f"{day.date()}: the shards wrote {written} bars of {plan.day_bars[i]}")
            _finish_tables(engine, tables)
            clock("keys_and_statistics")
            evidence = pipeline._concat([f for i in every for r in results for f in r.evidence[i]])
            event_rows = pipeline._concat([f for i in every for r in results for f in r.anomalies[i]])
            latency = pipeline._latency([f for i in every for r in results for f in r.timed[i]])
            evidence_rows = frames.with_run_latency(evidence, latency)
            states = []
            for i, day in enumerate(plan.days):
                data, symbols = merged_state([r.states[i] for r in results], plan.fingerprint)
                states.append(
                    {
                        "day": day.date(),
                        "config_fingerprint": plan.fingerprint,
                        "symbols": symbols,
                        "bars": sum(r.bars[i] for r in results),
                        "state": data,
                    }
                )
            clock("events_and_states")
            with engine.begin() as conn:
                partitions = store.lock_days(conn)
                if _max_version(conn, plan.end) != plan.version:
                    raise BarsChanged("a day of the range was ingested again after the plan: run it again")
                built = []
                for i, day in enumerate(plan.days):
                    name, exists = store.lock_day(conn, day, partitions)
                    if store.rows_with_module_columns(conn, day):
                        store.carry_source_columns(conn, tables[i], day)
                    built.append((day, name, tables[i], exists))
                store.attach_scored_days(conn, built)
                store.update_rollup_evidence_from(conn, buckets, plan.begin, plan.end)
                n_evidence, n_events = store.replace_events(
                    conn, evidence_rows, event_rows, plan.begin, plan.end
                )
                store.save_states(conn, states)
            clock("swap_and_commit")
        finally:
            # after the transaction: the tables it attached have their partitions' names now
            discard(
                engine, BuiltDays(plan.tag, [(day, "", t) for day, t in zip(plan.days, tables, strict=True)])
            )
        quality, plot = figures.result()
        clock("wait_for_figures")
    bars = sum(sum(r.bars) for r in results)
    elapsed = time.perf_counter() - started
    log(f"{plan.shards} shards scored {bars} bars; finished in {elapsed:.1f} s")
    return pipeline.DsiRun(
        begin=plan.begin,
        bars_scored=bars,
        confirmed=sum(r.confirmed for r in results),
        evidence_rows=evidence_rows,
        event_rows=event_rows,
        updated=sum(plan.day_bars),
        n_evidence=n_evidence,
        n_events=n_events,
        latency=latency,
        quality=quality,
        plot=plot,
        steps=steps,
        scored_s=steps["slowest_shard"],
        elapsed=steps["slowest_shard"] + elapsed,
    )
