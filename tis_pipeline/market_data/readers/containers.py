"""Bytes to raw tables: what a file or archive member is, decompression, text decoding and zip members.

* **Container**: by magic bytes first, then by suffix: ``.zip`` (every data member is read), ``.gz``/``.bz2``/
  ``.xz`` (the inner name without the suffix says what is inside), Parquet (``PAR1``), Feather/Arrow IPC
  (``ARROW1``/``FEA1``), JSON (``.json``; ``.jsonl``/``.ndjson`` as one record per line) and delimited text
  (anything else: ``.csv``, ``.txt``, ``.tsv``...). A UTF-8 BOM, UTF-16 with BOM, CRLF and lone-CR line ends
  are handled; text that is not UTF-8 but looks like text is read as Latin-1 (with a note); bytes that do not
  look like text raise :class:`BarFileError`.
"""

from __future__ import annotations

import io
import lzma
import os
import re
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa

from tis_pipeline.market_data.readers.context import RawTable, ReadContext
from tis_pipeline.market_data.readers.delimited import raw_from_text
from tis_pipeline.market_data.readers.limits import decompressor, inflate, too_large
from tis_pipeline.market_data.readers.paths import (
    DATA_SUFFIXES,
    FEATHER_SUFFIXES,
    JSON_SUFFIXES,
    PARQUET_SUFFIXES,
    TEXT_SUFFIXES,
)
from tis_pipeline.market_data.readers.records import raw_from_json, raw_from_table


def detect_kind(name: str, head: bytes) -> str:
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith((b"ARROW1", b"FEA1")):
        return "feather"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "gz"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    ext = os.path.splitext(name)[1].lower()
    if ext == ".bz2" and head.startswith(b"BZh"):
        return "bz2"
    if ext in PARQUET_SUFFIXES:
        return "parquet"
    if ext in FEATHER_SUFFIXES:
        return "feather"
    if ext in (".zip", ".gz", ".bz2", ".xz"):
        return ext[1:]
    if ext in JSON_SUFFIXES:
        return "json"
    return "csv"


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def _decode(data: bytes, ctx: ReadContext) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    elif data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise ctx.error(f"not readable as UTF-16 text: {exc.reason}") from exc
    head = data[:8192]
    if b"\x00" in head:
        raise ctx.error(
            "binary content (NUL bytes), not a text bar file", line=_line_of(head, head.index(b"\x00"))
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        sample = data[:65536]
        arr = np.frombuffer(sample, dtype=np.uint8)
        control = int(((arr < 9) | ((arr > 13) & (arr < 32)) | (arr == 127)).sum())
        if control > max(2, len(sample) // 200):
            raise ctx.error(
                f"binary content, not a text bar file (invalid UTF-8 at byte {exc.start})",
                line=_line_of(data, exc.start),
            ) from exc
        ctx.note(f"not valid UTF-8 (first bad byte on line {_line_of(data, exc.start)}); decoded as Latin-1")
        return data.decode("latin-1")


def read_arrow(kind: str, source: str | pa.BufferReader, ctx: ReadContext) -> pa.Table:
    import pyarrow.parquet as pq
    from pyarrow import feather

    try:
        if kind == "parquet":
            return pq.read_table(source)
        return feather.read_table(source)
    except (pa.ArrowException, OSError, ValueError, IndexError, KeyError) as exc:
        what = "Parquet" if kind == "parquet" else "Feather/Arrow"
        raise ctx.error(f"corrupt or incomplete {what} file: {exc}") from exc


def load_bytes(data: bytes, kind: str, ctx: ReadContext, prefix: str = "") -> tuple[str, RawTable]:
    if kind in ("parquet", "feather"):
        return prefix + kind, raw_from_table(read_arrow(kind, pa.BufferReader(data), ctx), kind)
    if kind == "json":
        return prefix + "json", raw_from_json(_decode(data, ctx), ctx, prefix + "json")
    text = _decode(data, ctx)
    stripped = text.lstrip("\ufeff \t\r\n")
    if stripped[:1] in ("[", "{") and os.path.splitext(ctx.inner_name)[1].lower() not in TEXT_SUFFIXES:
        return prefix + "json", raw_from_json(text, ctx, prefix + "json")
    return prefix + "csv", raw_from_text(text, ctx, prefix + "csv")


def decompress(kind: str, data: bytes, ctx: ReadContext) -> bytes:
    """The payload of a gz/bz2/xz file, inflated in steps and stopped at the ratio and size limits."""
    try:
        with decompressor(kind, data) as fh:
            return inflate(fh, len(data), ctx.display, f"the {kind} archive", ctx.limits)
    except (OSError, EOFError, zlib.error, lzma.LZMAError, ValueError) as exc:
        raise ctx.error(f"corrupt or incomplete {kind} archive: {exc}") from exc


def load_zip(data: bytes, ctx: ReadContext) -> list:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        members = [
            m
            for m in zf.infolist()
            if not m.is_dir()
            and not m.filename.startswith("__MACOSX/")
            and not Path(m.filename).name.startswith(".")
        ]
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ctx.error(f"unreadable zip archive: {exc}") from exc
    if not members:
        ctx.note("zip archive holds no files: no rows")
        return []
    known = [m for m in members if os.path.splitext(m.filename)[1].lower() in DATA_SUFFIXES - {".zip"}]
    members = known or members
    if ctx.applied is not None and ctx.applied.members is not None:
        # a source's archive also holds files that are not bars (HistData's .txt status report)
        pattern = re.compile(ctx.applied.members)
        chosen = [m for m in members if pattern.search(m.filename)]
        if chosen and len(chosen) < len(members):
            left = ", ".join(m.filename for m in members if m not in chosen)
            ctx.note(f"{ctx.applied.profile} archive: not bars, not read: {left}")
        members = chosen or members
    out = []
    for m in members:
        sub = ReadContext(
            ctx.path,
            ctx.display if len(members) == 1 else f"{ctx.display}!{m.filename}",
            Path(m.filename).name,
            ctx.tz,
            ctx.bar_label,
            ctx.lean,
            ctx.notes,
            symbol_path=None if len(members) == 1 else ctx.path / m.filename,
            limits=ctx.limits,
            applied=ctx.applied,
        )
        if m.file_size > ctx.limits.max_file_bytes:  # the declared size; the read below checks the real one
            raise ctx.error(f"member {m.filename!r}: {too_large(m.file_size, ctx.limits)}")
        try:
            with zf.open(m) as fh:
                inner = inflate(fh, m.compress_size, ctx.display, f"member {m.filename!r}", ctx.limits)
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error, ValueError, NotImplementedError) as exc:
            raise ctx.error(f"cannot read {m.filename!r} from the zip archive: {exc}") from exc
        fmt, raw = load_bytes(inner, detect_kind(m.filename, inner[:16]), sub, prefix="zip-")
        out.append((fmt, raw, sub))
    return out
