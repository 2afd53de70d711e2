"""Hedge: exponential weights of the experts from their cumulative losses, retirement, and the combined
evidence.

Loss of expert i at bar s = |p_i(s) - y_s| (0 for ties), cumulative ``L_i(t)`` over s <= t-h-1 (exact integers
in units of 2^-16), raw weight ``u_i = exp(-eta (L_i - min_j L_j))``.  Retirement: when
``u_i < floor * sum_j u_j`` (share below floor, all experts) for ``retire_span`` consecutive bars the expert
is retired for good -- retirements take effect in time order (ties: expert order) while more than
``min_alive`` experts remain, later ones are void; ``w_i = u_i alive_i / sum_j u_j alive_j`` (0 for retired
experts).
Outputs: ``mx_evidence`` e = sum_i u_i alive_i p_i / sum_j u_j alive_j (2 dp, [0, 1]; P(up), 0.5 neutral);
``mx_confirm_rate`` = alive experts voting the side of e (p > 0.5 if e >= 0.5 else p < 0.5) / alive experts
(2 dp); ``mx_confirm`` = max(e, 1-e) >= evidence_threshold AND confirm_rate >= confirm_threshold (on the
rounded values; the side of e is the direction confirmed); ``mx_evidence_boost`` = the factor by which the
learned weights scale the equal-weight vote's lean: (e - 0.5) / (v - 0.5), v = unweighted mean of all experts'
votes (what the combination would say without learned weights or retirements); 1 = no boost, > 1 the weights
strengthen the lean, 0..1 they damp it, < 0 they reverse it; where v = 0.5 it is 1 if e = 0.5 too, else
+-9.9999 (the sign of e - 0.5); clipped to [-9.9999, 9.9999] (numeric(5,4)), 4 dp; ``ci_low``/``ci_high`` =
Beta(1 + n_up, 1 + n_down) central ``ci_level`` interval of the share of alive experts voting up (scipy's
beta.ppf, computed as scipy.special.betaincinv, tabulated); ``survival_rate`` = alive / experts (2 dp);
``alive_mask`` bit i = expert i.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from tis_pipeline.dsi.logic.classifiers import Labels
from tis_pipeline.dsi.logic.config import EXACT_INT_BITS, EXACT_INT_F, VOTE_SCALE, DsiConfig
from tis_pipeline.dsi.logic.features import BarFeatures


class NewRows:
    """The rows of the new bars among (carried tail + new bars): the rows a call scores and returns."""

    def __init__(self, bars: BarFeatures, tails: np.ndarray):
        lens, starts = bars.lens, bars.starts
        S, self._R = len(lens), len(bars.row)
        is_new = bars.pos >= np.repeat(tails, lens)
        self.sel = slice(None) if not tails.any() else np.flatnonzero(is_new)
        self.n = int(is_new.sum())
        self.seg = bars.seg[self.sel]
        self.counts = lens - tails  # new rows per segment
        self.firsts = np.zeros(S, np.int64)  # first new row of each segment, in new-row coordinates
        self.firsts[1:] = np.cumsum(self.counts)[:-1]
        self.lasts = self.firsts + self.counts - 1
        ends = starts + lens
        self._blocks = [(int(starts[j] + tails[j]), int(ends[j])) for j in range(S)] if S <= 64 else None

    def pick(self, x: np.ndarray, dest: np.ndarray | None = None) -> np.ndarray:
        """x[..., new rows] by contiguous blocks per segment (a view when possible; into ``dest`` if
        given)."""
        if isinstance(self.sel, slice):
            if dest is None:
                return x[..., : self._R]
            np.copyto(dest, x[..., : self._R])
            return dest
        if self._blocks is None:
            return np.take(x, self.sel, axis=-1, out=dest)
        parts = [x[..., a:b] for a, b in self._blocks]
        if dest is None and len(parts) == 1:
            return parts[0]
        return np.concatenate(parts, axis=-1, out=dest)


def cumulative_losses(
    votes: np.ndarray, labels: Labels, bars: BarFeatures, new: NewRows, carried_loss: np.ndarray, h: int
) -> tuple[np.ndarray, np.ndarray]:
    """(L, new sums): L (experts x new rows, int64, possibly a view of a scratch array) = carried sum +
    |p_i(s) - y_s| 2^16 over s <= t-h-1; new sums (segments x experts) = the same through the segment's last
    elapsed label.

    |p - y| 2^16 = p 2^16 (1 - 2y) + 2^16 y on labelled rows, 0 elsewhere (integers: votes are on the 2^-16
    grid). float64 <-> int64 casts of whole (E, R) blocks are slow in numpy; integers 0 <= x < 2^52 convert
    exactly by adding / removing 2^52 and reinterpreting the bits.
    """
    starts, lens, R, E = bars.starts, bars.lens, len(bars.row), len(votes)
    labelled = labels.decided & labels.fresh
    loss_f = np.multiply(votes, np.where(labelled, np.where(labels.up, -VOTE_SCALE, VOTE_SCALE), 0.0))
    loss_f += np.where(labelled & labels.up, VOTE_SCALE + EXACT_INT_F, EXACT_INT_F)
    loss = loss_f.view(np.int64)
    loss -= EXACT_INT_BITS
    seg_total = np.add.reduceat(loss, starts, axis=1)
    end_prev = np.zeros((E, len(lens)), np.int64)
    end_prev[:, 1:] = (
        carried_loss[:-1].T + seg_total[:, :-1]
    )  # running sum at the end of the previous segment
    loss[:, starts] += carried_loss.T - end_prev
    loss_through = np.empty(
        (E, R + h + 1), np.int64
    )  # column t + h + 1: segment-local sum through row t (exact)
    loss_through[:, : h + 1] = 0
    np.cumsum(loss, axis=1, out=loss_through[:, h + 1 :])
    last_elapsed = starts + lens - h - 2
    new_loss = np.where(
        (last_elapsed >= starts)[:, None],
        loss_through[:, np.maximum(last_elapsed, 0) + h + 1].T,
        carried_loss,
    )
    elapsed = new.pick(loss_through)  # column t = losses through row t-h-1 (may be a view: no longer needed)
    early = np.flatnonzero(new.pick(bars.pos) < h + 1)
    if len(early):
        elapsed[:, early] = carried_loss[new.seg[early]].T
    return elapsed, new_loss


def raw_weights(elapsed: np.ndarray, carried_loss: np.ndarray, rows: int, eta: float) -> np.ndarray:
    """u_i = exp(-eta (L_i - min_j L_j)) per new row (float64, in the memory of ``elapsed`` where exact)."""
    if int(carried_loss.max(initial=0)) + rows * 65536 < 2**52:  # L - min(L) exactly to float64 via the bits
        elapsed += EXACT_INT_BITS - elapsed.min(axis=0)
        u = elapsed.view(np.float64)
        u -= EXACT_INT_F
        u *= -eta / VOTE_SCALE
    else:
        elapsed -= elapsed.min(axis=0)
        u = np.multiply(elapsed, -eta / VOTE_SCALE)
    np.exp(u, out=u)
    return u


def weight_total(u: np.ndarray) -> np.ndarray:
    """sum_j u_j per row, added in expert order."""
    total = u[0].copy()
    for i in range(1, len(u)):
        total += u[i]
    return total


@dataclass(frozen=True)
class Retirement:
    retired_from: np.ndarray  # (segments, experts): first new row (new-row coordinates) retired, n if never
    below_floor_run: np.ndarray  # (segments, experts): below-floor bars at the segment's last row, capped
    retired: np.ndarray  # (segments, experts) bool, after this call


def retirements(
    below: np.ndarray, new: NewRows, carried_run: np.ndarray, carried_retired: np.ndarray, cfg: DsiConfig
) -> Retirement:
    """When each expert retires per segment, from its below-floor rows (experts x new rows) and the carried
    clocks."""
    span, n, firsts, lasts, seg_n = cfg.retire_span, new.n, new.firsts, new.lasts, new.seg
    S, E = carried_run.shape
    new_run = np.zeros((S, E), np.int64)
    first_hit = np.full((S, E), n, np.int64)  # first bar (new-row coordinates) of a span-long below-floor run
    at_last = np.zeros(n, bool)
    at_last[lasts] = True
    # below-floor runs, cut at segment bounds: work on run ends instead of a per-bar clock
    for i in np.flatnonzero(below.any(axis=1) & ~carried_retired.all(axis=0)):
        b = below[i]
        rs, re = b.copy(), b.copy()
        rs[1:] &= ~b[:-1]
        rs[firsts] = b[firsts]
        re[:-1] &= ~b[1:]
        re[lasts] = b[lasts]
        rs, re = np.flatnonzero(rs), np.flatnonzero(re)
        rseg = seg_n[rs]
        carry = np.where(
            rs == firsts[rseg], carried_run[rseg, i], 0
        )  # a run open at the segment start continues
        hit = rs + np.maximum(span - 1 - carry, 0)  # the run is span long at this bar
        reached = hit <= re
        if reached.any():
            hs, hseg = hit[reached], rseg[reached]
            first = np.ones(len(hs), bool)
            first[1:] = hseg[1:] != hseg[:-1]
            first_hit[hseg[first], i] = hs[first]
        le = at_last[re]
        new_run[rseg[le], i] = np.minimum(re[le] - rs[le] + 1 + carry[le], span)
    # retirements take effect in time order while more than min_alive experts stay alive
    pending = ~carried_retired & (first_hit < n)
    order = np.argsort(np.where(pending, first_hit, n + 1), axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(E), (S, E)), axis=1)
    budget = np.maximum(E - carried_retired.sum(axis=1) - cfg.min_alive, 0)
    first_hit = np.where(pending & (rank >= budget[:, None]), n, first_hit)
    first_hit = np.where(carried_retired, firsts[:, None], first_hit)
    new_retired = first_hit < n
    new_run[new_retired] = 0  # canonical state: the clock of a retired expert is irrelevant
    return Retirement(first_hit, new_run, new_retired)


def alive_rows(retired_from: np.ndarray, new: NewRows) -> dict[int, np.ndarray]:
    """Per expert retired somewhere in this call (only those): alive per new row."""
    jn = np.arange(new.n)
    dying = np.flatnonzero((retired_from < new.n).any(axis=0)).tolist()
    return {i: jn < np.repeat(retired_from[:, i], new.counts) for i in dying}


BOOST_LIMIT = 9.9999  # numeric(5,4)


def evidence_boost(e: np.ndarray, unweighted: np.ndarray) -> np.ndarray:
    """(e - 0.5) / (unweighted - 0.5), clipped to +-BOOST_LIMIT; 1 where both lean nowhere, +-BOOST_LIMIT
    (the sign of e - 0.5) where only the unweighted vote leans nowhere (not rounded)."""
    lean, base = e - 0.5, unweighted - 0.5
    flat = base == 0
    ratio = np.divide(lean, np.where(flat, 1.0, base))
    ratio = np.where(flat, np.where(lean == 0, 1.0, np.sign(lean) * BOOST_LIMIT), ratio)
    return np.clip(ratio, -BOOST_LIMIT, BOOST_LIMIT)


@lru_cache(maxsize=8)
def _ci_table(n: int, level: float) -> np.ndarray:
    # scipy.stats.beta.ppf(q, a, b) is this function of scipy.special, the same bits (a test holds them
    # equal); scipy.special imports in ~0.15 s of CPU, scipy.stats in ~0.7 s (only when the first bars are
    # scored either way)
    from scipy.special import betaincinv

    a, b = np.meshgrid(np.arange(n + 1) + 1.0, np.arange(n + 1) + 1.0, indexing="ij")
    q = (1 - level) / 2
    return np.stack(
        [betaincinv(a, b, q).ravel(), betaincinv(a, b, 1 - q).ravel()]
    )  # [lo/hi, n_up * (n+1) + n_dn]


def combine(
    new_votes: np.ndarray,
    u: np.ndarray,
    u_total: np.ndarray,
    alive: dict[int, np.ndarray],
    cfg: DsiConfig,
    res: dict[str, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """The combined columns of ``res`` (mx_evidence, mx_confirm, mx_confirm_rate, mx_evidence_boost, ci_low,
    ci_high, survival_rate, n_alive, alive_mask) from the votes and raw weights (experts x new rows); returns
    (weights u_i alive_i, their sum where positive, else 1): w_i = weights / sum."""
    E, n = new_votes.shape
    weights = u  # u is not needed after this: retired experts' rows are zeroed in place
    for i, a in alive.items():
        weights[i] *= a
    alive_total = (
        u_total if not alive else weights[0].copy()
    )  # weights == u when nobody retires: the same sum
    weighted, vote_sum, tmp = weights[0] * new_votes[0], new_votes[0].copy(), np.empty(n)
    for i in range(1, E):
        if alive:
            alive_total += weights[i]
        weighted += np.multiply(weights[i], new_votes[i], out=tmp)
        vote_sum += new_votes[i]
    votes_up, votes_down = new_votes > 0.5, new_votes < 0.5
    n_alive, mask = res["n_alive"], res["alive_mask"]
    n_alive[:] = E
    mask[:] = (1 << E) - 1
    for i, a in alive.items():
        votes_up[i] &= a
        votes_down[i] &= a
        n_alive -= ~a
        mask -= np.int16(1 << i) * ~a
    n_up = np.add.reduce(votes_up.view(np.int8), axis=0, dtype=np.int8)
    n_dn = np.add.reduce(votes_down.view(np.int8), axis=0, dtype=np.int8)
    live = alive_total > 0
    safe_total = np.where(live, alive_total, 1.0)
    e = np.clip(np.where(live, weighted / safe_total, 0.5), 0.0, 1.0)
    agree = np.where(e >= 0.5, n_up, n_dn)
    evid = np.round(e, 2, out=res["mx_evidence"])
    rate = np.round(agree / np.maximum(n_alive, 1), 2, out=res["mx_confirm_rate"])
    table = _ci_table(E, cfg.ci_level)
    ci_idx = n_up.astype(np.intp) * (E + 1) + n_dn
    np.logical_and(
        np.maximum(evid, 1.0 - evid) >= cfg.evidence_threshold,
        rate >= cfg.confirm_threshold,
        out=res["mx_confirm"],
    )
    np.round(evidence_boost(e, vote_sum / E), 4, out=res["mx_evidence_boost"])
    table[0].take(ci_idx, out=res["ci_low"])
    table[1].take(ci_idx, out=res["ci_high"])
    np.round(n_alive / E, 2, out=res["survival_rate"])
    return weights, safe_total
