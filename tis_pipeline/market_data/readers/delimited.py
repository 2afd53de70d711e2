"""Delimited text to positional columns.

* **Delimited text**: the separator is sniffed on the first lines (tab, ``;``, ``|``, ``,`` and, last,
  runs of whitespace; the first one that gives the same field count, at least 5, on 80% of the lines wins).
  The first non-blank line is a header when none of its fields is a number. When the header has as many
  names as the rows have fields, the names are used; when it has one name fewer and the content shows a date
  column followed by a time column (backtrader's ``Date,Open,...`` over ``date,time,open,...`` rows), a
  ``time`` name is inserted after the date; otherwise the header is ignored and the columns are inferred from
  their content (with a note). Quoted fields (``"1,234.50"``) are split with a vectorised regular
  expression; commas inside numbers are thousands separators (or the decimal mark in ``;``/tab files whose
  numbers have commas and no dots).
"""

from __future__ import annotations

import csv
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tis_pipeline.market_data.readers.columns import classify, is_time_column
from tis_pipeline.market_data.readers.context import RawTable, ReadContext
from tis_pipeline.market_data.readers.sampling import sample_idx

_SNIFF_LINES = 60


_DECIMAL_COMMA = re.compile(r"^[+-]?(?:\d{1,3}(?:\.\d{3})+|\d+),\d+$")
_NUMLIKE = re.compile(r"^[+-]?(?:\d[\d,]*(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")


def _split_one(line: str, delim: str) -> list[str]:
    if delim == " ":
        return line.split()
    if '"' in line:
        try:
            return [f.strip() for f in next(csv.reader([line], delimiter=delim))]
        except (csv.Error, StopIteration):
            pass
    return [f.strip().strip('"') for f in line.split(delim)]


def _mode(values: list[int]) -> tuple[int, float]:
    if not values:
        return 0, 0.0
    counts: dict[int, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    best = max(counts, key=lambda k: (counts[k], k))
    return best, counts[best] / len(values)


def _sniff_delimiter(sample: list[str], ctx: ReadContext) -> str:
    """Tab, ';', '|', ',' (in that preference) when it gives the same field count (>= 5) on most lines; runs
    of whitespace only when none of them does. Bad lines in the sample lower a delimiter's share, not rule it
    out."""
    body = sample[1:] if len(sample) > 1 else sample
    stats = {d: _mode([len(_split_one(s, d)) for s in body]) for d in ("\t", ";", "|", ",", " ")}
    for minimum, share_needed in ((5, 0.8), (5, 0.5), (2, 0.8), (2, 0.5)):
        for d in ("\t", ";", "|", ","):
            n, share = stats[d]
            if n >= minimum and share >= share_needed:
                return d
        n, share = stats[" "]
        if n >= minimum and share >= share_needed:
            return " "
    raise ctx.error(
        "cannot tell the field separator (tried tab, ';', '|', ',' and whitespace on the first lines)", line=1
    )


def _split_lines(text: str) -> pa.Array:
    sep = "\n" if "\n" in text else "\r"
    lines = pc.list_flatten(pc.split_pattern(pa.array([text], type=pa.large_string()), sep))
    if sep == "\n":
        lines = pc.utf8_rtrim(lines, characters="\r")
    return lines


def _check_line_lengths(lines: pa.Array, ctx: ReadContext) -> None:
    limit = ctx.limits.max_line_bytes
    lengths = pc.binary_length(lines).to_numpy(zero_copy_only=False)
    if len(lengths) and (longest := int(lengths.max())) > limit:
        raise ctx.error(
            f"a line of {longest:,} bytes, over the limit of {limit:,} bytes (TIS_MAX_LINE_BYTES)",
            line=int(np.argmax(lengths > limit)) + 1,
        )


def _check_field_counts(lines: pa.Array, delim: str, ctx: ReadContext) -> None:
    limit = ctx.limits.max_fields
    if delim == " ":
        separators = pc.count_substring_regex(pc.ascii_trim_whitespace(lines), r"\s+")
    else:
        separators = pc.count_substring(lines, delim)
    fields = separators.to_numpy(zero_copy_only=False) + 1
    if len(fields) and (most := int(fields.max())) > limit:
        raise ctx.error(
            f"a line of {most:,} fields, over the limit of {limit:,} fields (TIS_MAX_FIELDS)",
            line=int(np.argmax(fields > limit)) + 1,
        )


def _field_regex(n: int, delim: str) -> str:
    d = re.escape(delim)
    fields = [rf'\s*(?:"(?P<q{j}>(?:[^"]|"")*)"|(?P<u{j}>[^"{d}]*?))\s*' for j in range(n)]
    return "^" + d.join(fields) + "$"


def _columns_from_lists(lists: pa.Array, counts: np.ndarray, n: int) -> list[pa.Array]:
    offsets = lists.offsets.to_numpy()[:-1].astype(np.int64)
    values = lists.values  # not trimmed here: numbers are trimmed only if a plain cast fails
    cols = []
    for j in range(n):
        has = counts > j
        idx = pa.array(np.where(has, offsets + j, 0), mask=~has)
        cols.append(values.take(idx))
    return cols


def raw_from_text(text: str, ctx: ReadContext, fmt: str) -> RawTable:
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = _split_lines(text)
    _check_line_lengths(lines, ctx)  # before any line is split into fields
    # blank (or whitespace-only) lines are not rows
    length = pc.utf8_length(pc.ascii_trim_whitespace(lines)).to_numpy(zero_copy_only=False)
    nonblank = np.flatnonzero(length > 0)
    if len(nonblank) == 0:
        ctx.note("empty file: no rows")
        return RawTable.empty(fmt)
    sample = lines.take(pa.array(nonblank[:_SNIFF_LINES])).to_pylist()
    delim = _sniff_delimiter(sample, ctx)
    _check_field_counts(lines, delim, ctx)
    first = _split_one(sample[0], delim)
    has_header = not any(_NUMLIKE.match(f) for f in first) and any(re.search(r"[A-Za-z]", f) for f in first)
    data_idx = nonblank[1:] if has_header else nonblank
    if len(data_idx) == 0:
        ctx.note("header only: no rows")
        return RawTable.empty(fmt)
    data_lines = lines.take(pa.array(data_idx))
    quoted = '"' in text and (pc.any(pc.match_substring(data_lines, '"')).as_py() or False)

    if not quoted:
        if delim == " ":
            lists = pc.split_pattern_regex(pc.ascii_trim_whitespace(data_lines), r"\s+")
        else:
            lists = pc.split_pattern(data_lines, delim)
        counts = pc.list_value_length(lists).to_numpy(zero_copy_only=False).astype(np.int64)
        n = int(np.bincount(counts).argmax())
        columns = _columns_from_lists(lists, counts, n)
    else:
        body = sample[1:] if has_header else sample
        n, _ = _mode([len(_split_one(s, delim)) for s in body] or [len(first)])
        # quoted fields: split by a vectorised regex; lines it does not fit go through the csv module below
        struct = pc.extract_regex(data_lines, _field_regex(n, delim))
        matched = ~struct.is_null().to_numpy(zero_copy_only=False)
        columns = []
        for j in range(n):
            q = struct.field(f"q{j}")
            u = struct.field(f"u{j}")
            col = pc.binary_join_element_wise(q, u, pa.scalar("", q.type))
            col = pc.replace_substring(col, '""', '"')
            columns.append(col)
        counts = np.full(len(data_idx), n, dtype=np.int64)
        bad_idx = np.flatnonzero(~matched)
        if len(bad_idx):
            # Only the malformed lines go through the csv module (to keep what can be kept, positionally).
            texts = data_lines.take(pa.array(bad_idx)).to_pylist()
            per_col = [np.full(len(data_idx), None, dtype=object) for _ in range(n)]
            for k, t in zip(bad_idx, texts, strict=True):
                fields = _split_one(t, delim)
                counts[k] = len(fields)
                for j in range(min(n, len(fields))):
                    per_col[j][k] = fields[j]
            mask = pa.array(matched)
            columns = [
                pc.if_else(mask, col, pa.array(per_col[j], type=pa.large_string()))
                for j, col in enumerate(columns)
            ]
    names: list[str] | None = None
    mismatch = None
    if has_header:
        if len(first) == n:
            names = first
        else:
            mismatch = f"header has {len(first)} names but rows have {n} fields"
            if len(first) == n - 1:
                names = _insert_time_name(first, columns, counts == n)
    pre_bad = counts != n
    line = (data_idx + 1).astype(np.int64)

    def raw_text(idx: np.ndarray) -> list[str]:
        return data_lines.take(pa.array(idx, type=pa.int64())).to_pylist()

    raw = RawTable(columns, names, line, pre_bad, raw_text, fmt, delimiter=delim, header_mismatch=mismatch)
    if delim != ",":
        body = sample[1:] if has_header else sample
        raw.decimal_comma = any(
            _DECIMAL_COMMA.match(f) for line_text in body for f in _split_one(line_text, delim)
        )
        if raw.decimal_comma:
            ctx.note("numbers use ',' as the decimal mark ('.' as thousands separator)")
    if mismatch:
        if names is not None:
            ctx.note(f"{mismatch}; a separate time column follows the date column, so 'time' was inserted")
        else:
            ctx.note(f"{mismatch}; the header was ignored and the columns were inferred from their content")
    return raw


def _insert_time_name(header: list[str], columns: list[pa.Array], good: np.ndarray) -> list[str] | None:
    """backtrader: a header with one name fewer than fields, because date and time are two fields."""
    idx = sample_idx(good)
    for k in range(len(header)):
        if k + 1 >= len(columns):
            break
        if classify(columns[k], idx) == "date" and is_time_column(columns[k + 1], idx):
            return [*header[: k + 1], "time", *header[k + 1 :]]
    return None
