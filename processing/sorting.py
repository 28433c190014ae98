"""Stable sorts of small non-negative integer keys in linear time.

NumPy's stable sort is a radix sort for 16-bit integers and a merge sort otherwise (about ten
times slower on a batch). Keys below 2^32 are sorted as one or two 16-bit passes, least
significant first, which is a least-significant-digit radix sort.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Index = npt.NDArray[np.intp]


def _passes(order: Index | None, key: npt.NDArray[np.integer]) -> Index:
    """Refine ``order`` (None: identity) by ``key`` (< 2^32), stably."""
    k = key.astype(np.int64, copy=False)
    top = int(k.max()) if len(k) else 0
    if top >= 1 << 32 or k.min(initial=0) < 0:
        digits = [k]  # outside the fast path: one general stable sort
    elif top >= 1 << 16:
        digits = [(k & 0xFFFF).astype(np.uint16), (k >> 16).astype(np.uint16)]
    else:
        digits = [k.astype(np.uint16)]
    for d in digits:
        if order is None:
            order = np.argsort(d, kind="stable")
        else:
            order = order[np.argsort(d[order], kind="stable")]
    assert order is not None
    return order


def stable_order(*keys: npt.NDArray[np.integer]) -> Index:
    """Indices that sort by the keys, the LAST key primary (like ``np.lexsort``), stably."""
    order: Index | None = None
    for key in keys:
        order = _passes(order, key)
    if order is None:
        raise ValueError("stable_order needs at least one key")
    return order
