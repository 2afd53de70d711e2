"""Tables and JSON to positional columns: Parquet/Feather tables, JSON lines, and JSON documents of arrays,
of records or of columns (pandas' ``orient`` shapes), found up to three levels down.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from tis_pipeline.market_data.readers.columns import KNOWN_NAMES, normalise_name
from tis_pipeline.market_data.readers.context import RawTable, ReadContext


def raw_from_table(table: pa.Table, fmt: str, line_start: int = 1) -> RawTable:
    columns = []
    for col in table.columns:
        arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        if pa.types.is_dictionary(arr.type):
            arr = arr.dictionary_decode()
        columns.append(arr)
    n = table.num_rows

    def raw_text(idx: np.ndarray) -> list[str]:
        rows = table.take(pa.array(idx, type=pa.int64())).to_pylist()
        return [json.dumps(r, default=str) for r in rows]

    return RawTable(
        columns,
        [str(c) for c in table.column_names],
        np.arange(line_start, line_start + n, dtype=np.int64),
        np.zeros(n, bool),
        raw_text,
        fmt,
    )


def _arrow_from_series(s: pd.Series) -> pa.Array:
    try:
        return pa.array(s, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
        isna = pd.isna(s).to_numpy()
        out = np.where(isna, None, s.astype(str).to_numpy(dtype=object))
        return pa.array(out, type=pa.large_string())


def raw_from_json(text: str, ctx: ReadContext, fmt: str) -> RawTable:
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        ctx.note("empty file: no rows")
        return RawTable.empty(fmt)
    lines_mode = ctx.inner_name.lower().endswith((".jsonl", ".ndjson"))
    obj = None
    if not lines_mode:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            if exc.msg.startswith("Extra data") and exc.lineno > 1:
                lines_mode = True
            else:
                raise ctx.error(f"invalid JSON: {exc.msg} (column {exc.colno})", line=exc.lineno) from exc
    if lines_mode:
        import pyarrow.json as pajson

        try:
            table = pajson.read_json(io.BytesIO(text.encode("utf-8")))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise ctx.error(f"invalid JSON lines: {exc}") from exc
        return raw_from_table(table, "ndjson")
    return _raw_from_json_obj(obj, ctx, fmt)


def _find_bar_list(obj: Any, depth: int = 0) -> Any:
    if isinstance(obj, list):
        if depth == 0 or (obj and isinstance(obj[0], list | dict)):
            return obj
        return None
    if not isinstance(obj, dict) or depth > 3:
        return None
    if "columns" in obj and "data" in obj and isinstance(obj["data"], list):
        return obj
    keys = list(obj)
    if (
        keys
        and any(normalise_name(k) in KNOWN_NAMES for k in keys)
        and all(isinstance(v, list | dict) for v in obj.values())
    ):
        return obj  # columnar: {"timestamp": [...], "open": [...]} or pandas' orient="columns"
    if keys and all(isinstance(v, dict) for v in obj.values()):
        inner = next(iter(obj.values()))
        if any(normalise_name(k) in KNOWN_NAMES for k in inner):
            return ("index", obj)  # pandas' orient="index"
    for v in obj.values():
        if isinstance(v, list) and v and isinstance(v[0], list | dict):
            return v
    for v in obj.values():
        found = _find_bar_list(v, depth + 1)
        if found is not None:
            return found
    return None


def _raw_from_json_obj(obj: Any, ctx: ReadContext, fmt: str) -> RawTable:
    found = _find_bar_list(obj)
    if found is None:
        raise ctx.error("JSON holds no list of bars (expected an array of arrays, of records, or columns)")
    if isinstance(found, tuple):
        df = pd.DataFrame.from_dict(found[1], orient="index")
        records = None
    elif isinstance(found, dict) and "columns" in found and "data" in found:
        df = pd.DataFrame(found["data"], columns=found["columns"])
        records = found["data"]
    elif isinstance(found, dict):
        try:
            df = pd.DataFrame(found)
        except ValueError as exc:
            raise ctx.error(f"JSON columns of different lengths: {exc}") from exc
        records = None
    else:
        records = found
        if not records:
            ctx.note("empty JSON array: no rows")
            return RawTable.empty(fmt)
        df = None
    pre_bad = None
    names: list[str] | None
    if df is None:
        assert records is not None  # only the array of bars leaves no frame, and it is the records
        first = next((r for r in records if r is not None), None)
        if isinstance(first, dict):
            try:
                df = pd.DataFrame.from_records(records)
                pre_bad = np.zeros(len(records), bool)
            except (TypeError, ValueError, AttributeError):
                ok = [isinstance(r, dict) for r in records]  # only on malformed input
                df = pd.DataFrame.from_records([r if isinstance(r, dict) else {} for r in records])
                pre_bad = ~np.array(ok, dtype=bool)
            names = [str(c) for c in df.columns]
        else:
            try:
                lens = np.fromiter(map(len, records), dtype=np.int64, count=len(records))
                n = int(np.bincount(lens).argmax())
                df = pd.DataFrame(records)
            except (TypeError, ValueError):
                fixed = [r if isinstance(r, list | tuple) else [] for r in records]  # only on malformed input
                lens = np.array([len(r) for r in fixed], dtype=np.int64)
                n = int(np.bincount(lens).argmax())
                df = pd.DataFrame(fixed)
            pre_bad = lens != n
            df = df.iloc[:, :n]
            names = None
    else:
        names = [str(c) for c in df.columns]
    if pre_bad is None:
        pre_bad = np.zeros(len(df), bool)
    columns = [_arrow_from_series(df.iloc[:, j]) for j in range(df.shape[1])]
    if names is not None:
        names = [str(c) for c in df.columns]

    def raw_text(idx: np.ndarray) -> list[str]:
        if records is not None:
            return [json.dumps(records[int(i)], default=str) for i in idx]
        return [json.dumps(df.iloc[int(i)].to_dict(), default=str) for i in idx]

    return RawTable(columns, names, np.arange(1, len(df) + 1, dtype=np.int64), pre_bad, raw_text, fmt)
