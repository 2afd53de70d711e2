"""What a data directory will load, before loading it: every file with its source profile, symbol, interval,
time zone, bar label, first/last day and rows, and the findings that look wrong.

``probe`` learns a file from its two ends only (``heads.ends``: the first and last lines, parsed with the
same readers and conventions as the ingest; rows are counted while a compressed file is inflated, estimated
from the head's line length for plain text). ``survey`` turns ``catalog.FileInfo``s (probed, or from the
ingest's manifest) into the table and its findings:

* **look-alike symbols**: symbols that differ only by a date-like or interval-like token (``BTCUSDT-03`` and
  ``BTCUSDT-04``, ``XBTUSD_1`` and ``XBTUSD``): one instrument split in several;
* **overlapping days**: 1-minute files of one symbol whose time ranges overlap (spot and futures klines of
  one name, Dukascopy bid and ask, a file downloaded twice);
* **unknown naming**: a file no source profile recognises whose symbol came from its name by the generic
  rule;
* what a profile itself warns about (a zone the file does not state, a name that says another interval) and
  files that cannot be read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tis_pipeline.market_data.readers.bar_frame import FramePart, frame_from_raw
from tis_pipeline.market_data.readers.catalog import FileInfo, candidate_files
from tis_pipeline.market_data.readers.containers import load_bytes
from tis_pipeline.market_data.readers.context import ReadContext
from tis_pipeline.market_data.readers.contract import ONE_MINUTE, BarFileError, interval_label
from tis_pipeline.market_data.readers.files import applied_to, load_file
from tis_pipeline.market_data.readers.heads import Ends, ends
from tis_pipeline.market_data.readers.limits import ReadLimits, check_regular
from tis_pipeline.market_data.readers.overrides import SourceRules, load_rules, relative
from tis_pipeline.market_data.readers.paths import lean_layout
from tis_pipeline.market_data.readers.symbols import INTERVAL_TOKEN, MONTH_YEAR, symbol_from_path

SURVEY_COLUMNS = [
    "file", "profile", "symbols", "interval", "tz", "bar_label", "first_day", "last_day", "rows", "flags",
]  # fmt: skip


@dataclass
class Survey:
    table: pd.DataFrame  # one row per file, SURVEY_COLUMNS
    findings: list[str]  # one line each


# ------------------------------------------------------------------------------------------------------------
# Probing a file from its ends
# ------------------------------------------------------------------------------------------------------------


def _parse(chunk: bytes, ctx: ReadContext) -> tuple[FramePart, bool] | None:
    if not chunk.strip():
        return None
    _, raw = load_bytes(chunk, "csv", ctx)
    if raw.nrows == 0:
        return None
    return frame_from_raw(raw, ctx), raw.names is not None


def _first_line(data: bytes) -> bytes:
    for line in data.splitlines():
        if line.strip():
            return line
    return b""


def probe(
    path: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str] | None = None,
    tz: str = "UTC",
    bar_label: str = "open",
    rules: SourceRules | None = None,
    limits: ReadLimits | None = None,
) -> FileInfo:
    """A ``FileInfo`` of ``path`` learned from its first and last lines (``rows`` is counted or estimated);
    Parquet, Feather and JSON files are read whole. Never raises for a bad file: ``error`` says why."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        return FileInfo(str(p), 0, 0, "?", [], None, None, None, 0, f"cannot stat: {exc.strerror or exc}")
    limits = limits or ReadLimits.from_settings()
    try:
        check_regular(p, str(p), limits)  # a FIFO would block the read, a device never end
        e = ends(p)
    except Exception as exc:  # a bad archive (zip, gz, ...) is a finding here, not a crash
        return FileInfo(
            str(p), st.st_size, st.st_mtime_ns, "?", [], None, None, None, 0, f"unreadable: {exc}"
        )
    if e.kind in ("parquet", "feather", "json"):
        return _whole(p, st, tz, bar_label, rules, root, limits)
    lines = e.head_lines()
    applied = applied_to(p, e.member, lines, tz, bar_label, rules, root)
    notes: list[str] = []
    ctx = ReadContext(
        p, str(p), e.member, applied.tz, applied.bar_label, lean_layout(p.resolve()), notes, limits=limits,
        applied=applied,
    )  # fmt: skip
    try:
        head = _parse(e.head, ctx)
        tail = None
        if e.tail and e.tail != e.head:
            header = _first_line(e.head) + b"\n" if head is not None and head[1] else b""
            tail = _parse(header + e.tail, ctx)
    except BarFileError as exc:
        return FileInfo(
            str(p), st.st_size, st.st_mtime_ns, e.kind, [], None, None, None, 0, exc.reason,
            applied=applied.to_json(),
        )  # fmt: skip
    parts = [x[0] for x in (head, tail) if x is not None]
    frames = [x.frame for x in parts if len(x.frame)]
    if not frames:
        return FileInfo(
            str(p), st.st_size, st.st_mtime_ns, e.kind, [], None, None, None, 0, None, applied.to_json()
        )
    ts = pd.concat([f["timestamp"] for f in frames], ignore_index=True).dropna()
    symbols = sorted({str(s) for f in frames for s in pd.unique(f["symbol"].dropna())})
    interval = applied.interval_seconds
    if interval is None and head is not None:
        interval = _file_interval(head[0].intervals.values())
    return FileInfo(
        path=str(p),
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        fmt=e.kind,
        symbols=symbols,
        first=ts.min() if len(ts) else None,
        last=ts.max() if len(ts) else None,
        interval_seconds=interval,
        rows=_rows(e, head is not None and head[1]),
        applied=applied.to_json(),
    )


def _rows(e: Ends, header: bool) -> int:
    if e.lines is not None:
        return max(0, e.lines - int(header))
    n = e.head.count(b"\n")
    if n == 0:
        return 0
    return max(0, round(e.size / (len(e.head[: e.head.rfind(b"\n") + 1]) / n)) - int(header))


def _whole(
    p: Path,
    st: os.stat_result,
    tz: str,
    bar_label: str,
    rules: SourceRules | None,
    root: str | os.PathLike[str] | None,
    limits: ReadLimits,
) -> FileInfo:
    try:
        loaded = load_file(p, tz, bar_label, limits, rules=rules, root=root)
    except BarFileError as exc:
        return FileInfo(str(p), st.st_size, st.st_mtime_ns, "?", [], None, None, None, 0, exc.reason)
    frame = loaded.frame
    ts = frame["timestamp"].dropna()
    return FileInfo(
        path=str(p),
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        fmt=loaded.fmt,
        symbols=sorted(str(s) for s in pd.unique(frame["symbol"].dropna())),
        first=ts.min() if len(ts) else None,
        last=ts.max() if len(ts) else None,
        interval_seconds=_file_interval(loaded.intervals().values()),
        rows=len(frame),
        applied={} if loaded.applied is None else loaded.applied.to_json(),
    )


def _file_interval(intervals: Iterable[int | None]) -> int | None:
    """The bar interval a file's symbols show (seconds): one minute when any symbol has it, else the
    shortest, None when none is known."""
    known = [iv for iv in intervals if iv is not None]
    return ONE_MINUTE if ONE_MINUTE in known else (min(known) if known else None)


def probe_dir(root: str | os.PathLike[str], *, tz: str = "UTC", bar_label: str = "open") -> list[FileInfo]:
    """``probe`` of every bar file under ``root`` (the files the ingest would read), with its override file.
    Raises SourceRulesError for a malformed ``tis-sources.toml``."""
    root_p = Path(root).absolute()
    if not root_p.exists():
        raise FileNotFoundError(f"market data path does not exist: {root_p}")
    rules = load_rules(root_p)
    limits = ReadLimits.from_settings()
    base = root_p if root_p.is_dir() else None
    return [
        probe(p, root=base, tz=tz, bar_label=bar_label, rules=rules, limits=limits)
        for p in candidate_files(root_p, None)
    ]


# ------------------------------------------------------------------------------------------------------------
# Findings
# ------------------------------------------------------------------------------------------------------------

_DATE_LIKE = re.compile(r"^(?:\d{1,8}|\d{1,2}\.\d{1,2}(?:\.\d{2,4})?)$")


def symbol_key(symbol: str) -> str:
    """The symbol without its date-like and interval-like tokens (``BTCUSDT-03`` -> ``BTCUSDT``,
    ``XBTUSD_1`` -> ``XBTUSD``): symbols with one key but different spellings are probably one instrument."""
    tokens = [t for t in re.split(r"[-_.\s/:]+", symbol) if t]
    kept = [
        t
        for i, t in enumerate(tokens)
        if i == 0 or not (_DATE_LIKE.match(t) or INTERVAL_TOKEN.match(t) or MONTH_YEAR.match(t))
    ]
    return "".join(kept).upper()


def _rel(path: str, root: Path | None) -> str:
    if root is None:
        return path
    return relative(path, root) or path


def _day(t: pd.Timestamp | None) -> str:
    return "" if t is None else t.date().isoformat()


def survey(infos: list[FileInfo], root: str | os.PathLike[str] | None = None) -> Survey:
    """The table of ``infos`` (one row per file) and the findings over all of them (module docstring)."""
    base = None if root is None else Path(root).absolute()
    flags: dict[str, list[str]] = {i.path: [] for i in infos}
    findings: list[str] = []
    for info in infos:
        rel = _rel(info.path, base)
        if info.error is not None:
            flags[info.path].append("unreadable")
            findings.append(f"{rel}: cannot be read: {info.error}")
            continue
        applied = info.applied or {}
        for warning in applied.get("warnings", []):
            flags[info.path].append("warning")
            findings.append(f"{rel}: {warning}")
        generic = [symbol_from_path(info.path)]
        if (
            applied.get("profile") is None
            and applied.get("origin", {}).get("symbol") != "override"
            and (info.symbols == generic or not info.symbols)
        ):
            flags[info.path].append("unknown naming")
            findings.append(
                f"{rel}: no source profile knows this naming; symbol {', '.join(info.symbols) or generic[0]} "
                "taken from the file name by the generic rule (set it in tis-sources.toml if wrong)"
            )
    rows = [
        {"path": i.path, "symbol": s, "first": i.first, "last": i.last}
        for i in infos
        if i.error is None and i.interval_seconds in (ONE_MINUTE, None) and i.first is not None
        for s in i.symbols
    ]
    by_symbol = pd.DataFrame(rows, columns=["path", "symbol", "first", "last"])
    if len(by_symbol):
        by_symbol["key"] = by_symbol["symbol"].map(symbol_key)
        spellings = by_symbol.groupby("key")["symbol"].unique()
        for key, names in spellings.items():
            if len(names) > 1:
                shown = ", ".join(sorted(str(n) for n in names))
                findings.append(
                    f"symbols {shown} differ only by a date-like or interval-like token: one instrument "
                    f"({key}?) split in {len(names)} (map them in tis-sources.toml [symbols])"
                )
                for p in by_symbol.loc[by_symbol["key"] == key, "path"]:
                    flags[p].append("look-alike symbol")
        ordered = by_symbol.sort_values(["symbol", "first", "last", "path"], kind="stable").reset_index(
            drop=True
        )
        # a file overlaps when it starts before the latest end of the symbol's files that start before it
        last_ns = ordered["last"].map(lambda t: t.value).astype("int64")
        first_ns = ordered["first"].map(lambda t: t.value).astype("int64")
        reach = last_ns.groupby(ordered["symbol"]).cummax().groupby(ordered["symbol"]).shift(1)
        overlap = (first_ns <= reach).fillna(False).to_numpy(dtype=bool)
        for symbol in pd.unique(ordered.loc[overlap, "symbol"]):
            mine = ordered[ordered["symbol"] == symbol]
            hit = mine[overlap[mine.index.to_numpy()]]
            files = ", ".join(_rel(p, base) for p in mine["path"])
            findings.append(
                f"symbol {symbol}: {len(mine)} files with overlapping days ({_day(hit['first'].min())} to "
                f"{_day(hit['last'].max())}): {files}"
            )
            for p in mine["path"]:
                flags[p].append("overlapping days")
    table = pd.DataFrame(
        [
            {
                "file": _rel(i.path, base),
                "profile": (i.applied or {}).get("profile") or "-",
                "symbols": ", ".join(i.symbols),
                "interval": interval_label(i.interval_seconds) if i.error is None else "",
                "tz": (i.applied or {}).get("tz", ""),
                "bar_label": (i.applied or {}).get("bar_label", ""),
                "first_day": _day(i.first),
                "last_day": _day(i.last),
                "rows": int(i.rows),
                "flags": ", ".join(dict.fromkeys(flags[i.path])),
            }
            for i in infos
        ],
        columns=SURVEY_COLUMNS,
    )
    return Survey(table, findings)


def applied_markdown(applied: list[dict], limit: int = 50) -> str:
    """The conventions applied to each file read by a run, as a markdown table (run metadata)."""
    if not applied:
        return "_none_"
    frame = pd.DataFrame(
        [
            {
                "file": a.get("file", ""),
                "profile": a.get("profile") or "-",
                "symbol": a.get("symbol") or "(column or name)",
                "tz": f"{a.get('tz')} ({a.get('origin', {}).get('tz', '')})",
                "bar_label": f"{a.get('bar_label')} ({a.get('origin', {}).get('bar_label', '')})",
            }
            for a in applied[:limit]
        ]
    )
    more = f"\n\n… and {len(applied) - limit} more file(s)" if len(applied) > limit else ""
    return frame.to_markdown(index=False) + more
