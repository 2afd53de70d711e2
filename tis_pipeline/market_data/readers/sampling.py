"""Samples of a column's rows, on which formats and column kinds are decided."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa

SAMPLE_ROWS = 200


def sample_idx(good: np.ndarray, k: int = SAMPLE_ROWS) -> np.ndarray:
    idx = np.flatnonzero(good)
    if len(idx) <= k:
        return idx
    head = idx[: k // 2]
    spread = idx[np.linspace(0, len(idx) - 1, k - k // 2).astype(np.int64)]
    return np.unique(np.concatenate([head, spread]))


def sample_values(col: pa.Array, idx: np.ndarray) -> list:
    if len(idx) == 0:
        return []
    return [v for v in col.take(pa.array(idx, type=pa.int64())).to_pylist() if v is not None]


def sample_strings(col: pa.Array, idx: np.ndarray) -> list[str]:
    out = []
    for v in sample_values(col, idx):
        s = str(v).strip()
        if s:
            out.append(s)
    return out


def mostly(pred: Callable[[str], object], values: list[str], share: float = 0.9) -> bool:
    return bool(values) and sum(1 for v in values if pred(v)) >= share * len(values)
