"""Bar features, robust past scales, MicroTape token parts, and causal higher-timeframe returns.

Per symbol, on the row order of its bars (t is the bar; nothing after t is read):
``r_t = c_t / c_{t-1} - 1`` (first bar of a series: ``c/o - 1``), ``g_t = (h_t - l_t) / c_{t-1}``,
``lv_t = log1p(v_t)``, ``gap_t = ts_t - ts_{t-1} != 1 min`` (first bar: 1).
Robust scales (past window, rows t-V..t-1, V = ``vol_window``, truncated at series start; exact fixed-point
sums): ``s_r = mean|r|``, ``m_g = mean g``, ``m_v = mean lv``, ``s_v = mean|lv_s - lv_{s-1}|`` (mean absolute
deviations and a log-volume geometric mean stand in for rolling median/MAD: same role, 1 pass instead of a
sort).
Standardised: ``z_r = r / s_r``, ``q_g = g / m_g``, ``z_v = (lv - m_v) / s_v`` (0, 1, 0 while fewer than 3
past bars).
Token parts: ret = ``digitize(z_r, [-2, -0.3, 0.3, 2])`` (0 strong down .. 4 strong up), range
``digitize(q_g, [0.6, 1.6])`` (narrow/normal/wide), volume ``digitize(z_v, [-1, 1])`` (low/normal/high), gap
flag.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from tis_pipeline.dsi.logic.config import MINUTE_NS, SUM_SCALE, DsiConfig
from tis_pipeline.dsi.logic.numeric import Lag, bucket


class BarFeatures:
    """Rows of (carried tail + new bars) per symbol segment, with the bar features and MicroTape token parts.

    ``cols`` = (ts epoch ns, open, high, low, close, volume), segments of ``lens`` rows one after another.
    """

    def __init__(self, cols: list[np.ndarray], lens: np.ndarray, cfg: DsiConfig):
        ts, o, hi, lo, c, v = self.cols = cols
        self.lens, S, R = lens, len(lens), len(ts)
        self.starts = np.zeros(S, np.int64)
        self.starts[1:] = np.cumsum(lens)[:-1]
        self.seg = np.repeat(np.arange(S), lens)
        self.seg_start = np.repeat(self.starts, lens)
        self.row = np.arange(R)
        self.pos = self.row - self.seg_start  # position in the segment
        self.lag = lag = Lag(self.starts, lens)
        st = self.starts
        cprev = lag(c, 1)
        cprev[st] = o[st]
        self.r = r = c / cprev - 1.0
        self.rng = rng = np.maximum(hi - lo, 0.0) / cprev
        self.lv = lv = np.log1p(v)
        dlv = lv - lag(lv, 1)
        dlv[st] = 0.0
        self.gap = ts - lag(ts, 1) != MINUTE_NS
        self.gap[st] = True
        V = cfg.vol_window
        cnt = np.minimum(self.pos, V)
        early = lag.early(V)
        den = np.full(R, V * SUM_SCALE)
        den[early] = np.maximum(cnt[early], 1) * SUM_SCALE

        def past_mean(
            x: np.ndarray,
        ) -> np.ndarray:  # mean of x over rows t-V..t-1: exact fixed-point window sums (x >= 0)
            cs = np.zeros(R + 1, np.int64)
            np.cumsum((x * SUM_SCALE).astype(np.int64), out=cs[1:])
            d = np.empty(R, np.int64)
            d[V:] = cs[V:R] - cs[: max(R - V, 0)]
            d[early] = cs[early] - cs[early - cnt[early]]
            return d / den

        self.s_r, m_g = past_mean(np.minimum(np.abs(r), 1e3)), past_mean(np.minimum(rng, 1e3))
        self.m_v, self.s_v = past_mean(lv), past_mean(np.abs(dlv))
        self.ok = ok = cnt >= 3  # at least 3 past bars: the scales mean something
        self.zr = np.where(ok, r / (self.s_r + 1e-12), 0.0)
        self.qg = np.where(ok, rng / (m_g + 1e-12), 1.0)
        self.zv = np.where(ok, (lv - self.m_v) / (self.s_v + 1e-9), 0.0)
        self.ret_token = bucket(self.zr, (-2.0, -0.3, 0.3, 2.0))
        self.range_token = bucket(self.qg, (0.6, 1.6))
        self.volume_token = bucket(self.zv, (-1.0, 1.0))

    def tokens(self, rows: np.ndarray | slice) -> np.ndarray:
        """MicroTape tokens ``ret + 5 range + 15 volume + 45 gap`` (0..89) of ``rows``, uint8."""
        return (
            self.ret_token[rows]
            + 5 * self.range_token[rows]
            + 15 * self.volume_token[rows]
            + 45 * self.gap[rows]
        ).astype(np.uint8)

    @cached_property
    def ret_sign(self) -> np.ndarray:
        """sign(r_t)."""
        return np.sign(self.r)

    @cached_property
    def past_returns(self) -> list[np.ndarray]:
        """r_{t-1} .. r_{t-5} (0 before the segment start)."""
        return [self.lag(self.r, k, 0.0) for k in range(1, 6)]

    @cached_property
    def log_volumes(self) -> list[np.ndarray]:
        """lv_t, lv_{t-1} .. lv_{t-5} (0 before the segment start)."""
        return [self.lv] + [self.lag(self.lv, k, 0.0) for k in range(1, 6)]


def htf_returns(
    ts: np.ndarray,
    o: np.ndarray,
    c: np.ndarray,
    starts: np.ndarray,
    row: np.ndarray,
    minutes: tuple[int, ...],
) -> list[np.ndarray]:
    """c_t / o_first - 1 per bucket size (each a multiple of the first): o_first opens the previous bucket of
    the segment, or the current one at the segment start, and lies at most 2 buckets of rows back."""
    R = len(ts)
    b = ts // (minutes[0] * MINUTE_NS)
    first = np.empty(R, bool)
    first[:1] = True
    np.not_equal(b[1:], b[:-1], out=first[1:])
    first[starts] = True
    B = np.flatnonzero(first)  # rows opening a bucket; a coarser bucket opens on one of them
    bb, at_start = b[B], np.isin(B, starts)
    out = []
    for mins in minutes:
        keep = at_start.copy()
        bk = bb // (mins // minutes[0])
        keep[1:] |= bk[1:] != bk[:-1]
        Bm, sm = B[keep], at_start[keep]
        opener = Bm.copy()
        opener[1:] = np.where(sm[1:], Bm[1:], Bm[:-1])
        start = np.repeat(opener, np.diff(Bm, append=R))
        np.maximum(start, row - (2 * mins - 1), out=start)
        out.append(c / o[start] - 1.0)
    return out
