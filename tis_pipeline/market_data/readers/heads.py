"""The first and last lines of a bar file without parsing it: what source profiles look at, and what
``tis files`` reads instead of the whole file.

Plain text is read from both ends only (``HEAD_BYTES`` each); a gz/bz2/xz file or a zip member is inflated
in 1 MiB steps keeping only the head and the last ``HEAD_BYTES`` (the lines are counted on the way, which
costs the inflation but not the parsing); Parquet, Feather and JSON have no lines.
"""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tis_pipeline.market_data.readers.containers import detect_kind
from tis_pipeline.market_data.readers.limits import decompressor
from tis_pipeline.market_data.readers.paths import DATA_SUFFIXES

HEAD_BYTES = 16 << 10
HEAD_LINES = 24
_CHUNK = 1 << 20


@dataclass
class Ends:
    """What the two ends of a file hold: the data member's name, its first and last bytes (cut at whole
    lines), its size (uncompressed when known) and its line count when it was counted."""

    member: str
    kind: str  # the inner kind: csv, json, parquet, feather
    head: bytes
    tail: bytes
    size: int
    lines: int | None = None

    def head_lines(self, n: int = HEAD_LINES) -> tuple[str, ...]:
        return text_lines(self.head, n)


def text_lines(data: bytes, n: int = HEAD_LINES) -> tuple[str, ...]:
    """The first ``n`` non-empty lines of ``data`` (BOM stripped, a partial last line dropped)."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    text = data.decode("utf-8", errors="replace")
    lines = text.splitlines()
    if len(data) >= HEAD_BYTES and lines and not text.endswith(("\n", "\r")):
        lines = lines[:-1]
    return tuple(x for x in lines if x.strip())[:n]


def pick_member(names: list[str], pattern: str | None = None) -> str | None:
    """The zip member a profile looks at: the first data member (a .csv before a .txt, which in vendor
    archives is often a status report), skipping folders and macOS metadata."""
    import re

    usable = [
        n
        for n in names
        if not n.endswith("/") and not n.startswith("__MACOSX/") and not Path(n).name.startswith(".")
    ]
    if pattern is not None:
        chosen = [n for n in usable if re.search(pattern, n)]
        usable = chosen or usable
    data = [n for n in usable if os.path.splitext(n)[1].lower() in DATA_SUFFIXES - {".zip"}]
    csv = [n for n in data if n.lower().endswith(".csv")]
    for group in (csv, data, usable):
        if group:
            return group[0]
    return None


def head_of_bytes(name: str, data: bytes) -> tuple[str, tuple[str, ...]]:
    """(member name, first lines) of a whole file already in memory: ``load_file``'s view for profiles."""
    kind = detect_kind(name, data[:16])
    try:
        if kind == "zip":
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                member = pick_member(zf.namelist())
                if member is None:
                    return name, ()
                with zf.open(member) as fh:
                    chunk = fh.read(HEAD_BYTES)
                return Path(member).name, _lines_if_text(Path(member).name, chunk)
        if kind in ("gz", "bz2", "xz"):
            inner = strip_one_suffix(name, kind)
            with decompressor(kind, data) as fh:
                chunk = fh.read(HEAD_BYTES)
            return inner, _lines_if_text(inner, chunk)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError):
        return name, ()  # the reader says what is wrong with it
    return name, _lines_if_text(name, data[:HEAD_BYTES])


def strip_one_suffix(name: str, kind: str) -> str:
    base, ext = os.path.splitext(name)
    return base if ext.lower() == "." + kind else base or name


def _lines_if_text(name: str, chunk: bytes) -> tuple[str, ...]:
    if detect_kind(name, chunk[:16]) in ("parquet", "feather") or b"\x00" in chunk[:4096]:
        return ()
    return text_lines(chunk)


def _tail_keep(tail: bytes, chunk: bytes) -> bytes:
    joined = tail + chunk
    return joined[-HEAD_BYTES:] if len(joined) > HEAD_BYTES else joined


def _stream(fh: io.BufferedIOBase | IO[bytes], member: str, kind: str) -> Ends:
    head = fh.read(HEAD_BYTES)
    size, lines, tail = len(head), head.count(b"\n"), head
    while chunk := fh.read(_CHUNK):
        size += len(chunk)
        lines += chunk.count(b"\n")
        tail = _tail_keep(tail, chunk)
    if size and not (tail.endswith(b"\n")):
        lines += 1
    return Ends(member, kind, head, _whole_lines_tail(tail, size), size, lines)


def _whole_lines_tail(tail: bytes, size: int) -> bytes:
    if size <= HEAD_BYTES:
        return tail
    cut = tail.find(b"\n")
    return tail[cut + 1 :] if cut >= 0 else b""


def ends(path: str | os.PathLike[str]) -> Ends:
    """The two ends of a file on disk (see the module docstring). Raises OSError, zipfile.BadZipFile,
    EOFError or ValueError for what cannot be opened."""
    p = Path(path)
    with open(p, "rb") as fh:
        magic = fh.read(16)
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        kind = detect_kind(p.name, magic)
        if kind in ("parquet", "feather", "json"):
            return Ends(p.name, kind, b"", b"", size)
        if kind == "csv":
            fh.seek(0)
            head = fh.read(HEAD_BYTES)
            if size <= 2 * HEAD_BYTES:
                fh.seek(0)
                whole = fh.read()
                return Ends(
                    p.name, kind, head, whole, size, whole.count(b"\n") + (0 if whole.endswith(b"\n") else 1)
                )
            fh.seek(size - HEAD_BYTES)
            return Ends(p.name, kind, head, _whole_lines_tail(fh.read(), size), size)
    if kind == "zip":
        with zipfile.ZipFile(p) as zf:
            member = pick_member(zf.namelist())
            if member is None:
                return Ends(p.name, "csv", b"", b"", 0, 0)
            inner = Path(member).name
            inner_kind = detect_kind(inner, b"")
            with zf.open(member) as fh2:
                return _stream(fh2, inner, inner_kind)
    inner = strip_one_suffix(p.name, kind)
    with decompressor(kind, p.read_bytes()) as fh3:
        return _stream(fh3, inner, detect_kind(inner, b""))
