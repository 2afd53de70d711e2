"""Classifier experts: counted n-grams of tokens with horizon-h labels (rows 4-6 of the vote matrix).

Label of bar s = [c_{s+h} > c_s], ties ignored; counts per symbol and context of bars s <= t-h-1 only (label
elapsed strictly before t; bar t never used): ``p = (up + 1) / (n + 2)``.  Contexts: ``ret_bigram`` (ret token
t-1, t), ``ret_trigram`` (t-2..t), ``shape`` (ret, range, volume token of t); 0.5 for the first 3 bars of a
series.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tis_pipeline.dsi.logic.config import CLF_OFFSETS, CLF_SIZES
from tis_pipeline.dsi.logic.features import BarFeatures
from tis_pipeline.dsi.logic.numeric import on_vote_grid
from tis_pipeline.dsi.logic.state import SymState


@dataclass(frozen=True)
class Labels:
    """Per row s: the horizon-h label, where it is known; used only through counts/losses of rows s <=
    t-h-1."""

    up: np.ndarray  # label known and c_{s+h} > c_s
    decided: np.ndarray  # label known and not a tie (c_{s+h} != c_s)
    fresh: np.ndarray  # not yet in the carried counts and losses (row >= carried tail - h - 1)


def bar_labels(bars: BarFeatures, tails: np.ndarray, h: int) -> Labels:
    """The labels of every row; ``tails`` = carried rows per segment."""
    c, R = bars.cols[4], len(bars.row)
    known = bars.row + h < bars.seg_start + np.repeat(bars.lens, bars.lens)
    close_ahead = np.full(R, np.nan)
    close_ahead[: max(R - h, 0)] = c[h:]
    return Labels(
        up=known & (close_ahead > c),
        decided=known & (close_ahead != c),
        fresh=bars.pos >= np.repeat(tails, bars.lens) - h - 1,
    )


def _ngram_counts(ctx: np.ndarray, n_ctx: int, val: np.ndarray, seg: np.ndarray, h: int) -> np.ndarray:
    """Per row t: sum of val_s over rows s of the same segment with ctx_s == ctx_t and s <= t-h-1 (int64)."""
    n = len(ctx)
    order = np.argsort(ctx.astype(np.uint8 if n_ctx < 256 else np.uint16), kind="stable")  # radix; rows stay
    key = (ctx.astype(np.int64) * (int(seg[-1]) + 1) + seg)[order]  # in (segment, position) order per context
    gs = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])  # groups = (context, segment) runs
    vs = val[order]
    vinj = vs.copy()
    vinj[gs[1:]] -= np.add.reduceat(vs, gs)[:-1]  # reset the running sum at each group start
    excl = np.cumsum(vinj) - vs  # sum of the earlier rows of the group
    z = key * (n + h + 1) + order  # increasing; z[j-d] >= z[j] - h <=> same group and row >= t - h
    zh = z - h
    m = np.zeros(n, np.int8)
    for d in range(1, h + 1):  # m = group rows in t-h..t-1 (labels not elapsed at t)
        m[d:] += z[:-d] >= zh[d:]
    out = np.empty(n, np.int64)
    out[order] = excl[np.arange(n) - m]
    return out


def classifier_votes(
    bars: BarFeatures,
    labels: Labels,
    tails: np.ndarray,
    sts: list[SymState | None],
    h: int,
    votes: np.ndarray,
) -> np.ndarray:
    """The three classifier votes per row into ``votes`` (3 x rows); the counts per segment after the last row
    whose label has elapsed, (segments, 2, contexts): [up counts, non-tie counts], classifiers side by
    side."""
    lag, rt, gt, vt, seg = bars.lag, bars.ret_token, bars.range_token, bars.volume_token, bars.seg
    S, starts = len(bars.lens), bars.starts
    rt1 = lag(rt, 1)
    contexts = [rt1 * 5 + rt, lag(rt, 2) * 25 + rt1 * 5 + rt, rt * 9 + gt * 3 + vt]
    n_contexts = int(CLF_OFFSETS[-1])
    carried = np.stack([s.clf if s is not None else np.zeros((2, n_contexts), np.int64) for s in sts])
    has_carried = carried.any()
    early3 = lag.early(3)
    # non-tie count in the high 32 bits, up count in the low 32 bits: one cumulative sum counts both
    packed_labels = (labels.decided.astype(np.int64) << 32) | labels.up
    packed_labels[~labels.fresh] = 0
    packed_labels[early3] = 0
    counted = labels.fresh & (bars.row + h + 2 <= bars.seg_start + np.repeat(bars.lens, bars.lens))
    counted[early3] = False
    count_rows = np.flatnonzero(counted & labels.decided)  # rows that move the counts (up implies decided)
    count_seg, count_up = seg[count_rows] * n_contexts, labels.up[count_rows]
    new_counts = carried.copy()
    for k, (ctx, size) in enumerate(zip(contexts, CLF_SIZES, strict=True)):
        ctx[early3] = size
        packed = _ngram_counts(ctx, size, packed_labels, seg, h)
        n_up, n_all = packed & 0xFFFFFFFF, packed >> 32
        if has_carried:
            cc = seg * (2 * n_contexts) + np.minimum(ctx, size - 1) + CLF_OFFSETS[k]
            n_up += carried.ravel()[cc]
            n_all += carried.ravel()[cc + n_contexts]
        p = on_vote_grid((n_up + 1) / (n_all + 2), votes[k])
        p[early3] = 0.5
        for j, st in enumerate(sts):  # classifier votes of the carried tail rows
            if st is not None and len(st.pending):
                p[starts[j] + tails[j] - len(st.pending) : starts[j] + tails[j]] = st.pending[:, k]
        key = (count_seg + ctx[count_rows] + CLF_OFFSETS[k]) * 2 + count_up
        moved = np.bincount(key, minlength=2 * S * n_contexts).reshape(S, n_contexts, 2)
        new_counts[:, 0] += moved[..., 1]
        new_counts[:, 1] += moved[..., 0] + moved[..., 1]
    return new_counts
