"""Timestamps: date-time text in one detected format, integer dates and epochs, local wall time to UTC.

* **Timestamps**: date-time strings are parsed with one explicit format detected on a sample from the whole
  column (ISO 8601 with or without ``T``/microseconds/offset/``Z``, ``M/D/YYYY H:MM`` (D/M when the values
  say so), ``YYYYMMDD HHMMSS``, ``YYYY.MM.DD``, ``DD.MM.YYYY``, ``DD-Mon-YYYY``...). Values with an offset are
  converted to UTC per row (mixed offsets are fine); naive values are local time in the ``tz`` argument
  (default ``UTC``, the pipeline passes ``TIS_MARKET_TZ``), which is recorded in ``notes``. Around DST
  changes, a wall time that does not exist (spring forward) is NaT, never moved onto the next hour's bars;
  the hour repeated in autumn is split into its daylight and standard pass by the order of each symbol's
  rows (forward or newest first), and is NaT where that order does not tell (the hour appears once). Integer
  timestamps are ``YYYYMMDD`` (dates), ``YYYYMMDDHHMM[SS]`` or epoch seconds/milliseconds/microseconds/
  nanoseconds, decided per value by magnitude (< 1e11 s, < 1e14 ms, < 1e17 us, else ns). Integers below
  86,400,000 are milliseconds since midnight when the file name (or the zip member name) carries a
  ``YYYYMMDD`` date (QuantConnect Lean minute files); without such a date the file is refused.
"""

from __future__ import annotations

import datetime as dt
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tis_pipeline.market_data.readers.context import ColumnRoles, RawTable, ReadContext
from tis_pipeline.market_data.readers.contract import NAT, NS
from tis_pipeline.market_data.readers.numbers import as_string, is_stringy, numeric_values
from tis_pipeline.market_data.readers.sampling import mostly, sample_idx, sample_strings

_MS_PER_DAY = 86_400_000


_DIGITS_RE = re.compile(r"^[+-]?\d+(?:\.\d+)?$")


def numeric_kind(values: np.ndarray, file_date: dt.date | None) -> str | None:
    """What integer/float timestamps are: yyyymmdd, compact14, compact12, ms_midnight, epoch, or None."""
    v = values[np.isfinite(values)]
    if len(v) == 0:
        return None
    integral = bool(np.all(v == np.floor(v)))
    if integral and np.all((v >= 19000101) & (v <= 21991231)):
        s = pd.Series(v.astype(np.int64).astype(str))
        if pd.to_datetime(s, format="%Y%m%d", errors="coerce").notna().all():
            return "yyyymmdd"
    if integral and np.all((v >= 1.9e13) & (v < 2.2e13)):
        s = pd.Series(v.astype(np.int64).astype(str))
        if pd.to_datetime(s, format="%Y%m%d%H%M%S", errors="coerce").notna().all():
            return "compact14"
    if integral and np.all((v >= 1.9e11) & (v < 2.2e11)):
        s = pd.Series(v.astype(np.int64).astype(str))
        if pd.to_datetime(s, format="%Y%m%d%H%M", errors="coerce").notna().all():
            return "compact12"
    if integral and np.all((v >= 0) & (v < _MS_PER_DAY)):
        return "ms_midnight"
    if np.all(np.abs(v) >= 1e8):
        return "epoch"
    return None


_FORMAT_FAMILIES: list[tuple[re.Pattern[str], list[str]]] = [
    (
        re.compile(r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?$"),
        ["ISO8601"],
    ),
    (
        re.compile(r"^\d{4}-\d{1,2}-\d{1,2}"),
        ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d"],
    ),
    (
        re.compile(r"^\d{8}(?:[ T]?\d{2}:?\d{2}|$)"),
        [
            "%Y%m%d %H%M%S",
            "%Y%m%d %H%M",
            "%Y%m%d %H:%M:%S",
            "%Y%m%d %H:%M",
            "%Y%m%dT%H%M%S",
            "%Y%m%d%H%M%S",
            "%Y%m%d %H:%M:%S.%f",
            "%Y%m%d",
        ],
    ),
    (
        re.compile(r"^\d{1,2}/\d{1,2}/\d{4}"),
        [
            "%m/%d/%Y %H:%M:%S",
            "%m/%d/%Y %H:%M",
            "%m/%d/%Y %I:%M:%S %p",
            "%m/%d/%Y %I:%M %p",
            "%m/%d/%Y %H:%M:%S.%f",
            "%m/%d/%Y",
            "%d/%m/%Y %H:%M:%S",
            "%d/%m/%Y %H:%M",
            "%d/%m/%Y %H:%M:%S.%f",
            "%d/%m/%Y",
        ],
    ),
    (re.compile(r"^\d{1,2}/\d{1,2}/\d{2}\b"), ["%m/%d/%y %H:%M:%S", "%m/%d/%y %H:%M", "%m/%d/%y"]),
    (
        re.compile(r"^\d{4}/\d{1,2}/\d{1,2}"),
        ["%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M", "%Y/%m/%d %H:%M:%S.%f", "%Y/%m/%d"],
    ),
    (
        re.compile(r"^\d{4}\.\d{1,2}\.\d{1,2}"),
        ["%Y.%m.%d %H:%M:%S", "%Y.%m.%d %H:%M", "%Y.%m.%d"],
    ),
    (
        re.compile(r"^\d{1,2}\.\d{1,2}\.\d{4}"),
        ["%d.%m.%Y %H:%M:%S.%f", "%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M", "%d.%m.%Y"],
    ),
    (
        re.compile(r"^\d{1,2}-\d{1,2}-\d{4}"),
        [
            "%m-%d-%Y %H:%M:%S",
            "%m-%d-%Y %H:%M",
            "%m-%d-%Y",
            "%d-%m-%Y %H:%M:%S",
            "%d-%m-%Y %H:%M",
            "%d-%m-%Y",
        ],
    ),
    (
        re.compile(r"^\d{1,2}[- ][A-Za-z]{3}[- ]\d{2,4}"),
        [
            "%d-%b-%Y %H:%M:%S",
            "%d-%b-%Y %H:%M",
            "%d-%b-%Y",
            "%d-%b-%y %H:%M:%S",
            "%d-%b-%y %H:%M",
            "%d-%b-%y",
            "%d %b %Y %H:%M:%S",
            "%d %b %Y %H:%M",
            "%d %b %Y",
        ],
    ),
]
_OFFSET_RE = r"[+-]\d{2}:?\d{2}$"
_AWARE_RE = r"\d:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:\s?[AaPp][Mm])?[+-]\d{2}:?\d{2}$"


def _swap_dm(fmt: str) -> str | None:
    if fmt.startswith("%m/%d"):
        return "%d/%m" + fmt[5:]
    if fmt.startswith("%d/%m"):
        return "%m/%d" + fmt[5:]
    if fmt.startswith("%m-%d"):
        return "%d-%m" + fmt[5:]
    if fmt.startswith("%d-%m"):
        return "%m-%d" + fmt[5:]
    return None


def format_has_time(fmt: str, sample: list[str]) -> bool:
    if fmt == "ISO8601":
        return any(re.search(r"\d[T ]\d{1,2}:\d{2}", s) for s in sample)
    if fmt == "mixed":
        return any(":" in s for s in sample)
    return "%H" in fmt or "%I" in fmt


def _parse_with(values: pd.Series | list[str], fmt: str, utc: bool) -> pd.Series:
    s = values if isinstance(values, pd.Series) else pd.Series(values, dtype=object)
    return pd.to_datetime(s, format=fmt, errors="coerce", utc=utc)


def detect_format(sample: list[str], candidates: list[str] | None = None) -> str | None:
    """The first explicit format that parses the whole sample (or the one that parses most of it)."""
    if not sample:
        return None
    sample = [_normalise_tz_text(s) for s in sample]
    stripped = [re.sub(r"\s*" + _OFFSET_RE, "", s) for s in sample]
    if candidates is None:
        candidates = []
        for rx, fmts in _FORMAT_FAMILIES:
            if mostly(rx.match, stripped, 0.5):
                candidates.extend(f for f in fmts if f not in candidates)
    aware = mostly(lambda s: re.search(_AWARE_RE, s) is not None, sample, 0.5)
    best, best_ok = None, 0
    for fmt in candidates:
        use = fmt if (fmt == "ISO8601" or not aware) else fmt + "%z"
        ok = int(_parse_with(sample, use, utc=True).notna().sum())
        if ok > best_ok:
            best, best_ok = fmt, ok
        if ok == len(sample):
            break
    if best is not None and best_ok >= max(1, len(sample) // 2):
        return best
    return None


_ZONE_WORD_RE = r"(?:UTC|GMT|Z)(?:[+-]\d{2}:?\d{2})?$"
_SPACED_OFFSET_RE = r"(\d|[AaPp][Mm])\s+([+-]\d{2}:?\d{2})$"


def _normalise_tz_text(v: str) -> str:
    """The same normalisation as _normalise_tz_suffix, for one sample string."""
    v = re.sub(r"\s*(?:UTC|GMT)\s*([+-]\d{2}:?\d{2})$", r"\1", v)
    v = re.sub(r"(\d)\s*(?:UTC|GMT|Z)$", r"\1+00:00", v)
    return re.sub(_SPACED_OFFSET_RE, r"\1\2", v)


def _normalise_tz_suffix(col: pa.Array, sample: list[str]) -> pa.Array:
    """``...Z``/``... UTC``/``... GMT+01:00`` -> ``...+00:00``/``...+01:00``; ``9:30 -05:00`` ->
    ``9:30-05:00``.

    Applied to the column only when the sample shows such values (a stray one elsewhere fails to parse and is
    kept as a bad row, not lost)."""
    if any(re.search(_ZONE_WORD_RE, v) for v in sample):
        col = pc.replace_substring_regex(col, r"\s*(?:UTC|GMT)\s*([+-]\d{2}:?\d{2})$", r"\1")
        col = pc.replace_substring_regex(col, r"(\d)\s*(?:UTC|GMT|Z)$", r"\1+00:00")
    if any(re.search(_SPACED_OFFSET_RE, v) for v in sample):
        col = pc.replace_substring_regex(col, _SPACED_OFFSET_RE, r"\1\2")
    return col


_PER_UNIT_NS = {"s": NS, "ms": 1_000_000, "us": 1_000, "ns": 1}


def _to_ns(series: pd.Series) -> np.ndarray:
    """datetime Series (naive or UTC) -> int64 ns with NAT for NaT.

    pandas parses into the unit the text needs, so a year after 2262 or before 1677 parses; nanoseconds
    cannot hold it: such a value becomes NAT (a bad row, quarantined like an unparseable one), not an error
    for the whole file."""
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
    values = series.to_numpy()
    if values.dtype == object:  # all missing
        return np.full(len(values), NAT, dtype=np.int64)
    unit = np.datetime_data(values.dtype)[0]
    raw = values.view(np.int64)
    factor = _PER_UNIT_NS.get(unit)
    if factor is None:
        return series.astype("datetime64[ns]").to_numpy().view(np.int64).copy()
    if factor == 1:
        return raw.copy()
    limit = np.iinfo(np.int64).max // factor
    fits = (raw != NAT) & (raw <= limit) & (raw >= -limit)
    return np.where(fits, raw * np.where(fits, factor, 0), NAT)


def _parse_datetime_strings(
    col: pa.Array, good: np.ndarray, ctx: ReadContext
) -> tuple[np.ndarray, np.ndarray]:
    """-> (int64 ns: UTC where aware, local wall time where naive; aware mask)."""
    col = pc.ascii_trim_whitespace(col)
    idx = sample_idx(good & ~pc.is_null(col).to_numpy(zero_copy_only=False))
    col = _normalise_tz_suffix(col, sample_strings(col, idx))
    sample = sample_strings(col, idx)
    fmt = detect_format(sample)
    if fmt is None:
        if (
            sample
            and pd.to_datetime(pd.Series(sample), format="mixed", errors="coerce", utc=True).notna().mean()
            >= 0.9
        ):
            fmt = "mixed"
            ctx.note("timestamps in no single known format; parsed value by value (slow path)")
        else:
            shown = ", ".join(repr(s) for s in sample[:3])
            raise ctx.error(f"cannot recognise the timestamp format (e.g. {shown})")
    aware = pc.match_substring_regex(col, _AWARE_RE).to_numpy(zero_copy_only=False)
    aware = np.asarray(aware, dtype=object)
    aware = np.where(pd.isna(aware), False, aware).astype(bool)
    values = _LazyObjects(col)
    out = np.full(len(col), NAT, dtype=np.int64)

    def parse(mask: np.ndarray, f: str, is_aware: bool) -> np.ndarray:
        if f == "ISO8601":  # fast path: Arrow's ISO 8601 cast; any odd value -> pandas below
            try:
                sub = col if mask.all() else col.filter(pa.array(mask))
                target = pa.timestamp("ns", tz="UTC") if is_aware else pa.timestamp("ns")
                return pc.cast(pc.cast(sub, target), pa.int64()).fill_null(NAT).to_numpy(zero_copy_only=False)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass
        use = f if (f in ("ISO8601", "mixed") or not is_aware) else f + "%z"
        return _to_ns(_parse_with(values[mask], use, utc=is_aware))

    for is_aware in (False, True):
        mask = aware if is_aware else ~aware
        if not mask.any():
            continue
        ns = parse(mask, fmt, is_aware)
        alt = _swap_dm(fmt)
        if alt is not None:
            nonempty = values[mask].notna().to_numpy() & (values[mask].astype(str).str.len() > 0).to_numpy()
            bad = int(((ns == NAT) & nonempty).sum())
            ns_alt = parse(mask, alt, is_aware)
            bad_alt = int(((ns_alt == NAT) & nonempty).sum())
            if bad_alt < bad or (bad_alt == bad and _monotone_share(ns_alt) > _monotone_share(ns)):
                ns = ns_alt
                fmt = alt
        out[mask] = ns
    if aware.any() and (~aware & (out != NAT)).any():
        ctx.note(
            "some timestamps carry a UTC offset and some do not; the naive ones are local time (see tz note)"
        )
    return out, aware


class _LazyObjects:
    """The column as a pandas object Series, built only if a pandas parse is needed."""

    def __init__(self, col: pa.Array):
        self._col = col
        self._series: pd.Series | None = None

    def __getitem__(self, mask: np.ndarray) -> pd.Series:
        if self._series is None:
            self._series = pd.Series(self._col.to_numpy(zero_copy_only=False), dtype=object)
        return self._series[mask]


def _monotone_share(ns: np.ndarray) -> float:
    v = ns[ns != NAT]
    if len(v) < 2:
        return 0.0
    return float((np.diff(v) > 0).mean())


def _numeric_timestamps(
    col: pa.Array, good: np.ndarray, ctx: ReadContext, name: str
) -> tuple[np.ndarray, np.ndarray]:
    f, i64 = numeric_values(col)
    idx = sample_idx(good & np.isfinite(f))
    kind = numeric_kind(f[idx], ctx.file_date)
    n = len(f)
    valid = np.isfinite(f)
    if kind in ("yyyymmdd", "compact14", "compact12"):
        fmt = {"yyyymmdd": "%Y%m%d", "compact14": "%Y%m%d%H%M%S", "compact12": "%Y%m%d%H%M"}[kind]
        strings = pd.Series(np.where(valid, np.nan_to_num(f).astype(np.int64).astype(str), ""), dtype=object)
        return _to_ns(pd.to_datetime(strings, format=fmt, errors="coerce")), np.zeros(n, bool)
    if kind == "ms_midnight":
        day = ctx.file_date
        if day is None:
            raise ctx.error(
                f"column {name!r} holds milliseconds since midnight, but the file name has no YYYYMMDD date"
            )
        base = int(pd.Timestamp(day).value)
        ms = i64 if i64 is not None else np.round(np.nan_to_num(f)).astype(np.int64)
        out = np.where(valid, base + ms * 1_000_000, NAT)
        ctx.note(f"times are milliseconds since midnight of {day.isoformat()} (date from the file name)")
        return out.astype(np.int64), np.zeros(n, bool)
    if kind != "epoch":
        shown = ", ".join(str(v) for v in f[idx][:3])
        raise ctx.error(f"cannot tell what the numbers in column {name!r} mean as timestamps (e.g. {shown})")
    a = np.abs(np.nan_to_num(f))
    factor = np.select([a < 1e11, a < 1e14, a < 1e17], [NS, 1_000_000, 1_000], 1).astype(np.int64)
    valid &= a * factor < 9.2e18  # beyond datetime64[ns] (year 2262): NaT, kept as a bad row
    if i64 is not None:
        out = np.where(valid, i64 * factor, NAT)
    else:
        whole = np.floor(np.nan_to_num(f))
        frac = np.nan_to_num(f) - whole
        out = np.where(valid, whole.astype(np.int64) * factor + np.round(frac * factor).astype(np.int64), NAT)
    units = sorted(
        {
            "s" if x == NS else "ms" if x == 1_000_000 else "us" if x == 1_000 else "ns"
            for x in np.unique(factor[valid])
        }
    )
    if len(units) > 1:
        ctx.note(f"epoch timestamps in mixed units ({', '.join(units)}), told apart by magnitude per value")
    return out.astype(np.int64), np.ones(n, bool)


def parse_timestamps(raw: RawTable, roles: ColumnRoles, ctx: ReadContext) -> tuple[np.ndarray, np.ndarray]:
    good = ~raw.pre_bad
    if roles.date is not None and roles.time is not None:
        d = pc.cast(pc.utf8_trim_whitespace(as_string(raw.columns[roles.date])), pa.large_string())
        t = pc.cast(pc.utf8_trim_whitespace(as_string(raw.columns[roles.time])), pa.large_string())
        space, zeros = pa.scalar(" ", pa.large_string()), pa.scalar("00", pa.large_string())
        empty = pa.scalar("", pa.large_string())
        # digits-only dates and times (20110301 / 93100) -> ISO-like pieces
        d = pc.replace_substring_regex(d, r"^(\d{4})(\d{2})(\d{2})$", r"\1-\2-\3")
        t = pc.if_else(
            pc.match_substring_regex(t, r"^\d{5,6}$"),
            pc.utf8_lpad(t, 6, "0"),
            pc.if_else(
                pc.match_substring_regex(t, r"^\d{3,4}$"),
                pc.binary_join_element_wise(pc.utf8_lpad(t, 4, "0"), zeros, empty),
                t,
            ),
        )
        t = pc.replace_substring_regex(t, r"^(\d{2})(\d{2})(\d{2})$", r"\1:\2:\3")
        combined = pc.binary_join_element_wise(d, t, space)
        return _parse_datetime_strings(combined, good, ctx)
    # assign_roles gives a timestamp column, or a date and a time column, or raises
    assert roles.ts is not None
    col = raw.columns[roles.ts]
    name = raw.names[roles.ts] if raw.names else f"#{roles.ts + 1}"
    t = col.type
    if pa.types.is_timestamp(t):
        aware = t.tz is not None
        ns = pc.cast(col, pa.timestamp("ns", tz=t.tz))
        vals = pc.cast(ns, pa.int64()).fill_null(NAT).to_numpy(zero_copy_only=False).astype(np.int64)
        return vals, np.full(len(vals), aware)
    if pa.types.is_date(t):
        ns = pc.cast(pc.cast(col, pa.timestamp("ns")), pa.int64())
        return ns.fill_null(NAT).to_numpy(zero_copy_only=False).astype(np.int64), np.zeros(len(col), bool)
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return _numeric_timestamps(col, good, ctx, name)
    if not is_stringy(t):
        col = pc.cast(col, pa.large_string())
    sample = sample_strings(col, sample_idx(good))
    if mostly(_DIGITS_RE.match, sample):
        return _numeric_timestamps(col, good, ctx, name)
    return _parse_datetime_strings(col, good, ctx)


def localize(ns: np.ndarray, zone: str, ctx: ReadContext, groups: np.ndarray | None = None) -> np.ndarray:
    """Naive local wall times (int64 ns) in ``zone`` -> UTC ns.

    A wall time that does not exist (the hour skipped when clocks go forward) is NaT: moving it to the next
    valid hour would collide with the real bars of that hour. A wall time of the repeated hour when clocks go
    back is told apart by its order in the file, per symbol (``groups``): in a file running forward in time
    (or backward, newest first), the rows of that hour before the wall clock steps back are the first pass
    (daylight time), the rows from there on the second (standard time). When a symbol's rows do not show
    exactly one such step back (the hour appears once, or the rows are shuffled), there is no telling which
    of the two instants a row means, and its timestamp is NaT.
    """
    if zone == "UTC":
        return ns
    n = len(ns)
    idx = pd.DatetimeIndex(ns.view("M8[ns]"))

    def utc(ambiguous: bool) -> np.ndarray:
        loc = idx.tz_localize(zone, ambiguous=np.full(n, ambiguous), nonexistent="NaT")
        return loc.tz_convert("UTC").as_unit("ns").asi8.copy()

    first, second = utc(True), utc(False)  # the daylight-time and the standard-time reading
    valid = ns != NAT
    missing = valid & (first == NAT)
    ambiguous = valid & ~missing & (first != second)
    out = first
    if ambiguous.any():
        choice = _order_of_repeated_hour(ns, ambiguous, groups)
        out[ambiguous & (choice == 0)] = second[ambiguous & (choice == 0)]
        unresolved = ambiguous & (choice < 0)
        out[unresolved] = NAT
        resolved = int(ambiguous.sum() - unresolved.sum())
        if resolved:
            ctx.note(
                f"{resolved} local time(s) fall in the hour repeated when {zone} left daylight time; "
                "first and second pass told apart by their order in the file"
            )
        if unresolved.any():
            ctx.note(
                f"{int(unresolved.sum())} local time(s) fall in the hour repeated when {zone} left daylight "
                "time and their order does not say which pass they belong to; left as NaT"
            )
    if missing.any():
        ctx.note(
            f"{int(missing.sum())} local time(s) do not exist in {zone} (DST change) and were left as NaT"
        )
    return out


def _order_of_repeated_hour(ns: np.ndarray, ambiguous: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """Per row: 1 = first pass (daylight time), 0 = second pass (standard time), -1 = cannot tell."""
    choice = np.full(len(ns), -1, dtype=np.int8)
    if groups is None:
        codes = np.zeros(len(ns), dtype=np.int64)
    else:
        codes, _ = pd.factorize(pd.Series(groups, dtype=object), use_na_sentinel=False)
    for g in np.unique(codes[ambiguous]):
        pos = np.flatnonzero(codes == g)  # this symbol's rows, in file order
        v = ns[pos]
        step = np.diff(v[v != NAT])
        newest_first = int((step < 0).sum()) > int((step > 0).sum())
        amb = pos[ambiguous[pos]]
        day = ns[amb] // (86_400 * NS)  # one repeated hour per local day
        for d in np.unique(day):
            rows = amb[day == d]
            if newest_first:
                rows = rows[::-1]
            back = np.flatnonzero(np.diff(ns[rows]) < 0)
            if len(back) != 1:
                continue
            k = int(back[0]) + 1
            choice[rows[:k]] = 1
            choice[rows[k:]] = 0
    return choice
