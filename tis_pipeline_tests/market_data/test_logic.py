import numpy as np
import pandas as pd
import pytest

from tis_pipeline.market_data import logic, synthetic

NOW = pd.Timestamp("2024-01-03 00:00", tz="UTC")


def _bars(rows):
    frame = pd.DataFrame(rows, columns=["symbol", "timestamp", "open", "high", "low", "close", "volume"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], format="ISO8601", utc=True)
    frame["source_file"] = "f.csv"
    frame["source_line"] = np.arange(2, len(frame) + 2)
    return logic.normalise_bars(frame)


GOOD = ["ABC", "2024-01-02 10:00", 10.0, 11.0, 9.0, 10.5, 100.0]


@pytest.mark.parametrize(
    "row, rule",
    [
        (["ABC", "2024-01-02 10:01", 10.0, 11.0, 9.0, np.nan, 100.0], "market_data_1m_close_not_null"),
        (["ABC", "2024-01-02 10:01", 0.0, 11.0, 9.0, 10.0, 100.0], "ck_market_data_1m_prices_positive"),
        (["ABC", "2024-01-02 10:01", -1.0, 11.0, 9.0, 10.0, 100.0], "ck_market_data_1m_prices_positive"),
        (["ABC", "2024-01-02 10:01", 10.0, 8.0, 9.0, 8.5, 100.0], "ck_market_data_1m_high_bounds"),
        (["ABC", "2024-01-02 10:01", 10.0, 11.0, 10.2, 10.5, 100.0], "ck_market_data_1m_low_bounds"),
        (["ABC", "2024-01-02 10:01", 10.0, 11.0, 9.0, 10.5, -5.0], "ck_market_data_1m_volume_nonnegative"),
        (["ABC", "2024-01-02 10:01:30", 10.0, 11.0, 9.0, 10.5, 5.0], "market_data_1m_timestamp_aligned"),
        (["ABC", "2024-01-05 10:01", 10.0, 11.0, 9.0, 10.5, 5.0], "market_data_1m_timestamp_not_future"),
        (["ABC", "2024-01-02 10:01", 10.0, 1e30, 9.0, 10.5, 5.0], "market_data_1m_values_fit_numeric"),
        (["A" * 21, "2024-01-02 10:01", 10.0, 11.0, 9.0, 10.5, 5.0], "market_data_1m_symbol_format"),
        (["X'; DROP TABLE modules;--", "2024-01-02 10:01", 10.0, 11.0, 9.0, 10.5, 5.0], "market_data_1m_symbol_format"),
        (["ABC", None, 10.0, 11.0, 9.0, 10.5, 5.0], "market_data_1m_timestamp_not_null"),
    ],
)
def test_each_rule_quarantines_exactly_the_bad_row(row, rule):
    checked = logic.validate_bars(_bars([GOOD, row]), now=NOW)
    assert len(checked.clean) == 1
    assert checked.clean.iloc[0]["close"] == 10.5
    assert checked.quarantine["rule"].tolist() == [rule]
    assert checked.counts == {rule: 1}
    assert checked.quarantine["source_line"].tolist() == [3]


def test_exact_duplicate_keeps_one_copy_and_conflicting_minute_keeps_none():
    conflict = ["ABC", "2024-01-02 10:05", 10.0, 12.0, 9.0, 10.5, 100.0]
    conflict_other = ["ABC", "2024-01-02 10:05", 10.0, 12.0, 9.0, 11.5, 100.0]
    checked = logic.validate_bars(_bars([GOOD, GOOD, conflict, conflict_other]), now=NOW)
    assert len(checked.clean) == 1
    assert sorted(checked.quarantine["rule"]) == ["market_data_1m_key_unique"] * 3
    messages = sorted(checked.quarantine["message"])
    assert messages[0].startswith("an identical row") and messages[2].startswith("the same symbol and minute appear with")


def test_missing_minutes_counts_inner_gaps_per_symbol_and_day():
    frame = _bars([
        ["A", "2024-01-02 10:00", 1, 1, 1, 1, 1],
        ["A", "2024-01-02 10:01", 1, 1, 1, 1, 1],
        ["A", "2024-01-02 10:05", 1, 1, 1, 1, 1],
        ["B", "2024-01-02 10:00", 1, 1, 1, 1, 1],
    ])
    gaps = logic.missing_minutes(frame).set_index("symbol")
    assert gaps.loc["A", "missing"] == 3
    assert gaps.loc["A", "bars"] == 3
    assert gaps.loc["B", "missing"] == 0


def test_quarantine_share_by_day():
    checked = logic.validate_bars(_bars([GOOD, ["ABC", "2024-01-02 10:01", -1, 1, 1, 1, 1]]), now=NOW)
    share = logic.quarantine_share_by_day(checked.clean, checked.quarantine)
    assert share.tolist() == [0.5]


def test_synthetic_source_is_deterministic_and_day_by_day_equals_range():
    start, end = pd.Timestamp("2024-03-01", tz="UTC"), pd.Timestamp("2024-03-04", tz="UTC")
    whole = synthetic.bars(start, end, ["AAA", "BBB"], seed=3)
    days = pd.concat([synthetic.day_bars(d, ["AAA", "BBB"], seed=3)
                      for d in pd.date_range(start, end, inclusive="left")], ignore_index=True)
    pd.testing.assert_frame_equal(whole, days)
    again = synthetic.bars(start, end, ["AAA", "BBB"], seed=3)
    pd.testing.assert_frame_equal(whole, again)
    other = synthetic.bars(start, end, ["AAA", "BBB"], seed=4)
    assert not whole["close"].equals(other["close"])


def test_synthetic_bars_are_valid_and_realistic():
    frame = synthetic.bars(pd.Timestamp("2024-03-01", tz="UTC"), pd.Timestamp("2024-03-08", tz="UTC"),
                           ["AAA", "BBB", "CCC"], seed=1)
    checked = logic.validate_bars(logic.normalise_bars(frame), now=NOW + pd.Timedelta(days=365))
    assert checked.counts == {}
    returns = np.log(frame["close"]).groupby(frame["symbol"]).diff().dropna()
    kurtosis = ((returns - returns.mean()) ** 4).mean() / returns.var() ** 2
    assert kurtosis > 4, "returns should be heavy-tailed"
    abs_r = returns.abs().to_numpy()
    clustering = np.corrcoef(abs_r[:-1], abs_r[1:])[0, 1]
    assert clustering > 0.05, "absolute returns should be autocorrelated (volatility clustering)"
    per_day = frame.groupby([frame["symbol"], frame["timestamp"].dt.date]).size()
    assert (per_day < 1440).all() and (per_day > 1400).all(), "a few minutes per day are missing"
