"""Frames for the quality tests: one that satisfies every rule of a table, and one per rule that breaks only
it.

``case(rule)`` returns a ``Case``: the frame, the clock and sources to evaluate it with, and the number of
rows that must fail ``rule`` (and no other rule).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tis_pipeline.quality.evaluate import rollup_bars
from tis_pipeline.quality.rules import MARKET_TABLES, NOT_NULL, Rule, key_columns, rules_for

START = pd.Timestamp("2024-03-04 00:00", tz="UTC")
MINUTES = 200
SYMBOLS = ("AAA", "BBB")
INTEGER_COLUMNS = {
    "priority",
    "sharing_priority",
    "trigger_priority",
    "mx_processing_latency_ms",
    "mx_throughput_per_second",
}
ROWS = 6
BAD_ROWS = (1, 3)  # the rows a generic violation breaks


@dataclass
class Case:
    table: str
    frame: pd.DataFrame
    now: pd.Timestamp
    sources: dict[str, pd.DataFrame] = field(default_factory=dict)
    expected: int = 0  # rows that fail the rule under test


# ------------------------------------------------------------------------------------------ market bars


def market_1m(
    symbols: tuple[str, ...] = SYMBOLS,
    minutes: int = MINUTES,
    *,
    flat: tuple[int, int] | None = None,
    jump_at: int | None = None,
    seed: int = 7,
) -> pd.DataFrame:
    """Clean one-minute bars: a slow random walk (no jumps, no stale runs, no gaps), OHLC consistent.

    ``flat=(first, length)`` makes the first symbol's close constant for ``length`` bars from ``first``;
    ``jump_at`` gives the first symbol a +5 % log return at that bar.
    """
    rng = np.random.default_rng(seed)
    frames = []
    for i, symbol in enumerate(symbols):
        steps = rng.normal(0.0, 2e-4, minutes)
        steps[0] = 0.0
        if i == 0 and flat is not None:
            first, length = flat
            steps[first + 1 : first + length] = 0.0
        if i == 0 and jump_at is not None:
            steps[jump_at] = 0.05
        close = 100.0 * (i + 1) * np.exp(np.cumsum(steps))
        open_ = np.concatenate([[close[0]], close[:-1]])
        wick = rng.uniform(1e-4, 5e-4, (2, minutes))
        evidence = np.round(rng.uniform(0, 1, minutes), 2)
        evidence[0], evidence[1], evidence[2] = 0.0, 1.0, np.nan  # the closed bounds and NULL pass
        frames.append(
            pd.DataFrame(
                {
                    "symbol": symbol,
                    "timestamp": START + pd.to_timedelta(np.arange(minutes), unit="min"),
                    "open": open_,
                    "high": np.maximum(open_, close) * (1 + wick[0]),
                    "low": np.minimum(open_, close) * (1 - wick[1]),
                    "close": close,
                    "volume": rng.uniform(0, 50, minutes).round(4),
                    "mx_evidence": evidence,
                }
            )
        )
    frame = pd.concat(frames, ignore_index=True)
    frame.loc[5, "volume"] = 0.0  # volume >= 0: zero passes
    return frame


def market_rollup(bars: pd.DataFrame, minutes: int) -> pd.DataFrame:
    out = rollup_bars(bars, minutes).drop(columns="source_bars")
    out["mx_evidence"] = np.linspace(0, 1, len(out)).round(2)
    return out


def market_case(table: str) -> Case:
    bars = market_1m()
    if table == "market_data_1m":
        frame, sources = bars, {}
    else:
        frame, sources = market_rollup(bars, MARKET_TABLES[table]), {"market_data_1m": bars}
    return Case(table, frame, now=frame["timestamp"].max(), sources=sources)


def _last_rows(frame: pd.DataFrame) -> list[int]:
    """Positions of each symbol's last bar: breaking them does not open a gap inside a series."""
    return [int(np.flatnonzero(frame["symbol"].to_numpy() == s)[-1]) for s in SYMBOLS]


def _middle_rows(frame: pd.DataFrame) -> list[int]:
    return [int(np.flatnonzero(frame["symbol"].to_numpy() == s)[len(frame) // 6]) for s in SYMBOLS]


def market_violation(rule: Rule) -> Case:
    base = market_case(rule.table)
    frame = base.frame.copy()
    sources = {}  # without the 1m source the rollup rule is skipped, so only ``rule`` can fail
    kind = rule.kind
    rows = _middle_rows(frame)
    expected = len(rows)
    if kind == "not_null":
        rows = _last_rows(frame)
        frame.loc[rows, rule.column] = None
    elif kind == "range":
        frame.loc[rows, rule.column] = [1.5, -0.01]
    elif kind == "positive":
        frame.loc[rows, "low"] = 0.0
    elif kind == "nonnegative":
        frame.loc[rows, "volume"] = -1.0
    elif kind == "ohlc_high":
        top = frame[["open", "close"]].max(axis=1)
        frame.loc[rows, "high"] = ((top + frame["low"]) / 2)[rows]
    elif kind == "ohlc_low":
        bottom = frame[["open", "close"]].min(axis=1)
        frame.loc[rows, "low"] = ((bottom + frame["high"]) / 2)[rows]
    elif kind == "unique":
        frame = pd.concat([frame, frame.iloc[[rows[0]]]], ignore_index=True)
        expected = 2
    elif kind == "on_minute":
        frame.loc[rows, "timestamp"] = frame.loc[rows, "timestamp"] + pd.Timedelta(seconds=30)
    elif kind == "not_future":
        rows = _last_rows(frame)
        frame.loc[rows, "timestamp"] = frame.loc[rows, "timestamp"] + pd.Timedelta(days=2)
    elif kind == "stale_series":
        frame = market_1m(flat=(50, rule.params["max_run"] + 1))
        expected = rule.params["max_run"] + 1
    elif kind == "gaps":
        first = np.flatnonzero(frame["symbol"].to_numpy() == SYMBOLS[0])
        frame = frame.drop(index=first[100:103]).reset_index(drop=True)
        expected = 1
    elif kind == "price_jump":
        frame = market_1m(jump_at=150)
        expected = 1
    elif kind == "rollup_consistent":
        frame.loc[rows, "volume"] = frame.loc[rows, "volume"] + 1.0
        sources = base.sources
    else:
        raise AssertionError(f"no market violation for {kind}")
    return Case(rule.table, frame, now=base.now, sources=sources, expected=expected)


# ------------------------------------------------------------------------------------------ other tables


def _range_values(rule: Rule) -> list:
    p = rule.params
    integer = rule.column in INTEGER_COLUMNS
    lo = p["min"] if p["min_inclusive"] else (p["min"] + 1 if integer else p["min"] + 0.01)
    hi = p["max"] if p["max_inclusive"] else (p["max"] - 1 if integer else p["max"] - 0.01)
    mid = (p["min"] + p["max"]) // 2 if integer else (p["min"] + p["max"]) / 2
    return [lo, mid, hi]


def _range_violations(rule: Rule) -> list:
    p = rule.params
    integer = rule.column in INTEGER_COLUMNS
    below = p["min"] if not p["min_inclusive"] else p["min"] - (1 if integer else 0.01)
    above = p["max"] if not p["max_inclusive"] else p["max"] + (1 if integer else 0.01)
    return [below, above]


def table_case(table: str) -> Case:
    """A frame of ``ROWS`` rows satisfying every rule of a non-market table; nullable columns hold a NULL."""
    rules = rules_for(table)
    columns = list(dict.fromkeys((*key_columns(table), *(c for r in rules for c in r.columns))))
    not_null = set(NOT_NULL.get(table, ()))
    data: dict[str, list] = {}
    for column in columns:
        by_kind = {r.kind: r for r in rules if r.columns == (column,)}
        if "range" in by_kind:
            values = _range_values(by_kind["range"])
        elif "enum" in by_kind:
            values = list(by_kind["enum"].params["values"])
        elif column == "timestamp":
            values = [START + pd.Timedelta(minutes=i) for i in range(ROWS)]
        elif column.endswith("_id"):
            values = [str(uuid.UUID(int=i + 1)) for i in range(ROWS)]
        elif column == "mx_confirm":
            values = [True, False]
        elif column == "symbol":
            values = list(SYMBOLS)
        elif column == "anomaly_score":
            values = [0.5, 1.25]
        else:
            values = ['{"k": 1}']  # valid JSON for the JSONB columns, a string for the others
        values = [values[i % len(values)] for i in range(ROWS)]
        if column not in not_null and column not in key_columns(table):
            values[ROWS - 1] = None
        if column in INTEGER_COLUMNS:  # INTEGER with NULLs reads back as float64
            data[column] = [np.nan if v is None else float(v) for v in values]
        else:
            data[column] = values
    frame = pd.DataFrame(data)
    if "timestamp" in frame:
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    return Case(table, frame, now=START + pd.Timedelta(days=1))


def table_violation(rule: Rule) -> Case:
    base = table_case(rule.table)
    frame = base.frame.copy()
    rows = list(BAD_ROWS)
    if rule.kind == "not_null":
        if pd.api.types.is_bool_dtype(frame[rule.column].dtype):
            frame[rule.column] = frame[rule.column].astype(object)  # BOOLEAN with NULLs reads back as object
        frame.loc[rows, rule.column] = None
    elif rule.kind == "range":
        frame.loc[rows, rule.column] = _range_violations(rule)
    elif rule.kind == "enum":
        frame.loc[rows, rule.column] = ["bogus", rule.params["values"][0].upper()]
    else:
        raise AssertionError(f"no violation for {rule.kind} on {rule.table}")
    return Case(rule.table, frame, now=base.now, expected=len(rows))


def valid_case(table: str) -> Case:
    return market_case(table) if table in MARKET_TABLES else table_case(table)


def violation(rule: Rule) -> Case:
    return market_violation(rule) if rule.table in MARKET_TABLES else table_violation(rule)
