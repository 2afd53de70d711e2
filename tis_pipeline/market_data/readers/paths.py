"""What a file's path says: which suffixes are data, the date in a file name, the QuantConnect Lean layout.

* **Lean layout**: a path ``.../<security type>/<market>/<resolution>/<symbol>/...`` (e.g.
  ``equity/usa/minute/ibm/20131004_trade.zip``). ``equity/usa`` times are New York local time; ``crypto``
  times are UTC; other Lean security types use ``tz``. Equity and option prices that are all whole numbers
  are deci-cents (USD x 10,000) and are divided by 10,000. Lean ``_quote`` and ``_openinterest`` files are
  reported in ``skipped`` (they are not trade bars).
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass
from pathlib import Path

TEXT_SUFFIXES = {".csv", ".txt", ".tsv", ".psv", ".dat", ".prn"}
JSON_SUFFIXES = {".json", ".jsonl", ".ndjson"}
PARQUET_SUFFIXES = {".parquet", ".pq", ".parq"}
FEATHER_SUFFIXES = {".feather", ".ftr", ".arrow", ".ipc"}
_COMPRESSED_SUFFIXES = {".zip", ".gz", ".bz2", ".xz"}
DATA_SUFFIXES = TEXT_SUFFIXES | JSON_SUFFIXES | PARQUET_SUFFIXES | FEATHER_SUFFIXES | _COMPRESSED_SUFFIXES
# Documentation files that may sit in a data directory; everything else with a data suffix must be bars.
NOT_DATA_STEMS = ("readme", "license", "licence", "notice", "changelog", "copying", "sources")


def strip_suffixes(name: str) -> str:
    """``x.csv.gz`` -> ``x``; only known data suffixes are removed (``BRK.B.csv`` -> ``BRK.B``)."""
    while True:
        base, ext = os.path.splitext(name)
        if ext.lower() in DATA_SUFFIXES and base:
            name = base
        else:
            return name


DATE8 = re.compile(r"(?<!\d)((?:19|20|21)\d{2})(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])(?!\d)")
DATE_ISO = re.compile(r"(?<!\d)((?:19|20|21)\d{2})-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])(?!\d)")


def date_in_name(name: str) -> dt.date | None:
    for rx in (DATE8, DATE_ISO):
        m = rx.search(name)
        if m:
            try:
                return dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
            except ValueError:
                continue
    return None


_LEAN_TYPES = {
    "equity", "crypto", "forex", "cfd", "future", "futures", "option", "index", "indexoption",
    "futureoption", "cryptofuture",
}  # fmt: skip
_LEAN_RESOLUTIONS = {"tick", "second", "minute", "hour", "daily"}


@dataclass(frozen=True)
class LeanLayout:
    security_type: str
    market: str
    resolution: str

    @property
    def zone(self) -> str | None:
        if self.security_type == "equity" and self.market == "usa":
            return "America/New_York"
        if self.security_type in ("crypto", "cryptofuture"):
            return "UTC"
        return None

    @property
    def scaled(self) -> bool:
        return self.security_type in ("equity", "option")


def lean_layout(path: Path) -> LeanLayout | None:
    parts = [x.lower() for x in path.parts]
    for i in range(len(parts) - 3):
        if parts[i] in _LEAN_TYPES and parts[i + 2] in _LEAN_RESOLUTIONS:
            return LeanLayout(parts[i], parts[i + 1], parts[i + 2])
    return None


def path_skip_reason(p: Path) -> str | None:
    """Files that the path alone says are not trade bars (Lean quote / open-interest files)."""
    if lean_layout(p.resolve()) is None:
        return None
    stem = strip_suffixes(p.name).lower()
    if stem.endswith("_quote"):
        return "Lean quote file, not trade bars: skipped"
    if stem.endswith("_openinterest"):
        return "Lean open-interest file, not trade bars: skipped"
    return None
