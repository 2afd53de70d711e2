"""Array helpers of exact, row-order-fixed arithmetic: per-segment lags, fixed add trees, buckets, the vote
grid."""

from __future__ import annotations

from typing import cast, overload

import numpy as np

from tis_pipeline.dsi.logic.config import VOTE_SCALE


class Lag:
    """x[t-k] within each symbol segment (fill before the segment start); exact copies only."""

    def __init__(self, starts: np.ndarray, lens: np.ndarray):
        self.starts, self.lens = starts, lens
        self._idx: dict[int, np.ndarray] = {}

    def early(self, k: int) -> np.ndarray:
        """Rows with fewer than k earlier rows in their segment (sorted), from the segment starts alone."""
        if k not in self._idx:
            m = np.minimum(self.lens, k)
            ends = np.cumsum(m)
            self._idx[k] = np.arange(int(ends[-1]) if len(m) else 0) + np.repeat(self.starts - ends + m, m)
        return self._idx[k]

    def add(self, a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
        """a + self(b, k, 0.0) without materialising the lagged copy (same float ops)."""
        out = np.empty_like(a)
        np.add(a[k:], b[: max(len(b) - k, 0)], out=out[k:])
        e = self.early(k)
        out[e] = a[e] + 0.0
        return out

    def __call__(self, x: np.ndarray, k: int, fill: float = 0) -> np.ndarray:
        out = np.empty_like(x)
        out[k:] = x[: max(len(x) - k, 0)]
        out[self.early(k)] = fill
        return out


def bucket(x: np.ndarray, edges: tuple[float, ...]) -> np.ndarray:
    """Number of ``edges`` that x reaches (``np.digitize`` for increasing edges), int16."""
    out = (x >= edges[0]).astype(np.int16)
    for e in edges[1:]:
        out += x >= e
    return out


def saturate(x: np.ndarray, k: float) -> np.ndarray:
    """k-squared saturation ``x^2 / (x^2 + k^2)`` in [0, 1)."""
    x2 = x * x
    return x2 / (x2 + k * k)


@overload
def on_vote_grid(p: np.float64, out: None = None) -> np.float64: ...
@overload
def on_vote_grid(p: np.ndarray, out: np.ndarray | None = None) -> np.ndarray: ...
def on_vote_grid(p: np.ndarray | np.float64, out: np.ndarray | None = None) -> np.ndarray | np.float64:
    """p rounded to the nearest multiple of 2^-16 (into ``out`` if given)."""
    if out is None:
        return np.rint(p * VOTE_SCALE) / VOTE_SCALE
    np.multiply(p, VOTE_SCALE, out=out)
    np.rint(out, out=out)
    return np.divide(out, VOTE_SCALE, out=out)


def rolling_sum(x: np.ndarray, n: int, lag: Lag) -> np.ndarray:
    """Sum of the last n rows (incl. t) by a fixed tree of float adds: the same ops for every row."""
    blocks, k = [x], 1
    while 2 * k <= n:
        blocks.append(lag.add(blocks[-1], blocks[-1], k))
        k *= 2
    total, off = None, 0
    for j in range(len(blocks) - 1, -1, -1):
        if n - off >= 1 << j:
            if total is None:
                total = blocks[j] if off == 0 else lag(blocks[j], off, 0.0)
            else:
                total = lag.add(total, blocks[j], off) if off else total + blocks[j]
            off += 1 << j
    return cast(np.ndarray, total)  # n >= 1: some block was taken
