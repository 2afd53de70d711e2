"""Where bars come from: files under a directory, or the deterministic synthetic source."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pandas as pd
from pydantic import Field

from tis_pipeline.market_data.bars import symbol_groups
from tis_pipeline.settings import settings, tis_home


@dataclass
class SourceRead:
    frame: pd.DataFrame
    symbols: list[str]  # every symbol the source has (the rows replaced per window)
    notes: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (file, why): left out of the run
    outside_rows: int = 0  # rows in no partition (before TIS_PARTITION_START, or later than now)
    applied: list[dict] = field(default_factory=list)  # per file read: source profile, symbol, tz, bar label
    # no later piece has rows of this piece's days: the rows of its days (this piece and those since the last
    # piece that ended its days) are complete, so their share of bad rows can be judged and their builds end
    ends_days: bool = True


class BarSource(dg.ConfigurableResource):
    """1-minute bars from ``TIS_MARKET_SOURCE`` (``csv`` over ``TIS_MARKET_DATA_DIR``, or ``synthetic``)."""

    source: str = Field(default_factory=lambda: settings().market_source)
    data_dir: str | None = Field(default_factory=lambda: settings().market_data_dir)
    tz: str = Field(default_factory=lambda: settings().market_tz)
    bar_label: str = Field(default_factory=lambda: settings().bar_label)
    symbols: list[str] = Field(default_factory=lambda: list(settings().symbols))
    seed: int = Field(default_factory=lambda: settings().synthetic_seed)
    manifest_path: str | None = None
    partition_start: str = Field(default_factory=lambda: settings().partition_start)
    # the synthetic source makes a day in pieces of whole symbols of about this many bars, so that the
    # ingest's memory follows a piece, not the day's symbols; the rows do not depend on it
    piece_bars: int = Field(default_factory=lambda: settings().ingest_piece_bars)

    def describe(self) -> dict:
        if self.source == "synthetic":
            return {"source": "synthetic", "seed": self.seed, "symbols": ", ".join(self.symbols)}
        return {
            "source": self.source,
            "data_dir": str(self.data_dir),
            "timezone_for_naive": self.tz,
            "bar_label": self.bar_label,
        }

    def scan(self) -> list:
        """``catalog.FileInfo`` of every file under ``data_dir`` through the manifest the ingest uses."""
        from tis_pipeline.market_data.readers import catalog

        if not self.data_dir or not Path(self.data_dir).is_dir():
            raise dg.Failure(f"TIS_MARKET_DATA_DIR={self.data_dir!r} is not a directory")
        manifest = self.manifest_path or str(_default_manifest(Path(self.data_dir)))
        return catalog.scan(self.data_dir, manifest_path=manifest, tz=self.tz, bar_label=self.bar_label)

    def read_pieces(self, start: pd.Timestamp, end: pd.Timestamp) -> Iterator[SourceRead]:
        """The window's bars in pieces, in day order, each day's rows in consecutive pieces (``ends_days`` on
        its last). From the synthetic source, pieces of whole symbols of one UTC day of about ``piece_bars``
        bars (it makes each symbol's day on its own, so the ingest can build day d while it makes the rest);
        from files, one piece of every day (a file holds many days and is read once)."""
        if self.source == "synthetic":
            from tis_pipeline.market_data import synthetic

            days = pd.date_range(start, end, freq="D", inclusive="left")
            if len(days) == 0:
                yield self.read(start, end)
            pieces = synthetic_pieces(self.symbols, self.piece_bars)
            for day in days:
                for i, symbols in enumerate(pieces):
                    yield SourceRead(
                        frame=synthetic.bars(day, min(end, day + pd.Timedelta(days=1)), symbols, self.seed),
                        symbols=list(self.symbols),
                        ends_days=i == len(pieces) - 1,
                    )
            return
        yield self.read(start, end)

    def read(self, start: pd.Timestamp, end: pd.Timestamp) -> SourceRead:
        if self.source == "synthetic":
            from tis_pipeline.market_data import synthetic

            return SourceRead(
                frame=synthetic.bars(start, end, self.symbols, self.seed), symbols=list(self.symbols)
            )
        if self.source != "csv":
            raise dg.Failure(f"TIS_MARKET_SOURCE={self.source!r} is not a source: use 'csv' or 'synthetic'")
        if not self.data_dir or not Path(self.data_dir).is_dir():
            raise dg.Failure(f"TIS_MARKET_DATA_DIR={self.data_dir!r} is not a directory")
        from tis_pipeline.market_data.readers import catalog
        from tis_pipeline.market_data.readers.contract import BarFileError
        from tis_pipeline.market_data.readers.overrides import SourceRulesError

        manifest = self.manifest_path or str(_default_manifest(Path(self.data_dir)))
        try:
            infos = catalog.scan(self.data_dir, manifest_path=manifest, tz=self.tz, bar_label=self.bar_label)
            result = catalog.read_bar_files(
                self.data_dir,
                start,
                end,
                manifest_path=manifest,
                tz=self.tz,
                bar_label=self.bar_label,
                earliest=self.partition_start,
            )
        except SourceRulesError as exc:
            raise dg.Failure(description=f"cannot use the override file: {exc}") from exc
        except BarFileError as exc:
            raise dg.Failure(description=f"cannot read bar file: {exc}") from exc
        symbols = sorted(
            {
                s.upper()
                for info in infos
                if info.error is None and info.interval_seconds == 60
                for s in info.symbols
            }
            | set(result.frame["symbol"].astype(str).str.upper())
        )
        return SourceRead(
            frame=result.frame,
            symbols=symbols,
            notes=list(result.notes),
            skipped=list(result.skipped),
            unreadable=list(result.unreadable),
            outside_rows=result.outside_rows,
            applied=list(result.applied),
        )


def synthetic_pieces(symbols: list[str], piece_bars: int) -> list[list[str]]:
    """``symbols`` cut into the synthetic source's pieces of a day: whole symbols as the ingest normalises
    them (``bars.symbol_groups``, in their order: the pieces' normalised rows, one after the other, are those
    of the day read at once), about ``piece_bars`` bars each (a symbol has up to 1,440 a day), in multiples
    of the symbols drawn at once (``synthetic.SYMBOLS_PER_DRAW``) when a piece holds more. At least one
    piece."""
    from tis_pipeline.market_data.synthetic import MINUTES_PER_DAY, SYMBOLS_PER_DRAW

    per_piece = max(1, piece_bars // MINUTES_PER_DAY)
    if per_piece > SYMBOLS_PER_DRAW:
        per_piece -= per_piece % SYMBOLS_PER_DRAW
    pieces: list[list[str]] = [[]]
    for group in symbol_groups(symbols):
        if pieces[-1] and len(pieces[-1]) + len(group) > per_piece:
            pieces.append([])
        pieces[-1].extend(group)
    return pieces


def scan_data_dir() -> list:
    """``catalog.FileInfo`` of every file under ``TIS_MARKET_DATA_DIR``, through the manifest the ingest uses
    (new and changed files are learned, the others come from the manifest)."""
    from tis_pipeline.market_data.readers import catalog

    s = settings()
    if s.market_data_dir is None:
        raise ValueError("TIS_MARKET_DATA_DIR is not set")
    return catalog.scan(
        s.market_data_dir,
        manifest_path=str(_default_manifest(Path(s.market_data_dir))),
        tz=s.market_tz,
        bar_label=s.bar_label,
    )


def _default_manifest(data_dir: Path) -> Path:
    import hashlib

    key = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]
    path = tis_home() / "manifests" / f"{key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
