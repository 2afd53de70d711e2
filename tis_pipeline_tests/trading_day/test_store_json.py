"""The trading day's JSON columns (``store.to_json``, orjson): the same JSON values as the standard library's
canonical encoding gave, keys sorted, the same bytes for the same object."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tis_pipeline.trading_day import store


def _stdlib(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=store._plain)


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.integers(min_value=-(10**6), max_value=10**6).map(np.int64),
    st.floats(allow_nan=False, allow_infinity=False, width=64).map(np.float64),
    st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1)).map(
        lambda t: pd.Timestamp(t, tz="UTC")
    ),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        # text keys: json cannot sort a dict of text and int keys together (the int key: below)
        st.dictionaries(st.text(max_size=8), inner, max_size=5),
    ),
    max_leaves=30,
)


def _sorted_keys(pairs: list[tuple[str, object]]) -> dict:
    keys = [k for k, _ in pairs]
    assert keys == sorted(keys)
    return dict(pairs)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.text(max_size=8), _values, max_size=6))
def test_the_json_values_are_the_standard_librarys(value):
    text = store.to_json(value)
    assert text is not None
    assert json.loads(text, object_pairs_hook=_sorted_keys) == json.loads(_stdlib(value))
    assert store.to_json(value) == text  # the same bytes again


def test_the_forms_that_differ_from_the_standard_librarys_text_are_the_same_values():
    when = pd.Timestamp("2024-01-08 10:11", tz="UTC")
    value = {"small": 1e-07, "text": "é\u2028€", "when": when, "by_n": {3: "int key", 12: "another"}}
    text = store.to_json(value)
    assert text == (
        '{"by_n":{"12":"another","3":"int key"},"small":1e-7,"text":"é\u2028€",'
        '"when":"2024-01-08T10:11:00+00:00"}'
    )
    assert json.loads(text) == json.loads(_stdlib(value))
    assert store.to_json(np.float64("nan")) is None and store.to_json(None) is None
    assert store.to_json([np.int64(7), np.bool_(True), np.float32(0.5)]) == "[7,true,0.5]"


def test_what_the_standard_library_refused_is_still_refused():
    for bad in ({"at": dt.datetime(2024, 1, 8)}, {"s": {1, 2}}, {"b": b"raw"}):
        with pytest.raises(TypeError):
            _stdlib(bad)
        with pytest.raises(TypeError):
            store.to_json(bad)
