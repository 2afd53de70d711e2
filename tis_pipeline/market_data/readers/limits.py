"""What one bar file may cost the reader, checked before it costs it.

* **Only regular files** are opened: ``os.stat`` (which follows symlinks, and fails on a symlink loop) says
  what the path is before anything opens it, so a FIFO is never opened (opening one blocks until a writer
  comes) and a device (``/dev/zero``: endless) is never read.
* **Size**: a file (or the text inside a compressed file or zip member) over ``max_file_bytes`` is refused;
  reads are capped at the limit + 1 byte, so a file that grows after the ``stat`` is still stopped.
* **Compression ratio**: gz/bz2/xz and zip members are inflated in 1 MiB steps and stopped as soon as the
  output passes ``max_compression_ratio`` x the compressed size (or ``max_file_bytes``): a gzip bomb costs
  the limit, not its expansion.
* **Lines and fields** (delimited text, ``delimited.py``): a line longer than ``max_line_bytes`` or with
  more than ``max_fields`` fields is refused before the text is split into fields.

Every refusal is a :class:`BarFileError` naming the file, the limit and the setting that raises it. The
defaults come from ``settings`` (``TIS_MAX_FILE_BYTES``, ``TIS_MAX_COMPRESSION_RATIO``,
``TIS_MAX_LINE_BYTES``,
``TIS_MAX_FIELDS``), read when a file is read.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tis_pipeline.market_data.readers.contract import BarFileError

_CHUNK = 1 << 20


@dataclass(frozen=True)
class ReadLimits:
    max_file_bytes: int
    max_compression_ratio: float
    max_line_bytes: int
    max_fields: int

    @staticmethod
    def from_settings() -> ReadLimits:
        from tis_pipeline.settings import settings

        s = settings()
        return ReadLimits(s.max_file_bytes, s.max_compression_ratio, s.max_line_bytes, s.max_fields)


def _kind_of(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def check_regular(path: Path, display: str, limits: ReadLimits) -> os.stat_result:
    """The file's ``stat`` when it is a regular file within ``max_file_bytes``; else BarFileError. Opens
    nothing."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise BarFileError(display, f"cannot stat: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(st.st_mode):
        target = "" if not path.is_symlink() else f" (symlink to {os.readlink(path)})"
        raise BarFileError(display, f"{_kind_of(st.st_mode)}{target}, not a regular file: not read")
    if st.st_size > limits.max_file_bytes:
        raise BarFileError(display, too_large(st.st_size, limits))
    return st


def too_large(size: int, limits: ReadLimits) -> str:
    return f"{size:,} bytes, over the limit of {limits.max_file_bytes:,} bytes (TIS_MAX_FILE_BYTES)"


def read_capped(fh: IO[bytes] | io.BufferedIOBase, cap: int) -> bytes:
    """Up to ``cap + 1`` bytes of ``fh``, read in steps (so the caller can tell "more than cap")."""
    out = bytearray()
    while len(out) <= cap:
        chunk = fh.read(min(_CHUNK, cap + 1 - len(out)))
        if not chunk:
            break
        out += chunk
    return bytes(out)


def inflate_cap(compressed_size: int, limits: ReadLimits) -> int:
    return min(limits.max_file_bytes, int(limits.max_compression_ratio * max(compressed_size, 1)))


def inflate(
    fh: IO[bytes] | io.BufferedIOBase, compressed_size: int, display: str, what: str, limits: ReadLimits
) -> bytes:
    """The decompressed stream ``fh``, stopped once it passes the ratio or size limit."""
    cap = inflate_cap(compressed_size, limits)
    data = read_capped(fh, cap)
    if len(data) > cap:
        if cap == limits.max_file_bytes:
            reason = f"{what} expands to more than {cap:,} bytes (TIS_MAX_FILE_BYTES): stopped there"
        else:
            reason = (
                f"{what} expands to more than {limits.max_compression_ratio:g} x its {compressed_size:,} "
                f"compressed bytes (TIS_MAX_COMPRESSION_RATIO): stopped at {cap:,} bytes, likely a "
                "compression bomb"
            )
        raise BarFileError(display, reason)
    return data


def decompressor(kind: str, data: bytes) -> io.BufferedIOBase:
    """A streaming reader of a gz/bz2/xz payload (multi-member streams included)."""
    raw = io.BytesIO(data)
    if kind == "gz":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if kind == "bz2":
        return bz2.BZ2File(raw, mode="rb")
    return lzma.LZMAFile(raw, mode="rb")
