"""Vectorised validation of a columnar batch of candidate readings.

Each reading gets a reason code; 0 means valid. The codes' names are the quarantine reasons.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from processing import kernels
from processing.catalogue import Catalogue

OK, NOT_FINITE, OUT_OF_RANGE = kernels.OK, kernels.NOT_FINITE, kernels.OUT_OF_RANGE
FUTURE, TOO_OLD = kernels.FUTURE, kernels.TOO_OLD

REASONS = {
    NOT_FINITE: "not_finite",
    OUT_OF_RANGE: "out_of_range",
    FUTURE: "bad_time",
    TOO_OLD: "bad_time",
}


def check(
    catalogue: Catalogue,
    quantity: npt.NDArray[np.int32],
    value: npt.NDArray[np.float64],
    ts_us: npt.NDArray[np.int64],
    now_us: int,
    max_skew_us: int,
    horizon_us: int,
) -> npt.NDArray[np.uint8]:
    """Reason code per reading. Unknown quantities (index -1) are not range-checked."""
    code: npt.NDArray[np.uint8] = kernels.validate(
        np.ascontiguousarray(quantity, dtype=np.int32),
        np.ascontiguousarray(value, dtype=np.float64),
        np.ascontiguousarray(ts_us, dtype=np.int64),
        catalogue.min,
        catalogue.max,
        now_us - horizon_us,
        now_us + max_skew_us,
    )
    return code


def describe(code: int, quantity: str, value: float, unit: str, lo: float, hi: float) -> str:
    """A human-readable detail for one rejected reading."""
    if code == NOT_FINITE:
        return f"{quantity}: value {value!r} is not a finite number"
    if code == OUT_OF_RANGE:
        return f"{quantity}: {value:g} {unit} is outside the possible range [{lo:g}, {hi:g}]"
    if code == FUTURE:
        return f"{quantity}: event time is in the future beyond the allowed clock skew"
    return f"{quantity}: event time is older than the accepted horizon"
