"""Pure logic of the market-data domain: normalise, validate, measure gaps, summarise. No Dagster, no database.

Bars follow the seed's convention: ``timestamp`` is the UTC minute a bar opens; a bar is known from
``timestamp + 1 minute``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

BAR_COLUMNS = ["symbol", "timestamp", "open", "high", "low", "close", "volume"]
PRICE_COLUMNS = ["open", "high", "low", "close"]
SYMBOL_PATTERN = r"^[A-Za-z0-9._/:-]{1,20}$"
# numeric(20,8) holds |x| < 10^12
NUMERIC_20_8_LIMIT = 1e12

# Ingest-only rules on raw input, beside the registry's (tis_pipeline.quality.rules) error rules for the table
SYMBOL_FORMAT_RULE = "market_data_1m_symbol_format"
NUMERIC_FIT_RULE = "market_data_1m_values_fit_numeric"
KEY_UNIQUE_RULE = "market_data_1m_key_unique"

# The order a row is judged in: it is quarantined under the first rule it breaks.
QUARANTINE_RULES = (
    SYMBOL_FORMAT_RULE,
    "market_data_1m_timestamp_not_null",
    "market_data_1m_open_not_null",
    "market_data_1m_high_not_null",
    "market_data_1m_low_not_null",
    "market_data_1m_close_not_null",
    "market_data_1m_volume_not_null",
    NUMERIC_FIT_RULE,
    "ck_market_data_1m_prices_positive",
    "ck_market_data_1m_volume_nonnegative",
    "ck_market_data_1m_high_bounds",
    "ck_market_data_1m_low_bounds",
    "market_data_1m_timestamp_aligned",
    "market_data_1m_timestamp_not_future",
    KEY_UNIQUE_RULE,
)

RULE_MESSAGES = {
    SYMBOL_FORMAT_RULE: "symbol is empty, longer than 20 characters or has characters outside [A-Za-z0-9._/:-]",
    NUMERIC_FIT_RULE: "a value does not fit numeric(20,8) (|x| >= 1e12)",
    KEY_UNIQUE_RULE: "the same symbol and minute appear more than once",
}
_DUPLICATE_MESSAGE = "an identical row for this symbol and minute came earlier (one copy kept)"
_CONFLICT_MESSAGE = "the same symbol and minute appear with different values (no copy kept)"


def normalise_bars(frame: pd.DataFrame) -> pd.DataFrame:
    """Types, UTC, upper-case symbols, sorted by (symbol, timestamp, source order).

    Input: at least ``BAR_COLUMNS``; optional ``source_file``, ``source_line``, ``raw``, ``volume_missing``.
    Output: the same columns with float64 prices and volume, ``timestamp`` as datetime64[us, UTC].
    """
    out = frame.copy()
    for column, default in (("source_file", "synthetic"), ("source_line", 0), ("raw", None),
                            ("volume_missing", False)):
        if column not in out.columns:
            out[column] = default
    out["symbol"] = out["symbol"].astype("string").str.strip().str.upper()
    out["timestamp"] = pd.to_datetime(out["timestamp"], utc=True).astype("datetime64[us, UTC]")
    for column in PRICE_COLUMNS + ["volume"]:
        out[column] = pd.to_numeric(out[column], errors="coerce").astype("float64")
    out["source_line"] = out["source_line"].fillna(0).astype("int64")
    out = out.sort_values(["symbol", "timestamp", "source_file", "source_line"], kind="stable")
    return out.reset_index(drop=True)


@dataclass
class Validated:
    clean: pd.DataFrame          # BAR_COLUMNS + volume_missing, safe to write
    quarantine: pd.DataFrame     # quarantine table rows
    counts: dict[str, int]       # rule -> rows quarantined


def rule_masks(frame: pd.DataFrame, now: pd.Timestamp) -> dict[str, np.ndarray]:
    """One boolean mask per quarantine rule (True = the row breaks it), vectorised over the frame.

    The table's rules come from the quality registry (``failing_mask``), so ingest, the asset checks and the
    database's CHECK constraints share one definition of each rule.
    """
    from tis_pipeline.quality.evaluate import failing_mask
    from tis_pipeline.quality.rules import rule

    numbers = frame[PRICE_COLUMNS + ["volume"]].to_numpy(dtype="float64")
    masks: dict[str, np.ndarray] = {
        SYMBOL_FORMAT_RULE: ~frame["symbol"].fillna("").str.fullmatch(SYMBOL_PATTERN).fillna(False).to_numpy(bool),
        NUMERIC_FIT_RULE: (np.abs(numbers) >= NUMERIC_20_8_LIMIT).any(axis=1),
    }
    for name in QUARANTINE_RULES:
        if name not in masks and name != KEY_UNIQUE_RULE:
            masks[name] = failing_mask(frame, rule(name), now=now).to_numpy(bool)
    key = frame[["symbol", "timestamp"]]
    values = frame[BAR_COLUMNS]
    dup_key = key.duplicated(keep=False).to_numpy()
    same_values_seen = values.duplicated(keep="first").to_numpy()
    # a key whose rows do not all carry the same values cannot be resolved: all of its rows are quarantined
    distinct_per_key = values[dup_key].drop_duplicates().groupby(["symbol", "timestamp"], dropna=False).size()
    conflicting_keys = distinct_per_key[distinct_per_key > 1].index
    conflicting = dup_key & pd.MultiIndex.from_frame(key).isin(conflicting_keys)
    masks["_duplicate"] = dup_key & same_values_seen & ~conflicting
    masks["_conflict"] = conflicting
    masks[KEY_UNIQUE_RULE] = masks["_duplicate"] | masks["_conflict"]
    return masks


def validate_bars(frame: pd.DataFrame, *, now: pd.Timestamp | None = None,
                  partition_date: pd.Timestamp | None = None) -> Validated:
    """Split normalised bars into clean rows and quarantine rows (each bad row once, under its first rule)."""
    from tis_pipeline.quality.rules import rule

    now = now if now is not None else pd.Timestamp.now(tz="UTC")
    masks = rule_masks(frame, now)
    assigned = np.full(len(frame), "", dtype=object)
    for name in QUARANTINE_RULES:
        hit = masks[name] & (assigned == "")
        assigned[hit] = name
    bad = assigned != ""
    clean = frame.loc[~bad, BAR_COLUMNS + ["volume_missing"]].reset_index(drop=True)
    rejected = frame.loc[bad]
    dates = rejected["timestamp"].dt.tz_convert("UTC").dt.date
    if partition_date is not None:
        dates = dates.fillna(partition_date.date())
    quarantine = pd.DataFrame(
        {
            "partition_date": dates,
            "source_file": rejected["source_file"].astype(str),
            "source_line": rejected["source_line"],
            "symbol": rejected["symbol"].astype("object"),
            "timestamp": rejected["timestamp"],
            "raw_values": _raw_json(rejected),
            "rule": assigned[bad],
        }
    ).reset_index(drop=True)
    messages = {name: RULE_MESSAGES.get(name) or rule(name).description for name in QUARANTINE_RULES}
    quarantine["message"] = quarantine["rule"].map(messages)
    duplicate_kind = np.where(masks["_conflict"][bad], _CONFLICT_MESSAGE, _DUPLICATE_MESSAGE)
    is_key_rule = (quarantine["rule"] == KEY_UNIQUE_RULE).to_numpy()
    quarantine.loc[is_key_rule, "message"] = duplicate_kind[is_key_rule]
    counts = {name: int((assigned == name).sum()) for name in QUARANTINE_RULES if (assigned == name).any()}
    return Validated(clean=clean, quarantine=quarantine, counts=counts)


def _raw_json(rejected: pd.DataFrame) -> list[str]:
    """Each rejected row as JSON: the parsed values, plus the original text where the reader kept it."""
    if rejected.empty:
        return []
    columns = BAR_COLUMNS + (["raw"] if "raw" in rejected.columns else [])
    view = rejected[columns].copy()
    view["timestamp"] = view["timestamp"].map(lambda t: None if pd.isna(t) else t.isoformat())
    if "raw" in view.columns:
        view["raw"] = view["raw"].where(view["raw"].map(lambda r: isinstance(r, str)), None)
    # pandas writes NaN as null and escapes every string: safe JSON for any input text
    return view.to_json(orient="records", lines=True, double_precision=15).splitlines()


def quarantine_share_by_day(clean: pd.DataFrame, quarantine: pd.DataFrame) -> pd.Series:
    """Share of quarantined rows among all rows of each partition day."""
    good = clean["timestamp"].dt.tz_convert("UTC").dt.date.value_counts()
    bad = quarantine["partition_date"].value_counts()
    total = good.add(bad, fill_value=0)
    return bad.reindex(total.index, fill_value=0).div(total).sort_index()


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
    """Plain-Python facts of a written frame for run metadata (row count, symbols, first/last, gaps)."""
    if frame.empty:
        return {"rows": 0, "symbols": [], "first_timestamp": None, "last_timestamp": None,
                "missing_by_symbol": {}}
    gaps = missing_minutes(frame, interval).groupby("symbol", observed=True)["missing"].sum()
    return {
        "rows": int(len(frame)),
        "symbols": sorted(frame["symbol"].astype(str).unique().tolist()),
        "first_timestamp": frame["timestamp"].min().isoformat(),
        "last_timestamp": frame["timestamp"].max().isoformat(),
        "missing_by_symbol": {str(k): int(v) for k, v in gaps.items()},
    }


def price_volume_png(frame: pd.DataFrame, title: str, max_symbols: int = 4) -> bytes:
    """A PNG of close and volume per symbol (first ``max_symbols``), for the UI."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_price, ax_volume) = plt.subplots(2, 1, figsize=(8, 4.5), sharex=True,
                                              gridspec_kw={"height_ratios": [3, 1]})
    for symbol in sorted(frame["symbol"].astype(str).unique())[:max_symbols]:
        part = frame[frame["symbol"] == symbol]
        base = part["close"].iloc[0] if len(part) else 1.0
        ax_price.plot(part["timestamp"], part["close"] / base * 100, label=symbol, linewidth=0.8)
        ax_volume.plot(part["timestamp"], part["volume"], linewidth=0.6)
    ax_price.set_ylabel("close (first = 100)")
    ax_volume.set_ylabel("volume")
    ax_price.set_title(title)
    ax_price.legend(loc="upper left", fontsize=7)
    fig.autofmt_xdate()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
