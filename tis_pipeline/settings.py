"""Non-secret configuration read from the environment, in one place.

Secrets (the database URL) are read by the resources through ``dg.EnvVar``; this module only holds knobs
whose defaults are part of the project's contract, so that the README's table of variables has one source.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def tis_home() -> Path:
    """Where the embedded database, Dagster's home and the archives live (git-ignored)."""
    return Path(_env("TIS_HOME", str(PROJECT_ROOT / ".tis"))).resolve()


@dataclass(frozen=True)
class Settings:
    partition_start: str = field(default_factory=lambda: _env("TIS_PARTITION_START", "2015-01-01"))
    market_data_dir: str | None = field(default_factory=lambda: os.environ.get("TIS_MARKET_DATA_DIR") or None)
    market_tz: str = field(default_factory=lambda: _env("TIS_MARKET_TZ", "UTC"))
    bar_label: str = field(default_factory=lambda: _env("TIS_MARKET_BAR_LABEL", "open"))
    symbols: tuple[str, ...] = field(
        default_factory=lambda: tuple(
            s.strip().upper()
            for s in _env("TIS_SYMBOLS", "BTCUSD,ETHUSD,SPY,EURUSD,AAPL").split(",")
            if s.strip()
        )
    )
    synthetic_seed: int = field(default_factory=lambda: int(_env("TIS_SYNTHETIC_SEED", "42")))
    max_quarantine_share: float = field(
        default_factory=lambda: float(_env("TIS_MAX_QUARANTINE_SHARE", "0.05"))
    )
    backfill_chunk_days: int = field(default_factory=lambda: int(_env("TIS_BACKFILL_CHUNK_DAYS", "31")))
    # What one bar file may cost the reader (readers/limits.py): a file over a limit is left out of the run
    # and named in the market_data_1m_source_files_readable check.
    max_file_bytes: int = field(default_factory=lambda: int(_env("TIS_MAX_FILE_BYTES", str(1 << 30))))
    max_compression_ratio: float = field(
        default_factory=lambda: float(_env("TIS_MAX_COMPRESSION_RATIO", "200"))
    )
    max_line_bytes: int = field(default_factory=lambda: int(_env("TIS_MAX_LINE_BYTES", str(64 << 10))))
    max_fields: int = field(default_factory=lambda: int(_env("TIS_MAX_FIELDS", "256")))
    # The synthetic source makes a day in pieces of whole symbols of about this many bars, each validated and
    # streamed into its day's build on its own, so that the ingest's memory follows a piece (~0.7 GiB at the
    # default, whatever the symbols), not the day; the rows do not depend on it.
    ingest_piece_bars: int = field(default_factory=lambda: int(_env("TIS_INGEST_PIECE_BARS", "500000")))
    # The DSI asset reads, scores and writes a day in pieces of whole symbols of about this many bars (a day
    # of 24 h has ~1,440 bars a symbol: ~35 symbols a piece), so its memory follows the piece (~2.6 kB a bar
    # of it), not the day, the symbols or the range; the values do not depend on it.
    dsi_chunk_bars: int = field(default_factory=lambda: int(_env("TIS_DSI_CHUNK_BARS", "50000")))
    # The Great Expectations step judges a run's 1-minute rows in pieces of whole symbols (over the whole
    # range, so every series is seen whole) of about this many rows, one GX result and page each, merged into
    # one verdict per rule: its memory (~0.6 kB a row of the piece) follows the piece, not the range.
    check_piece_rows: int = field(default_factory=lambda: int(_env("TIS_CHECK_PIECE_ROWS", "500000")))
    # Symbol shards of DSI (dsi/shards.py): 1 is the one-step ``dsi`` asset; above 1, ``dsi`` is a graph of a
    # plan step, that many shard steps (Celery tasks or processes) and a finish step, with the same tables.
    # Read when the definitions load, so the code location and every worker must agree on it.
    symbol_shards: int = field(default_factory=lambda: int(_env("TIS_SYMBOL_SHARDS", "1").strip() or "1"))

    @property
    def market_source(self) -> str:
        explicit = os.environ.get("TIS_MARKET_SOURCE")
        if explicit:
            return explicit.lower()
        return "csv" if self.market_data_dir else "synthetic"


def settings() -> Settings:
    return Settings()
