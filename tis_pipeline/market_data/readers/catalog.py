"""The catalog of a directory of bar files: the manifest (what each file holds, learned once), ``scan`` and
``read_bar_files`` (the 1-minute rows of a time window from every file under a directory).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tis_pipeline.market_data.readers.containers import detect_kind
from tis_pipeline.market_data.readers.contract import (
    NS,
    ONE_MINUTE,
    BarFileError,
    ReadResult,
    empty_frame,
    interval_label,
)
from tis_pipeline.market_data.readers.files import check_args, load_file, split_by_interval
from tis_pipeline.market_data.readers.limits import ReadLimits
from tis_pipeline.market_data.readers.overrides import SourceRules, load_rules
from tis_pipeline.market_data.readers.paths import (
    DATA_SUFFIXES,
    NOT_DATA_STEMS,
    date_in_name,
    path_skip_reason,
)

# Bump when the parsing rules change, so that manifests written by an older reader are re-learned.
_READER_VERSION = "4"


@dataclass
class FileInfo:
    """What the manifest learns about one file, once."""

    path: str
    size: int
    mtime_ns: int
    fmt: str
    symbols: list[str]
    first: pd.Timestamp | None
    last: pd.Timestamp | None
    interval_seconds: int | None
    rows: int
    error: str | None = None
    # the conventions it was read with: source profile, symbol, tz, bar_label and where each came from
    applied: dict = dataclasses.field(default_factory=dict)

    @property
    def holds_minute_bars(self) -> bool:
        """Read without error, of 1-minute bars, with at least one usable timestamp: a file the ingest loads
        from."""
        return self.error is None and self.interval_seconds == ONE_MINUTE and self.first is not None

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "fmt": self.fmt,
            "symbols": list(self.symbols),
            "first": None if self.first is None else self.first.isoformat(),
            "last": None if self.last is None else self.last.isoformat(),
            "interval_seconds": self.interval_seconds,
            "rows": self.rows,
            "error": self.error,
            "applied": dict(self.applied),
        }

    @classmethod
    def from_json(cls, d: dict) -> FileInfo:
        def ts(v: str | None) -> pd.Timestamp | None:
            return None if v is None else pd.Timestamp(v).tz_convert("UTC").as_unit("ns")

        return cls(
            path=d["path"],
            size=int(d["size"]),
            mtime_ns=int(d["mtime_ns"]),
            fmt=d["fmt"],
            symbols=list(d["symbols"]),
            first=ts(d["first"]),
            last=ts(d["last"]),
            interval_seconds=d["interval_seconds"],
            rows=int(d["rows"]),
            error=d.get("error"),
            applied=dict(d.get("applied") or {}),
        )


def _candidate_files(root: Path, exclude: Path | None) -> list[Path]:
    if root.is_file():
        return [root]
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__MACOSX")
        for fn in sorted(filenames):
            if fn.startswith("."):
                continue
            p = Path(dirpath) / fn
            # os.path.realpath, not Path.resolve(): it ends a symlink loop instead of raising RuntimeError
            if exclude is not None and os.path.realpath(p) == str(exclude):
                continue
            ext = os.path.splitext(fn)[1].lower()
            if ext not in DATA_SUFFIXES:
                continue
            if fn.lower().startswith(NOT_DATA_STEMS) and ext in (".txt", ".md", ".json"):
                continue
            out.append(p)
    return out


candidate_files = _candidate_files  # the files a directory scan reads (tis files probes the same ones)


def _learn(
    p: Path,
    st: os.stat_result,
    tz: str,
    bar_label: str,
    limits: ReadLimits,
    rules: SourceRules | None = None,
    root: Path | None = None,
) -> FileInfo:
    try:
        loaded = load_file(p, tz, bar_label, limits, rules=rules, root=root)
    except BarFileError as exc:
        # The days an unreadable file would hold are known only from a date in its name: it blocks those
        # days' runs; a file without one blocks none (read_bar_files leaves it out and names it)
        first = last = None
        day = date_in_name(p.name)
        if day is not None:
            first = pd.Timestamp(day).tz_localize(tz).tz_convert("UTC").as_unit("ns")
            last = (pd.Timestamp(day) + pd.Timedelta(days=1)).tz_localize(tz).tz_convert("UTC").as_unit("ns")
            last -= pd.Timedelta(minutes=1)
        return FileInfo(
            str(p), st.st_size, st.st_mtime_ns, detect_kind(p.name, b""), [], first, last, None, 0, str(exc)
        )
    frame = loaded.frame
    intervals = loaded.intervals()
    ts = frame["timestamp"]
    valid = ts.notna()
    known = [iv for iv in intervals.values() if iv is not None]
    if ONE_MINUTE in known:
        interval = ONE_MINUTE
    elif known:
        interval = min(known)
    else:
        interval = None
    return FileInfo(
        path=str(p),
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        fmt=loaded.fmt,
        symbols=sorted(str(s) for s in pd.unique(frame["symbol"].dropna())) if len(frame) else [],
        first=ts[valid].min() if valid.any() else None,
        last=ts[valid].max() if valid.any() else None,
        interval_seconds=interval,
        rows=len(frame),
        applied={} if loaded.applied is None else loaded.applied.to_json(),
    )


def _read_manifest(path: Path | None) -> dict:
    if path is None or not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("version") != _READER_VERSION:
            return {}
        return dict(doc.get("files", {}))
    except (OSError, ValueError, AttributeError):
        return {}  # a damaged manifest is only a cache: everything is re-learned


def _write_manifest(path: Path, files: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(
        json.dumps({"version": _READER_VERSION, "files": files}, indent=1, sort_keys=True), encoding="utf-8"
    )
    os.replace(tmp, path)


def scan(
    root: str | os.PathLike[str],
    *,
    manifest_path: str | os.PathLike[str] | None = None,
    tz: str = "UTC",
    bar_label: str = "open",
) -> list[FileInfo]:
    """Learn every bar file under ``root`` (recursively) once.

    The manifest (JSON at ``manifest_path``) is keyed by path and remembers size, mtime_ns, tz and bar_label:
    unchanged files are not read again; new or changed files are (re)learned; vanished files are dropped.
    Files that fail are recorded with ``error`` set (and retried only once they change). Without a
    ``manifest_path`` every file is read. The reader limits (``TIS_MAX_*``) are remembered like tz: a changed
    limit re-learns every file (a file refused by a limit is read once the limit is raised), and so is the
    override file ``tis-sources.toml`` of ``root`` (its digest). Each entry records what was applied to the
    file (``applied``: source profile, symbol, tz, bar_label, and where each came from).
    """
    check_args(tz, bar_label)
    limits = ReadLimits.from_settings()
    limits_json = dataclasses.asdict(limits)
    root_p = Path(root).absolute()
    if not root_p.exists():
        raise FileNotFoundError(f"market data path does not exist: {root_p}")
    mpath = Path(manifest_path).resolve() if manifest_path is not None else None
    rules = load_rules(root_p)
    old = _read_manifest(mpath)
    new: dict[str, dict] = {}
    infos: list[FileInfo] = []
    for p in _candidate_files(root_p, mpath):
        try:
            st = p.stat()
        except OSError:
            try:  # a symlink loop or a dangling link: learned (as an error) from the link itself
                st = p.lstat()
            except OSError:
                continue  # gone since the walk
        key = str(p)
        entry = old.get(key)
        if (
            entry is not None
            and entry.get("size") == st.st_size
            and entry.get("mtime_ns") == st.st_mtime_ns
            and entry.get("tz") == tz
            and entry.get("bar_label") == bar_label
            and entry.get("limits") == limits_json
            and entry.get("rules", "") == rules.digest
        ):
            info = FileInfo.from_json(entry)
        else:
            info = _learn(p, st, tz, bar_label, limits, rules, root_p if root_p.is_dir() else None)
        infos.append(info)
        new[key] = {
            **info.to_json(),
            "tz": tz,
            "bar_label": bar_label,
            "limits": limits_json,
            "rules": rules.digest,
        }
    if mpath is not None and (new != old or not mpath.exists()):
        # keep entries of other roots that share the manifest
        merged = {k: v for k, v in old.items() if not _under(k, root_p)}
        merged.update(new)
        _write_manifest(mpath, merged)
    return infos


def _under(path: str, root: Path) -> bool:
    try:
        Path(path).relative_to(root)
        return True
    except ValueError:
        return str(path) == str(root)


def _utc(ts: pd.Timestamp | str) -> pd.Timestamp:
    t = pd.Timestamp(ts)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def _outside(
    frame: pd.DataFrame, key: np.ndarray, earliest_ns: int, now_ns: int, lo: int, hi: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows stamped in the future are in no window that can be run yet (a partition exists only once its day
    is over), rows before the first partition in none at all. -> (keys where an unparseable row next to such
    a row goes with its nearest in-range row instead, masks of the future and of the early rows whose
    nearest in-range row is in [lo, hi): the run that reports them, once)."""
    far, early = key > now_ns, key < earliest_ns
    out = far | early
    if not out.any():
        return key, far, early
    nat = frame["timestamp"].isna().to_numpy()
    anchor = pd.Series(np.where(out | nat, np.nan, key.astype(np.float64)))
    home = anchor.ffill().bfill().to_numpy()
    if np.isnan(home).all():  # nothing in the file is in range: no run to report them in
        nothing = np.zeros(len(key), bool)
        return key, nothing, nothing
    home = home.astype(np.int64)
    here = ~nat & (home >= lo) & (home < hi)
    return np.where(nat & out, home, key), far & here, early & here


def read_bar_files(
    root: str | os.PathLike[str],
    start: pd.Timestamp,
    end: pd.Timestamp,
    *,
    manifest_path: str | os.PathLike[str] | None = None,
    tz: str = "UTC",
    bar_label: str = "open",
    earliest: pd.Timestamp | str | None = None,
) -> ReadResult:
    """1-minute rows with ``start <= timestamp < end`` (UTC; naive bounds are UTC) from every file under root.

    Only files whose [first, last] range (from the manifest) overlaps the window are read. Files with a
    coarser interval are listed in ``skipped``. A file that failed raises BarFileError (a run must fail naming
    the file rather than load partial data). Rows that could not be parsed (NaT timestamp) go with the window
    of the nearest parseable row before them in the file (after them if there is none), so that they reach
    the validator's quarantine exactly once. Rows stamped later than now (+1 minute) belong to no partition
    that exists yet: they are not returned, and a note names them in the window of their nearest earlier row.
    Files that give no row to any window (no bars, no usable timestamp, only future rows) are listed in
    ``skipped`` with the reason, in every window, like files of a coarser interval. Rows stamped before
    ``earliest`` (the first partition) are in no partition either: counted in ``outside_rows`` and noted
    like future rows.

    A file that cannot be read at all (``FileInfo.error``: not a regular file, over a limit, undecodable)
    cannot show which days it holds: it is left out of every window and listed in ``unreadable``, unless
    its name carries a date, which makes it fail (BarFileError) the windows of that day only.
    """
    start_t, end_t = _utc(start), _utc(end)
    now_ns = pd.Timestamp.now(tz="UTC").as_unit("ns").value + ONE_MINUTE * NS  # the validator's tolerance
    infos = scan(root, manifest_path=manifest_path, tz=tz, bar_label=bar_label)
    root_p = Path(root).absolute()
    rules = load_rules(root_p)
    applied: list[dict] = []
    frames: list[pd.DataFrame] = []
    skipped: list[tuple[str, str]] = []
    notes: list[str] = []
    lo, hi = start_t.as_unit("ns").value, end_t.as_unit("ns").value
    earliest_ns = np.iinfo(np.int64).min if earliest is None else _utc(earliest).as_unit("ns").value
    unreadable: list[tuple[str, str]] = []
    outside_rows = 0
    for info in infos:
        if info.error is not None:
            if info.first is None or info.last is None:
                unreadable.append((info.path, info.error))
            elif info.first < end_t and info.last >= start_t:
                raise BarFileError(info.path, f"failed to read: {info.error}")
            continue
        if info.interval_seconds is not None and info.interval_seconds != ONE_MINUTE:
            skipped.append(
                (info.path, f"interval {interval_label(info.interval_seconds)}, not 1-minute: skipped")
            )
            continue
        if info.rows == 0 or info.first is None or info.last is None:
            reason = path_skip_reason(Path(info.path))
            if reason is None and info.rows == 0:
                reason = "holds no bars (empty, or a header only): nothing to load"
            elif reason is None:
                reason = f"none of its {info.rows} row(s) has a usable timestamp: they fit no partition"
            skipped.append((info.path, reason))
            continue
        if info.first.as_unit("ns").value > now_ns:
            skipped.append(
                (info.path, f"all its rows are stamped later than now (from {info.first.isoformat()})")
            )
            continue
        if info.last.as_unit("ns").value < earliest_ns:
            skipped.append(
                (
                    info.path,
                    f"all its rows are stamped before the first partition ({_utc(earliest).date()}; until "
                    f"{info.last.isoformat()}): they fit no partition",
                )
            )
            continue
        if not (info.first < end_t and info.last >= start_t):
            continue
        loaded = load_file(info.path, tz, bar_label, rules=rules, root=root_p if root_p.is_dir() else None)
        if loaded.applied is not None:
            applied.append({"file": info.path, **loaded.applied.to_json()})
        frame, key, file_skipped, file_notes = split_by_interval(loaded)
        skipped.extend(file_skipped)
        notes.extend(file_notes)
        key, beyond, early = _outside(frame, key, earliest_ns, now_ns, lo, hi)
        outside_rows += int(beyond.sum()) + int(early.sum())
        if early.any():
            first = int(np.flatnonzero(early)[0])
            notes.append(
                f"{info.path}: {int(early.sum())} row(s) stamped before the first partition "
                f"({_utc(earliest).date()}) (first at line {int(frame['source_line'].iloc[first])}: "
                f"{frame['timestamp'].iloc[first].isoformat()}) belong to no partition: not loaded, not "
                "quarantined"
            )
        if beyond.any():
            first = int(np.flatnonzero(beyond)[0])
            notes.append(
                f"{info.path}: {int(beyond.sum())} row(s) stamped later than now (first at line "
                f"{int(frame['source_line'].iloc[first])}: {frame['timestamp'].iloc[first].isoformat()}) "
                "belong to no partition that exists yet: not loaded, not quarantined"
            )
        keep = (key >= lo) & (key < hi)
        if keep.any():
            frames.append(frame.loc[keep].reset_index(drop=True))
    if not frames:
        out = empty_frame()
    elif len(frames) == 1:
        out = frames[0]
    else:
        out = pd.concat(frames, ignore_index=True)
    return ReadResult(out, skipped, notes, unreadable, outside_rows, applied)
