"""Numbers from Arrow columns: floats from text with thousands separators or decimal commas, exact integers,
and whole-number floats rendered back as digits.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tis_pipeline.market_data.readers.contract import NAT


def is_stringy(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _clean_numeric_strings(col: pa.Array, decimal_comma: bool) -> pa.Array:
    if decimal_comma:
        return pc.replace_substring(pc.replace_substring(col, ".", ""), ",", ".")
    if not (pc.any(pc.match_substring(col, ",")).as_py() or False):
        return col
    return pc.replace_substring(col, ",", "")  # "1,234.50": thousands separators


def float_column(col: pa.Array, decimal_comma: bool = False) -> np.ndarray:
    t = col.type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_boolean(t):
        return np.asarray(pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    if pa.types.is_null(t):
        return np.full(len(col), np.nan)
    if not is_stringy(t):
        col = pc.cast(col, pa.large_string())
    if not decimal_comma:
        try:  # clean columns need nothing more than a cast
            return np.asarray(pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
    col = _clean_numeric_strings(pc.utf8_trim_whitespace(col), decimal_comma)
    try:
        return np.asarray(pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        obj = col.to_numpy(zero_copy_only=False)
        return pd.to_numeric(pd.Series(obj, dtype=object), errors="coerce").to_numpy(
            dtype=np.float64, na_value=np.nan
        )


def numeric_values(col: pa.Array) -> tuple[np.ndarray, np.ndarray | None]:
    """-> (float64 values with NaN, exact int64 values or None)."""
    t = col.type
    if pa.types.is_integer(t):
        ints = pc.cast(col, pa.int64())
        valid = ~ints.is_null().to_numpy(zero_copy_only=False)
        i64 = ints.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        f = i64.astype(np.float64)
        f[~valid] = np.nan
        return f, np.where(valid, i64, NAT)
    if is_stringy(t):
        s = pc.utf8_trim_whitespace(col)
        try:
            ints = pc.cast(s, pa.int64())
            return numeric_values(ints)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
    return float_column(col), None


def as_string(col: pa.Array) -> pa.Array:
    if is_stringy(col.type):
        return col
    if pa.types.is_floating(col.type):
        f = col.to_numpy(zero_copy_only=False)
        if np.all(np.isnan(f) | (f == np.floor(f))):
            col = pc.cast(col, pa.int64(), safe=False)
    return pc.cast(col, pa.large_string())
