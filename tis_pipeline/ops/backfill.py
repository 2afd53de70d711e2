"""Plan and run backfills: a long range becomes chunks of whole days, each one Dagster run over its range.

A single run that fails loses all of its range, so long ranges are cut into chunks (default 31 days) and run in
order. Every run is tagged with the backfill's id and its chunk, so a re-run of the same command finds the chunks
whose run succeeded in Dagster's own run storage and resumes from the first one that did not.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, timedelta

BACKFILL_TAG = "tis/backfill"
CHUNK_TAG = "tis/chunk"


@dataclass(frozen=True)
class Chunk:
    first: date   # first partition (inclusive)
    last: date    # last partition (inclusive)

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


def backfill_id(first: date, last: date, selection: str, chunk_days: int) -> str:
    text = f"{first.isoformat()}|{last.isoformat()}|{selection}|{chunk_days}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]
