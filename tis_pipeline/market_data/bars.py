"""Bars as the ingest takes them from a source: typed, UTC, upper-case symbols, in key order. No Dagster, no
database.

Bars follow the seed's convention: ``timestamp`` is the UTC minute a bar opens; a bar is known from
``timestamp + 1 minute``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

BAR_COLUMNS = ["symbol", "timestamp", "open", "high", "low", "close", "volume"]
PRICE_COLUMNS = ["open", "high", "low", "close"]


_DEFAULTS = (("source_file", "synthetic"), ("source_line", 0), ("raw", None), ("volume_missing", False))


def normalise_bars(frame: pd.DataFrame) -> pd.DataFrame:
    """Types, UTC, upper-case (ASCII) symbols, sorted by (symbol, timestamp, source order).

    Input: at least ``BAR_COLUMNS``; optional ``source_file``, ``source_line``, ``raw``, ``volume_missing``.
    Output: the same columns with float64 prices and volume, ``timestamp`` as datetime64[us, UTC].
    """
    # copy-on-write: the columns replaced below never reach the caller's frame, so no deep copy is needed
    out = frame.copy(deep=False)
    out["symbol"], symbol_rank = _clean_symbols(out["symbol"])
    out["timestamp"] = pd.to_datetime(out["timestamp"], utc=True).astype("datetime64[us, UTC]")
    for column in [*PRICE_COLUMNS, "volume"]:
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


def rows_apart(frame: pd.DataFrame, rows: int) -> pd.DataFrame:
    """The first ``rows`` rows of ``frame`` (index 0, 1, ...) in arrays of their own: a slice or a copy of
    pyarrow-backed columns (the ``str`` symbols) shares the whole column's buffers and keeps them alive."""
    return frame.take(np.arange(min(rows, len(frame)))).reset_index(drop=True)


def symbol_groups(symbols: list[str] | tuple[str, ...]) -> list[list[str]]:
    """``symbols`` grouped by the symbol ``normalise_bars`` makes of each (stripped, upper-case), the groups
    in its order of those, each group's names in their order in ``symbols``: a source that cuts its rows into
    pieces of whole groups, in this order, gives pieces whose normalised rows, one after the other, are the
    normalised rows of them all."""
    if not symbols:
        return []
    _, rank = _clean_symbols(pd.Series(pd.array(np.asarray(list(symbols), dtype=object), dtype="str")))
    groups: dict[int, list[str]] = {}
    for name, r in zip(symbols, rank.tolist(), strict=True):
        groups.setdefault(r, []).append(name)
    return [groups[r] for r in sorted(groups)]


def _clean_symbols(symbols: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Stripped, upper-case symbols (``string`` dtype) and their sort ranks (missing last).

    Both are computed once per distinct symbol (a frame has few) and spread to the rows by their codes.
    """
    codes, uniques = pd.factorize(symbols.astype("string"))
    # only ASCII symbols are upper-cased: "btcu\u017fd".upper() is "BTCUSD", a look-alike merged into the real
    # symbol; a non-ASCII one keeps its case and breaks the symbol format (quarantined)
    cleaned = pd.Series(uniques).str.strip().map(lambda s: s.upper() if s.isascii() else s)
    rank_of_unique, distinct = pd.factorize(cleaned, sort=True)
    # code -1 (a missing symbol) picks the appended rank: missing sorts last, as in sort_values
    rank = np.append(rank_of_unique, len(distinct))[codes]
    return pd.Series(cleaned.array.take(codes, allow_fill=True), index=symbols.index), rank


def _rank(values: pd.Series) -> np.ndarray:
    """Sort ranks of a column as ``sort_values`` sees them (equal values share a rank, missing sorts last)."""
    codes, uniques = pd.factorize(values, sort=True)
    return np.where(codes < 0, len(uniques), codes)


def lex_steps(keys: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """For consecutive rows: does the key tuple go up, and is it unchanged (keys compared most significant
    first)."""
    up = np.zeros(max(len(keys[0]) - 1, 0), dtype=bool)
    same = np.ones_like(up)
    for key in keys:
        prev, this = key[:-1], key[1:]
        up |= same & (this > prev)
        same &= this == prev
    return up, same


def _sort_order(frame: pd.DataFrame, symbol_rank: np.ndarray) -> np.ndarray | None:
    """The stable (symbol, timestamp, source_file, source_line) order, or None when the rows already are in
    it.

    Sorting integer ranks with numpy replaces a four-column sort of strings; when (symbol, timestamp) alone
    orders the rows (one bar per key, the usual case), the source columns are not looked at.
    """
    nat = frame["timestamp"].isna().to_numpy()
    keys = [symbol_rank, nat, frame["timestamp"].array.asi8]  # NaT after every time of its symbol
    up, same = lex_steps(keys)
    if not up.all():
        if "source_file" in frame.columns:
            keys.append(_rank(frame["source_file"]))
        if "source_line" in frame.columns:
            keys.append(frame["source_line"].to_numpy())
        up, same = lex_steps(keys)
    if (up | same).all():
        return None
    # np.lexsort is stable and takes its most significant key last, as sort_values(kind="stable") does
    return np.lexsort(keys[::-1])
