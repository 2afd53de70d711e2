"""From raw columns to the bar frame: roles, timestamps, prices, symbols, intervals and the raw text of bad
rows.

* **Interval**: per symbol, the median of the positive differences of the sorted unique timestamps. Only
  1-minute symbols are returned; coarser (or finer) ones are listed in ``skipped`` with their interval. With
  ``bar_label="close"`` timestamps are moved back by that interval so that ``timestamp`` is the bar's open.
* **Bad rows are kept**: a row with an empty/NaN/non-numeric price or volume, an unparseable (or, in a local
  zone, non-existent or ambiguous) timestamp or an empty symbol cell is returned with NaN/NaT/missing in the
  bad fields and its original text in ``raw`` (the line for text files, a JSON rendering of the record for
  JSON/Parquet/Feather); ``raw`` is None for clean rows. A row with the wrong number of fields (an extra
  field, a truncated last line) has NaN prices and volume, because their positions cannot be trusted, and
  keeps its timestamp if that parses. So every row with ``raw`` set has at least one NaN/NaT/missing value,
  and a validator that quarantines missing values catches all of them. OHLC logic (high < low...) is not
  checked here.
  A file that cannot be read at all raises :class:`BarFileError` naming the file (and the line when known).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tis_pipeline.market_data.readers.columns import assign_roles
from tis_pipeline.market_data.readers.context import RawTable, ReadContext
from tis_pipeline.market_data.readers.contract import NAT, NS, empty_frame
from tis_pipeline.market_data.readers.numbers import as_string, float_column
from tis_pipeline.market_data.readers.symbols import symbol_from_path
from tis_pipeline.market_data.readers.timestamps import localize, parse_timestamps


@dataclass
class FramePart:
    frame: pd.DataFrame  # all rows of the file, all symbols
    intervals: dict[str, int | None]
    key_ns: np.ndarray  # window key per row (timestamp, or the nearest earlier/later one for NaT rows)


def _median_interval(ts: np.ndarray) -> int | None:
    """Median of the positive differences of the sorted unique timestamps, in whole seconds."""
    v = ts[ts != NAT]
    if len(v) < 2:
        return None
    if not bool(np.all(v[1:] >= v[:-1])):  # files are nearly always in order: sort only when needed
        v = np.sort(v)
    d = np.diff(v)
    d = d[d > 0]  # duplicates are not an interval
    if len(d) == 0:
        return None
    return round(float(np.median(d)) / NS)


def _fixed_point(prices: dict[str, np.ndarray], scale: float, ctx: ReadContext) -> dict[str, np.ndarray]:
    """Prices written as fixed-point integers (Databento without pretty_px: units of 1e-9) are scaled when
    every finite price is a whole number of at least a million units."""
    stacked = np.concatenate(list(prices.values()))
    finite = stacked[np.isfinite(stacked)]
    if len(finite) and np.all(finite == np.floor(finite)) and np.all(np.abs(finite) >= 1e6):
        ctx.note(f"prices are fixed-point integers: scaled by {scale:g}")
        return {k: v * scale for k, v in prices.items()}
    return prices


def frame_from_raw(raw: RawTable, ctx: ReadContext) -> FramePart:
    n = raw.nrows
    applied = ctx.applied
    symbol_map = {} if applied is None else applied.symbol_map
    if applied is not None and applied.symbol is not None:
        path_symbol = applied.symbol  # the profile's or the override's (already through the symbols map)
    else:
        path_symbol = symbol_from_path(ctx.symbol_path or ctx.path)
        path_symbol = symbol_map.get(path_symbol, path_symbol)
    if n == 0:
        return FramePart(empty_frame(), {}, np.zeros(0, np.int64))
    roles = assign_roles(raw, ctx)
    ts, aware = parse_timestamps(raw, roles, ctx)

    prices = {
        r: float_column(raw.columns[getattr(roles, r)], raw.decimal_comma)
        for r in ("open", "high", "low", "close")
    }
    if applied is not None and applied.fixed_point is not None:
        prices = _fixed_point(prices, applied.fixed_point, ctx)
    if ctx.lean is not None and ctx.lean.scaled:
        stacked = np.concatenate(list(prices.values()))
        finite = stacked[np.isfinite(stacked)]
        if len(finite) and np.all(finite == np.floor(finite)):
            prices = {k: v / 10_000.0 for k, v in prices.items()}
            ctx.note(
                "Lean equity layout with whole-number prices: prices are USD x 10,000, divided by 10,000"
            )
        else:
            ctx.note(
                "Lean equity layout but prices are not whole numbers: taken as plain prices (not scaled)"
            )
    if roles.volume is not None:
        volume = float_column(raw.columns[roles.volume], raw.decimal_comma)
        volume_missing = False
    else:
        volume = np.zeros(n, dtype=np.float64)
        volume_missing = True
        ctx.note("no volume column: volume set to 0 and volume_missing=True")

    # A row with the wrong number of fields: its prices and volume cannot be trusted (positions may have
    # shifted), so they are NaN and the validator quarantines the row; its timestamp is kept if it parses.
    if raw.pre_bad.any():
        prices = {k: np.where(raw.pre_bad, np.nan, v) for k, v in prices.items()}
        volume = np.where(raw.pre_bad, np.nan, volume)

    if roles.symbol is not None:
        # ASCII letters only are upper-cased: str.upper() maps the long s (U+017F) to 'S' and a look-alike
        # symbol would merge into the real one; left as it is, it breaks the symbol format and is quarantined
        scol = pc.cast(
            pc.ascii_upper(pc.utf8_trim_whitespace(as_string(raw.columns[roles.symbol]))), pa.large_string()
        )
        sym_bad = pc.fill_null(pc.equal(pc.utf8_length(scol), 0), True).to_numpy(zero_copy_only=False)
        sym_arr = pc.if_else(pa.array(sym_bad), pa.scalar(None, pa.large_string()), scol)  # empty -> missing
        sym_obj = sym_arr.to_numpy(zero_copy_only=False)
        if symbol_map:
            mapped = pd.Series(sym_obj, dtype=object).replace(symbol_map)
            if not mapped.equals(pd.Series(sym_obj, dtype=object)):
                ctx.note("symbols renamed by the [symbols] map of tis-sources.toml")
                sym_obj = mapped.to_numpy(dtype=object)
                sym_arr = pa.array(sym_obj, pa.large_string())
        symbols = [x for x in pd.unique(sym_obj) if isinstance(x, str)]
        if applied is not None and applied.origin.get("symbol") == "override":
            ctx.note("the file has a symbol column: it is used, not the override's symbol (use [symbols])")
    else:
        sym_arr = pa.repeat(pa.scalar(path_symbol, pa.large_string()), n)
        sym_obj = None
        sym_bad = np.zeros(n, bool)

    naive = ~aware & (ts != NAT)
    if naive.any():
        origin = "default" if applied is None else applied.origin.get("tz", "default")
        if applied is not None and applied.tz_forced:
            zone = ctx.tz
            ctx.note(f"naive timestamps read as {zone} (tis-sources.toml)")
        elif ctx.lean is not None and ctx.lean.zone is not None:
            zone = ctx.lean.zone
            ctx.note(f"Lean {ctx.lean.security_type}/{ctx.lean.market} layout: times are read as {zone}")
        elif origin == "profile" and applied is not None:
            zone = ctx.tz
            ctx.note(f"naive timestamps read as {zone} (source profile {applied.profile})")
        else:
            zone = ctx.tz
            ctx.note(f"naive timestamps read as {zone} (TIS_MARKET_TZ)")
        ts = ts.copy()
        ts[~aware] = localize(ts[~aware], zone, ctx, None if sym_obj is None else sym_obj[~aware])

    bad = raw.pre_bad | (ts == NAT) | sym_bad | np.isnan(volume)
    for v in prices.values():
        bad |= np.isnan(v)
    raw_col = np.full(n, None, dtype=object)
    bad_idx = np.flatnonzero(bad)
    if len(bad_idx):
        texts = raw.raw_text(bad_idx)
        for k, t in zip(bad_idx, texts, strict=True):
            raw_col[k] = t
        ctx.note(
            f"{len(bad_idx)} row(s) could not be parsed and are kept with their raw text "
            f"(first at line {int(raw.line[bad_idx[0]])})"
        )

    # per-symbol interval, bar_label shift
    intervals: dict[str, int | None] = {}
    masks: dict[str, np.ndarray | None]
    if sym_obj is None:  # one symbol, from the path
        intervals[path_symbol] = _median_interval(ts)
        masks = {path_symbol: None}
    else:
        masks = {}
        for s in symbols:
            m = sym_obj == s
            masks[str(s)] = m
            intervals[str(s)] = _median_interval(ts[m])
    if ctx.bar_label == "close":
        ts = ts.copy()
        named = None if applied is None else applied.interval_seconds
        for s, measured in intervals.items():
            iv = named if named is not None else measured
            if iv is None:
                ctx.note(f"bar_label=close but the interval of {s} is unknown: timestamps not shifted")
                continue
            m = (ts != NAT) if masks[s] is None else (masks[s] & (ts != NAT))
            ts[m] -= iv * NS
        ctx.note("bar_label=close: timestamps shifted back by one bar interval to the bar's open")

    key = pd.Series(np.where(ts == NAT, np.nan, ts.astype(np.float64)))
    if len(bad_idx):
        key_ns = key.ffill().bfill().fillna(0).to_numpy()
        key_ns = np.where(ts == NAT, key_ns.astype(np.int64), ts)
    else:
        key_ns = ts

    frame = pd.DataFrame(
        {
            "symbol": pd.Series(sym_arr, dtype="str"),
            "timestamp": pd.DatetimeIndex(ts.view("M8[ns]")).tz_localize("UTC"),
            "open": prices["open"],
            "high": prices["high"],
            "low": prices["low"],
            "close": prices["close"],
            "volume": volume,
            "volume_missing": np.full(n, volume_missing, dtype=bool),
            "source_file": pd.Series(pa.repeat(pa.scalar(ctx.display, pa.large_string()), n), dtype="str"),
            "source_line": raw.line.astype(np.int64),
            "raw": pd.Series(raw_col, dtype=object),
        }
    )
    return FramePart(frame, intervals, np.asarray(key_ns, dtype=np.int64))
