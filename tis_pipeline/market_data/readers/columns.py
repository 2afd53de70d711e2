"""Column classification and role assignment: which column is the timestamp, open, high, low, close,
volume and symbol.

* **Column roles** by name (case and punctuation ignored): the timestamp is ``timestamp``, ``datetime``,
  ``date``, ``time``, ``open_time``, ``ts``... or a ``date`` plus a ``time`` column; ``open``/``o``,
  ``high``/``h``, ``low``/``l``, ``close``/``c``/``last`` (``adj close`` is not ``close``; ``mid``/``bid``/
  ``ask`` prefixed names are used, in that order, when there is no plain one), ``volume``/``vol``/``v``/
  ``tick_volume``/``qty``..., ``symbol``/``ticker``/``instrument``/``pair``.... Column order does not matter
  (mplfinance's ``Date,Open,Close,High,Low,Volume``). Without usable names the roles come from the content:
  the first date-time column (or a date column followed by a time column, or a first column of epoch
  numbers or of milliseconds since midnight), then the numeric columns in order as open, high, low, close
  and volume; if that order is not consistent with the values (the high column is not the highest of the
  four), the column that is always highest is high, the always-lowest one low, the other two open, close.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pyarrow as pa

from tis_pipeline.market_data.readers.context import ColumnRoles, RawTable, ReadContext
from tis_pipeline.market_data.readers.contract import BarFileError
from tis_pipeline.market_data.readers.numbers import float_column
from tis_pipeline.market_data.readers.sampling import mostly, sample_idx, sample_strings, sample_values
from tis_pipeline.market_data.readers.timestamps import detect_format, format_has_time, numeric_kind

_TS_NAMES = [
    "timestamp", "datetime", "opentime", "timeopen", "datetimeutc", "timestamputc", "utctimestamp", "bartime",
    "starttime", "begintime", "candletime", "candlebegin", "gmttime", "utctime", "localtime", "time", "date",
    "ts", "dt", "t", "utc", "period", "index", "unnamed0", "indexlevel0", "",
]  # fmt: skip
_PRICE_NAMES = {
    "open": ["open", "o", "openprice", "priceopen", "first"],
    "high": ["high", "h", "highprice", "pricehigh", "max"],
    "low": ["low", "l", "lowprice", "pricelow", "min"],
    "close": ["close", "c", "closeprice", "priceclose", "last"],
}
_SIDE_PREFIXES = ("mid", "bid", "ask")
_VOLUME_NAMES = [
    "volume", "vol", "v", "basevolume", "volumebase", "totalvolume", "tickvolume", "tickvol", "realvolume",
    "qty", "quantity", "size", "volumefrom", "quotevolume", "volumeto", "amount",
]  # fmt: skip
_SYMBOL_NAMES = [
    "symbol", "ticker", "instrument", "instrumentid", "pair", "sym", "asset", "code", "secid", "contract",
    "product", "coin", "securityid",
]  # fmt: skip
# Every name in the role tables: what tells a JSON object of bars from its wrapper.
KNOWN_NAMES: set[str] = set()
KNOWN_NAMES.update(n for n in _TS_NAMES if n)
KNOWN_NAMES.update(n for names in _PRICE_NAMES.values() for n in names)
KNOWN_NAMES.update(_VOLUME_NAMES)
KNOWN_NAMES.update(_SYMBOL_NAMES)


def normalise_name(name: object) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


_INT_RE = re.compile(r"^[+-]?\d+$")
_FLOAT_RE = re.compile(
    r"^[+-]?(?:\d[\d,]*(?:\.\d*)?|\.\d+|\d+(?:\.\d{3})*,\d+)(?:[eE][+-]?\d+)?$|^[+-]?(?:nan|inf)$"
)
_TIME_RE = re.compile(r"^\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:\s?[AaPp]\.?[Mm]\.?)?$")


def classify(col: pa.Array, idx: np.ndarray) -> str:
    """datetime, date, time, int, float, text, empty or other (on a sample of rows)."""
    t = col.type
    if pa.types.is_timestamp(t):
        return "datetime"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_time(t):
        return "time"
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        numbers = np.array([float(x) for x in sample_values(col, idx)], dtype=np.float64)
        if len(numbers) and numeric_kind(numbers, None) == "yyyymmdd":
            return "date"
        return "int" if pa.types.is_integer(t) else "float"
    if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)):
        return "other"
    vals = sample_strings(col, idx)
    if not vals:
        return "empty"
    if mostly(_INT_RE.match, vals):
        if mostly(lambda s: len(s) == 8, vals) and detect_format(vals, ["%Y%m%d"]):
            return "date"
        return "int"
    if mostly(lambda s: _FLOAT_RE.match(s.lower()) is not None, vals):
        return "float"
    if mostly(_TIME_RE.match, vals):
        return "time"
    fmt = detect_format(vals)
    if fmt is not None:
        return "datetime" if format_has_time(fmt, vals) else "date"
    return "text"


def is_time_column(col: pa.Array, idx: np.ndarray) -> bool:
    cls = classify(col, idx)
    if cls == "time":
        return True
    if cls == "int":
        vals = sample_strings(col, idx)

        def ok(s: str) -> bool:
            if not (3 <= len(s) <= 6 and s.isdigit()):
                return False
            s = s.zfill(6) if len(s) >= 5 else s.zfill(4) + "00"
            return int(s[:2]) < 24 and int(s[2:4]) < 60 and int(s[4:6]) < 60

        return mostly(ok, vals)
    return False


def assign_roles(raw: RawTable, ctx: ReadContext) -> ColumnRoles:
    good = ~raw.pre_bad
    idx = sample_idx(good)
    cache: dict[int, str] = {}

    def cls(i: int) -> str:
        if i not in cache:
            cache[i] = classify(raw.columns[i], idx)
        return cache[i]

    roles = ColumnRoles()
    if raw.names is not None:
        norm = [normalise_name(n) for n in raw.names]
        pos: dict[str, int] = {}
        for position, n in enumerate(norm):
            pos.setdefault(n, position)
        # prices
        for role, keys in _PRICE_NAMES.items():
            i = next((pos[k] for k in keys if k in pos), None)
            if i is None:
                for side in _SIDE_PREFIXES:
                    word = keys[0]
                    i = pos.get(side + word, pos.get(word + side))
                    if i is not None:
                        ctx.note(f"{role} taken from column {raw.names[i]!r}")
                        break
            setattr(roles, role, i)
        found = [r for r in _PRICE_NAMES if getattr(roles, r) is not None]
        if 0 < len(found) < 4:
            missing = [r for r in _PRICE_NAMES if getattr(roles, r) is None]
            raise ctx.error(f"no {', '.join(missing)} column among {raw.names}")
        roles.volume = next((pos[k] for k in _VOLUME_NAMES if k in pos), None)
        roles.symbol = next((pos[k] for k in _SYMBOL_NAMES if k in pos), None)
        hinted = dict(ctx.applied.roles) if ctx.applied is not None else {}
        for role, name in hinted.items():  # the source profile's column names (Polygon's window_start...)
            if name in pos:
                setattr(roles, role, pos[name])
        taken = roles.used()
        # timestamp
        if "date" in pos and "time" in pos and "timestamp" not in pos and "datetime" not in pos:
            di, ti = pos["date"], pos["time"]
            if cls(di) == "date":
                if not is_time_column(raw.columns[ti], idx) and cls(ti) not in ("datetime", "int", "float"):
                    shown = ", ".join(repr(v) for v in sample_strings(raw.columns[ti], idx)[:3])
                    raise ctx.error(
                        f"column {raw.names[ti]!r} is not a recognisable time of day (e.g. {shown})"
                    )
                if is_time_column(raw.columns[ti], idx):
                    roles.date, roles.time = di, ti
        named_text: int | None = None  # a time-named column in no known format: tried last
        if roles.date is None and roles.ts is None:
            for key in _TS_NAMES:
                i = pos.get(key)
                if i is None or i in taken:
                    continue
                c = cls(i)
                if c in ("datetime", "date"):
                    roles.ts = i
                    break
                if c in ("int", "float"):
                    numbers = _numeric_sample(raw.columns[i], idx)
                    if numeric_kind(numbers, ctx.file_date) is not None:
                        roles.ts = i
                        break
                if c == "text" and key and named_text is None:
                    named_text = i
        if roles.ts is None and roles.date is None:
            try:
                _content_timestamp(raw, roles, cls, idx, ctx, exclude=taken)
            except BarFileError:
                if named_text is None:
                    raise
                roles.ts = (
                    named_text  # its parser says what is wrong with the values (or reads them one by one)
                )
        if len(found) == 0:
            ctx.note(f"no open/high/low/close names in {raw.names}; columns inferred from their content")
            _content_prices(raw, roles, cls, idx, ctx)
        return roles
    roles.content = True
    _content_timestamp(raw, roles, cls, idx, ctx, exclude=set())
    _content_prices(raw, roles, cls, idx, ctx)
    used = roles.used()
    for i in range(len(raw.columns)):
        if i not in used and cls(i) == "text":
            vals = sample_strings(raw.columns[i], idx)
            if mostly(lambda s: re.match(r"^[A-Za-z][A-Za-z0-9._/:^=-]{0,29}$", s) is not None, vals, 1.0):
                roles.symbol = i
            break
    return roles


def _numeric_sample(col: pa.Array, idx: np.ndarray) -> np.ndarray:
    out = []
    for v in sample_values(col, idx):
        try:
            out.append(float(str(v).replace(",", "")))
        except ValueError:
            continue
    return np.array(out, dtype=np.float64)


def _content_timestamp(
    raw: RawTable,
    roles: ColumnRoles,
    cls: Callable[[int], str],
    idx: np.ndarray,
    ctx: ReadContext,
    exclude: set[int],
) -> None:
    ncols = len(raw.columns)
    cand = [i for i in range(ncols) if i not in exclude]
    for i in cand:
        if cls(i) == "datetime":
            roles.ts = i
            return
    for i in cand:
        if (
            cls(i) == "date"
            and i + 1 < ncols
            and (i + 1) not in exclude
            and is_time_column(raw.columns[i + 1], idx)
        ):
            roles.date, roles.time = i, i + 1
            return
    first_numeric = next((i for i in cand if cls(i) in ("int", "float")), None)
    if first_numeric is not None:
        kind = numeric_kind(_numeric_sample(raw.columns[first_numeric], idx), ctx.file_date)
        if kind is not None:
            roles.ts = first_numeric
            return
    for i in cand:
        if cls(i) == "date":
            roles.ts = i
            return
    raise ctx.error("no timestamp column found (no date/time names and no column that looks like date-times)")


def _content_prices(
    raw: RawTable, roles: ColumnRoles, cls: Callable[[int], str], idx: np.ndarray, ctx: ReadContext
) -> None:
    used = roles.used()
    numeric = [i for i in range(len(raw.columns)) if i not in used and cls(i) in ("int", "float")]
    if len(numeric) < 4:
        raise ctx.error(f"fewer than four numeric columns for open/high/low/close (found {len(numeric)})")
    four = numeric[:4]
    roles.open, roles.high, roles.low, roles.close = four
    roles.volume = numeric[4] if len(numeric) > 4 else None
    # Check the conventional order against the values; reorder when another column is clearly the high/low.
    sample = (
        np.vstack([float_column(raw.columns[i], raw.decimal_comma)[idx] for i in four]) if len(idx) else None
    )
    if sample is None:
        return
    ok = np.all(np.isfinite(sample), axis=0)
    sample = sample[:, ok]
    if sample.shape[1] == 0:
        return
    top, bottom = sample.max(axis=0), sample.min(axis=0)
    is_top = (sample >= top).mean(axis=1)
    is_bottom = (sample <= bottom).mean(axis=1)
    if is_top[1] >= 0.98 and is_bottom[2] >= 0.98:
        return
    hi, lo = int(np.argmax(is_top)), int(np.argmax(is_bottom))
    if hi != lo and is_top[hi] >= 0.98 and is_bottom[lo] >= 0.98:
        rest = [four[k] for k in range(4) if k not in (hi, lo)]
        roles.open, roles.high, roles.low, roles.close = rest[0], four[hi], four[lo], rest[1]
        ctx.note(
            "price columns are not in open,high,low,close order: the column that is always highest was taken "
            "as high and the always-lowest as low"
        )
