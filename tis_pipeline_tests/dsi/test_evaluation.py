"""The out-of-sample figures' lean rank correlation against scipy's: the same floats, bit for bit."""

import numpy as np
import pytest
from scipy.stats import rankdata, spearmanr

from tis_pipeline.dsi import evaluation


@pytest.mark.filterwarnings("ignore::scipy.stats.ConstantInputWarning")
@pytest.mark.parametrize("n", [3, 4, 17, 1000, 25_001])
@pytest.mark.parametrize("ties", ["few", "many", "half_zero"])
def test_the_coded_rank_correlation_is_spearmanr_bit_for_bit(n, ties, monkeypatch):
    monkeypatch.setattr(evaluation, "_BLOCK", 1000)  # several blocks of look-ups at these sizes
    rng = np.random.default_rng(n)
    levels = rng.integers(0, 101, n).astype(np.int8)
    fwd = np.round(rng.normal(size=n) / 100, 8 if ties == "few" else 3)
    if ties == "half_zero":
        fwd[: n // 2] = 0.0
    ranks = evaluation._twice_average_ranks(fwd) * 0.5  # scipy.stats.rankdata, exactly
    assert ranks.dtype == np.float64 and np.array_equal(ranks, rankdata(fwd))
    expected = float(spearmanr(levels, fwd).statistic)
    assert evaluation._coded_ic(levels, fwd) == expected
    twice = evaluation._twice_ranks_unless_constant(fwd)
    assert evaluation._levels_ic(levels, twice) == expected
    # the naive sign (-1, 0, 1) as levels, as the figures use it
    signs = np.sign(rng.normal(size=n)).astype(np.int8)
    got, expected = evaluation._levels_ic(signs, twice), float(spearmanr(signs, fwd).statistic)
    assert got == expected or (n == 3 and np.isnan(got) and np.isnan(expected))  # three equal signs: none


def test_a_constant_signal_or_return_has_no_rank_correlation():
    fwd = np.arange(10.0)
    assert np.isnan(evaluation._coded_ic(np.full(10, 7, np.int8), fwd))
    assert np.isnan(evaluation._coded_ic(np.arange(10, dtype=np.int8), np.zeros(10)))
    assert np.isnan(evaluation._coded_ic(np.arange(2, dtype=np.int8), fwd[:2]))
