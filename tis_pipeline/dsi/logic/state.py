"""The state carried between calls: per symbol the tail bars, exact counts and loss sums, retirement clocks.

Per symbol the last K = ``config.tail_rows`` bars (K >= every lookback + h + 2), integer n-gram counts and
Hedge loss sums over all bars s <= (last bar) - h - 1, the classifier votes of the last h+1 bars, retirement
clocks, the last event time per type, and which experts carried at least the weight floor on the last
``survival_window - 1`` bars. ``DsiState.to_bytes()`` / ``DsiState.from_bytes()`` are its stored form.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from tis_pipeline.dsi.logic.config import STATE_VERSION

_FIELDS = {
    "ts": "<i8",
    "ohlcv": "<f8",
    "clf": "<i8",
    "pending": "<f8",
    "loss": "<i8",
    "run": "<i8",
    "retired": "|b1",
    "last_event": "<i8",
    "surv": "|b1",
}


@dataclass(frozen=True)
class SymState:
    ts: np.ndarray  # (k,) epoch ns of the tail bars
    ohlcv: np.ndarray  # (k, 5)
    clf: np.ndarray  # (2, sum(CLF_SIZES)) up / non-tie counts of elapsed labels
    pending: np.ndarray  # (min(k, h+1), 3) classifier votes of the last tail bars
    loss: np.ndarray  # (E,) cumulative Hedge losses in units of 2^-16 (int64)
    run: np.ndarray  # (E,) consecutive below-floor bars, capped at retire_span
    retired: np.ndarray  # (E,) bool
    last_event: np.ndarray  # (event types,) epoch ns of the last kept event
    surv: np.ndarray  # (min(bars seen, survival_window - 1), E) bool: w_i >= weight_floor on the last bars


@dataclass(frozen=True)
class DsiState:
    config: str  # DsiConfig.fingerprint()
    symbols: dict[str, SymState]

    def to_bytes(self) -> bytes:
        names = sorted(self.symbols)
        shapes = [[list(getattr(self.symbols[n], f).shape) for f in _FIELDS] for n in names]
        head = json.dumps(
            {"v": STATE_VERSION, "config": self.config, "symbols": names, "shapes": shapes},
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
        body = b"".join(
            np.ascontiguousarray(getattr(self.symbols[n], f), dtype=dt).tobytes()
            for n in names
            for f, dt in _FIELDS.items()
        )
        return b"DSIS" + len(head).to_bytes(8, "big") + head + body

    @classmethod
    def from_bytes(cls, data: bytes) -> DsiState:
        if data[:4] != b"DSIS":
            raise ValueError("not a DsiState")
        n = int.from_bytes(data[4:12], "big")
        head = json.loads(data[12 : 12 + n])
        if head["v"] != STATE_VERSION:
            raise ValueError(f"state version {head['v']} != {STATE_VERSION}")
        pos, symbols = 12 + n, {}
        for name, shapes in zip(head["symbols"], head["shapes"], strict=True):
            arrays = {}
            for (field, dt), shape in zip(_FIELDS.items(), shapes, strict=True):
                size = int(np.prod(shape)) * np.dtype(dt).itemsize
                arrays[field] = (
                    np.frombuffer(data, dt, int(np.prod(shape)), pos).reshape(shape).astype(dt[1:])
                )
                pos += size
            symbols[name] = SymState(**arrays)
        return cls(head["config"], symbols)
