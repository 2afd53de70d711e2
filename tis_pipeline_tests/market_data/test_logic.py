import numpy as np
import pandas as pd
import pytest

from tis_pipeline.market_data import describe, synthetic, validate
from tis_pipeline.market_data.bars import normalise_bars

NOW = pd.Timestamp("2024-01-03 00:00", tz="UTC")


def _bars(rows):
    frame = pd.DataFrame(rows, columns=["symbol", "timestamp", "open", "high", "low", "close", "volume"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], format="ISO8601", utc=True)
    frame["source_file"] = "f.csv"
    frame["source_line"] = np.arange(2, len(frame) + 2)
    return normalise_bars(frame)


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
        (
            ["X'; DROP TABLE modules;--", "2024-01-02 10:01", 10.0, 11.0, 9.0, 10.5, 5.0],
            "market_data_1m_symbol_format",
        ),
        (["ABC", None, 10.0, 11.0, 9.0, 10.5, 5.0], "market_data_1m_timestamp_not_null"),
    ],
)
def test_each_rule_quarantines_exactly_the_bad_row(row, rule):
    checked = validate.validate_bars(_bars([GOOD, row]), now=NOW)
    assert len(checked.clean) == 1
    assert checked.clean.iloc[0]["close"] == 10.5
    assert checked.quarantine["rule"].tolist() == [rule]
    assert checked.counts == {rule: 1}
    assert checked.quarantine["source_line"].tolist() == [3]


def test_exact_duplicate_keeps_one_copy_and_conflicting_minute_keeps_none():
    conflict = ["ABC", "2024-01-02 10:05", 10.0, 12.0, 9.0, 10.5, 100.0]
    conflict_other = ["ABC", "2024-01-02 10:05", 10.0, 12.0, 9.0, 11.5, 100.0]
    checked = validate.validate_bars(_bars([GOOD, GOOD, conflict, conflict_other]), now=NOW)
    assert len(checked.clean) == 1
    assert sorted(checked.quarantine["rule"]) == ["market_data_1m_key_unique"] * 3
    messages = sorted(checked.quarantine["message"])
    assert messages[0].startswith("an identical row") and messages[2].startswith(
        "the same symbol and minute appear with"
    )


def test_missing_minutes_counts_inner_gaps_per_symbol_and_day():
    frame = _bars(
        [
            ["A", "2024-01-02 10:00", 1, 1, 1, 1, 1],
            ["A", "2024-01-02 10:01", 1, 1, 1, 1, 1],
            ["A", "2024-01-02 10:05", 1, 1, 1, 1, 1],
            ["B", "2024-01-02 10:00", 1, 1, 1, 1, 1],
        ]
    )
    gaps = describe.missing_minutes(frame).set_index("symbol")
    assert gaps.loc["A", "missing"] == 3
    assert gaps.loc["A", "bars"] == 3
    assert gaps.loc["B", "missing"] == 0


def test_a_day_fails_when_its_quarantined_share_is_over_the_limit():
    """The share is the day's quarantined rows among all its rows: one of two here, 50 %; the limit itself
    passes, and each call judges only the pieces added since the one before."""
    checked = validate.validate_bars(_bars([GOOD, ["ABC", "2024-01-02 10:01", -1, 1, 1, 1, 1]]), now=NOW)
    at_limit = validate.ValidatedTally()
    at_limit.add(checked)
    at_limit.enforce_share_limit(0.5)
    over = validate.ValidatedTally()
    over.add(checked)
    assert over.unjudged_pieces == 1
    with pytest.raises(validate.QuarantineShareExceeded, match=r"\(2024-01-02: 50\.0%\)") as failed:
        over.enforce_share_limit(0.4)
    assert failed.value.counts == {"ck_market_data_1m_prices_positive": 1}
    assert over.unjudged_pieces == 0
    clean_day = validate.validate_bars(
        _bars([["ABC", "2024-01-01 10:00", 10.0, 11.0, 9.0, 10.5, 1.0]]), now=NOW
    )
    over.add(clean_day)
    over.enforce_share_limit(0.4)  # the bad day was judged already: only the clean one is


def test_synthetic_source_is_deterministic_and_day_by_day_equals_range():
    start, end = pd.Timestamp("2024-03-01", tz="UTC"), pd.Timestamp("2024-03-04", tz="UTC")
    whole = synthetic.bars(start, end, ["AAA", "BBB"], seed=3)
    days = pd.concat(
        [synthetic.day_bars(d, ["AAA", "BBB"], seed=3) for d in pd.date_range(start, end, inclusive="left")],
        ignore_index=True,
    )
    pd.testing.assert_frame_equal(whole, days)
    again = synthetic.bars(start, end, ["AAA", "BBB"], seed=3)
    pd.testing.assert_frame_equal(whole, again)
    other = synthetic.bars(start, end, ["AAA", "BBB"], seed=4)
    assert not whole["close"].equals(other["close"])


def test_synthetic_bars_are_valid_and_realistic():
    frame = synthetic.bars(
        pd.Timestamp("2024-03-01", tz="UTC"),
        pd.Timestamp("2024-03-08", tz="UTC"),
        ["AAA", "BBB", "CCC"],
        seed=1,
    )
    checked = validate.validate_bars(normalise_bars(frame), now=NOW + pd.Timedelta(days=365))
    assert checked.counts == {}
    returns = np.log(frame["close"]).groupby(frame["symbol"]).diff().dropna()
    kurtosis = ((returns - returns.mean()) ** 4).mean() / returns.var() ** 2
    assert kurtosis > 4, "returns should be heavy-tailed"
    abs_r = returns.abs().to_numpy()
    clustering = np.corrcoef(abs_r[:-1], abs_r[1:])[0, 1]
    assert clustering > 0.05, "absolute returns should be autocorrelated (volatility clustering)"
    per_day = frame.groupby([frame["symbol"], frame["timestamp"].dt.date]).size()
    assert (per_day < 1440).all() and (per_day > 1400).all(), "a few minutes per day are missing"


def _messy_bars() -> pd.DataFrame:
    """Two symbols over two days with a row breaking each quarantine rule, duplicates, a conflict, gaps."""
    rows = [
        [s, f"2024-01-0{d} 10:{m:02d}", 10.0 + m / 100, 11.0, 9.0, 10.5 - m / 100, 100.0]
        for s in ("ABC", "XYZ")
        for d in (1, 2)
        for m in range(0, 50)
        if m not in (7, 8, 30)
    ]
    rows += [
        ["ABC", "2024-01-01 11:00", 10.0, 11.0, 9.0, np.nan, 100.0],
        ["ABC", "2024-01-01 11:01", 0.0, 11.0, 9.0, 10.0, 100.0],
        ["ABC", "2024-01-01 11:02", 10.0, 8.0, 9.0, 8.5, 100.0],
        ["ABC", "2024-01-01 11:03", 10.0, 11.0, 10.2, 10.5, 100.0],
        ["XYZ", "2024-01-02 11:04", 10.0, 11.0, 9.0, 10.5, -5.0],
        ["XYZ", "2024-01-02 11:05:30", 10.0, 11.0, 9.0, 10.5, 5.0],
        ["XYZ", "2024-01-05 11:06", 10.0, 11.0, 9.0, 10.5, 5.0],
        ["XYZ", "2024-01-02 11:07", 10.0, 1e30, 9.0, 10.5, 5.0],
        ["A" * 21, "2024-01-02 11:08", 10.0, 11.0, 9.0, 10.5, 5.0],
        [None, "2024-01-02 11:09", 10.0, 11.0, 9.0, 10.5, 5.0],
        ["ABC", None, 10.0, 11.0, 9.0, 10.5, 5.0],
        ["ABC", "2024-01-01 10:10", 10.1, 11.0, 9.0, 10.4, 100.0],  # an exact copy of a row above
        ["XYZ", "2024-01-02 10:11", 10.0, 12.0, 9.0, 10.5, 100.0],  # the same minute with other values
        ["ABC", "2024-01-02 10:50", 10.0, 30.0, 9.0, 25.0, 100.0],  # a price jump (a warning: kept)
    ]
    return _bars(rows)


def _day_pieces(frame: pd.DataFrame) -> list[validate.Validated]:
    day = frame["timestamp"].dt.floor("D")
    return [
        validate.validate_bars(
            frame[(day == d) | (day.isna() & (d == day.min()))].reset_index(drop=True), now=NOW
        )
        for d in sorted(day.dropna().unique())
    ]


def test_rules_validation_enforced_are_reported_as_judged():
    """The rules validation quarantined by are not judged again on the clean rows; the report is the same."""
    from tis_pipeline.quality.evaluate import evaluate_frame

    for checked in (
        validate.validate_bars(_messy_bars(), now=NOW),
        validate.Validated.concat(_day_pieces(_messy_bars())),
    ):
        assert len(checked.quarantine) >= 13 and checked.enforced == validate.ENFORCED_RULES
        judged = evaluate_frame(checked.clean, "market_data_1m", now=NOW)
        reported = evaluate_frame(checked.clean, "market_data_1m", now=NOW, enforced=checked.enforced)
        assert [r.name for r in reported.results] == [r.name for r in judged.results]
        failed = [r.name for r in judged.failed]
        assert "market_data_1m_no_price_jumps" in failed and [r.name for r in reported.failed] == failed
        for want, got in zip(judged.results, reported.results, strict=True):
            assert (got.passed, got.unexpected_count, got.element_count, got.skipped) == (
                want.passed,
                want.unexpected_count,
                want.element_count,
                want.skipped,
            ), want.name
            pd.testing.assert_series_equal(got.mask, want.mask)
            pd.testing.assert_frame_equal(got.failing_rows, want.failing_rows, obj=want.name)
            if want.by_symbol_day is None:  # skipped: the column is not in the frame
                assert got.by_symbol_day is None and want.skipped, want.name
            else:
                pd.testing.assert_frame_equal(got.by_symbol_day, want.by_symbol_day, obj=want.name)
            assert dict(got.details) == dict(want.details), want.name


def test_joined_pieces_enforce_the_key_only_when_apart_in_time():
    pieces = _day_pieces(_messy_bars())
    assert validate.KEY_UNIQUE_RULE in validate.Validated.concat(pieces).enforced
    again = validate.Validated.concat([pieces[0], pieces[0]])  # the same minutes twice
    assert again.enforced == validate.ENFORCED_RULES - {validate.KEY_UNIQUE_RULE}
    unknown = validate.Validated(clean=pieces[0].clean, quarantine=pieces[0].quarantine, counts={})
    assert validate.Validated.concat([unknown, pieces[1]]).enforced == frozenset()


def test_summary_equals_the_groupby_of_missing_minutes():
    """The numpy path (string symbols) against missing_minutes' groupby (taken for object symbols)."""
    frame = validate.validate_bars(_messy_bars(), now=NOW).clean
    bars = synthetic.bars(
        pd.Timestamp("2024-03-01", tz="UTC"),
        pd.Timestamp("2024-03-04", tz="UTC"),
        ["AAA", "BBB", "CCC"],
        seed=1,
    )
    shuffled = normalise_bars(bars).sample(frac=0.6, random_state=2)
    far = pd.concat([frame, frame.tail(2).assign(timestamp=pd.Timestamp("1969-12-31 23:58", tz="UTC"))])
    for case in (frame, shuffled, far, shuffled.assign(timestamp=shuffled["timestamp"].dt.as_unit("ns"))):
        assert isinstance(case["symbol"].dtype, pd.StringDtype)
        fast, slow = describe.summary(case), describe.summary(case.astype({"symbol": object}))
        assert fast == slow
        assert list(fast["missing_by_symbol"]) == list(slow["missing_by_symbol"])
    assert sum(describe.summary(frame)["missing_by_symbol"].values()) > 0


def test_quarantine_share_counts_days_far_apart_and_missing_times():
    clean = validate.validate_bars(_messy_bars(), now=NOW).clean
    far = pd.concat(
        [
            clean,
            clean.tail(3).assign(
                timestamp=[
                    pd.Timestamp("1990-05-01 10:00", tz="UTC"),
                    pd.NaT,
                    pd.Timestamp("2024-01-02 23:59", tz="UTC"),
                ]
            ),
        ]
    )
    tokyo = far.assign(timestamp=far["timestamp"].dt.tz_convert("Asia/Tokyo"))  # UTC days all the same
    for frame in (clean, far, tokyo):
        got = validate._utc_date_counts(frame["timestamp"])
        want = frame["timestamp"].dt.tz_convert("UTC").dt.date.value_counts().sort_index()
        assert got.to_dict() == want.to_dict() and list(got.index) == list(want.index)


def test_day_split_of_the_builds_equals_the_groupby_by_utc_day():
    from tis_pipeline.pg.day_partitions import _by_day

    clean = validate.validate_bars(_messy_bars(), now=NOW).clean
    one_day = clean[clean["timestamp"] < pd.Timestamp("2024-01-02", tz="UTC")]
    # one UTC day, two days in Tokyo (UTC+9): 14:30 and 15:30 UTC
    tokyo = one_day.head(2).assign(
        timestamp=pd.to_datetime(["2024-01-01 14:30", "2024-01-01 15:30"], utc=True)
        .tz_convert("Asia/Tokyo")
        .as_unit("us")
    )
    for frame in (clean, one_day, tokyo, one_day.assign(timestamp=one_day["timestamp"].dt.as_unit("ns"))):
        got, want = list(_by_day(frame)), list(frame.groupby(frame["timestamp"].dt.floor("D"), sort=True))
        assert [day for day, _ in got] == [day for day, _ in want]
        for (_, rows), (_, expected) in zip(got, want, strict=True):
            pd.testing.assert_frame_equal(rows, expected)
    assert len(list(_by_day(tokyo))) == 2 and next(iter(_by_day(one_day)))[1] is one_day


def _bars_digest(frame: pd.DataFrame) -> str:
    import hashlib

    digest = hashlib.sha256()
    for column in frame.columns:
        values = frame[column]
        digest.update(column.encode() + str(values.dtype).encode())
        if column == "symbol":
            digest.update("\n".join(values.astype(str)).encode())
        elif column == "timestamp":
            digest.update(values.array.asi8.tobytes())
        else:
            digest.update(values.to_numpy().tobytes())
    return digest.hexdigest()[:16]


def test_the_synthetic_bars_made_a_few_symbols_at_a_time_are_the_same_bits():
    """Digests of the bars as they were made before the symbols came in chunks (``SYMBOLS_PER_DRAW``): three
    chunks, the last one short, and a day of two symbols."""
    symbols = [f"S{i:05d}" for i in range(150)] + ["AAA", "BTCUSD", "ETH"]
    assert len(symbols) > 2 * synthetic.SYMBOLS_PER_DRAW
    days = synthetic.bars(pd.Timestamp("2024-01-08", tz="UTC"), pd.Timestamp("2024-01-10", tz="UTC"), symbols)
    assert (len(days), _bars_digest(days)) == (438419, "4d337e79833759fe")
    day = synthetic.day_bars(pd.Timestamp("2024-02-29", tz="UTC"), ["X", "Y"], seed=3)
    assert (len(day), _bars_digest(day)) == (2873, "bc52c68317a9e3b8")


def test_the_ar1_filter_is_scipys_lfilter_bit_for_bit():
    """``synthetic.ar1`` replaced ``scipy.signal.lfilter([1], [1, -phi], x, axis=1)`` (an import of ~1 s): the
    same float64 bits on 2,000 series of a day as drawn (shocks x 0.15), in chunks of every size the
    source draws, on wider and signed values, and for other coefficients."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(20240108)
    cases = [rng.standard_normal((2000, synthetic.MINUTES_PER_DAY)) * 0.15]
    cases += [rng.standard_normal((n, 97)) * 10.0 ** rng.integers(-8, 8) for n in (1, 2, 63, 64, 65)]
    cases += [rng.standard_t(3, (5, 500)) * 1e3, np.zeros((3, 10)), np.empty((4, 0)), np.empty((0, 5))]
    for x in cases:
        for phi in (0.97, 0.5, -0.3, 1.0):
            expected = lfilter([1.0], [1.0, -phi], x, axis=1)
            got = synthetic.ar1(x, phi)
            assert got.shape == x.shape and got.dtype == np.float64 and got.flags.c_contiguous
            assert np.array_equal(got.view(np.int64), expected.view(np.int64)), (x.shape, phi)
    assert not np.array_equal(synthetic.ar1(cases[0][:3], 0.97), cases[0][:3])  # the filter does filter
