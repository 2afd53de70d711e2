"""PostgreSQL's binary COPY format for bar rows (text, timestamptz, numeric(20,8) × k), built with numpy.

Why: the server parses the text COPY's timestamps and numerics field by field, and that parsing was most of
the write (bench/RESULTS.md, "Ingest"). Binary rows are read as they are. No database here: ``encode_rows`` is
a pure function; ``tis_pipeline.pg.engine.copy_rows_binary`` sends its bytes.

Exactness. The CSV path writes each float as its shortest round-trip decimal (pyarrow's formatter, the same
digits as Python's ``repr``) and ``numeric_in`` rounds that decimal half away from zero to 8 decimals. So the
text path stores ``round_half_away(shortest_decimal(x), 8)``. This encoder only takes the values for which it
can prove that number without formatting text:

* ``|x| < 2**26`` and ``n = rint(x * 1e8)`` gives back ``x`` (``n / 1e8 == x`` in float64): the decimal
  ``n * 1e-8`` round-trips to ``x``, and since ``ulp(x) < 1e-8`` there it is the only number of 8 decimals
  that does; the shortest decimal has no more digits, so it is that number, and rounding leaves it unchanged;
* integral ``x`` with ``|x| < 1e12`` (below 2**53, where ``ulp(x) <= 1``): the shortest decimal is ``x``.

Every other value (more than 8 decimals, a non-integral value above 2**26, NaN, ±inf, ``|x| >= 1e12``) is not
encoded: ``encode_rows`` returns the rows it left out, and the caller sends them through the text path, so
they land (or fail: numeric field overflow, NOT NULL) exactly as they always did.

Layout of a value: numeric as 5 base-10000 digits, weight 2, dscale 8 (``numeric_recv`` strips the leading and
trailing zero digits in ``make_result``, so the stored value is the same as the text path's, byte for byte);
timestamptz as microseconds since 2000-01-01 UTC; all big-endian.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"

PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 UTC in microseconds since 1970-01-01
_EXACT_SMALL = float(2**26)  # below this, ulp(x) < 1e-8: at most one 8-decimal number rounds to x
_INTEGRAL_LIMIT = 1e12  # numeric(20,8) holds |x| < 1e12
_NUMERIC_SIZE = 8 + 2 * 5  # ndigits, weight, sign, dscale + five digits
_NUMERIC_POS, _NUMERIC_NEG = 0x0000, 0x4000
# rows are written field by field a block at a time: a block (about 0.5 MB) stays in the cache through its ~20
# strided writes, where a day's 10 MB went through memory once per field
_ROWS_PER_BLOCK = 4096


def scaled_numeric(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(integer_part, fraction_1e8, negative, exact)`` of float64 ``values`` as numeric(20,8) stores them.

    ``exact`` marks the values whose stored number is proven to be ``integer_part + fraction_1e8 / 1e8`` (with
    the sign of ``negative``); the other entries are 0 and must go through the text path (module docstring).
    """
    values = np.asarray(values, dtype="float64")
    magnitude = np.abs(values)
    small, scaled = _small_scaled(magnitude)
    with np.errstate(invalid="ignore"):
        integral = ~small & (magnitude < _INTEGRAL_LIMIT) & (magnitude == np.trunc(magnitude))
    units = scaled.astype("int64")
    integer_part = np.where(small, units // 100_000_000, np.where(integral, magnitude, 0.0).astype("int64"))
    fraction = np.where(small, units % 100_000_000, 0)
    exact = small | integral
    negative = exact & (values < 0) & ((integer_part != 0) | (fraction != 0))  # -0.0 is stored as 0
    return integer_part, fraction, negative, exact


def _numeric_fields(count: int) -> list[tuple]:
    """The structured-dtype fields of ``count`` numeric(20,8) values, as big-endian 16-bit words: a head
    (length as two words, ndigits, weight, sign, dscale) and five base-10000 digits."""
    return [
        field for i in range(count) for field in ((f"n{i}_head", ">u2", (6,)), (f"n{i}_digits", ">u2", (5,)))
    ]


# a numeric's head: its length (0, 18), 5 digits, weight 2, the sign (set per value), dscale 8
_NUMERIC_HEAD = np.array([0, _NUMERIC_SIZE, 5, 2, _NUMERIC_POS, 8], dtype=">u2")


def _numeric_words(whole: np.ndarray, fraction: np.ndarray, negative: np.ndarray) -> list[np.ndarray]:
    """The varying words of numerics (``scaled_numeric``'s parts): the sign, then the five base-10000
    digits."""
    high = whole // 10**4  # < 10**8
    top = high // 10**4
    low = fraction // 10**4
    words = [
        negative.view(np.uint8) * np.uint16(_NUMERIC_NEG),
        top,
        high - top * 10**4,
        whole - high * 10**4,
        low,
        fraction - low * 10**4,
    ]
    return [w.astype(np.uint16) for w in words]


def _fill_numeric(out: np.ndarray, i: int, words: list[np.ndarray]) -> None:
    """Write numeric ``i`` of the rows ``out`` (a structured array of ``_numeric_fields``) in place from its
    ``_numeric_words``."""
    head = out[f"n{i}_head"]
    head[:] = _NUMERIC_HEAD
    head[:, 4] = words[0]
    digits = out[f"n{i}_digits"]
    for d in range(5):
        digits[:, d] = words[d + 1]


def exact_scale8(values: np.ndarray) -> np.ndarray:
    """Where a float64 read from a numeric(20,8) column gives back that number exactly.

    ``|x| < 2**26`` and ``n = rint(x * 1e8)`` with ``n / 1e8 == x``: below 2**26, ``ulp(x) < 1e-8``, so at
    most one number of 8 decimals rounds to ``x``, and ``n * 1e-8`` is it (module docstring). Unlike
    ``scaled_numeric``'s ``exact`` this does not take large integral floats: a stored 1e9 + 1e-8 reads back as
    the float 1e9.
    """
    return _small_scaled(np.abs(np.asarray(values, dtype="float64")))[0]


def _small_scaled(magnitude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(``|x| < 2**26`` and ``rint(|x| * 1e8) / 1e8 == |x|``, ``rint(|x| * 1e8)`` there and 0 elsewhere)."""
    with np.errstate(invalid="ignore", over="ignore"):
        small = magnitude < _EXACT_SMALL  # NaN compares False
        scaled = np.rint(np.where(small, magnitude, 0.0) * 1e8)
        small &= (scaled / 1e8) == magnitude
    return small, scaled


def encode_rows(
    symbols: pd.Series,
    timestamps: pd.Series,
    numerics: list[np.ndarray],
    *,
    flags: Sequence[np.ndarray] = (),
    json_text: pa.Array | None = None,
) -> tuple[bytes, np.ndarray]:
    """Binary COPY payload (signature to trailer) of the rows it can encode exactly, and the mask of those
    rows.

    Columns: ``symbols`` (text), ``timestamps`` (zone-aware), then ``numerics`` (float64 arrays,
    numeric(20,8), or a numeric of a smaller scale, which the server rounds as it rounds the text), then
    ``flags`` (boolean arrays), then ``json_text`` (a pyarrow string array, a jsonb column), in that order, as
    in the COPY's column list. A row is left out (mask False) when its symbol or timestamp is missing, any of
    its values is not exact (``scaled_numeric``) or its JSON is null; send those through the text COPY.
    Rows keep their order; the work is per column, then per run of equal symbol length (a handful) and block
    of rows, never per row.
    """
    n = len(symbols)
    codes, uniques = pd.factorize(pd.Series(symbols, copy=False).astype("string"))
    encoded = np.array([s.encode("utf-8") for s in uniques] or [b""], dtype=object)
    lengths = np.array([len(b) for b in encoded], dtype="int64")
    ts = pd.Series(timestamps, copy=False)
    ts_us = ts.dt.tz_convert("UTC").array.as_unit("us").asi8 - PG_EPOCH_US if n else np.zeros(0, "int64")
    ok = (codes >= 0) & ts.notna().to_numpy()
    parts: list[tuple[np.ndarray, ...]] = [scaled_numeric(v) for v in numerics]
    for _, _, _, exact in parts:
        ok &= exact
    flags = [np.asarray(f, dtype=bool) for f in flags]
    if json_text is not None:
        ok &= json_text.is_valid().to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(ok)
    if len(rows) == 0:
        return SIGNATURE + TRAILER, ok
    if len(rows) < n:
        codes, ts_us = codes[rows], ts_us[rows]
        parts = [tuple(a[rows] for a in part) for part in parts]
        flags = [f[rows] for f in flags]
        json_text = json_text.take(pa.array(rows)) if json_text is not None else None
    numeric_words = [_numeric_words(*part[:3]) for part in parts]
    symbol_bytes = encoded.astype(f"S{max(int(lengths.max()), 1)}")[codes]
    row_len = lengths[codes]
    starts = np.flatnonzero(np.diff(row_len, prepend=-1) != 0)
    ends = np.append(starts[1:], len(rows))
    fixed = [
        ("fields", ">i2"),
        ("symbol_len", ">i4"),
        ("symbol", "S0"),
        ("ts_len", ">i4"),
        ("ts", ">i8"),
        *_numeric_fields(len(parts)),
    ]
    for i in range(len(flags)):
        fixed += [(f"flag_len_{i}", ">i4"), (f"flag_{i}", "u1")]
    if json_text is not None:
        # jsonb's binary form: a version byte (1) and the JSON text, which the server parses as jsonb_in does
        json_len = pc.binary_length(json_text).to_numpy(zero_copy_only=False) + 1
        fixed += [("json_len", ">i4"), ("json_version", "u1")]
    row_types = [
        np.dtype(
            [
                (name, f"S{int(row_len[a])}", *shape) if name == "symbol" else (name, kind, *shape)
                for name, kind, *shape in fixed
            ]
        )
        for a in starts
    ]
    # without JSON every row of a run has one width, and the rows are written in place into one buffer that
    # holds the whole payload: one copy into bytes at the end, where each run's tobytes() and a join made two
    sizes = [(b - a) * row_type.itemsize for a, b, row_type in zip(starts, ends, row_types, strict=True)]
    payload = np.empty(
        len(SIGNATURE) + (sum(sizes) if json_text is None else 0) + len(TRAILER), dtype=np.uint8
    )
    payload[: len(SIGNATURE)] = np.frombuffer(SIGNATURE, dtype=np.uint8)
    payload[len(payload) - len(TRAILER) :] = np.frombuffer(TRAILER, dtype=np.uint8)
    at, with_json = len(SIGNATURE), []
    for a, b, row_type, size in zip(starts, ends, row_types, sizes, strict=True):
        out = (
            np.ndarray(b - a, dtype=row_type, buffer=payload, offset=at)
            if json_text is None
            else np.empty(b - a, dtype=row_type)
        )
        for c in range(a, b, _ROWS_PER_BLOCK):
            d = min(c + _ROWS_PER_BLOCK, b)
            block = out[c - a : d - a]
            block["fields"] = 2 + len(numerics) + len(flags) + (json_text is not None)
            block["symbol_len"], block["symbol"] = int(row_len[a]), symbol_bytes[c:d]
            block["ts_len"], block["ts"] = 8, ts_us[c:d]
            for i, words in enumerate(numeric_words):
                _fill_numeric(block, i, [w[c:d] for w in words])
            for i, flag in enumerate(flags):
                block[f"flag_len_{i}"], block[f"flag_{i}"] = 1, flag[c:d]
        if json_text is None:
            at += size
            continue
        # each row's fixed part, then its JSON text: joined row by row in pyarrow, whose data buffer is the
        # rows
        out["json_len"], out["json_version"] = json_len[a:b], 1
        heads = pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(row_type.itemsize), len(out), [None, pa.py_buffer(out.tobytes())]
        )
        joined = pc.binary_join_element_wise(
            heads.cast(pa.binary()), json_text.slice(a, b - a).cast(pa.binary()), b""
        )
        offsets = np.frombuffer(
            joined.buffers()[1], dtype=np.int32, count=len(joined) + 1, offset=joined.offset * 4
        )
        with_json.append(joined.buffers()[2][int(offsets[0]) : int(offsets[-1])])
    if json_text is None:
        return payload.tobytes(), ok
    return b"".join([SIGNATURE, *with_json, TRAILER]), ok
