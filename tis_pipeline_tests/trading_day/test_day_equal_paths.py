"""The trading day's faster paths give what the paths they replaced gave, value for value and bit for bit: the
cost inputs computed at the bars a fill reads (``costs.BarCosts``), the records of a frame built a column at a
time (``population.frame_records``), ``conform`` taking a column that already has its kind's dtype, the
genome's copy in a plan (``generate._json_copy``) and the plans' bars read per anomaly type
(``generate.horizons_by_type``: the day's tables in ``test_day_inputs``)."""

from __future__ import annotations

import copy
import decimal
import uuid

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from tis_pipeline.trading_day.ecosystem.founders import founding_population
from tis_pipeline.trading_day.plans import common, costs
from tis_pipeline.trading_day.plans.generate import _json_copy, horizons_by_type, longest_horizon
from tis_pipeline.trading_day.plans.market import DayBars, prepare_bars
from tis_pipeline.trading_day.population import PLANS_NAMESPACE, frame_records, genome_of, plan_uuid
from tis_pipeline_tests.trading_day.test_day_inputs import _bars

DAY = pd.Timestamp("2024-03-04", tz="UTC")


def _bits(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype="float64").view("int64")


@pytest.mark.parametrize("volume", [True, False])
def test_the_cost_inputs_at_rows_are_those_of_every_bar_bit_for_bit(volume):
    bars = prepare_bars(_bars(DAY, 3))
    if not volume:  # quote-only bars: no volume column at all
        bars = bars.drop(columns="volume")
    config = costs.cost_config()
    whole = costs.bar_cost_inputs(bars, config)
    at_rows = costs.BarCosts(bars, config)
    rng = np.random.default_rng(11)
    rows = rng.integers(0, len(bars), 3_000)  # repeated and out of order
    spread, sigma, mean_volume = at_rows.at(rows)
    for got, column in ((spread, "spread"), (sigma, "sigma"), (mean_volume, "volume")):
        np.testing.assert_array_equal(_bits(got), _bits(whole[column].to_numpy()[rows]))
    everything = at_rows.at(np.arange(len(bars)))  # the rows not yet computed, and those already kept
    for got, column in zip(everything, ("spread", "sigma", "volume"), strict=True):
        np.testing.assert_array_equal(_bits(got), _bits(whole[column].to_numpy()))
    assert whole["spread"].nunique() > 100 and whole["sigma"].notna().mean() > 0.9
    assert whole["volume"].notna().any() == volume
    # a symbol's first bars (fewer than the window before them): the first COST_WINDOW rows of each symbol,
    # some of them among the rows drawn (every one among all the rows compared above)
    first = np.flatnonzero(bars.groupby("symbol", sort=False).cumcount().to_numpy() < costs.COST_WINDOW)
    symbol = bars["symbol"].to_numpy(dtype=object)
    each_symbols_first = [np.flatnonzero(symbol == s)[: costs.COST_WINDOW] for s in sorted(set(symbol))]
    np.testing.assert_array_equal(first, np.sort(np.concatenate(each_symbols_first)))
    assert len(first) == costs.COST_WINDOW * len(each_symbols_first) and np.isin(rows, first).sum() > 10


def test_the_cost_inputs_of_no_bar_are_nan():
    empty = prepare_bars(None)
    spread, sigma, mean_volume = costs.BarCosts(empty, costs.cost_config()).at(np.zeros(2, dtype=np.int64))
    assert np.isnan(spread).all() and np.isnan(sigma).all() and np.isnan(mean_volume).all()


def test_day_bars_keep_their_cost_inputs_per_configuration():
    prepared = DayBars(_bars(DAY, 4))
    config = costs.cost_config()
    assert prepared.bar_costs(config) is prepared.bar_costs(config)
    other = costs.CostConfig(spread_floor_bps=5.0)
    assert prepared.bar_costs(other) is not prepared.bar_costs(config)
    rows = np.arange(0, len(prepared.bars), 7)
    np.testing.assert_array_equal(
        _bits(prepared.bar_costs(other).at(rows)[0]),
        _bits(costs.bar_cost_inputs(prepared.bars, other)["spread"].to_numpy()[rows]),
    )
    assert (prepared.bar_costs(other).at(rows)[0] >= 5.0 / 1e4).all()


def _same_records(a: list[dict], b: list[dict]) -> bool:
    """Same keys in the same order, values of the same type and the same repr (NaN included)."""
    return len(a) == len(b) and all(
        list(x) == list(y) and all(type(x[k]) is type(y[k]) and repr(x[k]) == repr(y[k]) for k in x)
        for x, y in zip(a, b, strict=True)
    )


def test_a_frames_records_are_to_dict_records():
    frame = pd.DataFrame(
        {
            "number": [1.5, np.nan, -0.0],
            "count": [1, 2, 3],
            "flag": [True, False, True],
            "text": pd.Series(["x", None, "z"], dtype="str"),
            "json": pd.Series([{"a": [1, {"b": None}]}, None, [1, 2]], dtype=object),
            "numpy_in_object": pd.Series([np.float64(1.5), np.int64(3), np.bool_(True)], dtype=object),
            "when_in_object": pd.Series([np.datetime64("2024-01-01T00:00"), pd.NaT, None], dtype=object),
            "nullable": pd.Series([1, None, 3], dtype="Int64"),
            "nullable_float": pd.array([1.5, None, 2.0], dtype="Float64"),
            "nullable_bool": pd.array([True, None, False], dtype="boolean"),
            "utc": pd.to_datetime(["2024-01-01 00:00", None, "2024-01-02 00:01"], utc=True),
            "naive": pd.to_datetime(["2024-01-01", None, "2024-01-03"]),
            "span": pd.to_timedelta([1, None, 3], unit="s"),
            "category": pd.Categorical(["a", "b", "a"]),
            "category_of_numbers": pd.Categorical([1, 2, None]),
            "period": pd.period_range("2024-01", periods=3, freq="M"),
            "others_in_object": pd.Series([decimal.Decimal("1.5"), np.float32(2.5), pd.NA], dtype=object),
            "spans_in_object": pd.Series([np.timedelta64(5, "s"), pd.Timedelta(1), pd.NaT], dtype=object),
            "arrow": pd.Series([1, None, 3], dtype="int64[pyarrow]"),
        },
        index=[4, 4, 1],  # the values, not the index, make the records
    )
    assert _same_records(frame_records(frame), frame.to_dict("records"))
    assert _same_records(frame_records(frame.iloc[:0]), frame.iloc[:0].to_dict("records"))
    assert frame_records(pd.DataFrame(index=range(2))) == [{}, {}]
    records = frame_records(frame)
    records[0]["number"] = 9.0  # new dicts: the caller's to change
    assert frame["number"].iloc[0] == 1.5


def test_conform_gives_a_column_of_its_kind_what_the_conversion_gives():
    """A UTC ns time, float64 or text column is taken as it is, its NaN made the one NaN of the conversion
    (whatever NaN it held): the same frame, the same bits, as converting every column."""
    negative_nan = -np.abs(np.float64("nan"))
    plans = pd.DataFrame(
        {
            "timestamp": pd.to_datetime(
                ["2024-03-04 10:00", "2024-03-04 10:01", "2024-03-04 10:02"], utc=True
            ),
            "entry_price": np.array([1.25, negative_nan, -0.0]),
            "symbol": pd.Series(["A", None, "C"], dtype="str"),
            "entry_conditions": pd.Series([{"a": 1}, None, np.nan], dtype=object),
        },
        index=[5, 6, 7],
    )
    schema = {"timestamp": "ts", "entry_price": "num", "symbol": "txt", "entry_conditions": "json"}
    assert np.signbit(plans["entry_price"].iloc[1])

    def converted(frame: pd.DataFrame) -> pd.DataFrame:  # every column through the conversion, as it was
        out = {}
        for column, kind in schema.items():
            s = frame[column].reset_index(drop=True)
            if kind == "ts":
                s = pd.Series(pd.to_datetime(s, utc=True)).dt.as_unit("ns")
            elif kind == "num":
                s = pd.to_numeric(s.astype(object).where(s.notna(), np.nan)).astype("float64")
            elif kind == "txt":
                s = s.astype(object).where(s.notna(), None).astype("str")
            else:
                s = s.astype(object).where(s.notna(), None)
            out[column] = s
        return pd.DataFrame(out, index=pd.RangeIndex(len(frame)))

    for frame in (plans, plans.astype({"timestamp": object, "entry_price": object, "symbol": object})):
        got, want = common.conform(frame, schema), converted(frame)
        assert_frame_equal(got, want, check_exact=True)
        np.testing.assert_array_equal(
            _bits(got["entry_price"].to_numpy()), _bits(want["entry_price"].to_numpy())
        )
        assert not np.signbit(got["entry_price"].iloc[1]) and np.signbit(got["entry_price"].iloc[2])
        assert got["entry_conditions"].iloc[2] is None


def test_a_plans_genome_is_a_deep_copy():
    genome = {
        "style": "momentum",
        "anomaly_types": ["price_jump"],
        "nested": {"w": [1.5, None, True]},
        "x": (1, 2),
    }
    copied = _json_copy(genome)
    assert copied == copy.deepcopy(genome)
    assert copied is not genome and copied["anomaly_types"] is not genome["anomaly_types"]
    assert copied["nested"]["w"] is not genome["nested"]["w"]
    copied["nested"]["w"].append(0)
    assert genome["nested"]["w"] == [1.5, None, True]


def test_the_horizons_by_type_are_the_longest_of_the_alphas_planning_each_type():
    population = founding_population(DAY)
    by_type = horizons_by_type(population)
    assert isinstance(by_type, dict)
    assert max(by_type.values()) == longest_horizon(population)
    genomes = [genome_of(g) for g in population.loc[population["module_type"] == "alpha_detector", "genome"]]
    for genome in genomes:
        for anomaly_type in genome["anomaly_types"]:
            own = pd.Timedelta(minutes=common.snap_horizon(genome["horizon_minutes"])[0])
            assert by_type[anomaly_type] >= own
    assert set(by_type) == {t for g in genomes for t in g["anomaly_types"]}
    assert len(set(by_type.values())) > 1  # the types' horizons differ: fewer bars are read for some
    # a genome whose types cannot be read: the longest horizon for every event, as before
    garbled = population.copy()
    first = garbled.index[garbled["module_type"] == "alpha_detector"][0]
    for unreadable in ([["not", "hashable"]], 3, None):  # a list in the list, types that are no list
        garbled.at[first, "genome"] = {**genome_of(garbled.at[first, "genome"]), "anomaly_types": unreadable}
        assert horizons_by_type(garbled) == longest_horizon(garbled)


def test_ids_are_uuid5_of_their_text():
    for name in ("", "é", "a|b|c", "\U0001f600|x"):
        assert plan_uuid(name) == str(uuid.uuid5(PLANS_NAMESPACE, name))
