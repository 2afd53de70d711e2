"""A sensor on ``TIS_MARKET_DATA_DIR``: bar files that appear, change or go away request runs of their days.

The sensor learns the directory through the same manifest as the ingest (``catalog.scan``: a file is read
again only when its size or modification time changed). Its cursor holds, per 1-minute file, the size,
modification time, first and last UTC day and a blake2b digest of the content, so a file rewritten with the
same size and modification time but other bytes is seen too (the digest is recomputed when the file's stat,
ctime and inode included, changed; a rewrite always changes ctime). Such a file keeps the days the manifest
has for it. A file that appears or changes brings the days it holds now and the days it held before. A file
that goes away brings the days it held: their partitions are rebuilt from the files that remain. Each stretch
of consecutive days becomes one run of ``daily_partitioned_job`` over that partition range: the bars, the
rollups, DSI and the trading day of those days.

Only partitions that exist are requested: days from ``TIS_PARTITION_START`` to yesterday (UTC).
The first evaluation records the files as they are and requests nothing. Load a directory's history with
``tis backfill``; the sensor keeps it current from then on. It is off by default: turn it on in the UI, or
with ``dagster sensor start market_data_files_sensor`` (README, "Partitions, schedules and backfills").
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pandas as pd

from tis_pipeline.market_data.partitions import range_tags
from tis_pipeline.ops.jobs import daily_partitioned_job
from tis_pipeline.settings import settings

DIGEST_CHUNK = 1 << 20


def file_digest(path: str) -> str:
    """blake2b (16 bytes) of the file's content: a file rewritten with the same size and modification time
    but other bytes gets another digest."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(DIGEST_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _stat_key(path: str) -> list[int] | None:
    """(size, mtime_ns, ctime_ns, inode): a write or a rename changes ctime, which no tool sets back."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def file_states(infos: Iterable, before: dict[str, list] | None = None) -> dict[str, list]:
    """The cursor's content: per 1-minute file (``catalog.FileInfo`` without an error),
    ``[size, mtime_ns, first UTC day, last UTC day, content digest, stat key]`` with the days as ISO dates.

    The digest is read again only for a file whose stat key (``_stat_key``) differs from ``before``'s (the
    previous cursor), so an unchanged directory is not re-read on every tick."""
    before = before or {}
    states: dict[str, list] = {}
    for info in infos:
        if not info.holds_minute_bars:
            continue
        key = _stat_key(info.path)
        old = before.get(info.path)
        if old is not None and len(old) >= 6 and key is not None and old[5] == key:
            digest = old[4]
        else:
            try:
                digest = file_digest(info.path)
            except OSError:
                continue  # gone since the scan: the next tick sees it go away
        states[info.path] = [
            info.size,
            info.mtime_ns,
            info.first.date().isoformat(),
            info.last.date().isoformat(),
            digest,
            key,
        ]
    return states


def _same_file(old: list, new: list) -> bool:
    """Size, modification time and, when both states have one, the content digest agree."""
    if old[:2] != new[:2]:
        return False
    return len(old) < 5 or len(new) < 5 or old[4] == new[4]


def changed_days(before: dict[str, list], after: dict[str, list]) -> set[date]:
    """The UTC days held by the files that appeared, changed (size, modification time or content digest) or
    went away between two ``file_states``: for a changed file, the days it held before and those it holds
    now."""
    days: set[date] = set()
    for path in before.keys() | after.keys():
        old, new = before.get(path), after.get(path)
        if old is not None and new is not None and _same_file(old, new):
            continue
        for state in (old, new):
            if state is not None:
                days.update(d.date() for d in pd.date_range(state[2], state[3], freq="D"))
    return days


@dg.sensor(
    job=daily_partitioned_job,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Runs the days of bar files that appear, change or go away under TIS_MARKET_DATA_DIR.",
)
def market_data_files_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason | list[dg.RunRequest]:
    from pathlib import Path

    from tis_pipeline.market_data.sources import scan_data_dir
    from tis_pipeline.ops.backfill import covering_ranges

    s = settings()
    if s.market_source != "csv" or not s.market_data_dir or not Path(s.market_data_dir).is_dir():
        return dg.SkipReason(
            f"no directory of bar files to watch (TIS_MARKET_SOURCE={s.market_source}, "
            f"TIS_MARKET_DATA_DIR={s.market_data_dir})"
        )
    before = None if context.cursor is None else json.loads(context.cursor)
    after = file_states(scan_data_dir(), before)
    cursor = json.dumps(after, sort_keys=True)
    if before is None:
        context.update_cursor(cursor)
        return dg.SkipReason(
            f"first look: {len(after)} 1-minute file(s) recorded as they are; load their "
            "history with `tis backfill`"
        )
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    first = date.fromisoformat(s.partition_start)
    days = sorted(d for d in changed_days(before, after) if first <= d <= yesterday)
    context.update_cursor(cursor)
    if not days:
        return dg.SkipReason("no 1-minute file appeared, changed or went away on a day with a partition")
    version = hashlib.sha256(cursor.encode()).hexdigest()[:12]  # a retried tick asks for the same runs again
    return [
        dg.RunRequest(
            run_key=f"files {c.first}..{c.last} {version}",
            tags=range_tags(c.first.isoformat(), c.last.isoformat()),
        )
        for c in covering_ranges(days)
    ]
