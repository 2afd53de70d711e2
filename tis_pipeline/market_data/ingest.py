"""The ingest of market_data_1m: a source's pieces read, normalised and validated while PostgreSQL builds the
day partitions of the pieces before, then swapped in with the quarantine in one transaction. No Dagster here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import pandas as pd
import sqlalchemy as sa

from tis_pipeline.market_data.bars import normalise_bars
from tis_pipeline.market_data.describe import summary
from tis_pipeline.market_data.store import replace_quarantine, symbol_pieces
from tis_pipeline.market_data.validate import (
    Validated,
    enforce_share_limit,
    validate_bars,
    values_beyond_scale,
)
from tis_pipeline.pg.day_partitions import (
    BuiltDays,
    DayBuilds,
    discard,
    drop_dead_scratch_tables_of,
    swap_built_days,
)
from tis_pipeline.quality.evaluate import evaluate_frame
from tis_pipeline.quality.report import ValidationReport, merge_reports
from tis_pipeline.quality.rules import SCALE_LOSS_COLUMN, UNREADABLE_COLUMN, rule
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


@dataclass
class Ingested:
    """A window read, validated and built (``build_window``), not yet written (``write_window``)."""

    built: BuiltDays
    checked: Validated  # all the window's rows: clean and quarantined
    report: ValidationReport  # the registry's rules on the clean rows
    facts: dict  # describe.summary of the clean rows
    symbols: list[str]  # the symbols the source owns in the window, sorted
    notes: list[str]
    skipped: list[tuple[str, str]]  # (file, why) the source did not read
    unreadable: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (file, why): left out
    outside_rows: int = 0  # rows of the window's files in no partition (before the first, or future)
    files_report: ValidationReport | None = None  # market_data_1m_source_files_readable on the unreadable
    applied: list[dict] = dataclasses.field(default_factory=list)  # per file: profile, symbol, tz, bar label


def build_window(
    engine: sa.Engine, pieces: Iterator, start: pd.Timestamp, end: pd.Timestamp, max_quarantine_share: float
) -> Ingested:
    """Read ``pieces`` (a source's ``SourceRead``s of [start, end)), validate them, build their days.

    PostgreSQL builds each day's partition as soon as its rows are validated, while this process reads and
    validates the next piece, then judges all the rows by the registry's rules (errors prove the write,
    warnings report gaps and jumps): reading, checking and writing overlap instead of taking turns. A piece
    with a day of more than ``max_quarantine_share`` bad rows raises ``validate.QuarantineShareExceeded``;
    whatever was built is dropped on any failure.
    """
    validated: list[Validated] = []
    symbols, notes, skipped, unreadable, outside_rows = set(), [], [], [], 0
    applied: list[dict] = []
    drop_dead_scratch_tables_of(engine)  # the tables of runs killed before they swapped or discarded them
    builds = DayBuilds(engine, start, end)
    try:
        for read in prefetched(pieces):
            symbols.update(read.symbols)
            notes += read.notes
            skipped += read.skipped
            unreadable += [u for u in read.unreadable if u not in unreadable]
            outside_rows += read.outside_rows
            applied += read.applied
            checked = validate_bars(normalise_bars(read.frame), partition_date=start)
            enforce_share_limit(checked, max_quarantine_share)
            builds.add(checked.clean)
            validated.append(checked)
        checked = Validated.concat(validated)
        validated.clear()  # concat copied them; the builds hold their own days
        report = judge_in_pieces(checked)
        facts = summary(checked.clean)
    except BaseException:
        builds.abandon()
        raise
    return Ingested(
        builds.finish(),
        checked,
        report,
        facts,
        sorted(symbols),
        notes,
        skipped,
        unreadable,
        outside_rows,
        unreadable_report(unreadable),
        applied,
    )


def judge_in_pieces(checked: Validated) -> ValidationReport:
    """The registry's rules judged on the clean rows of a window, in pieces of whole symbols of about
    ``settings().check_piece_rows`` rows (each series whole over the window, each symbol's rows in time order)
    merged into one report (``report.merge_reports``): the evaluator's working memory follows a piece. The
    rules validation quarantined by are not judged again: no clean row breaks them."""
    clean = checked.clean
    codes, uniques = pd.factorize(clean["symbol"], sort=True)
    order = np.argsort(codes, kind="stable")  # by symbol, each symbol's rows in the order they came
    counts = np.bincount(codes, minlength=len(uniques)) if len(clean) else np.zeros(0, dtype=np.int64)
    pieces = symbol_pieces(list(zip(uniques, counts.tolist(), strict=True)), settings().check_piece_rows)
    bounds = np.r_[0, np.cumsum(counts)]
    reports = []
    for low, below in pieces:
        first = 0 if low is None else int(np.searchsorted(uniques, low))
        last = len(uniques) if below is None else int(np.searchsorted(uniques, below))
        part = clean.iloc[order[bounds[first] : bounds[last]]]
        judged = part.assign(**{SCALE_LOSS_COLUMN: values_beyond_scale(part)})
        reports.append(merge_reports([evaluate_frame(judged, "market_data_1m", enforced=checked.enforced)]))
        del part, judged
    return merge_reports(reports)


def unreadable_report(unreadable: list[tuple[str, str]]) -> ValidationReport:
    """The readable-files rule judged on the files left out as unreadable, one row each (the bars' report
    skips it: its column is not a bar's); its failing rows name the file and why."""
    files_rule = rule("market_data_1m_source_files_readable")
    files = pd.DataFrame({UNREADABLE_COLUMN: np.ones(len(unreadable), dtype=np.int64)})
    report = evaluate_frame(files, "market_data_1m", rules=(files_rule,))
    [judged] = report.results
    judged = dataclasses.replace(
        judged, failing_rows=pd.DataFrame(unreadable[:20], columns=["source_file", "why"])
    )
    return dataclasses.replace(report, results=(judged,))


def write_window(
    engine: sa.Engine, ingested: Ingested, start: pd.Timestamp, end: pd.Timestamp
) -> tuple[int, int, int]:
    """Swap the built days in and replace the window's quarantine, in one transaction; (rows replaced, rows
    written, rows quarantined). The built tables not swapped in are dropped whatever happens."""
    try:
        with engine.begin() as conn:
            replaced, written = swap_built_days(conn, ingested.built, start, end, ingested.symbols)
            quarantined = replace_quarantine(conn, ingested.checked.quarantine, start, end)
    finally:
        discard(engine, ingested.built)
    return replaced, written, quarantined
