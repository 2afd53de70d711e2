"""What a written frame of bars looks like, for run metadata: rows, symbols, first and last bar, gaps, a plot
of prices and volume. No Dagster, no database.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from tis_pipeline.plots import figure_png, pyplot


def missing_minutes(frame: pd.DataFrame, interval: str = "1min") -> pd.DataFrame:
    """Per symbol and UTC day: bars present and intervals missing between the day's first and last bar.

    Output columns: symbol, day, bars, missing. Gaps are counted, never filled.
    """
    if frame.empty:
        return pd.DataFrame(columns=["symbol", "day", "bars", "missing"])
    step = pd.Timedelta(interval)
    grouped = frame.assign(day=frame["timestamp"].dt.tz_convert("UTC").dt.floor("D")).groupby(
        ["symbol", "day"], observed=True
    )["timestamp"]
    stats = grouped.agg(["min", "max", "size"]).reset_index()
    expected = ((stats["max"] - stats["min"]) / step).astype("int64") + 1
    stats["missing"] = (expected - stats["size"]).astype("int64")
    return stats.rename(columns={"size": "bars"})[["symbol", "day", "bars", "missing"]]


def summary(frame: pd.DataFrame, interval: str = "1min") -> dict:
    """Plain-Python facts of a written frame for run metadata (row count, symbols, first/last, gaps):
    ``SummaryParts`` of the frame as one piece."""
    return SummaryParts(interval).add(frame).facts()


_NS_PER = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}


class SummaryParts:
    """``summary`` of a frame given in pieces (``add``: any split of its rows): ``facts()`` equals ``summary``
    of the pieces concatenated, bit for bit, while only a few numbers per (symbol, UTC day) are kept.

    Per (symbol, UTC day), ``missing_minutes``' ``missing = int((last - first) / step) + 1 - bars`` (the
    quotient as float64, truncated), from the pieces' first and last bar (min, max) and bars (sum); per
    symbol, their sum. Times are kept in nanoseconds: the spans of a day are exact there (< 2^53), so the
    quotient is the one of any other unit.
    """

    def __init__(self, interval: str = "1min"):
        self.interval = interval
        self.rows = 0
        self.first: pd.Timestamp | None = None
        self.last: pd.Timestamp | None = None
        self.symbols: set[str] = set()
        self._spans: list[pd.DataFrame] = []  # per piece: symbol, day, first, last (ns), bars

    def add(self, frame: pd.DataFrame) -> SummaryParts:
        if frame.empty:
            return self
        self.rows += len(frame)
        first, last = frame["timestamp"].min(), frame["timestamp"].max()
        if self.first is None or pd.isna(self.first) or (not pd.isna(first) and first < self.first):
            self.first = first
        if self.last is None or pd.isna(self.last) or (not pd.isna(last) and last > self.last):
            self.last = last
        symbols, spans = _day_spans(frame)
        self.symbols.update(symbols)
        self._spans.append(spans)
        return self

    def facts(self) -> dict:
        if not self.rows:
            return {
                "rows": 0,
                "symbols": [],
                "first_timestamp": None,
                "last_timestamp": None,
                "missing_by_symbol": {},
            }
        spans = pd.concat(self._spans, ignore_index=True) if len(self._spans) > 1 else self._spans[0]
        if spans.duplicated(["symbol", "day"]).any():  # a day in two pieces
            spans = (
                spans.groupby(["symbol", "day"], sort=False)
                .agg(first=("first", "min"), last=("last", "max"), bars=("bars", "sum"))
                .reset_index()
            )
        step = pd.Timedelta(self.interval).value  # ns
        expected = ((spans["last"].to_numpy() - spans["first"].to_numpy()) / step).astype("int64") + 1
        missing = pd.Series(expected - spans["bars"].to_numpy(), index=spans["symbol"].to_numpy())
        by_symbol = missing.groupby(level=0, sort=False).sum()
        return {
            "rows": self.rows,
            "symbols": sorted(self.symbols),
            "first_timestamp": self.first.isoformat(),  # type: ignore[union-attr]
            "last_timestamp": self.last.isoformat(),  # type: ignore[union-attr]
            "missing_by_symbol": {name: int(by_symbol[name]) for name in sorted(by_symbol.index)},
        }


def _day_spans(frame: pd.DataFrame) -> tuple[list[str], pd.DataFrame]:
    """The symbols of a non-empty frame (as ``str``) and per (symbol, UTC day) its first and last bar (ns) and
    its bars: columns symbol, day (days since the epoch), first, last, bars.

    Frames as ingest writes them (string symbols, none missing; zone-aware times, none missing) take one
    factorisation of the symbols and numpy; any other frame ``missing_minutes``' groupby.
    """
    symbol, timestamps = frame["symbol"], frame["timestamp"]
    if isinstance(symbol.dtype, pd.StringDtype) and isinstance(timestamps.dtype, pd.DatetimeTZDtype):
        codes, uniques = pd.factorize(symbol)
        if not ((codes < 0).any() or timestamps.hasnans):
            return _day_spans_numpy(codes, uniques, timestamps)
    stats = (
        frame.assign(day=timestamps.dt.tz_convert("UTC").dt.floor("D"))
        .groupby(["symbol", "day"], observed=True)["timestamp"]
        .agg(["min", "max", "size"])
        .reset_index()
    )
    spans = pd.DataFrame(
        {
            "symbol": [str(s) for s in stats["symbol"]],
            "day": stats["day"].dt.as_unit("ns").array.asi8 // 86_400_000_000_000,
            "first": stats["min"].dt.as_unit("ns").array.asi8,
            "last": stats["max"].dt.as_unit("ns").array.asi8,
            "bars": stats["size"].to_numpy(dtype="int64"),
        }
    )
    return frame["symbol"].astype(str).unique().tolist(), spans


def _day_spans_numpy(
    codes: np.ndarray, uniques: pd.Index, timestamps: pd.Series
) -> tuple[list, pd.DataFrame]:
    """``_day_spans`` of string symbols (``codes`` into ``uniques``) and zone-aware times, none missing: the
    (symbol, day) groups numbered by arithmetic and reduced with numpy instead of a two-key groupby."""
    unit = timestamps.dtype.unit
    ts = timestamps.array.asi8
    day = ts // np.timedelta64(1, "D").astype(f"timedelta64[{unit}]").astype(np.int64)  # dt.floor("D") in UTC
    first_day = int(day.min())
    day -= first_day
    span = int(day.max()) + 1
    group = codes.astype(np.int64) * span + day
    if len(uniques) * span <= 4 * len(ts) + 1024:
        key_of_group = np.arange(len(uniques) * span)
    else:  # days far apart: number only the (symbol, day) pairs that occur
        group, key_of_group = pd.factorize(group)
    size = np.bincount(group, minlength=len(key_of_group))
    first = np.full(len(size), np.iinfo(np.int64).max)
    last = np.full(len(size), np.iinfo(np.int64).min)
    np.minimum.at(first, group, ts)
    np.maximum.at(last, group, ts)
    present = np.flatnonzero(size)
    names = np.array([str(u) for u in uniques], dtype=object)
    to_ns = _NS_PER[unit]
    spans = pd.DataFrame(
        {
            "symbol": names[key_of_group[present] // span],
            "day": key_of_group[present] % span + first_day,
            "first": first[present] * to_ns,
            "last": last[present] * to_ns,
            "bars": size[present].astype(np.int64),
        }
    )
    return names.tolist(), spans


PLOT_SYMBOLS = 8  # symbols drawn in a price/volume plot: more make an unreadable legend


def day_range(first: object, last: object) -> str:
    """Two days as ``first..last``; one day alone when they are the same."""
    return f"{first}" if first == last else f"{first}..{last}"


def days_drawn(frame: pd.DataFrame) -> str:
    """The UTC days of ``frame``'s bars as ``first..last`` (``day_range``); empty without bars."""
    if frame.empty:
        return ""
    times = frame["timestamp"].dt.tz_convert("UTC")
    return day_range(times.min().date(), times.max().date())


def symbols_drawn(frame: pd.DataFrame, max_symbols: int = PLOT_SYMBOLS) -> str:
    """What a plot of ``frame`` leaves out: ``"5 of 5 symbols shown"``, or with the symbols not drawn
    (the first ``max_symbols`` in order are)."""
    symbols = sorted(frame["symbol"].astype(str).unique()) if len(frame) else []
    left_out = symbols[max_symbols:]
    text = f"{len(symbols) - len(left_out)} of {len(symbols)} symbols shown"
    if left_out:
        names = ", ".join(left_out[:20]) + (f", … ({len(left_out) - 20} more)" if len(left_out) > 20 else "")
        text += f"; not shown: {names}"
    return text


def plot_title(title: str, frame: pd.DataFrame, max_symbols: int = PLOT_SYMBOLS) -> str:
    """``title`` with the days drawn (``days_drawn``) and, when symbols are left out, how many are shown."""
    heading = f"{title} {days_drawn(frame)}".strip()
    symbols = frame["symbol"].nunique() if len(frame) else 0
    if symbols > max_symbols:
        heading += f"\n{max_symbols} of {symbols} symbols shown"
    return heading


def price_volume_png(frame: pd.DataFrame, title: str, max_symbols: int = PLOT_SYMBOLS) -> bytes:
    """A PNG of close and volume per symbol (the first ``max_symbols`` in order), for the UI; titled with
    ``plot_title``: the days drawn and, if any are left out, how many symbols are shown."""
    import matplotlib.dates as mdates  # imported on use: matplotlib costs a second

    # laid out by hand: a tight crop or autofmt_xdate would draw the figure twice
    fig, (ax_price, ax_volume) = pyplot().subplots(
        2, 1, figsize=(8, 4.5), sharex=True, gridspec_kw={"height_ratios": [3, 1], "hspace": 0.08}
    )
    heading = plot_title(title, frame, max_symbols)
    fig.subplots_adjust(left=0.1, right=0.98, top=0.93 if "\n" not in heading else 0.89, bottom=0.12)
    for symbol in sorted(frame["symbol"].astype(str).unique())[:max_symbols]:
        part = frame[frame["symbol"] == symbol]
        base = part["close"].iloc[0] if len(part) else 1.0
        ax_price.plot(part["timestamp"], part["close"] / base * 100, label=symbol, linewidth=0.8)
        ax_volume.plot(part["timestamp"], part["volume"], linewidth=0.6)
    ax_price.set_ylabel("close (first = 100)")
    ax_volume.set_ylabel("volume")
    ax_price.set_title(heading, fontsize=10)
    ax_price.legend(loc="upper left", fontsize=7, ncol=2 if max_symbols > 4 else 1)
    locator = mdates.AutoDateLocator(minticks=3, maxticks=7)
    ax_volume.xaxis.set_major_locator(locator)
    ax_volume.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    return figure_png(fig, tight=False)


def bullet_list(lines: Iterable[str]) -> str:
    """Markdown bullets of ``lines``, ``_none_`` without any."""
    return "\n".join(f"- {line}" for line in lines) or "_none_"


def rows_without_volume(clean: pd.DataFrame) -> int:
    """Rows of validated bars (``validate.Validated.clean``) whose source gave no volume."""
    return int(clean["volume_missing"].sum())


def rollup_facts(bars: pd.DataFrame, fill: pd.DataFrame) -> dict:
    """Plain-Python facts of a rollup for run metadata: the symbols and first/last bar of ``bars``, and from
    ``fill`` (``rollups.bucket_fill``) the buckets per symbol as markdown, partial buckets and missing
    minutes."""
    return {
        "symbols": ", ".join(sorted(bars["symbol"].unique())) if len(bars) else "",
        "first_timestamp": bars["timestamp"].min().isoformat() if len(bars) else "",
        "last_timestamp": bars["timestamp"].max().isoformat() if len(bars) else "",
        "buckets_by_symbol": fill.to_markdown(index=False) if len(fill) else "_none_",
        "partial_buckets": int(fill["partial_buckets"].sum()) if len(fill) else 0,
        "missing_minutes": int(fill["missing_minutes"].sum()) if len(fill) else 0,
    }
