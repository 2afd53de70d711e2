"""Divergence experts: price against participation, VWAP and higher timeframes (rows 11-14 of the vote
matrix).

* ``price_volume`` = 0.5 + 0.4 sign(m5) min(|m5|/(2 s_r sqrt5), 1) clip((mean(lv_{t-4..t}) - m_v)/s_v, -1, 1)
  with m5 = r_{t-4}+..+r_t (price move confirmed by rising, contradicted by falling participation);
* ``price_vwap`` = 0.5 + 0.4 clip((c/vwap - 1)/(3 s_r sqrt(D/4)), -1, 1), vwap over the last D =
  ``vwap_window`` bars with typical price (h+l+c)/3;
* ``tf_15m``/``tf_1h``: causal resampling, higher-timeframe return ``c_t / o_first - 1`` where o_first opens
  the previous completed bucket (or the current one at series start), capped at 2 buckets of rows; vote 0.5 +
  0.3 d when sign(r_t) = d = sign(htf), 0.5 + 0.15 d when they diverge.
"""

from __future__ import annotations

import math

import numpy as np

from tis_pipeline.dsi.logic.config import DsiConfig
from tis_pipeline.dsi.logic.features import BarFeatures, htf_returns
from tis_pipeline.dsi.logic.numeric import on_vote_grid, rolling_sum


def divergence_votes(bars: BarFeatures, cfg: DsiConfig, votes: np.ndarray) -> list[np.ndarray]:
    """The four divergence votes per row into ``votes`` (4 x rows), on the 2^-16 grid; the 15m and 1h
    returns."""
    ts, o, hi, lo, c, v = bars.cols
    r, rl, lvs, s_r, ok, lag = bars.r, bars.past_returns, bars.log_volumes, bars.s_r, bars.ok, bars.lag
    m5 = r + rl[0] + rl[1] + rl[2] + rl[3]
    volume_trend = (lvs[0] + lvs[1] + lvs[2] + lvs[3] + lvs[4]) / 5.0 - bars.m_v
    np.add(
        0.5,
        0.4
        * np.sign(m5)
        * np.minimum(np.abs(m5) / (2.0 * math.sqrt(5) * s_r + 1e-12), 1.0)
        * np.clip(volume_trend / (bars.s_v + 1e-9), -1.0, 1.0)
        * ok,
        out=votes[0],
    )
    D = cfg.vwap_window
    vwap = rolling_sum((hi + lo + c) / 3.0 * v, D, lag) / np.maximum(rolling_sum(v, D, lag), 1e-300)
    vwap = np.where(vwap > 0, vwap, c)
    dev = (c / vwap - 1.0) / (3.0 * math.sqrt(D / 4.0) * s_r + 1e-12)
    np.add(0.5, 0.4 * np.clip(dev, -1.0, 1.0) * ok, out=votes[1])
    htf = htf_returns(ts, o, c, bars.starts, bars.row, (15, 60))
    for k, x in enumerate(htf):
        d = np.sign(x)
        np.add(0.5, np.where(bars.ret_sign == d, 0.3, 0.15) * d, out=votes[2 + k])
    on_vote_grid(votes, votes)
    return htf
