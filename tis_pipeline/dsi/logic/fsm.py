"""FSM experts: a grammar over the MicroTape tokens (rows 0-3 of the vote matrix, ``FSM_EXPERTS`` order).

* ``compression_expansion`` = 0.5 + 0.4 * (narrow bars among t-6..t-1)/6 * sign(r_t) when bar t is wide and >=
  3 of the 6 were narrow;
* ``run_volume`` = 0.5 +/- 0.35 * (min(run,5) - 2)/3 for a run of >= 3 up (down) tokens while
  lv_t+lv_{t-1}+lv_{t-2} > lv_{t-3}+lv_{t-4}+lv_{t-5};
* ``absorption`` = 0.5 - 0.3 * sign(r_{t-5}+..+r_{t-1}) on a high-volume narrow bar;
* ``exhaustion`` = 0.5 -/+ 0.35 on a strong up (down) wide high-volume bar after 3 up (down) tokens.
"""

from __future__ import annotations

import numpy as np

from tis_pipeline.dsi.logic.features import BarFeatures
from tis_pipeline.dsi.logic.numeric import on_vote_grid


def _run_length(token_is: np.ndarray, previous: list[np.ndarray]) -> np.ndarray:
    """Length of the run of ``token_is`` ending at t, counted over t and ``previous`` (t-1, t-2, ...),
    int8."""
    acc, n = token_is.copy(), token_is.astype(np.int8)
    for x in previous:
        acc &= x
        n += acc
    return n


def fsm_votes(bars: BarFeatures, votes: np.ndarray) -> None:
    """The four FSM votes per row into ``votes`` (4 x rows), on the 2^-16 grid."""
    lag, rt, gt, vt = bars.lag, bars.ret_token, bars.range_token, bars.volume_token
    ret_sign, lvs, rl = bars.ret_sign, bars.log_volumes, bars.past_returns
    narrow, wide, high_volume = gt == 0, gt == 2, vt == 2
    narrow_before = sum(lag(narrow, k, False).astype(np.int8) for k in range(1, 7))
    np.add(
        0.5, (0.4 / 6) * np.where(wide & (narrow_before >= 3), narrow_before * ret_sign, 0.0), out=votes[0]
    )
    up_token, down_token = rt >= 3, rt <= 1
    up_before = [lag(up_token, k, False) for k in range(1, 5)]
    down_before = [lag(down_token, k, False) for k in range(1, 5)]
    rising = (lvs[0] + lvs[1] + lvs[2]) > (lvs[3] + lvs[4] + lvs[5])
    runs = np.maximum(_run_length(up_token, up_before) - 2, 0) - np.maximum(
        _run_length(down_token, down_before) - 2, 0
    )
    np.add(0.5, (0.35 / 3) * (runs * rising), out=votes[1])
    m5_past = rl[0] + rl[1] + rl[2] + rl[3] + rl[4]
    np.subtract(0.5, 0.3 * np.sign(m5_past) * (high_volume & narrow), out=votes[2])
    strong = wide & high_volume
    np.add(
        0.5 - 0.35 * ((rt == 4) & strong & up_before[0] & up_before[1] & up_before[2]),
        0.35 * ((rt == 0) & strong & down_before[0] & down_before[1] & down_before[2]),
        out=votes[3],
    )
    on_vote_grid(votes, votes)
