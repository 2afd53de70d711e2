"""Plan and run backfills: a long range becomes chunks of whole days, each one Dagster run over its range.

A single run that fails loses all of its range, so long ranges are cut into chunks (default 31 days) and run
in order. Every run is tagged with the backfill's id and its chunk, so a re-run of the same command finds the
chunks whose run succeeded in Dagster's own run storage and resumes from the first one that did not.

Where the runs go: with a dagster-daemon running on the instance (``tis dev``), each chunk becomes a real
Dagster backfill (``instance.add_backfill``), which the UI's Backfills tab lists and whose runs the daemon
launches from the code location; without one, each chunk is one run executed by ``tis`` itself
(``dagster/backfill`` is left to Dagster: the UI hides a run carrying it from the runs feed unless a backfill
of that id exists).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, timedelta

BACKFILL_TAG = "tis/backfill"
CHUNK_TAG = "tis/chunk"


@dataclass(frozen=True)
class Chunk:
    first: date  # first partition (inclusive)
    last: date  # last partition (inclusive)

    @property
    def key(self) -> str:
        return f"{self.first.isoformat()}...{self.last.isoformat()}"

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1


def plan_chunks(first: date, last: date, chunk_days: int) -> list[Chunk]:
    """Consecutive chunks of at most ``chunk_days`` partitions covering first..last inclusive."""
    if last < first:
        raise ValueError(f"the end {last} is before the start {first}")
    if chunk_days < 1:
        raise ValueError("chunk_days must be at least 1")
    chunks, cursor = [], first
    while cursor <= last:
        end = min(last, cursor + timedelta(days=chunk_days - 1))
        chunks.append(Chunk(cursor, end))
        cursor = end + timedelta(days=1)
    return chunks


def covering_ranges(days: list[date], max_gap_days: int = 0) -> list[Chunk]:
    """The fewest ranges that cover ``days``, joining two runs of days when at most ``max_gap_days`` lie
    between.

    For a sparse history (files of a few days scattered over years) a run over the whole span would plan and
    record every empty partition; runs over these ranges touch only the days that have data.
    """
    if max_gap_days < 0:
        raise ValueError("max_gap_days must be at least 0")
    ranges: list[Chunk] = []
    for day in sorted(set(days)):
        if ranges and (day - ranges[-1].last).days <= max_gap_days + 1:
            ranges[-1] = Chunk(ranges[-1].first, day)
        else:
            ranges.append(Chunk(day, day))
    return ranges


def backfill_title(first: date, last: date) -> str:
    """The title of a chunk's Dagster backfill in the UI."""
    return f"tis backfill {first.isoformat()}...{last.isoformat()}"


def backfill_id(first: date, last: date, selection: str, chunk_days: int) -> str:
    text = f"{first.isoformat()}|{last.isoformat()}|{selection}|{chunk_days}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]
