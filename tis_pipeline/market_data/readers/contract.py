"""What the readers give back: the bar frame's columns (``FRAME_COLUMNS``), ``ReadResult``, ``BarFileError``
and the time units the parsing steps share.

The readers read 1-minute OHLCV bar files of many shapes with pure pandas/pyarrow (no Dagster, no database).
Everything is detected from the file itself, never from a list of known file names: the container
(``containers``), the delimited text (``delimited``) or JSON/table shape (``records``), the column roles
(``columns``), the timestamps (``timestamps``), the Lean layout (``paths``) and the symbol (``symbols``); the
bar frame is built in ``bar_frame``, one file is read by ``files.read_file``, a directory by ``catalog``.

``source_line`` is the 1-based physical line in the file (or in the zip/gz member) for delimited text and
JSON-lines, and the record index + 1 for JSON arrays, Parquet and Feather. ``source_file`` is the file's path;
for a zip with several data members it is ``<zip path>!<member name>``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

FRAME_COLUMNS = [
    "symbol",
    "timestamp",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "volume_missing",
    "source_file",
    "source_line",
    "raw",
]
ONE_MINUTE = 60
NAT = np.iinfo(np.int64).min
NS = 1_000_000_000


class BarFileError(Exception):
    """A bar file that cannot be read at all. The message names the file, the reason and the line if known."""

    def __init__(self, path: str | os.PathLike[str], reason: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        self.reason = reason
        where = self.path if line is None else f"{self.path}, line {line}"
        super().__init__(f"{where}: {reason}")

    def __reduce__(self) -> tuple:  # keep it picklable (Dagster/multiprocessing)
        return (BarFileError, (self.path, self.reason, self.line))


@dataclass
class ReadResult:
    frame: pd.DataFrame
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (file, why): left out, days unknown
    outside_rows: int = 0  # rows of this window's files stamped in no partition (future, before the start)
    applied: list[dict] = field(default_factory=list)  # per file read: profile, symbol, tz, bar_label


def interval_label(seconds: int | None) -> str:
    """60 -> '1m', 300 -> '5m', 3600 -> '1h', 86400 -> '1d', 90 -> '90s'."""
    if seconds is None:
        return "unknown"
    for unit, n in (("w", 604_800), ("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= n and seconds % n == 0:
            return f"{seconds // n}{unit}"
    return f"{seconds}s"


def empty_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "symbol": pd.Series([], dtype="str"),
            "timestamp": pd.Series([], dtype="datetime64[ns, UTC]"),
            "open": pd.Series([], dtype="float64"),
            "high": pd.Series([], dtype="float64"),
            "low": pd.Series([], dtype="float64"),
            "close": pd.Series([], dtype="float64"),
            "volume": pd.Series([], dtype="float64"),
            "volume_missing": pd.Series([], dtype="bool"),
            "source_file": pd.Series([], dtype="str"),
            "source_line": pd.Series([], dtype="int64"),
            "raw": pd.Series([], dtype="object"),
        }
    )
