"""One bar file, parsed completely (all symbols, all intervals), and ``read_file``: its 1-minute rows."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

from tis_pipeline.market_data.readers.bar_frame import FramePart, frame_from_raw
from tis_pipeline.market_data.readers.containers import (
    decompress,
    detect_kind,
    load_bytes,
    load_zip,
    read_arrow,
)
from tis_pipeline.market_data.readers.context import ReadContext
from tis_pipeline.market_data.readers.contract import (
    ONE_MINUTE,
    BarFileError,
    ReadResult,
    empty_frame,
    interval_label,
)
from tis_pipeline.market_data.readers.heads import head_of_bytes
from tis_pipeline.market_data.readers.limits import ReadLimits, check_regular, read_capped, too_large
from tis_pipeline.market_data.readers.overrides import SourceRules, relative
from tis_pipeline.market_data.readers.paths import lean_layout, path_skip_reason
from tis_pipeline.market_data.readers.profiles import Applied, Head, resolve
from tis_pipeline.market_data.readers.records import raw_from_table


@dataclass
class LoadedFile:
    path: str
    fmt: str
    parts: list[FramePart]
    notes: list[str]
    skipped: list[tuple[str, str]]
    applied: Applied | None = None

    @property
    def frame(self) -> pd.DataFrame:
        frames = [p.frame for p in self.parts if len(p.frame)]
        if not frames:
            return empty_frame()
        return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)

    @property
    def key_ns(self) -> np.ndarray:
        keys = [p.key_ns for p in self.parts if len(p.frame)]
        return np.concatenate(keys) if keys else np.zeros(0, np.int64)

    def intervals(self) -> dict[str, int | None]:
        """Per symbol: the interval the source profile reads from the name when it has one (a source that
        leaves out minutes without trades measures coarser than it is), else the measured one."""
        out: dict[str, int | None] = {}
        named = None if self.applied is None else self.applied.interval_seconds
        if named is not None:
            return {s: named for p in self.parts for s in p.intervals}
        for p in self.parts:
            for s, iv in p.intervals.items():
                if s not in out or (current := out[s]) is None:
                    out[s] = iv
                elif iv is not None:
                    out[s] = min(current, iv)
        return out


def applied_to(
    path: Path,
    member: str,
    lines: tuple[str, ...],
    tz: str,
    bar_label: str,
    rules: SourceRules | None,
    root: str | os.PathLike[str] | None,
) -> Applied:
    """The conventions a file is read with: the override file's for its path, else its source profile's,
    else ``tz``/``bar_label`` (profiles.resolve)."""
    rel = None if root is None else relative(path, root)
    head = Head(path.absolute(), member, lines)
    return resolve(head, tz, bar_label, rules, rel)


def load_file(
    path: str | os.PathLike[str],
    tz: str,
    bar_label: str,
    limits: ReadLimits | None = None,
    *,
    rules: SourceRules | None = None,
    root: str | os.PathLike[str] | None = None,
) -> LoadedFile:
    """Parse one file completely (all symbols, all intervals). Raises BarFileError, also for a path that is
    not a regular file or a file over a limit (``readers.limits``; checked before the file is opened).

    The file is read with the conventions of its source profile (``profiles``), or of the override file
    ``rules`` for its path under the data directory ``root``; ``tz``/``bar_label`` are the defaults."""
    p = Path(path)
    display = str(p)
    notes: list[str] = []
    skipped: list[tuple[str, str]] = []
    limits = limits or ReadLimits.from_settings()
    check_regular(p, display, limits)  # before any open: a FIFO would block, a device never end
    lean = lean_layout(p.resolve())
    try:
        with open(p, "rb") as fh:
            head = fh.read(16)
            fh.seek(0)
            data = b"" if kind_is_arrow(p.name, head) else read_capped(fh, limits.max_file_bytes)
    except OSError as exc:
        raise BarFileError(display, f"cannot open: {exc.strerror or exc}") from exc
    if len(data) > limits.max_file_bytes:  # grew after the stat
        raise BarFileError(display, too_large(len(data), limits))
    member, lines = head_of_bytes(p.name, data) if data else (p.name, ())
    applied = applied_to(p, member, lines, tz, bar_label, rules, root)
    ctx = ReadContext(
        p, display, p.name, applied.tz, applied.bar_label, lean, notes, limits=limits, applied=applied
    )
    if applied.profile is not None:
        ctx.note(
            f"source profile {applied.profile}: symbol {applied.symbol or '(column)'}, {applied.tz}, "
            f"bars labelled by their {applied.bar_label} time"
        )
    for warning in applied.warnings:
        ctx.note(warning)
    kind = detect_kind(p.name, head)
    reason = path_skip_reason(p)
    if reason is not None:
        skipped.append((display, reason))
        return LoadedFile(display, kind, [], notes, skipped, applied)

    parts: list[FramePart] = []
    fmt = kind
    try:
        if kind in ("parquet", "feather"):
            if len(head) == 0:
                raise ctx.error(f"empty file, not a {kind} file")
            raws = [(kind, raw_from_table(read_arrow(kind, str(p), ctx), kind))]
        else:
            if kind == "zip":
                raws = load_zip(data, ctx)
                fmt = raws[0][0] if raws else "zip"
            elif kind in ("gz", "bz2", "xz"):
                inner = decompress(kind, data, ctx)
                inner_name = p.name[: -len(p.suffix)] if p.suffix.lower() == "." + kind else p.stem
                ctx.inner_name = inner_name
                raws = [load_bytes(inner, detect_kind(inner_name, inner[:16]), ctx, prefix=f"{kind}-")]
            else:
                if len(data) == 0:
                    ctx.note("empty file: no rows")
                    return LoadedFile(display, kind, [], notes, skipped, applied)
                raws = [load_bytes(data, kind, ctx)]
            fmt = raws[0][0] if raws else fmt
        for item in raws:
            parts.append(frame_from_raw(item[1], item[2] if len(item) > 2 else ctx))
    except BarFileError:
        raise
    except MemoryError:
        raise BarFileError(display, "ran out of memory while parsing it") from None
    except Exception as exc:  # anything unexpected still names the file
        raise BarFileError(display, f"unexpected {type(exc).__name__}: {exc}") from exc
    return LoadedFile(display, fmt, parts, notes, skipped, applied)


def kind_is_arrow(name: str, head: bytes) -> bool:
    """Parquet and Feather are read by pyarrow from the path (column by column), not as bytes."""
    return detect_kind(name, head) in ("parquet", "feather")


def check_args(tz: str, bar_label: str) -> None:
    if bar_label not in ("open", "close"):
        raise ValueError(f"bar_label must be 'open' or 'close', not {bar_label!r}")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {tz!r}") from exc


def split_by_interval(
    loaded: LoadedFile,
) -> tuple[pd.DataFrame, np.ndarray, list[tuple[str, str]], list[str]]:
    frame = loaded.frame
    key = loaded.key_ns
    skipped = list(loaded.skipped)
    notes = list(loaded.notes)
    intervals = loaded.intervals()
    coarse = {s: iv for s, iv in intervals.items() if iv is not None and iv != ONE_MINUTE}
    unknown = [s for s, iv in intervals.items() if iv is None]
    for s in unknown:
        n = int((frame["symbol"] == s).sum()) if len(intervals) > 1 else len(frame)
        notes.append(f"{loaded.path}: interval of {s} could not be detected ({n} row(s)); taken as 1-minute")
    if coarse:
        single = len(intervals) == 1
        for s, iv in coarse.items():
            reason = f"interval {interval_label(iv)}, not 1-minute: skipped"
            skipped.append((loaded.path, reason if single else f"symbol {s}: {reason}"))
        keep = ~frame["symbol"].isin(list(coarse)).to_numpy()
        frame = frame.loc[keep].reset_index(drop=True)
        key = key[keep]
    return frame, key, skipped, notes


def read_file(path: str | os.PathLike[str], *, tz: str = "UTC", bar_label: str = "open") -> ReadResult:
    """Read one bar file: its 1-minute rows (coarser symbols go to ``skipped``). Raises BarFileError."""
    check_args(tz, bar_label)
    loaded = load_file(path, tz, bar_label)
    frame, _, skipped, notes = split_by_interval(loaded)
    return ReadResult(frame, skipped, notes)
