"""The ingest of market_data_1m: a source's pieces read, normalised and validated while PostgreSQL builds the
day partitions of the pieces before, then swapped in with the quarantine in one transaction. No Dagster here.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import itertools
import tempfile
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
import sqlalchemy as sa

from tis_pipeline.market_data.bars import normalise_bars, rows_apart
from tis_pipeline.market_data.describe import SummaryParts, rows_without_volume
from tis_pipeline.market_data.store import replace_quarantine, symbol_pieces
from tis_pipeline.market_data.validate import ValidatedTally, validate_bars, values_beyond_scale
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
A = TypeVar("A")


def prefetched(pieces: Iterator[T], thread_name: str = "tis-read") -> Generator[T, None, None]:
    """``pieces``, with the next one made on a thread while the caller works on the current one; leaving
    early waits for the piece in flight.

    The synthetic source draws its numbers with numpy, which releases the GIL while it fills the arrays, so
    day d + 1 is drawn on the second core while day d is validated; the GE step's reads are PostgreSQL's work.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name) as pool:
        coming = pool.submit(next, pieces, None)
        while (piece := coming.result()) is not None:
            coming = pool.submit(next, pieces, None)
            # handed over without a reference kept here, so that the caller's ``del`` frees it while it works
            handed = [piece]
            del piece
            yield handed.pop()


def made_ahead(
    make: Callable[[A], T], items: Iterable[A], ahead: int = 2, thread_name: str = "tis-read"
) -> Generator[T, None, None]:
    """``make(item)`` of each of ``items``, in their order, up to ``ahead`` of them being made at once on
    threads of their own while the caller works on the current one; leaving early waits for those in flight.

    For reads that are the server's work: with ``ahead`` 2, two backends read side by side while this
    process works (the GE step at 2,000 symbols 7.58 -> 6.76 s and 8.02 -> 7.71 s against one read ahead:
    on two cores the judging and the two backends share them). ``make`` must be safe to call from several
    threads at once (a connection of its own per call). Memory: ``ahead`` results beside the one handed over.
    ``prefetched`` is the one-ahead form for a generator, whose own ``next`` is the work.
    (``ThreadPoolExecutor.map`` would submit every item at once, and so hold every result made before the
    caller takes it.)"""
    if ahead < 1:
        raise ValueError(f"ahead must be at least 1, not {ahead}")
    pending = iter(items)
    with ThreadPoolExecutor(max_workers=ahead, thread_name_prefix=thread_name) as pool:
        coming: collections.deque[Future[T]] = collections.deque(
            pool.submit(make, item) for item in itertools.islice(pending, ahead)
        )
        while coming:
            piece = coming.popleft().result()
            for item in pending:  # the next item, if any, replaces the one handed over
                coming.append(pool.submit(make, item))
                break
            # handed over without a reference kept here, so that the caller's ``del`` frees it while it works
            handed = [piece]
            del piece
            yield handed.pop()


@dataclass
class Ingested:
    """A window read, validated and built (``build_window``), not yet written (``write_window``): what is
    small (the quarantine, counts, a preview); the clean rows are in the built days only."""

    built: BuiltDays
    quarantine: pd.DataFrame  # the window's quarantine rows (``validate.Validated.quarantine``)
    counts: dict[str, int]  # rule -> rows quarantined
    rows_without_volume: int  # clean rows whose source gave no volume (``describe.rows_without_volume``)
    preview: pd.DataFrame  # the window's first ``PREVIEW_ROWS`` clean rows
    report: ValidationReport  # the registry's rules on the clean rows
    facts: dict  # describe.summary of the clean rows
    symbols: list[str]  # the symbols the source owns in the window, sorted
    notes: list[str]
    skipped: list[tuple[str, str]]  # (file, why) the source did not read
    unreadable: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (file, why): left out
    outside_rows: int = 0  # rows of the window's files in no partition (before the first, or future)
    files_report: ValidationReport | None = None  # market_data_1m_source_files_readable on the unreadable
    applied: list[dict] = dataclasses.field(default_factory=list)  # per file: profile, symbol, tz, bar label


PREVIEW_ROWS = 10  # clean rows shown in the run's metadata


def build_window(
    engine: sa.Engine, pieces: Iterator, start: pd.Timestamp, end: pd.Timestamp, max_quarantine_share: float
) -> Ingested:
    """Read ``pieces`` (a source's ``SourceRead``s of [start, end)), validate them, build their days.

    PostgreSQL builds each day's partition from its rows as they are validated (a day may come in several
    pieces of whole symbols: ``SourceRead.ends_days`` marks its last), while this process reads and validates
    the next piece, then judges all the rows by the registry's rules (errors prove the write, warnings report
    gaps and jumps): reading, checking and writing overlap instead of taking turns. Once a day's pieces are
    all in, a day of more than ``max_quarantine_share`` bad rows raises ``validate.QuarantineShareExceeded``
    (``validate.ValidatedTally.enforce_share_limit``: the share of the whole day); whatever was built is
    dropped on any failure.

    Memory follows a piece, not the window nor the day: of each piece only what is small stays (quarantine
    rows, counts, the summary's numbers per symbol and day: ``validate.ValidatedTally``,
    ``describe.SummaryParts``); its clean rows go to the day's build and to a temporary directory
    (``SpilledRows``), from which the report reads them back in pieces of whole symbols, each series whole
    over the window. The report and the facts are those of the window's rows judged together, bit for bit.
    """
    symbols, notes, skipped, unreadable, outside_rows = set(), [], [], [], 0
    applied: list[dict] = []
    tally, summary_parts, without_volume = ValidatedTally(), SummaryParts(), 0
    preview: list[pd.DataFrame] = []
    drop_dead_scratch_tables_of(engine)  # the tables of runs killed before they swapped or discarded them
    builds = DayBuilds(engine, start, end)
    try:
        with tempfile.TemporaryDirectory(prefix="tis-ingest-") as spill_dir:
            spilled = SpilledRows(Path(spill_dir))
            for read in prefetched(pieces):
                symbols.update(read.symbols)
                notes += read.notes
                skipped += read.skipped
                unreadable += [u for u in read.unreadable if u not in unreadable]
                outside_rows += read.outside_rows
                applied += read.applied
                ends_days = read.ends_days
                checked = validate_bars(normalise_bars(read.frame), partition_date=start)
                del read  # the source's frame: the normalised rows are all that is used
                tally.add(checked)
                if ends_days:  # the days of the pieces since the last such piece are whole
                    tally.enforce_share_limit(max_quarantine_share)
                builds.add(checked.clean, whole=ends_days)
                summary_parts.add(checked.clean)
                without_volume += rows_without_volume(checked.clean)
                if sum(len(p) for p in preview) < PREVIEW_ROWS:
                    preview.append(rows_apart(checked.clean, PREVIEW_ROWS))
                spilled.add(checked.clean)
                del checked  # the builds hold their own days
            if tally.unjudged_pieces:  # a source whose last piece did not say so: its days end with it
                tally.enforce_share_limit(max_quarantine_share)
            enforced = tally.enforced()  # raises without any piece, as Validated.concat does
            report = judge_in_pieces(spilled, enforced)
        facts = summary_parts.facts()
    except BaseException:
        builds.abandon()
        raise
    return Ingested(
        builds.finish(),
        tally.quarantine(),
        tally.counts(),
        without_volume,
        (pd.concat(preview, ignore_index=True) if len(preview) > 1 else preview[0]).head(PREVIEW_ROWS),
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


class SpilledRows:
    """The clean rows of a window, kept on disk as they come (``add``: a piece at a time) and read back in
    pieces of whole symbols (``read``), each symbol's rows in the order they came.

    Each piece's columns go to ``directory`` as raw arrays (``ndarray.tofile``), its rows grouped by symbol
    (a stable sort: a normalised piece already is), with the bounds of each symbol's rows; ``read`` takes of
    each piece only its symbols' rows (``np.fromfile`` at an offset). Values travel as their bytes, so the
    rows read back equal the rows given, dtypes included. Columns of another kind (none from
    ``validate_bars``) are pickled whole and read whole.
    """

    def __init__(self, directory: Path):
        self.directory = directory
        self._pieces: list[_SpilledPiece] = []
        self._counts: dict[str, int] = {}
        self._empties: list[pd.DataFrame] = []  # the pieces' columns and dtypes (each kind once), no rows

    def add(self, clean: pd.DataFrame) -> None:
        empty = rows_apart(clean, 0)
        if not any(empty.dtypes.equals(e.dtypes) for e in self._empties):
            self._empties.append(empty)
        if clean.empty:
            return
        codes, uniques = pd.factorize(clean["symbol"], sort=True)
        if (codes < 0).any():
            raise ValueError("a clean row without a symbol")
        if not (codes[1:] >= codes[:-1]).all():
            order = np.argsort(codes, kind="stable")
            clean, codes = clean.take(order), codes[order]
        names = [str(u) for u in uniques]
        per_symbol = np.bincount(codes, minlength=len(names))
        for name, n in zip(names, per_symbol.tolist(), strict=True):
            self._counts[name] = self._counts.get(name, 0) + n
        piece = _SpilledPiece(names, np.r_[0, np.cumsum(per_symbol)], clean["symbol"].dtype, {})
        for column in clean.columns:
            if column == "symbol":
                continue
            values, dtype = clean[column], clean[column].dtype
            path = self.directory / f"{len(self._pieces)}_{len(piece.columns)}"
            if isinstance(dtype, np.dtype) and dtype.kind in "biuf":
                values.to_numpy().tofile(path)
            elif isinstance(dtype, pd.DatetimeTZDtype):
                values.array.asi8.tofile(path)
            else:
                values.reset_index(drop=True).to_pickle(path)
            piece.columns[column] = (path, dtype)
        self._pieces.append(piece)

    def symbol_counts(self) -> list[tuple[str, int]]:
        """(symbol, rows) of the window, by symbol."""
        return sorted(self._counts.items())

    def read(self, low: str | None, below: str | None) -> pd.DataFrame:
        """The rows of the symbols in [low, below) (None: open), by symbol, each symbol's rows in the order
        they came; columns and dtypes as given."""
        parts = []
        for piece in self._pieces:
            first = 0 if low is None else bisect.bisect_left(piece.names, low)
            last = len(piece.names) if below is None else bisect.bisect_left(piece.names, below)
            if first < last:
                parts.append(piece.read(first, last))
        if not parts:
            return pd.concat(self._empties, ignore_index=True) if len(self._empties) > 1 else self._empties[0]
        if len(parts) == 1:
            return parts[0]
        joined = pd.concat(parts, ignore_index=True)
        # by symbol, each symbol's rows in piece order (a stable sort of the pieces read one after the other)
        order = np.argsort(pd.factorize(joined["symbol"], sort=True)[0], kind="stable")
        return joined.take(order).reset_index(drop=True)


@dataclass
class _SpilledPiece:
    names: list[str]  # its symbols, sorted
    bounds: np.ndarray  # symbol i's rows are [bounds[i], bounds[i + 1])
    symbol_dtype: object
    columns: dict[str, tuple[Path, object]]  # column -> (file, dtype), in the piece's column order

    def read(self, first: int, last: int) -> pd.DataFrame:
        """The rows of its symbols ``first`` to ``last - 1`` (positions in ``names``)."""
        low, high = int(self.bounds[first]), int(self.bounds[last])
        repeats = np.diff(self.bounds[first : last + 1])
        names = np.array(self.names[first:last], dtype=object)
        symbol = pd.Series(np.repeat(names, repeats), dtype=self.symbol_dtype)
        frame = {"symbol": symbol}
        for column, (path, dtype) in self.columns.items():
            if isinstance(dtype, np.dtype) and dtype.kind in "biuf":
                frame[column] = pd.Series(_read_raw(path, dtype, low, high))
            elif isinstance(dtype, pd.DatetimeTZDtype):
                naive = _read_raw(path, np.dtype("int64"), low, high).view(f"datetime64[{dtype.unit}]")
                frame[column] = pd.Series(naive).dt.tz_localize("UTC").dt.tz_convert(dtype.tz).astype(dtype)
            else:
                frame[column] = pd.read_pickle(path).iloc[low:high].reset_index(drop=True)
        return pd.DataFrame(frame)


def _read_raw(path: Path, dtype: np.dtype, low: int, high: int) -> np.ndarray:
    return np.fromfile(path, dtype=dtype, count=high - low, offset=low * dtype.itemsize)


def judge_in_pieces(rows: SpilledRows, enforced: frozenset[str]) -> ValidationReport:
    """The registry's rules judged on the clean rows of a window, in pieces of whole symbols of about
    ``settings().check_piece_rows`` rows (each series whole over the window, each symbol's rows in time order)
    merged into one report (``report.merge_reports``): the evaluator's working memory follows a piece. The
    rules validation quarantined by (``enforced``) are not judged again: no clean row breaks them."""
    reports = []
    for low, below in symbol_pieces(rows.symbol_counts(), settings().check_piece_rows):
        part = rows.read(low, below)
        judged = part.assign(**{SCALE_LOSS_COLUMN: values_beyond_scale(part)})
        reports.append(
            # merge_reports keeps copies of the small tables only (a piece's rows go with it)
            merge_reports([evaluate_frame(judged, "market_data_1m", enforced=enforced)])
        )
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
            quarantined = replace_quarantine(conn, ingested.quarantine, start, end)
    finally:
        discard(engine, ingested.built)
    return replaced, written, quarantined
