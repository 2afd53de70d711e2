"""Where bars come from: files under a directory, or the deterministic synthetic source."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pandas as pd
from pydantic import Field

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
        """The window's bars in pieces of whole UTC days, in day order: one piece per day from the synthetic
        source (it makes each day on its own, so the ingest can write day d while it makes day d + 1), one
        piece of every day from files (a file holds many days and is read once)."""
        if self.source == "synthetic":
            from tis_pipeline.market_data import synthetic

            days = pd.date_range(start, end, freq="D", inclusive="left")
            if len(days) == 0:
                yield self.read(start, end)
            for day in days:
                yield SourceRead(
                    frame=synthetic.bars(day, min(end, day + pd.Timedelta(days=1)), self.symbols, self.seed),
                    symbols=list(self.symbols),
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
