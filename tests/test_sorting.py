"""The radix sort helper equals NumPy's lexsort, stability included."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from processing.sorting import stable_order

keys = st.integers(1, 60).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 2**33), min_size=n, max_size=n),
        st.lists(st.sampled_from([0, 1, 2, 70_000, 2**31]), min_size=n, max_size=n),
    )
)


@settings(max_examples=300, deadline=None, database=None)
@given(keys)
def test_equals_lexsort(k: tuple[list[int], list[int]]) -> None:
    a, b = np.array(k[0], dtype=np.int64), np.array(k[1], dtype=np.int64)
    assert stable_order(a, b).tolist() == np.lexsort((a, b)).tolist()
    assert stable_order(b).tolist() == np.argsort(b, kind="stable").tolist()
