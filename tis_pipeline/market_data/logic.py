"""Pure logic of the market-data domain: normalise, validate, measure gaps, summarise. No Dagster, no database.

Bars follow the seed's convention: ``timestamp`` is the UTC minute a bar opens; a bar is known from
``timestamp + 1 minute``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

BAR_COLUMNS = ["symbol", "timestamp", "open", "high", "low", "close", "volume"]
PRICE_COLUMNS = ["open", "high", "low", "close"]
SYMBOL_PATTERN = r"^[A-Za-z0-9._/:-]{1,20}$"
_SYMBOL_RE = re.compile(SYMBOL_PATTERN)
# numeric(20,8) holds |x| < 10^12
NUMERIC_20_8_LIMIT = 1e12

# Ingest-only rules on raw input, beside the registry's (tis_pipeline.quality.rules) error rules for the table
SYMBOL_FORMAT_RULE = "market_data_1m_symbol_format"
NUMERIC_FIT_RULE = "market_data_1m_values_fit_numeric"
KEY_UNIQUE_RULE = "market_data_1m_key_unique"

# The order a row is judged in: it is quarantined under the first rule it breaks.
QUARANTINE_RULES = (
    SYMBOL_FORMAT_RULE,
    "market_data_1m_timestamp_not_null",
    "market_data_1m_open_not_null",
    "market_data_1m_high_not_null",
    "market_data_1m_low_not_null",
    "market_data_1m_close_not_null",
    "market_data_1m_volume_not_null",
    NUMERIC_FIT_RULE,
    "ck_market_data_1m_prices_positive",
    "ck_market_data_1m_volume_nonnegative",
    "ck_market_data_1m_high_bounds",
    "ck_market_data_1m_low_bounds",
    "market_data_1m_timestamp_aligned",
    "market_data_1m_timestamp_not_future",
    KEY_UNIQUE_RULE,
)

RULE_MESSAGES = {
    SYMBOL_FORMAT_RULE: "symbol is empty, longer than 20 characters or has characters outside [A-Za-z0-9._/:-]",
    NUMERIC_FIT_RULE: "a value does not fit numeric(20,8) (|x| >= 1e12)",
    KEY_UNIQUE_RULE: "the same symbol and minute appear more than once",
}
# The registry's rules no clean row can break: validate_bars quarantines every row that breaks one of them (the
# key rule by _duplicates, which keeps at most one row of a key; a missing symbol breaks the symbol format).
# Not the not-in-the-future rule: it is judged against a clock that has moved on by the time the rows are judged.
ENFORCED_RULES = frozenset(
    {"market_data_1m_symbol_not_null"}
    | set(QUARANTINE_RULES) - {SYMBOL_FORMAT_RULE, NUMERIC_FIT_RULE, "market_data_1m_timestamp_not_future"}
)
_DUPLICATE_MESSAGE = "an identical row for this symbol and minute came earlier (one copy kept)"
_CONFLICT_MESSAGE = "the same symbol and minute appear with different values (no copy kept)"


_DEFAULTS = (("source_file", "synthetic"), ("source_line", 0), ("raw", None), ("volume_missing", False))


def normalise_bars(frame: pd.DataFrame) -> pd.DataFrame:
    """Types, UTC, upper-case symbols, sorted by (symbol, timestamp, source order).

    Input: at least ``BAR_COLUMNS``; optional ``source_file``, ``source_line``, ``raw``, ``volume_missing``.
    Output: the same columns with float64 prices and volume, ``timestamp`` as datetime64[us, UTC].
    """
    # copy-on-write: the columns replaced below never reach the caller's frame, so no deep copy is needed
    out = frame.copy(deep=False)
    out["symbol"], symbol_rank = _clean_symbols(out["symbol"])
    out["timestamp"] = pd.to_datetime(out["timestamp"], utc=True).astype("datetime64[us, UTC]")
    for column in PRICE_COLUMNS + ["volume"]:
        if out[column].dtype != "float64":  # to_numeric would copy a float64 column unchanged
            out[column] = pd.to_numeric(out[column], errors="coerce").astype("float64")
    if "source_line" in out.columns:
        out["source_line"] = out["source_line"].fillna(0).astype("int64")
    order = _sort_order(out, symbol_rank)
    if order is not None:
        out = out.take(order)
    out = out.reset_index(drop=True)
    # an absent column is a constant: added after the sort, which it could not change
    for column, default in _DEFAULTS:
        if column not in out.columns:
            out[column] = default
    return out


def _clean_symbols(symbols: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Stripped, upper-case symbols (``string`` dtype) and their sort ranks (missing last).

    Both are computed once per distinct symbol (a frame has few) and spread to the rows by their codes.
    """
    codes, uniques = pd.factorize(symbols.astype("string"))
    cleaned = pd.Series(uniques).str.strip().str.upper()
    rank_of_unique, distinct = pd.factorize(cleaned, sort=True)
    # code -1 (a missing symbol) picks the appended rank: missing sorts last, as in sort_values
    rank = np.append(rank_of_unique, len(distinct))[codes]
    return pd.Series(cleaned.array.take(codes, allow_fill=True), index=symbols.index), rank


def _rank(values: pd.Series) -> np.ndarray:
    """Sort ranks of a column as ``sort_values`` sees them (equal values share a rank, missing sorts last)."""
    codes, uniques = pd.factorize(values, sort=True)
    return np.where(codes < 0, len(uniques), codes)


def _lex_steps(keys: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """For consecutive rows: does the key tuple go up, and is it unchanged (keys compared most significant first)."""
    up = np.zeros(max(len(keys[0]) - 1, 0), dtype=bool)
    same = np.ones_like(up)
    for key in keys:
        prev, this = key[:-1], key[1:]
        up |= same & (this > prev)
        same &= this == prev
    return up, same


def _sort_order(frame: pd.DataFrame, symbol_rank: np.ndarray) -> np.ndarray | None:
    """The stable (symbol, timestamp, source_file, source_line) order, or None when the rows already are in it.

    Sorting integer ranks with numpy replaces a four-column sort of strings; when (symbol, timestamp) alone
    orders the rows (one bar per key, the usual case), the source columns are not looked at.
    """
    nat = frame["timestamp"].isna().to_numpy()
    keys = [symbol_rank, nat, frame["timestamp"].array.asi8]  # NaT after every time of its symbol
    up, same = _lex_steps(keys)
    if not up.all():
        if "source_file" in frame.columns:
            keys.append(_rank(frame["source_file"]))
        if "source_line" in frame.columns:
            keys.append(frame["source_line"].to_numpy())
        up, same = _lex_steps(keys)
    if (up | same).all():
        return None
    # np.lexsort is stable and takes its most significant key last, as sort_values(kind="stable") does
    return np.lexsort(keys[::-1])


@dataclass
class Validated:
    clean: pd.DataFrame          # BAR_COLUMNS + volume_missing, safe to write
    quarantine: pd.DataFrame     # quarantine table rows
    counts: dict[str, int]       # rule -> rows quarantined
    enforced: frozenset[str] = frozenset()  # registry rules no row of ``clean`` breaks (evaluate_frame's enforced=)

    @staticmethod
    def concat(pieces: list[Validated]) -> Validated:
        """One result for pieces validated apart (disjoint days: no row of one can repeat a row of another)."""
        if len(pieces) == 1:
            return pieces[0]
        if not pieces:
            raise ValueError("no pieces to join")
        counts: dict[str, int] = {}
        for piece in pieces:
            for name, count in piece.counts.items():
                counts[name] = counts.get(name, 0) + count
        enforced = frozenset.intersection(*(p.enforced for p in pieces))
        if not _disjoint_in_time([p.clean["timestamp"] for p in pieces]):
            enforced -= {KEY_UNIQUE_RULE}  # a key could then be in two pieces
        return Validated(
            clean=pd.concat([p.clean for p in pieces], ignore_index=True),
            quarantine=pd.concat([p.quarantine for p in pieces], ignore_index=True),
            counts={name: counts[name] for name in QUARANTINE_RULES if name in counts},
            enforced=enforced,
        )


def _disjoint_in_time(timestamps: list[pd.Series]) -> bool:
    """Each series' times all later than the previous non-empty series' (no missing time: clean rows)."""
    spans = [(t.min(), t.max()) for t in timestamps if len(t)]
    return all(last < first for (_, last), (first, _) in zip(spans, spans[1:], strict=False))


def rule_masks(frame: pd.DataFrame, now: pd.Timestamp) -> dict[str, np.ndarray]:
    """One boolean mask per quarantine rule (True = the row breaks it), vectorised over the frame.

    The table's rules come from the quality registry (``failing_mask``), so ingest, the asset checks and the
    database's CHECK constraints share one definition of each rule.
    """
    from tis_pipeline.quality.evaluate import failing_masks
    from tis_pipeline.quality.rules import rule

    symbol_codes, symbols = pd.factorize(frame["symbol"])
    too_large = np.zeros(len(frame), dtype=bool)
    for column in PRICE_COLUMNS + ["volume"]:
        values = frame[column].to_numpy(dtype="float64")
        with np.errstate(invalid="ignore"):
            too_large |= np.abs(values) >= NUMERIC_20_8_LIMIT  # x >= limit or x <= -limit (NaN: neither)
    masks: dict[str, np.ndarray] = {
        SYMBOL_FORMAT_RULE: _bad_symbols(symbol_codes, symbols),
        NUMERIC_FIT_RULE: too_large,
    }
    registry = [rule(name) for name in QUARANTINE_RULES if name not in masks and name != KEY_UNIQUE_RULE]
    masks.update(failing_masks(frame, registry, now=now))
    masks["_duplicate"], masks["_conflict"] = _duplicates(frame, symbol_codes, len(symbols))
    masks[KEY_UNIQUE_RULE] = masks["_duplicate"] | masks["_conflict"]
    return masks


def _bad_symbols(codes: np.ndarray, symbols: pd.Index) -> np.ndarray:
    """The symbol-format mask, with the pattern run once per distinct symbol (a frame has few)."""
    # Python's re on the few strings: pandas' str.fullmatch costs more to set up than to run here, and the
    # pattern reads the same in both (ASCII classes, anchored at both ends; a non-string never matches)
    pattern = _SYMBOL_RE.fullmatch
    bad = np.array([not (isinstance(s, str) and pattern(s)) for s in symbols], dtype=bool)
    # code -1 (no symbol) picks the appended True: an empty symbol breaks the pattern
    return np.append(bad, True)[codes]


def _duplicates(frame: pd.DataFrame, symbol_codes: np.ndarray, n_symbols: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows repeating an earlier identical row of their (symbol, timestamp), and rows of a key whose copies differ.

    A missing symbol or timestamp counts as a value (it equals itself), as in ``DataFrame.duplicated``.
    Keys are compared as integers between neighbours in key order; only rows whose key repeats (few, in
    practice) are compared on their values.
    """
    n = len(frame)
    duplicate, conflict = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    timestamps = frame["timestamp"]
    if pd.api.types.is_datetime64_any_dtype(timestamps.dtype):
        ts, nat = timestamps.array.asi8, timestamps.isna().to_numpy()
    else:
        ts, nat = pd.factorize(timestamps, use_na_sentinel=False)[0], np.zeros(n, dtype=bool)
    # missing symbols and times go last, where normalise_bars puts them, so a normalised frame needs no sort
    keys = [np.where(symbol_codes < 0, n_symbols, symbol_codes), nat, ts]
    order = np.arange(n)
    up, same = _lex_steps(keys)
    if not (up | same).all():
        order = np.lexsort(keys[::-1])
        up, same = _lex_steps([key[order] for key in keys])
    # in key order, a key's rows are neighbours: a row repeats its key when a neighbour has the same one
    repeated_in_order = np.zeros(n, dtype=bool)
    repeated_in_order[1:] |= same
    repeated_in_order[:-1] |= same
    rows = np.sort(order[repeated_in_order])
    if len(rows) == 0:
        return duplicate, conflict
    key_id = np.empty(n, dtype=np.int64)
    key_id[order] = np.cumsum(np.concatenate([[True], ~same]))
    seen = frame.iloc[rows][BAR_COLUMNS].duplicated(keep="first").to_numpy()
    _, key_of_row = np.unique(key_id[rows], return_inverse=True)
    # the first copy of each distinct row counts once: a key with two of them cannot be resolved
    distinct = np.bincount(key_of_row, weights=~seen)
    conflict[rows] = distinct[key_of_row] > 1
    duplicate[rows] = seen & ~conflict[rows]
    return duplicate, conflict


def validate_bars(frame: pd.DataFrame, *, now: pd.Timestamp | None = None,
                  partition_date: pd.Timestamp | None = None) -> Validated:
    """Split normalised bars into clean rows and quarantine rows (each bad row once, under its first rule)."""
    from tis_pipeline.quality.rules import rule

    now = now if now is not None else pd.Timestamp.now(tz="UTC")
    masks = rule_masks(frame, now)
    # position in QUARANTINE_RULES of the first rule each row breaks; len(QUARANTINE_RULES) = none
    first_rule = np.full(len(frame), len(QUARANTINE_RULES))
    for position, name in enumerate(QUARANTINE_RULES):
        first_rule[masks[name] & (first_rule == len(QUARANTINE_RULES))] = position
    bad = first_rule < len(QUARANTINE_RULES)
    clean_columns = BAR_COLUMNS + ["volume_missing"]
    clean = (frame.loc[~bad, clean_columns] if bad.any() else frame[clean_columns]).reset_index(drop=True)
    rejected = frame.loc[bad]
    dates = rejected["timestamp"].dt.tz_convert("UTC").dt.date
    if partition_date is not None:
        dates = dates.fillna(partition_date.date())
    quarantine = pd.DataFrame(
        {
            "partition_date": dates,
            "source_file": rejected["source_file"].astype(str),
            "source_line": rejected["source_line"],
            "symbol": rejected["symbol"].astype("object"),
            "timestamp": rejected["timestamp"],
            "raw_values": _raw_json(rejected),
            "rule": np.array(QUARANTINE_RULES, dtype=object)[first_rule[bad]],
        }
    ).reset_index(drop=True)
    messages = {name: RULE_MESSAGES.get(name) or rule(name).description for name in QUARANTINE_RULES}
    quarantine["message"] = quarantine["rule"].map(messages)
    duplicate_kind = np.where(masks["_conflict"][bad], _CONFLICT_MESSAGE, _DUPLICATE_MESSAGE)
    is_key_rule = (quarantine["rule"] == KEY_UNIQUE_RULE).to_numpy()
    quarantine.loc[is_key_rule, "message"] = duplicate_kind[is_key_rule]
    per_rule = np.bincount(first_rule, minlength=len(QUARANTINE_RULES))
    counts = {name: int(per_rule[i]) for i, name in enumerate(QUARANTINE_RULES) if per_rule[i]}
    return Validated(clean=clean, quarantine=quarantine, counts=counts, enforced=ENFORCED_RULES)


def _raw_json(rejected: pd.DataFrame) -> list[str]:
    """Each rejected row as JSON: the parsed values, plus the original text where the reader kept it."""
    if rejected.empty:
        return []
    columns = BAR_COLUMNS + (["raw"] if "raw" in rejected.columns else [])
    view = rejected[columns].copy()
    view["timestamp"] = view["timestamp"].map(lambda t: None if pd.isna(t) else t.isoformat())
    if "raw" in view.columns:
        view["raw"] = view["raw"].where(view["raw"].map(lambda r: isinstance(r, str)), None)
    # pandas writes NaN as null and escapes every string: safe JSON for any input text
    return view.to_json(orient="records", lines=True, double_precision=15).splitlines()


def quarantine_share_by_day(clean: pd.DataFrame, quarantine: pd.DataFrame) -> pd.Series:
    """Share of quarantined rows among all rows of each partition day."""
    good = _utc_date_counts(clean["timestamp"])
    bad = quarantine["partition_date"].value_counts()
    total = good.add(bad, fill_value=0)
    return bad.reindex(total.index, fill_value=0).div(total).sort_index()


def _utc_date_counts(timestamps: pd.Series) -> pd.Series:
    """``timestamps.dt.date.value_counts()`` in UTC (in date order), counted on day numbers so that only the
    few distinct days become Python objects."""
    if isinstance(timestamps.dtype, pd.DatetimeTZDtype):  # asi8 counts from the epoch in UTC, whatever the zone
        days = timestamps.array.asi8.view(f"datetime64[{timestamps.dtype.unit}]").astype("datetime64[D]")
    else:
        days = timestamps.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[D]")
    days = days[~np.isnat(days)]
    day_numbers = days.view("int64")
    if len(days) and day_numbers.max() - day_numbers.min() < 4 * len(days):
        # a few days in a row (a piece has one): counted by offset, without np.unique's sort
        first = day_numbers.min()
        per_day = np.bincount(day_numbers - first)
        present = np.flatnonzero(per_day)
        days, counts = (present + first).astype("datetime64[D]"), per_day[present]
    else:
        days, counts = np.unique(days, return_counts=True)
    index = pd.Index(days.astype(object), dtype=object, name=timestamps.name)
    return pd.Series(counts.astype("int64"), index=index, name="count")


def missing_minutes(frame: pd.DataFrame, interval: str = "1min") -> pd.DataFrame:
    """Per symbol and UTC day: bars present and intervals missing between the day's first and last bar.

    Output columns: symbol, day, bars, missing. Gaps are counted, never filled.
    """
    if frame.empty:
        return pd.DataFrame(columns=["symbol", "day", "bars", "missing"])
    step = pd.Timedelta(interval)
    grouped = frame.assign(day=frame["timestamp"].dt.tz_convert("UTC").dt.floor("D")).groupby(
        ["symbol", "day"], observed=True
    )["timestamp"]
    stats = grouped.agg(["min", "max", "size"]).reset_index()
    expected = ((stats["max"] - stats["min"]) / step).astype("int64") + 1
    stats["missing"] = (expected - stats["size"]).astype("int64")
    return stats.rename(columns={"size": "bars"})[["symbol", "day", "bars", "missing"]]


def summary(frame: pd.DataFrame, interval: str = "1min") -> dict:
    """Plain-Python facts of a written frame for run metadata (row count, symbols, first/last, gaps)."""
    if frame.empty:
        return {"rows": 0, "symbols": [], "first_timestamp": None, "last_timestamp": None,
                "missing_by_symbol": {}}
    fast = _missing_by_symbol(frame, interval)
    if fast is not None:
        symbols, missing_by_symbol = fast
    else:
        gaps = missing_minutes(frame, interval).groupby("symbol", observed=True)["missing"].sum()
        symbols = sorted(frame["symbol"].astype(str).unique().tolist())
        missing_by_symbol = {str(k): int(v) for k, v in gaps.items()}
    return {
        "rows": int(len(frame)),
        "symbols": symbols,
        "first_timestamp": frame["timestamp"].min().isoformat(),
        "last_timestamp": frame["timestamp"].max().isoformat(),
        "missing_by_symbol": missing_by_symbol,
    }


def _missing_by_symbol(frame: pd.DataFrame, interval: str) -> tuple[list[str], dict[str, int]] | None:
    """``summary``'s sorted symbols and missing intervals per symbol (``missing_minutes`` summed), with one
    factorisation of the symbols and numpy instead of a two-key groupby, for the frames ingest writes (string
    symbols, none missing; zone-aware times, none missing). None for any other frame."""
    symbol, timestamps = frame["symbol"], frame["timestamp"]
    if not (isinstance(symbol.dtype, pd.StringDtype) and isinstance(timestamps.dtype, pd.DatetimeTZDtype)):
        return None
    codes, uniques = pd.factorize(symbol)
    if (codes < 0).any() or timestamps.hasnans:
        return None
    unit = timestamps.dtype.unit
    ts = timestamps.array.asi8
    day = ts // np.timedelta64(1, "D").astype(f"timedelta64[{unit}]").astype(np.int64)  # dt.floor("D") in UTC
    day -= day.min()
    span = int(day.max()) + 1
    group = codes.astype(np.int64) * span + day
    if len(uniques) * span <= 4 * len(frame) + 1024:
        symbol_of_group = np.arange(len(uniques) * span) // span
    else:  # days far apart: number only the (symbol, day) pairs that occur
        group, pairs = pd.factorize(group)
        symbol_of_group = pairs // span
    size = np.bincount(group, minlength=len(symbol_of_group))
    first = np.full(len(size), np.iinfo(np.int64).max)
    last = np.full(len(size), np.iinfo(np.int64).min)
    np.minimum.at(first, group, ts)
    np.maximum.at(last, group, ts)
    present = np.flatnonzero(size)
    step = pd.Timedelta(interval).to_timedelta64().astype(f"timedelta64[{unit}]")
    # as missing_minutes: (last - first) / step as float64, truncated, + 1, less the bars present
    expected = ((last[present] - first[present]).astype(f"timedelta64[{unit}]") / step).astype("int64") + 1
    missing = np.zeros(len(uniques), dtype=np.int64)
    np.add.at(missing, symbol_of_group[present], expected - size[present])
    names = [str(u) for u in uniques]
    order = sorted(range(len(names)), key=names.__getitem__)
    return [names[i] for i in order], {names[i]: int(missing[i]) for i in order}


def price_volume_png(frame: pd.DataFrame, title: str, max_symbols: int = 4) -> bytes:
    """A PNG of close and volume per symbol (first ``max_symbols``), for the UI."""
    import matplotlib.dates as mdates

    from tis_pipeline.plots import figure_png, pyplot

    # laid out by hand: a tight crop or autofmt_xdate would draw the figure twice
    fig, (ax_price, ax_volume) = pyplot().subplots(2, 1, figsize=(8, 4.5), sharex=True,
                                              gridspec_kw={"height_ratios": [3, 1], "hspace": 0.08})
    fig.subplots_adjust(left=0.1, right=0.98, top=0.93, bottom=0.12)
    for symbol in sorted(frame["symbol"].astype(str).unique())[:max_symbols]:
        part = frame[frame["symbol"] == symbol]
        base = part["close"].iloc[0] if len(part) else 1.0
        ax_price.plot(part["timestamp"], part["close"] / base * 100, label=symbol, linewidth=0.8)
        ax_volume.plot(part["timestamp"], part["volume"], linewidth=0.6)
    ax_price.set_ylabel("close (first = 100)")
    ax_volume.set_ylabel("volume")
    ax_price.set_title(title)
    ax_price.legend(loc="upper left", fontsize=7)
    locator = mdates.AutoDateLocator(minticks=3, maxticks=7)
    ax_volume.xaxis.set_major_locator(locator)
    ax_volume.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    return figure_png(fig, tight=False)
