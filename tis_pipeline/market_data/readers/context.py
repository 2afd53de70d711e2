"""What the parsing steps hand each other: the file being read (``ReadContext``: where, which zone, its
notes), its rows as positional columns (``RawTable``) and the roles found for those columns
(``ColumnRoles``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from tis_pipeline.market_data.readers.contract import BarFileError
from tis_pipeline.market_data.readers.limits import ReadLimits
from tis_pipeline.market_data.readers.paths import LeanLayout, date_in_name
from tis_pipeline.market_data.readers.profiles import Applied


@dataclass
class ReadContext:
    path: Path  # the file on disk
    display: str  # source_file value
    inner_name: str  # member name (zip/gz) or file name
    tz: str
    bar_label: str
    lean: LeanLayout | None
    notes: list[str]
    symbol_path: Path | None = None  # what the symbol is taken from when there is no symbol column
    limits: ReadLimits = field(default_factory=ReadLimits.from_settings)
    applied: Applied | None = None  # the source profile / override conventions (profiles.resolve)

    @property
    def file_date(self) -> dt.date | None:
        return date_in_name(self.inner_name) or date_in_name(self.path.name)

    def note(self, text: str) -> None:
        self.notes.append(f"{self.display}: {text}")

    def error(self, reason: str, line: int | None = None) -> BarFileError:
        return BarFileError(self.display, reason, line)


@dataclass
class RawTable:
    """Every format is turned into positional columns (pyarrow arrays) + bookkeeping per row."""

    columns: list[pa.Array]
    names: list[str] | None
    line: np.ndarray  # int64, source_line per row
    pre_bad: np.ndarray  # bool, rows already known to be malformed (wrong field count)
    raw_text: Callable[[np.ndarray], list[str]]
    fmt: str
    delimiter: str | None = None
    header_mismatch: str | None = None
    decimal_comma: bool = False  # ';'/tab files whose numbers use ',' as the decimal mark ('.' = thousands)

    @property
    def nrows(self) -> int:
        return len(self.line)

    @staticmethod
    def empty(fmt: str) -> RawTable:
        return RawTable([], None, np.zeros(0, np.int64), np.zeros(0, bool), lambda idx: [], fmt)


@dataclass
class ColumnRoles:
    ts: int | None = None
    date: int | None = None
    time: int | None = None
    open: int | None = None
    high: int | None = None
    low: int | None = None
    close: int | None = None
    volume: int | None = None
    symbol: int | None = None
    content: bool = False

    def used(self) -> set[int]:
        return {
            i
            for i in (
                self.ts,
                self.date,
                self.time,
                self.open,
                self.high,
                self.low,
                self.close,
                self.volume,
                self.symbol,
            )
            if i is not None
        }
