"""Anomaly experts: shock magnitudes of the standardised features (rows 7-10 of the vote matrix).

Magnitude a in [0, 1] with k-squared saturation ``x^2/(x^2+k^2)``: ``return`` a(|z_r|, 4), ``range``
a(max(q_g-1, 0), 2), ``volume`` a(max(z_v, 0), 3), ``multivariate`` = d2/(d2+36) with the robust
Mahalanobis-like ``d2 = z_r^2 + (2 max(q_g-1,0))^2 + max(z_v,0)^2``.  Output column = a; vote =
0.5 + 0.3 * a * dir * sign(r_t) with dir = (-1, -1, +1, -1) (return/range/multivariate shocks revert, volume
shocks continue).
"""

from __future__ import annotations

import numpy as np

from tis_pipeline.dsi.logic.config import ANOMALY_DIRECTION
from tis_pipeline.dsi.logic.features import BarFeatures
from tis_pipeline.dsi.logic.numeric import on_vote_grid, saturate


def anomaly_magnitudes(bars: BarFeatures) -> list[np.ndarray]:
    """a_return, a_range, a_volume, a_multivariate per row."""
    abs_zr, excess_range, excess_volume = (
        np.abs(bars.zr),
        np.maximum(bars.qg - 1.0, 0.0),
        np.maximum(bars.zv, 0.0),
    )
    d2 = abs_zr * abs_zr + 4.0 * excess_range * excess_range + excess_volume * excess_volume
    return [
        saturate(abs_zr, 4.0),
        saturate(excess_range, 2.0),
        saturate(excess_volume, 3.0),
        d2 / (d2 + 36.0),
    ]


def anomaly_votes(magnitudes: list[np.ndarray], ret_sign: np.ndarray, votes: np.ndarray) -> None:
    """The four anomaly votes per row into ``votes`` (4 x rows), on the 2^-16 grid."""
    for k, (a, d) in enumerate(zip(magnitudes, ANOMALY_DIRECTION, strict=True)):
        on_vote_grid(0.5 + 0.3 * d * a * ret_sign, votes[k])
