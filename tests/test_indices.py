"""Indices against /work/shared/reference/indices.md: spot values, worked cases, every band edge.

The expected tables below are transcribed from indices.md independently of index_tables.toml, so a
typo in the data file fails here instead of being copied into the expectations.
"""

from __future__ import annotations

import copy
import math
import tomllib
import warnings
from importlib import resources
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processing import indices as ix

INF = math.inf


def one(x: Any) -> float:
    """A 0-d result as a float (NaN stays NaN)."""
    return float(np.asarray(x))


def rhu(x: float) -> float:
    """Round half up, as the EPA reports (50.5 -> 51)."""
    return float(math.floor(x + 0.5 + 1e-9))


# --- US AQI ---------------------------------------------------------------------------------------

# key: (truncation step in canonical units, [(C_lo, C_hi, I_lo, I_hi)] in canonical units, top rule)
# Canonical units: PM ug/m3, O3/SO2/NO2 ppb (the EPA's O3 ppm times 1000), CO ppm.
EPA: dict[str, tuple[float, list[tuple[float, float, int, int]], str]] = {
    "pm25": (
        0.1,
        [
            (0.0, 9.0, 0, 50),
            (9.1, 35.4, 51, 100),
            (35.5, 55.4, 101, 150),
            (55.5, 125.4, 151, 200),
            (125.5, 225.4, 201, 300),
            (225.5, 325.4, 301, 500),
        ],
        "extrapolate",
    ),
    "pm10": (
        1,
        [
            (0, 54, 0, 50),
            (55, 154, 51, 100),
            (155, 254, 101, 150),
            (255, 354, 151, 200),
            (355, 424, 201, 300),
            (425, 604, 301, 500),
        ],
        "extrapolate",
    ),
    "o3": (
        1,
        [
            (0, 54, 0, 50),
            (55, 70, 51, 100),
            (71, 85, 101, 150),
            (86, 105, 151, 200),
            (106, 200, 201, 300),
        ],
        "cap",
    ),
    "o3_1h": (
        1,
        [(125, 164, 101, 150), (165, 204, 151, 200), (205, 404, 201, 300), (405, 604, 301, 500)],
        "extrapolate",
    ),
    "co": (
        0.1,
        [
            (0.0, 4.4, 0, 50),
            (4.5, 9.4, 51, 100),
            (9.5, 12.4, 101, 150),
            (12.5, 15.4, 151, 200),
            (15.5, 30.4, 201, 300),
            (30.5, 50.4, 301, 500),
        ],
        "extrapolate",
    ),
    "so2": (
        1,
        [(0, 35, 0, 50), (36, 75, 51, 100), (76, 185, 101, 150), (186, 304, 151, 200)],
        "cap",
    ),
    "so2_24h": (1, [(305, 604, 201, 300), (605, 1004, 301, 500)], "extrapolate"),
    "no2": (
        1,
        [
            (0, 53, 0, 50),
            (54, 100, 51, 100),
            (101, 360, 101, 150),
            (361, 649, 151, 200),
            (650, 1249, 201, 300),
            (1250, 2049, 301, 500),
        ],
        "extrapolate",
    ),
}


def aqi_category(aqi: float) -> int:
    for k, upper in enumerate((50, 100, 150, 200, 300, 500), start=1):
        if aqi <= upper:
            return k
    return 7  # beyond the AQI


def aqi(key: str, c: float) -> tuple[float, float]:
    r = ix.aqi_us({key: c})
    return one(r.value), one(r.category)


@pytest.mark.parametrize(
    ("key", "c", "expected"),
    [
        ("pm25", 9.0, 50),
        ("pm25", 9.1, 51),
        ("pm25", 12.0, 56),
        ("pm25", 35.4, 100),
        ("pm25", 60.0, 154),
        ("pm10", 80, 63),
        ("co", 5.0, 56),
        ("no2", 120, 105),
    ],
)
def test_aqi_spot_values(key: str, c: float, expected: int) -> None:
    assert aqi(key, c)[0] == expected


@pytest.mark.parametrize("key", sorted(EPA))
def test_aqi_every_band_edge(key: str) -> None:
    step, bands, top = EPA[key]
    for j, (lo, hi, i_lo, i_hi) in enumerate(bands):
        where = f"{key} band {j} [{lo}, {hi}]"
        assert aqi(key, lo) == (i_lo, aqi_category(i_lo)), where
        assert aqi(key, hi) == (i_hi, aqi_category(i_hi)), where
        # Truncation: half a step past the high end still reads as the high end.
        assert aqi(key, hi + step / 2)[0] == i_hi, where
        if j + 1 < len(bands):
            nxt = bands[j + 1]
            assert nxt[0] == pytest.approx(hi + step), where  # no gap in the table
            value, category = aqi(key, hi + step)
            assert value == nxt[2], where
            assert category == aqi_category(i_hi) + 1, where
    lo0, hi_top, i_top = bands[0][0], bands[-1][1], bands[-1][3]
    if lo0 > 0:  # a blank cell of the EPA table below the first band
        assert math.isnan(aqi(key, lo0 - step)[0])
    past, category = aqi(key, hi_top + step)
    if top == "extrapolate":
        # The top band's line continues; one step may still round to 500 (NO2: +0.25).
        assert past >= i_top
        assert aqi(key, hi_top + 10 * step)[0] > 500
        assert aqi(key, hi_top + 10 * step)[1] == 7
    else:
        assert past == i_top
        assert aqi(key, hi_top * 10) == (i_top, aqi_category(i_top))


def test_aqi_table_data_matches_reference() -> None:
    tables = ix.default_tables().aqi_us
    assert tables.name == "epa-aqi-2024"
    assert set(tables.inputs) == set(EPA)
    for key, (step, bands, top) in EPA.items():
        b = tables.inputs[key]
        expected = np.array(bands, dtype=float)
        np.testing.assert_allclose(b.c_lo / b.scale, expected[:, 0], atol=1e-9)
        np.testing.assert_allclose(b.c_hi / b.scale, expected[:, 1], atol=1e-9)
        np.testing.assert_allclose(b.i_lo, expected[:, 2])
        np.testing.assert_allclose(b.i_hi, expected[:, 3])
        assert b.truncate / b.scale == pytest.approx(step)
        assert b.above == top
        assert b.table.startswith("epa-aqi-2024/")


def test_aqi_overall_dominant_and_tables() -> None:
    r = ix.aqi_us(
        {"pm25": [12.0, 60.0], "pm10": 80, "co": 5.0, "no2": 120},
    )
    np.testing.assert_array_equal(r.value, [105, 154])
    np.testing.assert_array_equal(r.category, [3, 4])
    assert list(r.dominant) == ["no2", "pm25"]
    assert list(r.dominant_table) == ["epa-aqi-2024/no2-1h", "epa-aqi-2024/pm25"]
    assert list(r.category_label()) == ["Unhealthy for sensitive groups", "Unhealthy"]
    assert r.table == "epa-aqi-2024"
    assert r.sub_tables["co"] == "epa-aqi-2024/co-8h"
    np.testing.assert_array_equal(r.sub["pm10"], [63, 63])


def test_aqi_ties_name_every_pollutant() -> None:
    r = ix.aqi_us({"pm25": 9.0, "pm10": 54})  # both 50
    assert str(r.dominant) == "pm25,pm10"


def test_aqi_above_500_is_extrapolated_beyond_the_aqi() -> None:
    # 400 ug/m3 on the 301-500 band: 301 + (400 - 225.5) * 199 / 99.9 = 648.6 -> 649.
    r = ix.aqi_us({"pm25": 400.0})
    assert one(r.value) == 649
    assert one(r.category) == 7
    assert str(r.category_label()) == "Beyond the AQI"


def test_ozone_8h_and_1h_take_the_higher() -> None:
    # 8-hour 250 ppb (0.250 ppm) is beyond the 8-hour table: held at 300.
    # 1-hour 450 ppb: 301 + (0.450 - 0.405) * 199 / 0.199 = 346.
    r = ix.aqi_us({"o3": 250, "o3_1h": 450})
    assert one(r.sub["o3"]) == 300
    assert one(r.sub["o3_1h"]) == 346
    assert one(r.value) == 346
    assert str(r.dominant) == "o3"
    assert str(r.dominant_table) == "epa-aqi-2024/o3-1h"
    # Below 0.125 ppm the 1-hour value says nothing; the 8-hour one sets the index.
    r = ix.aqi_us({"o3": 60, "o3_1h": 100})
    assert math.isnan(one(r.sub["o3_1h"]))
    assert one(r.value) == one(r.sub["o3"])


def test_so2_1h_above_304_holds_200_until_24h_says_more() -> None:
    r = ix.aqi_us({"so2": 400, "so2_24h": [200, 310]})
    # 24-hour 310 ppb: 201 + (310 - 305) * 99 / 299 = 202.66 -> 203.
    np.testing.assert_array_equal(r.value, [200, 203])
    assert list(r.dominant) == ["so2", "so2"]


def test_o3_is_read_in_ppm_truncated_to_0_001() -> None:
    # 54.9 ppb = 0.0549 ppm truncates to 0.054 (50), 55 ppb is 0.055 (51).
    assert aqi("o3", 54.9)[0] == 50
    assert aqi("o3", 55.0)[0] == 51


@pytest.mark.parametrize("bad", [math.nan, -0.1, -50.0, math.inf, -math.inf])
def test_aqi_bad_input_is_nan_without_warnings(bad: float) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = ix.aqi_us({"pm25": bad})
        assert math.isnan(one(r.value))
        assert math.isnan(one(r.category))
        assert str(r.dominant) == ""
        assert str(r.category_label()) == ""
        # The other pollutants still make the index.
        r = ix.aqi_us({"pm25": bad, "pm10": 80})
        assert one(r.value) == 63
        assert str(r.dominant) == "pm10"


def test_aqi_caller_mistakes_raise() -> None:
    with pytest.raises(ValueError, match=r"pm2\.5"):
        ix.aqi_us({"pm2.5": 10})
    with pytest.raises(ValueError):
        ix.aqi_us({})


# --- Malaysian API --------------------------------------------------------------------------------

# key: (canonical per table unit, [(C_lo, C_hi, I_lo, slope)] in the table unit)
API: dict[str, tuple[float, list[tuple[float, float, float, float]]]] = {
    "pm10": (
        1,
        [
            (0, 50, 0, 1.0),
            (50, 150, 50, 0.5),
            (150, 350, 100, 0.5),
            (350, 420, 200, 1.4286),
            (420, 500, 300, 1.25),
            (500, INF, 400, 1.0),
        ],
    ),
    "co": (
        1,
        [(0, 9, 0, 11.11111), (9, 15, 100, 16.66667), (15, 30, 200, 6.66667), (30, INF, 300, 10)],
    ),
    "o3": (1000, [(0, 0.2, 0, 1000), (0.2, 0.4, 200, 500), (0.4, INF, 300, 1000)]),
    "no2": (
        1000,
        [
            (0, 0.17, 0, 588.23529),
            (0.17, 0.6, 100, 232.56),
            (0.6, 1.2, 200, 166.667),
            (1.2, INF, 300, 250),
        ],
    ),
    "so2": (
        1000,
        [
            (0, 0.04, 0, 2500),
            (0.04, 0.3, 100, 384.61),
            (0.3, 0.6, 200, 333.333),
            (0.6, INF, 300, 500),
        ],
    ),
}
MARKS = {"pm25": "**", "pm10": "*", "so2": "a", "no2": "b", "o3": "c", "co": "d"}


def api_category(api: float) -> int:
    for k, upper in enumerate((50, 100, 200, 300), start=1):
        if api <= upper:
            return k
    return 5


def api(key: str, c: float) -> tuple[float, float]:
    r = ix.api_my({key: c})
    return one(r.value), one(r.category)


@pytest.mark.parametrize("key", sorted(API))
def test_api_every_segment_edge(key: str) -> None:
    per, segments = API[key]
    for j, (lo, hi, i_lo, slope) in enumerate(segments):
        where = f"{key} segment {j} [{lo}, {hi}]"
        assert api(key, lo * per) == (rhu(i_lo), api_category(rhu(i_lo))), where
        mid = lo + (1 if hi == INF else (hi - lo) / 2)
        expected = rhu(i_lo + (mid - lo) * slope)
        assert api(key, mid * per) == (expected, api_category(expected)), where
        if hi == INF:
            continue
        at_hi = rhu(i_lo + (hi - lo) * slope)
        assert at_hi == rhu(segments[j + 1][2]), where  # the published equations join up
        assert api(key, hi * per) == (at_hi, api_category(at_hi)), where
        # Just past the edge the next equation adds 1.2 to the index.
        past = rhu(segments[j + 1][2] + 1.2)
        assert api(key, (hi + 1.2 / segments[j + 1][3]) * per) == (past, api_category(past)), where


@pytest.mark.parametrize(
    ("pm10", "expected", "category"),
    [
        (50, 50, 1),
        (52, 51, 2),
        (150, 100, 2),
        (152, 101, 3),
        (350, 200, 3),
        (350.7, 201, 4),
        (420, 300, 4),
        (420.8, 301, 5),
        (600, 500, 5),
        (601, 501, 5),
    ],
)
def test_api_band_edges(pm10: float, expected: int, category: int) -> None:
    r = ix.api_my({"pm10": pm10})
    assert (one(r.value), one(r.category)) == (expected, category)
    assert bool(r.emergency) == (expected > 500)


def test_api_labels() -> None:
    r = ix.api_my({"pm10": [10, 60, 200, 400, 700]})
    assert [s.split(" (")[0] for s in r.category_label()] == [
        "Good",
        "Moderate",
        "Unhealthy",
        "Very unhealthy",
        "Hazardous",
    ]
    assert r.table == "doe-api-psi"


def test_api_table_data_matches_reference() -> None:
    t = ix.default_tables().api_my
    for key, (per, segments) in API.items():
        b = t.inputs[key]
        expected = np.array(segments, dtype=float)
        np.testing.assert_allclose(b.c_lo / b.scale / per, expected[:, 0], atol=1e-12)
        np.testing.assert_allclose(b.c_hi / b.scale / per, expected[:, 1], atol=1e-12)
        np.testing.assert_allclose(b.i_lo, expected[:, 2])
        np.testing.assert_allclose(b.slope, expected[:, 3])
        assert b.mark == MARKS[key]
        assert b.table == f"doe-api-psi/{key}"


@pytest.mark.parametrize(
    ("key", "c"),
    [("pm25", 60.0), ("pm10", 200), ("so2", 100), ("no2", 300), ("o3", 150), ("co", 12)],
)
def test_api_mark_of_each_pollutant(key: str, c: float) -> None:
    # The pollutant in question is well above the others (all at a low background).
    background = {"pm25": 5.0, "pm10": 10, "so2": 1, "no2": 5, "o3": 5, "co": 0.2}
    r = ix.api_my({**background, key: c})
    assert str(r.mark) == MARKS[key]
    assert str(r.dominant) == key


def test_api_several_pollutants_share_the_maximum() -> None:
    # PM10 50 ug/m3 -> 50; CO 4.5 ppm -> 4.5 * 11.11111 = 49.99999 -> 50.
    r = ix.api_my({"pm10": 50, "co": 4.5})
    assert one(r.value) == 50
    assert str(r.mark) == "&"
    assert str(r.dominant) == "pm10,co"


# The DOE's PM2.5 sub-index worked by hand from its published equations (index_tables.toml names
# the source), at both ends of every band, between them, past the top and on the 0.1 steps.
@pytest.mark.parametrize(
    ("pm25", "expected", "category"),
    [
        (0.0, 0, 1),
        (6.0, 25, 1),  # 6 x 4.1667 = 25.0
        (12.0, 50, 1),  # 12 x 4.1667 = 50.0
        (12.05, 50, 1),  # truncated to 12.0
        (12.1, 51, 2),
        (40.0, 73, 2),  # 51 + 27.9 x 0.7741 = 72.6
        (75.4, 100, 2),  # 51 + 63.3 x 0.7741 = 100.0
        (75.5, 101, 3),
        (100.0, 133, 3),  # 101 + 24.5 x 1.3218 = 133.4
        (150.4, 200, 3),  # 101 + 74.9 x 1.3218 = 200.0
        (150.5, 201, 4),
        (200.0, 250, 4),  # 201 + 49.5 x 0.9909 = 250.0
        (250.4, 300, 4),  # 201 + 99.9 x 0.9909 = 299.99
        (250.5, 301, 5),
        (300.0, 350, 5),  # 301 + 49.5 x 0.9909 = 350.0
        (350.4, 400, 5),
        (350.5, 401, 5),
        (400.0, 434, 5),  # 401 + 49.5 x 0.6604 = 433.7
        (500.4, 500, 5),  # 401 + 149.9 x 0.6604 = 499.99
        (600.0, 566, 5),  # the last line goes on: 401 + 249.5 x 0.6604 = 565.8, an emergency
    ],
)
def test_api_pm25_is_the_doe_table(pm25: float, expected: int, category: int) -> None:
    r = ix.api_my({"pm25": pm25, "pm10": 0})
    assert (one(r.sub["pm25"]), one(r.value), one(r.category)) == (expected, expected, category)
    assert r.sub_tables["pm25"] == "doe-api/pm25"
    if expected > 0:
        assert str(r.dominant_table) == "doe-api/pm25"
        assert str(r.mark) == "**"
    assert bool(r.emergency) == (expected > 500)


@pytest.mark.parametrize("bad", [math.nan, -1.0, math.inf])
def test_api_bad_input_is_nan(bad: float) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = ix.api_my({"so2": bad, "o3": [bad, 40]})
        assert math.isnan(one(r.value[0]))
        assert str(r.mark[0]) == ""
        assert one(r.value[1]) == 40  # 0.040 ppm * 1000
        assert str(r.mark[1]) == "c"


# --- NowCast --------------------------------------------------------------------------------------

NAN = math.nan


def test_nowcast_weight_factor_floor() -> None:
    # Newest last: ..., 10, 20, 40 (older hours missing). min/max = 10/40 = 0.25 < 0.5, so w = 0.5.
    # (40*1 + 20*0.5 + 10*0.25) / (1 + 0.5 + 0.25) = 52.5 / 1.75 = 30.0
    hours = [NAN] * 9 + [10, 20, 40]
    assert one(ix.nowcast(hours)) == pytest.approx(30.0)
    # A 13th, older hour is outside the window and changes nothing.
    assert one(ix.nowcast([1000.0, *hours])) == pytest.approx(30.0)
    # Shorter input counts as older hours missing.
    assert one(ix.nowcast([10, 20, 40])) == pytest.approx(30.0)


def test_nowcast_weight_factor_above_floor() -> None:
    # 20 then 16 (newest): w = 16/20 = 0.8. (16 + 20*0.8) / (1 + 0.8) = 32 / 1.8 = 17.777...
    assert one(ix.nowcast([20, 16])) == pytest.approx(32 / 1.8)
    # A steady series gives itself (w = 1): all 12 hours at 12.3.
    assert one(ix.nowcast([12.3] * 12)) == pytest.approx(12.3)
    # All zero: max 0, w taken as 1, NowCast 0.
    assert one(ix.nowcast([0.0] * 12)) == 0.0


def test_nowcast_missing_hours_drop_out_of_both_sums() -> None:
    # Newest last: 40, NaN, 40 -> only hours 0 and 2 ago count. w = 1: (40 + 40) / 2 = 40.
    assert one(ix.nowcast([40, NAN, 40])) == pytest.approx(40.0)
    # Negative hours are missing too: 10, -5, 20 -> 20 (0 ago) and 10 (2 ago), w = 0.5:
    # (20 + 10*0.25) / (1 + 0.25) = 22.5 / 1.25 = 18.0
    assert one(ix.nowcast([10, -5, 20])) == pytest.approx(18.0)


def test_nowcast_minimum_data_rule() -> None:
    # Two of the three newest hours must be valid.
    assert math.isnan(one(ix.nowcast([5.0] * 10 + [NAN, NAN])))
    assert math.isnan(one(ix.nowcast([5.0] * 9 + [NAN, 5.0, NAN])))
    assert one(ix.nowcast([5.0] * 9 + [5.0, 5.0, NAN])) == pytest.approx(5.0)
    assert math.isnan(one(ix.nowcast([NAN] * 12)))


def test_nowcast_ozone_variant() -> None:
    # Ozone: no 0.5 floor. Newest last 15, 30, 60 ppb: w = 15/60 = 0.25.
    # (60 + 30*0.25 + 15*0.0625) / (1 + 0.25 + 0.0625) = 68.4375 / 1.3125 = 365/7 = 52.142857...
    assert one(ix.nowcast([15, 30, 60], "o3")) == pytest.approx(365 / 7)
    # The PM rule on the same hours floors w at 0.5: (60 + 15 + 3.75) / 1.75 = 45.0
    assert one(ix.nowcast([15, 30, 60], "pm25")) == pytest.approx(45.0)
    # Ozone looks back 8 hours: a 9th, older hour is ignored.
    assert one(ix.nowcast([999.0] + [NAN] * 5 + [15, 30, 60], "o3")) == pytest.approx(365 / 7)


def test_nowcast_is_vectorised_over_rows() -> None:
    rows = np.array([[NAN] * 9 + [10, 20, 40], [NAN] * 9 + [15, 30, 60], [NAN] * 12])
    np.testing.assert_allclose(ix.nowcast(rows), [30.0, 45.0, NAN])
    assert ix.nowcast(rows).shape == (3,)
    # The PM10 NowCast follows the PM rule.
    np.testing.assert_allclose(ix.nowcast(rows, "pm10"), [30.0, 45.0, NAN])


def test_nowcast_caller_mistakes_raise() -> None:
    with pytest.raises(ValueError):
        ix.nowcast([1.0, 2.0], "no2")
    with pytest.raises(ValueError):
        ix.nowcast(5.0)


# --- DOE-WQI --------------------------------------------------------------------------------------


# Literal sub-index equations from indices.md (unclamped), for comparison with the data-driven ones.
def si_do(x: float) -> float:
    return 0.0 if x <= 8 else 100.0 if x >= 92 else -0.395 + 0.030 * x**2 - 0.00020 * x**3


def si_bod(x: float) -> float:
    return 100.4 - 4.23 * x if x <= 5 else 108 * math.exp(-0.055 * x) - 0.1 * x


def si_cod(x: float) -> float:
    return 99.1 - 1.33 * x if x <= 20 else 103 * math.exp(-0.0157 * x) - 0.04 * x


def si_an(x: float) -> float:
    if x <= 0.3:
        return 100.5 - 105 * x
    return 94 * math.exp(-0.573 * x) - 5 * abs(x - 2) if x < 4 else 0.0


def si_ss(x: float) -> float:
    if x <= 100:
        return 97.5 * math.exp(-0.00676 * x) + 0.05 * x
    return 71 * math.exp(-0.0016 * x) - 0.015 * x if x < 1000 else 0.0


def si_ph(p: float) -> float:
    if p < 5.5:
        return 17.2 - 17.2 * p + 5.02 * p**2
    if p < 7:
        return -242 + 95.5 * p - 6.67 * p**2
    if p < 8.75:
        return -181 + 82.4 * p - 6.05 * p**2
    return 536 - 77.0 * p + 2.76 * p**2


LITERAL_SI = {"do": si_do, "bod": si_bod, "cod": si_cod, "an": si_an, "ss": si_ss, "ph": si_ph}
EDGES = {
    "do": [0, 5, 8, 8.0001, 50, 91.999, 92, 92.001, 120, 400],
    "bod": [0, 1, 4.9999, 5, 5.0001, 12, 40, 60, 500],
    "cod": [0, 10, 19.999, 20, 20.001, 80, 190, 300, 5000],
    "an": [0, 0.1, 0.2999, 0.3, 0.3001, 2, 3.9, 3.999, 4, 4.001, 50],
    "ss": [0, 50, 99.999, 100, 100.001, 500, 999, 1000, 1001, 20000],
    "ph": [0, 1.7, 5.4999, 5.5, 6.5, 6.999, 7, 8, 8.7499, 8.75, 10, 14],
}


@pytest.mark.parametrize("name", sorted(LITERAL_SI))
def test_wqi_sub_indices_follow_the_published_equations(name: str) -> None:
    t = ix.default_tables().wqi_my
    xs = np.array(EDGES[name], dtype=float)
    got = ix.wqi_sub_index(t.subs[name], xs, t.clamp)
    expected = [min(100.0, max(0.0, LITERAL_SI[name](x))) for x in xs]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize(
    ("do_mg_l", "bod", "cod", "an", "ss", "ph", "wqi", "wqi_class", "status"),
    [
        (7.0, 1.5, 12, 0.15, 15, 7.2, 91.9, 2, "clean"),  # clean lake
        (5.2, 4.0, 28, 0.6, 85, 6.8, 73.4, 3, "slightly polluted"),  # after storm inflow
        (2.0, 12, 80, 3.0, 300, 6.2, 37.6, 4, "polluted"),  # polluted
    ],
)
def test_wqi_worked_cases(
    do_mg_l: float,
    bod: float,
    cod: float,
    an: float,
    ss: float,
    ph: float,
    wqi: float,
    wqi_class: int,
    status: str,
) -> None:
    # The reference's WQI values use the unrounded % saturation at 29 C (the rounded 26 % of the
    # polluted case would give 37.49).
    do_sat = ix.do_saturation(do_mg_l, 29.0)
    r = ix.wqi_my(do_sat, bod, cod, an, ss, ph)
    assert one(r.value) == pytest.approx(wqi, abs=0.1)
    assert one(r.wqi_class) == wqi_class
    assert str(r.class_label()) == ("I", "II", "III", "IV", "V")[wqi_class - 1]
    assert str(r.status_label()) == status
    assert r.table == "doe-wqi"


def test_do_saturation() -> None:
    # 14.652 - 0.41022*29 + 0.0079910*29^2 - 0.000077774*29^3 = 7.5792 mg/l at 29 C.
    np.testing.assert_allclose(
        ix.do_saturation([7.0, 5.2, 2.0, 7.579220914], 29.0),
        [92.36, 68.61, 26.39, 100.0],
        atol=0.01,
    )
    bad = ix.do_saturation([-1.0, NAN, 5.0, 5.0, 5.0], [20, 20, -1, 51, NAN])
    assert np.isnan(bad).all()


@pytest.mark.parametrize(
    ("wqi", "wqi_class"),
    [
        (100, 1),
        (92.71, 1),
        (92.7, 2),
        (76.5, 2),
        (76.49, 3),
        (51.9, 3),
        (51.89, 4),
        (31.0, 4),
        (30.99, 5),
        (0, 5),
    ],
)
def test_wqi_class_bounds(wqi: float, wqi_class: int) -> None:
    assert one(ix.wqi_class(wqi)) == wqi_class


@pytest.mark.parametrize(
    ("wqi", "status"), [(100, 1), (81, 1), (80.99, 2), (60, 2), (59.99, 3), (0, 3)]
)
def test_wqi_status_bounds(wqi: float, status: int) -> None:
    assert one(ix.wqi_status(wqi)) == status


def test_wqi_bad_input_is_nan() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = ix.wqi_my([90, -1, 90, 90, NAN], 1.5, 12, 0.15, 15, [7.2, 7.2, 14.5, -0.1, 7.2])
        assert np.isnan(r.value[1:]).all()
        assert np.isnan(r.wqi_class[1:]).all()
        assert not math.isnan(one(r.value[0]))
        assert math.isnan(one(r.sub["ph"][2]))
        assert one(r.sub["do"][2]) == pytest.approx(si_do(90))  # the others still come out
        assert math.isnan(one(ix.wqi_class(NAN)))


def test_wqi_published_curves_jump_up_where_pieces_meet() -> None:
    # Documented, not fixed: the DOE equations are discontinuous, and just past these edges the
    # sub-index is higher. A change here means the equations (or our reading of them) changed.
    t = ix.default_tables().wqi_my
    for name, edge in [("bod", 5.0), ("cod", 20.0), ("an", 0.3), ("ss", 100.0)]:
        at, past = ix.wqi_sub_index(t.subs[name], [edge, edge + 1e-6], t.clamp)
        assert past > at + 1, name


# --- level of service -----------------------------------------------------------------------------

LOS_EDGES = {
    # higher is better: A strictly above 80, so 80 itself is B
    "hcm-urban-street": [(100, 1), (80.01, 1), (80, 2), (67.01, 2), (67, 3), (50.01, 3), (50, 4),
                         (40.01, 4), (40, 5), (30.01, 5), (30, 6), (0, 6)],
    "hcm2010-urban-street": [(85.01, 1), (85, 2), (80, 2), (67, 3), (30, 6)],
    # lower is better: A up to and including 11
    "hcm-freeway": [(0, 1), (11, 1), (11.01, 2), (18, 2), (18.01, 3), (26, 3), (26.01, 4), (35, 4),
                    (35.01, 5), (45, 5), (45.01, 6), (200, 6)],
    "hcm-signalised": [(0, 1), (10, 1), (10.01, 2), (20, 2), (20.01, 3), (35, 3), (35.01, 4),
                       (55, 4), (55.01, 5), (80, 5), (80.01, 6)],
}  # fmt: skip


@pytest.mark.parametrize("table", sorted(LOS_EDGES))
def test_los_band_edges(table: str) -> None:
    measures, levels = zip(*LOS_EDGES[table], strict=True)
    np.testing.assert_array_equal(ix.los_level(table, list(measures)), levels)


def test_los_urban_street_from_speeds() -> None:
    r = ix.los("hcm-urban-street", speed=[81, 80, 45, 30, -1, 50], free_flow_speed=[100] * 5 + [0])
    np.testing.assert_array_equal(r.value, [1, 2, 4, 6, NAN, NAN])
    assert list(r.label()) == ["A", "B", "D", "F", "", ""]
    assert r.table == "hcm-urban-street"


def test_los_freeway_from_loop_occupancy() -> None:
    # Occupancy 10 %, 5 m vehicle + 2 m loop: 10/100 * 1000 / 7 = 14.29 veh/km/ln
    # = 23.0 pc/mi/ln -> C. With a 4 m vehicle: 16.67 veh/km/ln = 26.8 pc/mi/ln -> D.
    r = ix.los("hcm-freeway", occupancy=10)
    assert one(r.measure) == pytest.approx(100 / 7 * 1.609344)
    assert one(r.value) == 3
    assert r.unit == "pc/mi/ln"
    r = ix.los("hcm-freeway", occupancy=10, vehicle_length_m=4.0, loop_length_m=2.0)
    assert one(r.value) == 4
    # Without occupancy: k = flow / speed = 1800 / 90 = 20 veh/km/ln = 32.2 pc/mi/ln -> D.
    r = ix.los("hcm-freeway", flow=1800, speed=90)
    assert one(r.measure) == pytest.approx(20 * 1.609344)
    assert one(r.value) == 4
    # Demand above capacity is F whatever the density says; exactly at capacity is not.
    r = ix.los("hcm-freeway", occupancy=[2, 2, 2], flow=[2300, 2200, NAN], capacity=2200)
    np.testing.assert_array_equal(r.value, [6, 1, 1])


def test_los_signalised() -> None:
    r = ix.los("hcm-signalised", delay=[5, 30, 90, -3], flow=[500, 900, 500, 500], capacity=800)
    np.testing.assert_array_equal(r.value, [1, 6, 6, NAN])


def test_loop_helpers() -> None:
    np.testing.assert_allclose(ix.loop_flow([30, 0, -1, 5], [60, 60, 60, 0]), [1800, 0, NAN, NAN])
    np.testing.assert_allclose(
        ix.loop_density([0, 7, 100, 101, -1, NAN]), [0, 10, 1000 / 7, NAN, NAN, NAN]
    )


def test_los_caller_mistakes_raise() -> None:
    with pytest.raises(ValueError):
        ix.los("hcm-nowhere", speed=50, free_flow_speed=60)
    with pytest.raises(ValueError, match="free_flow_speed"):
        ix.los("hcm-urban-street", speed=50)
    with pytest.raises(ValueError):
        ix.los("hcm-freeway")
    with pytest.raises(ValueError):
        ix.los_level("nope", 3)


# --- tables as data -------------------------------------------------------------------------------


def shipped() -> dict[str, Any]:
    text = resources.files("processing").joinpath("index_tables.toml").read_text("utf-8")
    return tomllib.loads(text)


def test_tables_are_loaded_once_and_frozen() -> None:
    t = ix.default_tables()
    assert ix.default_tables() is t
    with pytest.raises(ValueError):
        t.aqi_us.inputs["pm25"].c_lo[0] = 1.0
    with pytest.raises(TypeError):
        t.aqi_us.inputs["xx"] = t.aqi_us.inputs["pm25"]  # type: ignore[index]


def test_a_corrected_table_is_a_data_change() -> None:
    data = copy.deepcopy(shipped())
    # The pre-2024 PM2.5 Good band ended at 12.0: with it, 12.0 is 50 instead of 56.
    bands = data["aqi_us"]["input"]["pm25"]["bands"]
    bands[0][1] = 12.0
    bands[1][0] = 12.1
    tables = ix.from_mapping(data)
    assert one(ix.aqi_us({"pm25": 12.0}, tables=tables).value) == 50
    assert one(ix.aqi_us({"pm25": 12.0}).value) == 56


def test_malformed_tables_fail_at_load() -> None:
    data = copy.deepcopy(shipped())
    data["api_my"]["input"]["pm25"]["segments"][2][0] = 12.0  # below the band before it
    with pytest.raises(ValueError, match="ascend"):
        ix.from_mapping(data)
    data = copy.deepcopy(shipped())
    data["aqi_us"]["input"]["co"]["above"] = "guess"
    with pytest.raises(ValueError):
        ix.from_mapping(data)
    data = copy.deepcopy(shipped())
    data["wqi_my"]["sub"]["do"]["weight"] = 0.3
    with pytest.raises(ValueError, match="sum"):
        ix.from_mapping(data)


# --- monotonicity ---------------------------------------------------------------------------------

AQI_SPAN = {"pm25": 700.0, "pm10": 1000.0, "o3": 400.0, "o3_1h": 900.0, "co": 80.0,
            "so2": 600.0, "so2_24h": 1500.0, "no2": 3000.0}  # fmt: skip
API_SPAN = {"pm25": 700.0, "pm10": 1000.0, "so2": 1000.0, "no2": 2000.0, "o3": 800.0, "co": 60.0}
unit = st.floats(min_value=0, max_value=1)
FAST = settings(max_examples=60, deadline=None)


def assert_non_decreasing(a: np.ndarray, b: np.ndarray) -> None:
    for x, y in zip(np.ravel(a), np.ravel(b), strict=True):
        if not math.isnan(x):  # NaN below a table's first band (o3_1h, so2_24h) is allowed
            assert not math.isnan(y) and y >= x, (x, y)


@FAST
@given(
    key=st.sampled_from(sorted(AQI_SPAN)),
    u=unit,
    v=unit,
    rest=st.lists(unit, min_size=8, max_size=8),
)
def test_aqi_is_monotone_in_each_pollutant(key: str, u: float, v: float, rest: list[float]) -> None:
    lo, hi = sorted((u * AQI_SPAN[key], v * AQI_SPAN[key]))
    others: dict[str, Any] = {
        k: r * AQI_SPAN[k] / 2 for k, r in zip(sorted(AQI_SPAN), rest, strict=True)
    }
    alone: dict[str, Any] = {key: [lo, hi]}
    for given_ in (alone, {**others, key: [lo, hi]}):
        r = ix.aqi_us(given_)
        assert_non_decreasing(r.sub[key][:1], r.sub[key][1:])
        assert_non_decreasing(r.value[:1], r.value[1:])


@FAST
@given(
    key=st.sampled_from(sorted(API_SPAN)),
    u=unit,
    v=unit,
    rest=st.lists(unit, min_size=6, max_size=6),
)
def test_api_is_monotone_in_each_pollutant(key: str, u: float, v: float, rest: list[float]) -> None:
    lo, hi = sorted((u * API_SPAN[key], v * API_SPAN[key]))
    others = {k: r * API_SPAN[k] / 2 for k, r in zip(sorted(API_SPAN), rest, strict=True)}
    r = ix.api_my({**others, key: [lo, hi]})
    assert_non_decreasing(r.sub[key][:1], r.sub[key][1:])
    assert_non_decreasing(r.value[:1], r.value[1:])


# Pieces of the WQI equations: within each, the WQI does not rise with BOD, COD or AN.
WQI_PIECES = {
    "bod": [(0.0, 5.0), (5.0 + 1e-9, 200.0)],
    "cod": [(0.0, 20.0), (20.0 + 1e-9, 2000.0)],
    "an": [(0.0, 0.3), (0.3 + 1e-9, 4.0 - 1e-9), (4.0, 100.0)],
}
WQI_ARGS = ("do", "bod", "cod", "an", "ss", "ph")


@FAST
@given(
    name=st.sampled_from(sorted(WQI_PIECES)),
    piece=st.integers(0, 2),
    u=unit,
    v=unit,
    rest=st.tuples(
        st.floats(0, 150), st.floats(0, 50), st.floats(0, 300), st.floats(0, 10),
        st.floats(0, 2000), st.floats(0, 14),
    ),
)  # fmt: skip
def test_wqi_does_not_rise_with_bod_cod_an_within_each_piece(
    name: str, piece: int, u: float, v: float, rest: tuple[float, ...]
) -> None:
    a, b = WQI_PIECES[name][piece % len(WQI_PIECES[name])]
    lo, hi = sorted((a + u * (b - a), a + v * (b - a)))
    args: dict[str, Any] = dict(zip(WQI_ARGS, rest, strict=True))
    args[name] = np.array([lo, hi])
    r = ix.wqi_my(*(args[k] for k in WQI_ARGS))
    assert r.value[1] <= r.value[0] + 1e-12
    assert r.wqi_class[1] >= r.wqi_class[0]


@FAST
@given(u=unit, v=unit, rest=st.tuples(st.floats(0, 50), st.floats(0, 300), st.floats(0, 10),
                                       st.floats(0, 2000), st.floats(0, 14)))  # fmt: skip
def test_wqi_does_not_fall_with_do(u: float, v: float, rest: tuple[float, ...]) -> None:
    lo, hi = sorted((u * 200, v * 200))
    r = ix.wqi_my(np.array([lo, hi]), *rest)
    assert r.value[1] >= r.value[0] - 1e-12


@FAST
@given(u=unit, v=unit)
def test_los_is_monotone(u: float, v: float) -> None:
    lo, hi = sorted((u, v))
    # Faster is never worse; denser or more delayed is never better.
    street = ix.los("hcm-urban-street", speed=[lo * 120, hi * 120], free_flow_speed=100).value
    assert street[1] <= street[0]
    freeway = ix.los("hcm-freeway", occupancy=[lo * 100, hi * 100]).value
    assert freeway[1] >= freeway[0]
    signal = ix.los("hcm-signalised", delay=[lo * 150, hi * 150]).value
    assert signal[1] >= signal[0]
