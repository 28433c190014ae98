"""The payload decoders and time parsing, on the standards' own examples and every rejection.

Pure: no database, no broker. Where a standard's example does not follow Pusat's naming
convention (``<sensor_id>:<quantity>``), its names are adapted and the test says so.
"""

from __future__ import annotations

import math

import orjson
import pytest

from ingest import native, sdm, senml
from ingest.records import (
    BAD_PAYLOAD,
    BAD_SENML,
    BAD_TIME,
    MALFORMED_JSON,
    MUST_UNDERSTAND,
    NON_NUMERIC,
    NOT_FINITE,
    REASONS,
    UNKNOWN_UNIT,
    Candidate,
    Columns,
    Decoded,
)
from ingest.timeparse import EPOCH_MAX, parse_interval, parse_time
from processing import catalogue

NOW = 1_764_252_100.0  # 2025-11-27T14:01:40Z
T0 = 1_764_252_000.0  # 2025-11-27T14:00:00Z

Row = tuple[str, str, float, float, str | None]


def enc(doc: object) -> bytes:
    return orjson.dumps(doc)


def rows(d: Decoded) -> list[Row]:
    return [(c.sensor, c.quantity, c.ts, c.value, c.unit) for c in d.readings]


def why(d: Decoded) -> list[tuple[str, int | None]]:
    return [(r.reason, r.record) for r in d.rejections]


def by_quantity(d: Decoded) -> dict[str, Candidate]:
    return {c.quantity: c for c in d.readings}


def assert_sane(d: Decoded) -> None:
    for r in d.rejections:
        assert r.reason in REASONS and r.detail
    for c in d.readings:
        assert type(c.ts) is float and type(c.value) is float
        assert c.sensor and c.quantity


# --------------------------------------------------------------------------------------------
# timeparse


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-11-27T14:00:00Z", T0),
        ("2025-11-27T22:00:00+08:00", T0),
        ("2025-11-27T08:30:00-05:30", T0),
        ("2025-11-27t14:00:00z", T0),
        ("2025-11-27 14:00:00Z", T0),
        ("2025-11-27T14:00:00.25Z", T0 + 0.25),
        ("2025-11-27T14:00:00.123456789Z", T0 + 0.123456789),
        ("2016-12-31T23:59:60Z", 1_483_228_800.0),  # a leap second: the next instant
        ("1970-01-01T00:00:00Z", 0.0),
        ("1969-12-31T23:59:59Z", -1.0),
    ],
)
def test_parse_time_rfc3339(text: str, expected: float) -> None:
    assert parse_time(text) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("x", [T0, int(T0), 0, -1.5])
def test_parse_time_epoch_seconds(x: float) -> None:
    got = parse_time(x)
    assert type(got) is float and got == x


@pytest.mark.parametrize(
    ("x", "message"),
    [
        ("2025-11-27T14:00:00", "no timezone"),
        ("2025-11-27", "not RFC 3339"),
        ("yesterday", "not RFC 3339"),
        ("", "not RFC 3339"),
        ("2025-11-27T14:00:00ZZ", "not RFC 3339"),
        ("2025-02-30T00:00:00Z", "day is out of range"),
        ("2025-13-01T00:00:00Z", "month must be"),
        ("0000-01-01T00:00:00Z", "year 0 is out of range"),
        ("2025-11-27T24:00:00Z", "impossible time of day"),
        ("2025-11-27T14:00:00+24:00", "impossible offset"),
        ("\uff12\uff10\uff12\uff15-11-27T14:00:00Z", "not RFC 3339"),  # full-width digits
        (True, "not bool"),
        (None, "not NoneType"),
        ([T0], "not list"),
        (math.nan, "finite"),
        (math.inf, "finite"),
        (-math.inf, "finite"),
        (1_764_252_000_000, "milliseconds"),
        (10**400, "outside the years"),
    ],
)
def test_parse_time_errors(x: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_time(x)


def test_parse_interval() -> None:
    start, end = parse_interval("2025-11-27T13:55:00Z/2025-11-27T14:00:00Z")
    assert (start, end) == (T0 - 300, T0)
    assert parse_interval("2025-11-27T14:00:00Z/2025-11-27T22:00:00+08:00") == (T0, T0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2025-11-27T14:00:00Z/2025-11-27T13:00:00Z", "ends before it starts"),
        ("2025-11-27T14:00:00Z", "must be 'start/end'"),
        ("2025-11-27T14:00:00Z/2025-11-27T15:00:00Z/2025-11-27T16:00:00Z", "must be"),
        ("2025-11-27T13:00:00/2025-11-27T14:00:00", "no timezone"),
        ("2025-11-27T13:00:00Z/PT1H", "not RFC 3339"),
    ],
)
def test_parse_interval_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_interval(text)


# --------------------------------------------------------------------------------------------
# SenML: examples


def test_senml_wetland_buoy_example() -> None:
    """The example of payloads.md, as is."""
    pack = b"""[{"bn": "WQ-WET-03:", "bt": 1764252000, "n": "water_level", "u": "m", "v": 1.21},
     {"n": "do", "u": "mg/l", "v": 6.4}, {"n": "ph", "u": "pH", "v": 7.1},
     {"n": "turbidity", "u": "NTU", "v": 9.5, "t": 60}]"""
    d = senml.decode(pack, NOW)
    assert d.rejections == []
    assert rows(d) == [
        ("WQ-WET-03", "water_level", T0, 1.21, "m"),
        ("WQ-WET-03", "do", T0, 6.4, "mg/l"),
        ("WQ-WET-03", "ph", T0, 7.1, "pH"),
        ("WQ-WET-03", "turbidity", T0 + 60, 9.5, "NTU"),
    ]
    assert_sane(d)


def test_senml_rfc8428_multiple_datapoints_at_now() -> None:
    """RFC 8428 section 5.1.2: no time anywhere means "now"; the sensor part keeps its colons."""
    pack = [
        {"bn": "urn:dev:ow:10e2073a01080063:", "n": "voltage", "u": "V", "v": 120.1},
        {"n": "current", "u": "A", "v": 1.2},
    ]
    assert rows(senml.decode(enc(pack), NOW)) == [
        ("urn:dev:ow:10e2073a01080063", "voltage", NOW, 120.1, "V"),
        ("urn:dev:ow:10e2073a01080063", "current", NOW, 1.2, "A"),
    ]


def test_senml_rfc8428_base_time_plus_time_and_base_unit() -> None:
    """RFC 8428 section 5.1.3: bt + t (t negative), bu for records without u, bver 5."""
    bt = 1.276020076001e09
    pack = [
        {"bn": "urn:dev:ow:10e2073a0108006:", "bt": bt, "bu": "A", "bver": 5}
        | {"n": "voltage", "u": "V", "v": 120.1},
        {"n": "current", "t": -5, "v": 1.2},
        {"n": "current", "t": -4, "v": 1.3},
        {"n": "current", "t": -3, "v": 1.4},
        {"n": "current", "t": -2, "v": 1.5},
        {"n": "current", "t": -1, "v": 1.6},
        {"n": "current", "v": 1.7},
    ]
    d = senml.decode(enc(pack), NOW)
    assert d.rejections == []
    assert rows(d)[0] == ("urn:dev:ow:10e2073a0108006", "voltage", bt, 120.1, "V")
    currents = d.readings[1:]
    assert [c.ts - bt for c in currents] == pytest.approx([-5, -4, -3, -2, -1, 0])
    assert [c.value for c in currents] == [1.2, 1.3, 1.4, 1.5, 1.6, 1.7]
    assert {c.unit for c in currents} == {"A"}


def test_senml_rfc8428_records_without_n() -> None:
    """RFC 8428 section 5.1.4's stream, adapted: bn names sensor and quantity, records have no n."""
    bt = 1.320067464e09
    pack = [{"bn": "urn:dev:ow:10e2073a01080063:humidity", "bt": bt, "bu": "%RH", "v": 21.2}] + [
        {"t": t, "v": v} for t, v in [(10, 21.3), (20, 21.4), (30, 21.4), (40, 21.5)]
    ]
    d = senml.decode(enc(pack), NOW)
    assert d.rejections == []
    assert {(c.sensor, c.quantity, c.unit) for c in d.readings} == {
        ("urn:dev:ow:10e2073a01080063", "humidity", "%RH")
    }
    assert [c.ts - bt for c in d.readings] == [0, 10, 20, 30, 40]
    assert [c.value for c in d.readings] == [21.2, 21.3, 21.4, 21.4, 21.5]


def test_senml_rfc8428_multiple_measurements_adapted() -> None:
    """RFC 8428 section 5.1.5, with names: humidity, lon and lat at the same times."""
    bt = 1.320067464e09
    pack = [
        {"bn": "urn:dev:ow:10e2073a01080063:", "bt": bt, "n": "humidity", "u": "%RH", "v": 20},
        {"n": "lon", "u": "lon", "v": 24.30621},
        {"n": "lat", "u": "lat", "v": 60.07965},
        {"n": "humidity", "u": "%RH", "t": 60, "v": 20.3},
        {"n": "lon", "u": "lon", "t": 60, "v": 24.30622},
        {"n": "battery", "u": "%EL", "t": 150, "v": 98},
    ]
    d = senml.decode(enc(pack), NOW)
    assert d.rejections == []
    assert [(c.quantity, c.ts - bt, c.unit) for c in d.readings] == [
        ("humidity", 0, "%RH"),
        ("lon", 0, "lon"),
        ("lat", 0, "lat"),
        ("humidity", 60, "%RH"),
        ("lon", 60, "lon"),
        ("battery", 150, "%EL"),
    ]


def test_senml_rfc8428_collection_of_resources() -> None:
    """RFC 8428 section 5.1.6, as is: '/' separates; the last record keeps the first bt."""
    bt = 1.320078429e09
    pack = [
        {"bn": "2001:db8::2/", "bt": bt, "n": "temperature", "u": "Cel", "v": 25.2},
        {"n": "humidity", "u": "%RH", "v": 30},
        {"bn": "2001:db8::1/", "n": "temperature", "u": "Cel", "v": 12.3},
        {"n": "humidity", "u": "%RH", "v": 67},
    ]
    assert rows(senml.decode(enc(pack), NOW)) == [
        ("2001:db8::2", "temperature", bt, 25.2, "Cel"),
        ("2001:db8::2", "humidity", bt, 30.0, "%RH"),
        ("2001:db8::1", "temperature", bt, 12.3, "Cel"),
        ("2001:db8::1", "humidity", bt, 67.0, "%RH"),
    ]


def test_senml_rfc8428_header_record_is_context_only() -> None:
    """RFC 8428 section 5.1.7 opens with a record holding only bn: no reading, no rejection."""
    pack = [
        {"bn": "urn:dev:ow:10e2073a01080063:"},
        {"n": "temp", "u": "Cel", "v": 23.1},
        {"n": "heat", "u": "/", "v": 1},
        {"n": "fan", "u": "/", "v": 0},
    ]
    d = senml.decode(enc(pack), NOW)
    assert d.rejections == []
    assert [(c.quantity, c.value) for c in d.readings] == [("temp", 23.1), ("heat", 1), ("fan", 0)]


def test_senml_header_with_an_unknown_label_is_still_a_header() -> None:
    d = senml.decode(enc([{"bn": "S1:", "bt": T0, "ext": "ignored"}, {"n": "a", "v": 1}]), NOW)
    assert d.rejections == [] and rows(d) == [("S1", "a", T0, 1.0, None)]


def test_senml_empty_record_is_rejected_not_dropped() -> None:
    d = senml.decode(enc([{"bn": "S1:"}, {}, {"ext": 1}]), NOW)
    assert why(d) == [(BAD_SENML, 1), (BAD_SENML, 2)]


def test_senml_rfc8428_other_value_types_are_not_stored() -> None:
    """RFC 8428 section 5.1.7's data types: vs/vb/vd are rejected one by one, v still lands."""
    pack = [
        {"bn": "urn:dev:ow:10e2073a01080063:", "n": "temp", "u": "Cel", "v": 23.1},
        {"n": "label", "vs": "Machine Room"},
        {"n": "open", "vb": False},
        {"n": "nfc-reader", "vd": "aGkgCg"},
    ]
    d = senml.decode(enc(pack), NOW)
    assert rows(d) == [("urn:dev:ow:10e2073a01080063", "temp", NOW, 23.1, "Cel")]
    assert why(d) == [(NON_NUMERIC, 1), (NON_NUMERIC, 2), (NON_NUMERIC, 3)]
    assert all("string/boolean/data values are not stored" in r.detail for r in d.rejections)


def test_senml_relative_times() -> None:
    """Resolved times below 2**28 are relative to now: 0 is now, -5 five seconds ago."""
    pack = [
        {"bn": "S1:", "n": "a", "v": 1},  # no time at all
        {"n": "b", "t": 0, "v": 2},
        {"n": "c", "t": -5, "v": 3},
        {"n": "d", "t": 2.5, "v": 4},  # slightly in the future
        {"bt": -60, "n": "e", "t": 10, "v": 5},  # relative bt + t
        {"bt": 0, "n": "f", "t": 2**28, "v": 6},  # at 2**28: absolute
        {"bt": T0, "n": "g", "t": -30, "v": 7},  # absolute bt + negative t
    ]
    d = senml.decode(enc(pack), NOW)
    assert d.rejections == []
    assert [c.ts for c in d.readings] == [NOW, NOW, NOW - 5, NOW + 2.5, NOW - 50, 2.0**28, T0 - 30]


def test_senml_base_value_and_base_unit() -> None:
    pack = [
        {"bn": "PUMP-7:", "bv": 100, "bu": "m3/s", "n": "water_flow", "v": 1.5},
        {"n": "water_flow", "t": 1, "v": -2},
        {"bn": "PUMP-7:water_level"},  # a header naming the next records
        {"t": 2, "u": "m"},  # no v: the value is bv itself
        {"bv": 0, "bu": "cm", "t": 3, "v": 42},  # redefined base value and unit
        {"bn": "PUMP-7:", "n": "rain", "u": "mm/h", "v": 0.5},  # u overrides bu for one record
        {"n": "queue_length", "v": 7},
    ]
    d = senml.decode(enc(pack), NOW)
    assert d.rejections == []
    assert [(c.quantity, c.value, c.unit) for c in d.readings] == [
        ("water_flow", 101.5, "m3/s"),
        ("water_flow", 98.0, "m3/s"),
        ("water_level", 100.0, "m"),
        ("water_level", 42.0, "cm"),
        ("rain", 0.5, "mm/h"),
        ("queue_length", 7.0, "cm"),
    ]


def test_senml_no_unit_is_none() -> None:
    d = senml.decode(enc([{"n": "AQ-1:pm25", "v": 3}]), NOW)
    assert rows(d) == [("AQ-1", "pm25", NOW, 3.0, None)]


def test_senml_split_at_the_last_separator() -> None:
    pack = [
        {"n": "a/b/c:d", "v": 1},
        {"n": "a:b/c", "v": 2},
        {"n": "x.y_z-1:pm2.5_raw", "v": 3},
    ]
    got = [(c.sensor, c.quantity) for c in senml.decode(enc(pack), NOW).readings]
    assert got == [("a/b/c", "d"), ("a:b", "c"), ("x.y_z-1", "pm2.5_raw")]


def test_senml_unknown_labels_without_underscore_are_ignored() -> None:
    pack = [{"bn": "S1:", "n": "pm25", "v": 4, "ext": {"x": 1}, "foo": "bar"}]
    d = senml.decode(enc(pack), NOW)
    assert d.rejections == [] and len(d.readings) == 1


def test_senml_sum_alongside_value_is_fine() -> None:
    d = senml.decode(enc([{"bn": "M1:", "bs": 10, "n": "rain", "v": 2, "s": 5}]), NOW)
    assert d.rejections == [] and d.readings[0].value == 2.0


def test_senml_update_time_is_accepted() -> None:
    d = senml.decode(enc([{"n": "M1:rain", "v": 2, "ut": 60}]), NOW)
    assert d.rejections == [] and len(d.readings) == 1


# --------------------------------------------------------------------------------------------
# SenML: rejections


GOOD = {"n": "GOOD-1:pm25", "u": "ug/m3", "v": 12.0}


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"not json",
        b'[{"n": "S1:a", "v": NaN}]',
        b'[{"n": "S1:a", "v": Infinity}]',
        b'[{"n": "S1:a", "v": 1e400}]',
        b'[{"n": "S1:a", "v": 1},]',
        b'["\xff"]',
        b'[{"n": "S1:a", "v": 1}',
    ],
)
def test_senml_malformed_json(payload: bytes) -> None:
    d = senml.decode(payload, NOW)
    assert d.readings == []
    assert why(d) == [(MALFORMED_JSON, None)]
    assert "line 1 column" in d.rejections[0].detail  # the parser's own message


@pytest.mark.parametrize("doc", [{"n": "S1:a", "v": 1}, 5, "S1:a", None, True])
def test_senml_not_an_array(doc: object) -> None:
    d = senml.decode(enc(doc), NOW)
    assert d.readings == [] and why(d) == [(BAD_SENML, None)]


def test_senml_single_record_object_gets_a_hint() -> None:
    d = senml.decode(enc({"n": "S1:a", "v": 1}), NOW)
    assert "wrap a single record" in d.rejections[0].detail


def test_senml_empty_pack() -> None:
    d = senml.decode(b"[]", NOW)
    assert d.readings == [] and d.rejections == []


def test_senml_non_object_element() -> None:
    d = senml.decode(enc([GOOD, 5, "x", None, [GOOD], GOOD]), NOW)
    assert len(d.readings) == 2
    assert why(d) == [(BAD_SENML, 1), (BAD_SENML, 2), (BAD_SENML, 3), (BAD_SENML, 4)]


@pytest.mark.parametrize("where", [0, 1, 2])
def test_senml_must_understand_rejects_the_whole_pack_once(where: int) -> None:
    pack: list[dict[str, object]] = [dict(GOOD), dict(GOOD), {"bn": "S1:"}]
    pack[where]["rollup_"] = 1
    pack[0]["other_"] = "x"
    d = senml.decode(enc(pack), NOW)
    assert d.readings == []
    assert why(d) == [(MUST_UNDERSTAND, None)]
    assert "'other_'" in d.rejections[0].detail and "'rollup_'" in d.rejections[0].detail


def test_senml_must_understand_wins_over_other_problems() -> None:
    d = senml.decode(enc([{"bver": 99}, 7, {"n": 3, "v": "x", "bad_": True}]), NOW)
    assert why(d) == [(MUST_UNDERSTAND, None)]


@pytest.mark.parametrize("bver", [11, 0, -1, "10", 10.0, 5.5, True, None, [10]])
def test_senml_unusable_version_rejects_the_whole_pack(bver: object) -> None:
    d = senml.decode(enc([GOOD, {"bver": bver, "n": "S1:a", "v": 1}]), NOW)
    assert d.readings == []
    assert why(d) == [(BAD_SENML, None)] and "bver" in d.rejections[0].detail


@pytest.mark.parametrize("bver", [1, 5, 10])
def test_senml_known_versions(bver: int) -> None:
    d = senml.decode(enc([{"bver": bver, "n": "S1:a", "v": 1}, GOOD]), NOW)
    assert d.rejections == [] and len(d.readings) == 2


@pytest.mark.parametrize(
    ("record", "fragment"),
    [
        ({"n": "nosep", "v": 1}, "is not '<sensor_id>:<quantity>'"),
        ({"n": "S1:", "v": 1}, "no quantity"),
        ({"n": "S1/", "v": 1}, "no quantity"),
        ({"n": ":pm25", "v": 1}, "start with a letter or digit"),
        ({"n": "/pm25", "v": 1}, "start with a letter or digit"),
        ({"n": "-S1:pm25", "v": 1}, "start with a letter or digit"),
        ({"n": "S 1:pm25", "v": 1}, "A-Z a-z 0-9"),
        ({"n": "S1:pm 25", "v": 1}, "A-Z a-z 0-9"),
        ({"n": "Sé:pm25", "v": 1}, "A-Z a-z 0-9"),
        ({"n": "S1:pm25\n", "v": 1}, "A-Z a-z 0-9"),
        ({"n": "S1#2:pm25", "v": 1}, "A-Z a-z 0-9"),
        ({"v": 1}, "no name"),
        ({"n": "", "v": 1}, "no name"),
        ({"n": 5, "v": 1}, "n is a number"),
        ({"n": None, "v": 1}, "n is null"),
        ({"n": "S1:a", "u": 5, "v": 1}, "u is a number"),
        ({"n": "S1:a", "v": "12"}, "v is a string"),
        ({"n": "S1:a", "v": True}, "v is a boolean"),
        ({"n": "S1:a", "v": None}, "v is null"),
        ({"n": "S1:a", "v": [1]}, "v is an array"),
        ({"n": "S1:a", "t": "2025-11-27T14:00:00Z", "v": 1}, "t is a string"),
        ({"n": "S1:a", "t": False, "v": 1}, "t is a boolean"),
        ({"n": "S1:a", "s": "3", "v": 1}, "s is a string"),
        ({"n": "S1:a", "ut": None, "v": 1}, "ut is null"),
        ({"n": "S1:a", "v": 1, "vs": "one"}, "more than one"),
        ({"n": "S1:a"}, "no value"),
        ({"n": "S1:a", "u": "Cel"}, "no value"),
    ],
)
def test_senml_bad_record_spares_the_others(record: dict[str, object], fragment: str) -> None:
    d = senml.decode(enc([GOOD, record, GOOD]), NOW)
    assert rows(d) == [("GOOD-1", "pm25", NOW, 12.0, "ug/m3")] * 2
    assert why(d) == [(BAD_SENML, 1)]
    assert fragment in d.rejections[0].detail


def test_senml_sum_only_is_non_numeric() -> None:
    d = senml.decode(enc([GOOD, {"n": "M1:rain", "s": 12.5}, GOOD]), NOW)
    assert len(d.readings) == 2
    assert why(d) == [(NON_NUMERIC, 1)]
    assert "sums are not stored" in d.rejections[0].detail


def test_senml_string_value_with_base_value_is_still_non_numeric() -> None:
    d = senml.decode(enc([{"bn": "S1:", "bv": 1, "n": "a", "vs": "x"}, GOOD]), NOW)
    assert why(d) == [(NON_NUMERIC, 0)] and len(d.readings) == 1


@pytest.mark.parametrize(
    ("base", "value"),
    [("bn", 5), ("bt", "2025-11-27T14:00:00Z"), ("bu", None), ("bv", "1"), ("bs", True)],
)
def test_senml_bad_base_field_rejects_the_rest(base: str, value: object) -> None:
    pack = [GOOD, {base: value, "n": "S1:a", "v": 1}, GOOD, {"n": "S1:b", "v": 2}]
    d = senml.decode(enc(pack), NOW)
    assert len(d.readings) == 1  # only the record before the bad base field
    assert why(d) == [(BAD_SENML, 1), (BAD_SENML, 2), (BAD_SENML, 3)]
    assert all(f"base field {base}" in r.detail for r in d.rejections)


def test_senml_bad_base_field_redefined_recovers() -> None:
    """Records after a valid redefinition resolve again: the bad value no longer applies."""
    pack = [
        {"bn": "S1:", "bt": "soon", "n": "a", "v": 1},
        {"n": "b", "v": 2},
        {"bt": T0, "n": "c", "v": 3},
        {"n": "d", "t": 1, "v": 4},
    ]
    d = senml.decode(enc(pack), NOW)
    assert why(d) == [(BAD_SENML, 0), (BAD_SENML, 1)]
    assert [(c.quantity, c.ts) for c in d.readings] == [("c", T0), ("d", T0 + 1)]


def test_senml_bad_base_field_in_a_header_is_not_silent() -> None:
    d = senml.decode(enc([GOOD, {"bn": 7}]), NOW)
    assert why(d) == [(BAD_SENML, 1)] and len(d.readings) == 1


def test_senml_time_out_of_range() -> None:
    pack = [GOOD, {"bt": 1e300, "n": "S1:a", "v": 1}, {"bt": 0, "n": "S1:b", "t": -1e20, "v": 1}]
    d = senml.decode(enc(pack), NOW)
    assert why(d) == [(BAD_TIME, 1), (BAD_TIME, 2)] and len(d.readings) == 1


def test_senml_base_value_overflow() -> None:
    d = senml.decode(enc([GOOD, {"bv": 1.7e308, "n": "S1:a", "v": 1.7e308}]), NOW)
    assert why(d) == [(NOT_FINITE, 1)] and len(d.readings) == 1


def test_senml_record_indices_are_pack_positions() -> None:
    pack = [{"bn": "S1:"}, {"n": "a", "v": 1}, {"n": "b", "vs": "x"}, {"n": "c"}, 3]
    d = senml.decode(enc(pack), NOW)
    assert why(d) == [(NON_NUMERIC, 2), (BAD_SENML, 3), (BAD_SENML, 4)]


def test_senml_huge_integers_are_floats() -> None:
    d = senml.decode(b'[{"n": "S1:a", "v": 123456789012345678901234567890}]', NOW)
    assert d.readings[0].value == pytest.approx(1.2345678901234568e29)
    assert_sane(d)


# --------------------------------------------------------------------------------------------
# SenML: long packs, resolved column-wise when nothing in them needs the record-by-record path

Pack = list[dict[str, object]]


def long_pack() -> Pack:
    """The benchmark's shape: a head with bn and bt, then plain records with a relative t."""
    head: dict[str, object] = {"bn": "S-1:", "bt": T0, "n": "flow", "u": "veh/h", "v": 1000.0}
    return [head] + [
        {"n": "flow", "u": "veh/h", "t": round(j * 0.01, 6), "v": 1000.0 + j} for j in range(1, 12)
    ]


def exact(rows: list[Candidate]) -> list[tuple[str, str, str, str, str | None]]:
    return [(c.sensor, c.quantity, c.ts.hex(), c.value.hex(), c.unit) for c in rows]


DROP = object()  # an edit's value that removes the field
# (record, field, value): set a field, remove it (DROP), or replace the whole record (field None)
Edit = tuple[int, str | None, object]


def edited(pack: Pack, edits: list[Edit]) -> list[object]:
    out: list[object] = list(pack)
    for i, key, value in edits:
        rec = out[i]
        if key is None:
            out[i] = value
        elif isinstance(rec, dict):
            rec.pop(key) if value is DROP else rec.__setitem__(key, value)
    return out


HEADER: list[Edit] = [(0, "n", DROP), (0, "u", DROP), (0, "v", DROP)]


@pytest.mark.parametrize(
    ("edits", "expected", "fast"),
    [
        pytest.param([], [], True, id="as is"),
        pytest.param([(0, "bver", 5)], [], True, id="bver"),
        pytest.param([(0, "bt", DROP)], [], True, id="all relative"),
        pytest.param(HEADER, [], True, id="header"),
        pytest.param([(0, "bu", "m"), (5, "u", DROP)], [], True, id="bu"),
        pytest.param([(0, "bn", "S-1:flow"), (5, "n", DROP)], [], True, id="bn names it"),
        pytest.param([(5, "t", 2**28 - T0)], [], True, id="bt + t = 2**28"),
        pytest.param([(0, "bt", DROP), (5, "t", 2**28)], [], True, id="one absolute"),
        pytest.param([(5, "n", "speed")], [], True, id="two quantities"),
        pytest.param([(5, "n", "S-2:flow")], [], True, id="two sensors"),
        pytest.param([(5, "t", 7)], [], True, id="integer t"),
        pytest.param([(5, "v", 7)], [], True, id="integer v"),
        pytest.param([(0, "bver", "5")], [(BAD_SENML, None)], False, id="bad bver"),
        pytest.param([(0, "x_", 1)], [(MUST_UNDERSTAND, None)], False, id="head x_"),
        pytest.param([(5, "x_", 1)], [(MUST_UNDERSTAND, None)], False, id="record x_"),
        pytest.param([(0, "bv", 10)], [], False, id="bv"),
        pytest.param([(5, "ext", 1)], [], False, id="unknown label"),
        pytest.param([(5, "bn", "S-2:")], [], False, id="later bn"),
        pytest.param(
            [(5, "bt", "soon")], [(BAD_SENML, i) for i in range(5, 12)], False, id="bad bt"
        ),
        pytest.param([(0, "bu", None)], [(BAD_SENML, i) for i in range(12)], False, id="bad bu"),
        pytest.param([(5, "v", True)], [(BAD_SENML, 5)], False, id="boolean v"),
        pytest.param([(5, "v", None)], [(BAD_SENML, 5)], False, id="null v"),
        pytest.param([(5, "v", DROP)], [(BAD_SENML, 5)], False, id="no v"),
        pytest.param([(5, "vs", "x")], [(BAD_SENML, 5)], False, id="v and vs"),
        pytest.param([(5, "v", DROP), (5, "vb", True)], [(NON_NUMERIC, 5)], False, id="vb"),
        pytest.param([(5, "s", 1)], [], False, id="sum"),
        pytest.param([(5, "t", "x")], [(BAD_SENML, 5)], False, id="string t"),
        pytest.param([(5, "t", False)], [(BAD_SENML, 5)], False, id="boolean t"),
        pytest.param([(5, "u", None)], [(BAD_SENML, 5)], False, id="null u"),
        pytest.param([(5, "u", ["m"])], [(BAD_SENML, 5)], False, id="array u"),
        pytest.param([(5, "n", 5)], [(BAD_SENML, 5)], False, id="number n"),
        pytest.param([(5, "n", ["flow"])], [(BAD_SENML, 5)], False, id="array n"),
        pytest.param([(5, "n", DROP)], [(BAD_SENML, 5)], False, id="no n"),
        pytest.param([(5, "n", "fl ow")], [(BAD_SENML, 5)], False, id="bad name"),
        pytest.param([(5, None, 7)], [(BAD_SENML, 5)], False, id="not an object"),
        pytest.param([(5, None, {})], [(BAD_SENML, 5)], False, id="empty record"),
        pytest.param([(5, "t", EPOCH_MAX)], [(BAD_TIME, 5)], False, id="past 9999"),
        pytest.param(
            [(0, "bt", EPOCH_MAX - 0.05)],
            [(BAD_TIME, i) for i in range(6, 12)],
            False,
            id="past 9999 later",
        ),
        pytest.param([(5, "t", -1e12)], [(BAD_TIME, 5)], False, id="relative before 0001"),
        pytest.param(
            [(0, "bt", DROP), (5, "t", EPOCH_MAX + 1)], [(BAD_TIME, 5)], False, id="mixed"
        ),
    ],
)
def test_senml_long_pack_fast_path_or_not(
    edits: list[Edit], expected: list[tuple[str, int | None]], fast: bool
) -> None:
    """Either way the answer is the record-by-record path's; the rejections are as expected."""
    payload = enc(edited(long_pack(), edits))
    cols = Columns()
    assert senml._fast(orjson.loads(payload), NOW, cols) is fast
    d = senml.decode(payload, NOW)
    assert why(d) == expected
    general = senml._general(orjson.loads(payload), NOW)
    assert exact(d.readings) == exact(general.readings) and d.rejections == general.rejections
    if fast:
        assert exact(cols.rows()) == exact(general.readings)


# --------------------------------------------------------------------------------------------
# native compact JSON


def test_native_single_object() -> None:
    values = {"pm25": 12.1, "no2": 20}
    msg = {"sensor": "AQ-KL-01", "ts": "2025-11-27T22:00:00+08:00", "values": values}
    d = native.decode(enc(msg), NOW)
    assert d.rejections == []
    assert rows(d) == [("AQ-KL-01", "pm25", T0, 12.1, None), ("AQ-KL-01", "no2", T0, 20.0, None)]
    assert_sane(d)


def test_native_epoch_and_missing_ts() -> None:
    d = native.decode(enc({"sensor": "A", "ts": T0, "values": {"flow": 900}}), NOW)
    assert rows(d) == [("A", "flow", T0, 900.0, None)]
    d = native.decode(enc({"sensor": "A", "values": {"flow": 900}}), NOW)
    assert rows(d) == [("A", "flow", NOW, 900.0, None)]


def test_native_batch() -> None:
    batch = [
        {"sensor": "TR-1", "ts": int(T0), "values": {"vehicle_count": 17, "speed": 48.5}},
        {"sensor": "TR-2", "ts": "2025-11-27T14:00:00Z", "values": {"occupancy": 12.5}},
    ]
    d = native.decode(enc(batch), NOW)
    assert d.rejections == []
    assert rows(d) == [
        ("TR-1", "vehicle_count", T0, 17.0, None),
        ("TR-1", "speed", T0, 48.5, None),
        ("TR-2", "occupancy", T0, 12.5, None),
    ]


def test_native_empty_batch() -> None:
    d = native.decode(b"[]", NOW)
    assert d.readings == [] and d.rejections == []


@pytest.mark.parametrize("payload", [b"", b"{", b'{"sensor": "A", "values": {"x": NaN}}', b"\xff"])
def test_native_malformed_json(payload: bytes) -> None:
    d = native.decode(payload, NOW)
    assert d.readings == [] and why(d) == [(MALFORMED_JSON, None)]


@pytest.mark.parametrize("doc", [5, "AQ-1", None, True])
def test_native_wrong_top_level(doc: object) -> None:
    d = native.decode(enc(doc), NOW)
    assert d.readings == [] and why(d) == [(BAD_PAYLOAD, None)]


GOOD_NATIVE = {"sensor": "OK-1", "ts": T0, "values": {"pm10": 30}}


@pytest.mark.parametrize(
    ("obj", "reason", "fragment"),
    [
        (5, BAD_PAYLOAD, "not a number"),
        ([GOOD_NATIVE], BAD_PAYLOAD, "not an array"),
        ({"values": {"pm10": 1}}, BAD_PAYLOAD, "sensor"),
        ({"sensor": "", "values": {"pm10": 1}}, BAD_PAYLOAD, "sensor"),
        ({"sensor": 7, "values": {"pm10": 1}}, BAD_PAYLOAD, "sensor"),
        ({"sensor": "A"}, BAD_PAYLOAD, "values"),
        ({"sensor": "A", "values": [1, 2]}, BAD_PAYLOAD, "values"),
        ({"sensor": "A", "values": {}}, BAD_PAYLOAD, "empty"),
        ({"sensor": "A", "ts": "2025-11-27T14:00:00", "values": {"pm10": 1}}, BAD_TIME, "timezone"),
        ({"sensor": "A", "ts": "noon", "values": {"pm10": 1}}, BAD_TIME, "RFC 3339"),
        ({"sensor": "A", "ts": True, "values": {"pm10": 1}}, BAD_TIME, "bool"),
        ({"sensor": "A", "ts": None, "values": {"pm10": 1}}, BAD_TIME, "NoneType"),
        ({"sensor": "A", "ts": T0 * 1000, "values": {"pm10": 1}}, BAD_TIME, "milliseconds"),
    ],
)
def test_native_bad_object_spares_the_others(obj: object, reason: str, fragment: str) -> None:
    d = native.decode(enc([GOOD_NATIVE, obj, GOOD_NATIVE]), NOW)
    assert rows(d) == [("OK-1", "pm10", T0, 30.0, None)] * 2
    assert why(d) == [(reason, 1)]
    assert fragment in d.rejections[0].detail


def test_native_non_numeric_value_spares_the_other_quantities() -> None:
    values = {"pm25": "12", "pm10": 30, "no2": True, "o3": None, "so2": {"v": 1}, "co": 0.4}
    d = native.decode(enc({"sensor": "AQ-1", "ts": T0, "values": values}), NOW)
    assert [(c.quantity, c.value) for c in d.readings] == [("pm10", 30.0), ("co", 0.4)]
    assert why(d) == [(NON_NUMERIC, None)] * 4
    details = " | ".join(r.detail for r in d.rejections)
    assert "pm25: '12' is a string" in details and "no2: True is a boolean" in details


def test_native_non_numeric_value_in_batch_names_the_record() -> None:
    d = native.decode(enc([GOOD_NATIVE, {"sensor": "B", "values": {"x": "y", "z": 1}}]), NOW)
    assert why(d) == [(NON_NUMERIC, 1)] and len(d.readings) == 2


def test_native_empty_quantity_name() -> None:
    d = native.decode(enc({"sensor": "B", "values": {"": 1, "z": 2}}), NOW)
    assert why(d) == [(BAD_PAYLOAD, None)] and [c.quantity for c in d.readings] == ["z"]


# --------------------------------------------------------------------------------------------
# FIWARE Smart Data Models


AIR = {
    "id": "urn:ngsi-ld:AirQualityObserved:Putrajaya-P8-2025-11-27T14",
    "type": "AirQualityObserved",
    "address": {"addressCountry": "MY", "addressLocality": "Putrajaya"},
    "dateObserved": "2025-11-27T13:00:00Z/2025-11-27T14:00:00Z",
    "areaServed": "Presint 8",
    "location": {"type": "Point", "coordinates": [101.69, 2.93]},
    "source": "https://example.org",
    "typeOfLocation": "outdoor",
    "precipitation": 0,
    "relativeHumidity": 0.54,
    "temperature": 31.2,
    "windDirection": 176,
    "windSpeed": 0.64,
    "airQualityLevel": "moderate",
    "airQualityIndex": 65,
    "reliability": 0.7,
    "pm25": 18.5,
    "pm10": 40,
    "no2": 22,
    "o3": 61,
    "so2": 11,
    "co": 0.5,
    "no": 45,
    "nox": 139,
    "coLevel": "moderate",
    "refPointOfInterest": "P8-park",
}


def test_sdm_air_quality_observed() -> None:
    d = sdm.decode(enc(AIR), NOW)
    assert d.rejections == []
    assert {c.sensor for c in d.readings} == {"Putrajaya-P8-2025-11-27T14"}
    assert {c.ts for c in d.readings} == {T0}  # the end of the interval
    got = {c.quantity: (c.value, c.unit) for c in d.readings}
    assert got == {
        "rain": (0.0, "mm/h"),
        "humidity": (0.54, "/"),
        "temperature": (31.2, "Cel"),
        "wind_direction": (176.0, "deg"),
        "wind_speed": (0.64, "m/s"),
        "pm25": (18.5, "ug/m3"),
        "pm10": (40.0, "ug/m3"),
        "no2": (22.0, "ug/m3"),
        "o3": (61.0, "ug/m3"),
        "so2": (11.0, "ug/m3"),
        "co": (0.5, "mg/m3"),
        "no": (45.0, None),  # not in the model table: its own name, unit left to the pipeline
        "nox": (139.0, None),
    }
    assert_sane(d)


def test_sdm_fraction_and_percent_both_reach_percent() -> None:
    """relativeHumidity is a fraction ('/'); a measurand in P1 is percent: the same 54 %RH."""
    cat = catalogue.load()
    attr = by_quantity(sdm.decode(enc(AIR), NOW))["humidity"]
    entity = {k: v for k, v in AIR.items() if k != "relativeHumidity"}
    entity["measurand"] = ["relativeHumidity, 54, P1, Relative humidity"]
    meas = by_quantity(sdm.decode(enc(entity), NOW))["humidity"]
    for c in (attr, meas):
        conv = cat.conversion("humidity", c.unit)
        assert conv is not None
        assert c.value * conv[0] + conv[1] == pytest.approx(54.0)


def test_sdm_units_are_all_known_to_the_catalogue() -> None:
    """Every (quantity, unit) the tables can emit converts to the canonical unit."""
    cat = catalogue.load()
    for table in sdm.MODELS.values():
        for attr, spec in table.items():
            assert cat.conversion(spec.quantity, spec.unit) is not None, attr
    for _, quantity, unit in sdm.RATES.values():
        assert cat.conversion(quantity, unit) is not None


TRAFFIC = {
    "id": "urn:ngsi-ld:TrafficFlowObserved:PJ-P2-lane1-2025-11-27T14:00",
    "type": "TrafficFlowObserved",
    "refDevice": "TR-PJ-P2-L1",
    "laneId": 1,
    "location": {"type": "LineString", "coordinates": [[101.69, 2.93], [101.70, 2.94]]},
    "dateObserved": "2025-11-27T13:55:00Z/2025-11-27T14:00:00Z",
    "averageHeadwayTime": 0.5,
    "intensity": 197,
    "occupancy": 0.76,
    "averageVehicleSpeed": 52.6,
    "averageVehicleLength": 9.87,
    "reversedLane": False,
    "laneDirection": "forward",
    "congested": False,
}


def test_sdm_traffic_flow_observed_interval() -> None:
    d = sdm.decode(enc(TRAFFIC), NOW)
    assert d.rejections == []
    assert rows(d) == [
        ("TR-PJ-P2-L1", "vehicle_count", T0, 197.0, "count"),
        ("TR-PJ-P2-L1", "occupancy", T0, 0.76, "/"),
        ("TR-PJ-P2-L1", "speed", T0, 52.6, "km/h"),
        ("TR-PJ-P2-L1", "flow", T0, pytest.approx(197 * 3600 / 300), "veh/h"),
    ]


def test_sdm_traffic_flow_observed_instant_has_no_flow() -> None:
    entity = TRAFFIC | {"dateObserved": "2025-11-27T14:00:00Z", "refDevice": ["TR-9"]}
    d = sdm.decode(enc(entity), NOW)
    assert d.rejections == []
    assert {c.quantity for c in d.readings} == {"vehicle_count", "occupancy", "speed"}
    assert {c.sensor for c in d.readings} == {"TR-9"}  # a one-element list of strings


def test_sdm_traffic_flow_observed_model_example() -> None:
    """The model's own example: a naive dateObserved interval next to well-formed From/To."""
    entity = {
        "id": "TrafficFlowObserved-Valladolid-osm-60821110",
        "type": "TrafficFlowObserved",
        "laneId": 1,
        "dateObserved": "2016-12-07T11:10:00/2016-12-07T11:15:00",
        "dateObservedFrom": "2016-12-07T11:10:00Z",
        "dateObservedTo": "2016-12-07T11:15:00Z",
        "averageHeadwayTime": 0.5,
        "intensity": 197,
        "occupancy": 0.76,
        "averageVehicleSpeed": 52.6,
        "averageVehicleLength": 9.87,
        "reversedLane": False,
        "laneDirection": "forward",
    }
    d = sdm.decode(enc(entity), NOW)
    assert d.rejections == []
    assert {c.sensor for c in d.readings} == {"TrafficFlowObserved-Valladolid-osm-60821110"}
    assert {c.ts for c in d.readings} == {parse_time("2016-12-07T11:15:00Z")}
    assert by_quantity(d)["flow"].value == pytest.approx(2364.0)


def test_sdm_from_to_gives_an_instant_its_period() -> None:
    entity = TRAFFIC | {
        "dateObserved": "2025-11-27T14:00:00Z",
        "dateObservedFrom": "2025-11-27T13:59:00Z",
        "dateObservedTo": "2025-11-27T14:00:00Z",
    }
    assert by_quantity(sdm.decode(enc(entity), NOW))["flow"].value == pytest.approx(197 * 60)


WATER = {
    "id": "urn:ngsi-ld:WaterQualityObserved:WQ-WET-03-2025-11-27T14",
    "type": "WaterQualityObserved",
    "refDevice": "WQ-WET-03",
    "dateObserved": "2025-11-27T22:00:00+08:00",
    "location": {"type": "Point", "coordinates": [101.69, 2.93]},
    "temperature": 29.5,
    "pH": 7.1,
    "O2": 6.4,
    "tss": 12,
    "turbidity": 9.5,
    "conductivity": 0.012,
    "NH4": 0.5,
    "BOD": 2.1,
    "COD": 14,
    "NO3": 0.01,
    "measurand": [
        "NO3, 0.01, M1, Concentration of Nitrates",
        "waterLevel, 1.21, MTR, Level at the buoy",
        "discharge, 3.4, MQS, Outflow",
        "pH, 9.9, , duplicates the attribute, so it is skipped",
        "chlorophyll, 4.2, , no code: the model's convention, here none",
    ],
}


def test_sdm_water_quality_observed() -> None:
    d = sdm.decode(enc(WATER), NOW)
    assert d.rejections == []
    assert {(c.sensor, c.ts) for c in d.readings} == {("WQ-WET-03", T0)}
    got = {c.quantity: (c.value, c.unit) for c in d.readings}
    assert got == {
        "water_temperature": (29.5, "Cel"),
        "ph": (7.1, "pH"),
        "do": (6.4, "mg/l"),
        "tss": (12.0, "mg/l"),
        "turbidity": (9.5, "NTU"),
        "conductivity": (0.012, "S/m"),
        "an": (pytest.approx(0.5 * 14.007 / 18.038), "mg/l"),  # NH4+ as nitrogen
        "bod": (2.1, "mg/l"),
        "cod": (14.0, "mg/l"),
        "NO3": (0.01, None),  # the attribute wins over the measurand of the same name
        "waterLevel": (1.21, "m"),
        "discharge": (3.4, "m3/s"),
        "chlorophyll": (4.2, None),
    }


def test_sdm_measurand_names_match_without_case() -> None:
    entity = {
        "id": "AQ-9",
        "type": "AirQualityObserved",
        "dateObserved": "2025-11-27T14:00:00Z",
        "measurand": ["CO, 500, GQ, Carbon Monoxide", "NO2, 40, 61, ppb this time", "PM25, 9, , x"],
    }
    got = {c.quantity: (c.value, c.unit) for c in sdm.decode(enc(entity), NOW).readings}
    assert got == {"co": (500.0, "ug/m3"), "no2": (40.0, "ppb"), "pm25": (9.0, "ug/m3")}


def test_sdm_measurand_ammonium_is_scaled() -> None:
    entity = {
        "id": "W",
        "type": "WaterQualityObserved",
        "dateObserved": "2025-11-27T14:00:00Z",
        "measurand": ["NH4, 1.8038, M1, Ammonium"],
    }
    [c] = sdm.decode(enc(entity), NOW).readings
    assert (c.quantity, c.unit) == ("an", "mg/l") and c.value == pytest.approx(1.4007)


def test_sdm_measurand_unknown_code_spares_the_rest() -> None:
    entity = WATER | {"measurand": ["chloride, 5, XYZ, Chloride", "waterLevel, 1.2, MTR, Level"]}
    d = sdm.decode(enc(entity), NOW)
    assert why(d) == [(UNKNOWN_UNIT, None)] and "'XYZ'" in d.rejections[0].detail
    assert "waterLevel" in by_quantity(d) and "water_temperature" in by_quantity(d)


@pytest.mark.parametrize(
    ("measurand", "reason"),
    [
        (["just a name"], BAD_PAYLOAD),
        ([", 5, MTR, no name"], BAD_PAYLOAD),
        ([5], BAD_PAYLOAD),
        ("waterLevel, 1.2, MTR, Level", BAD_PAYLOAD),
        (["waterLevel, high, MTR, Level"], NON_NUMERIC),
        (["waterLevel, nan, MTR, Level"], NON_NUMERIC),
        (["waterLevel, 1_000, MTR, Level"], NON_NUMERIC),
    ],
)
def test_sdm_bad_measurand_spares_the_attributes(measurand: object, reason: str) -> None:
    d = sdm.decode(enc(WATER | {"measurand": measurand}), NOW)
    assert why(d) == [(reason, None)]
    assert "water_temperature" in by_quantity(d)


def test_sdm_batch_and_indices() -> None:
    bad_type = {"id": "X", "type": "ParkingSpot", "dateObserved": "2025-11-27T14:00:00Z"}
    d = sdm.decode(enc([AIR, bad_type, 5, TRAFFIC, WATER]), NOW)
    assert why(d) == [(BAD_PAYLOAD, 1), (BAD_PAYLOAD, 2)]
    assert {c.sensor for c in d.readings} == {
        "Putrajaya-P8-2025-11-27T14",
        "TR-PJ-P2-L1",
        "WQ-WET-03",
    }


def test_sdm_sensor_id_rules() -> None:
    base = {"type": "WaterQualityObserved", "dateObserved": "2025-11-27T14:00:00Z", "pH": 7}

    def sensor(extra: dict[str, object]) -> str:
        return sdm.decode(enc(base | extra), NOW).readings[0].sensor

    assert sensor({"id": "urn:ngsi-ld:WaterQualityObserved:WQ-1"}) == "WQ-1"
    assert sensor({"id": "urn:ngsi-ld:AirQualityObserved:WQ-1"}) == (
        "urn:ngsi-ld:AirQualityObserved:WQ-1"  # another type's prefix is part of the id
    )
    assert sensor({"id": "WQ-1", "refDevice": "DEV-1"}) == "DEV-1"
    assert sensor({"id": "WQ-1", "refDevice": ["DEV-1"]}) == "DEV-1"
    assert sensor({"id": "WQ-1", "refDevice": ["DEV-1", "DEV-2"]}) == "WQ-1"
    assert sensor({"id": "WQ-1", "refDevice": {"object": "DEV-1"}}) == "WQ-1"


@pytest.mark.parametrize(
    ("change", "reason", "fragment"),
    [
        ({"type": "ParkingSpot"}, BAD_PAYLOAD, "is not one of"),
        ({"type": None}, BAD_PAYLOAD, "is not one of"),
        ({"id": None, "refDevice": None}, BAD_PAYLOAD, "no sensor"),
        ({"id": "urn:ngsi-ld:WaterQualityObserved:", "refDevice": 5}, BAD_PAYLOAD, "no sensor"),
        ({"dateObserved": None}, BAD_TIME, "dateObserved"),
        ({"dateObserved": "2025-11-27T14:00:00"}, BAD_TIME, "no timezone"),
        ({"dateObserved": "2025-11-27T14:00:00Z/2025-11-27T13:00:00Z"}, BAD_TIME, "ends before"),
        ({"dateObserved": "last tuesday"}, BAD_TIME, "RFC 3339"),
    ],
)
def test_sdm_bad_entity_spares_the_others(
    change: dict[str, object], reason: str, fragment: str
) -> None:
    bad = {k: v for k, v in (WATER | change).items() if v is not None}
    d = sdm.decode(enc([AIR, bad]), NOW)
    assert why(d) == [(reason, 1)] and fragment in d.rejections[0].detail
    assert {c.sensor for c in d.readings} == {"Putrajaya-P8-2025-11-27T14"}


def test_sdm_missing_date_observed() -> None:
    entity = {k: v for k, v in TRAFFIC.items() if k != "dateObserved"}
    d = sdm.decode(enc(entity), NOW)
    assert d.readings == [] and why(d) == [(BAD_TIME, None)]
    assert "dateObserved: missing" in d.rejections[0].detail


def test_sdm_non_numeric_attributes() -> None:
    entity = AIR | {"pm25": "12", "pm10": None, "no2": True, "benzene": "3.5", "label": "x"}
    d = sdm.decode(enc(entity), NOW)
    assert why(d) == [(NON_NUMERIC, None)] * 4  # pm25, pm10, no2, and "3.5" sent as text
    details = " | ".join(r.detail for r in d.rejections)
    assert "pm25: '12' is a string" in details and "benzene" in details
    got = by_quantity(d)
    assert "pm25" not in got and "o3" in got and "label" not in got


def test_sdm_descriptive_attributes_are_not_readings() -> None:
    entity: dict[str, object] = {
        "id": "A",
        "type": "AirQualityObserved",
        "dateObserved": "2025-11-27T14:00:00Z",
    }
    for attr in sdm.DESCRIPTIVE - {"id", "type", "dateObserved", "measurand"}:
        entity[attr] = 1
    assert sdm.decode(enc(entity), NOW).readings == []


@pytest.mark.parametrize("payload", [b"", b"{", b'{"type": NaN}'])
def test_sdm_malformed_json(payload: bytes) -> None:
    assert why(sdm.decode(payload, NOW)) == [(MALFORMED_JSON, None)]


@pytest.mark.parametrize("doc", [5, "AirQualityObserved", None])
def test_sdm_wrong_top_level(doc: object) -> None:
    d = sdm.decode(enc(doc), NOW)
    assert d.readings == [] and why(d) == [(BAD_PAYLOAD, None)]


def test_meta_free_flow_speed_is_a_checked_number() -> None:
    from ingest.meta import parse_meta

    def one_sensor(extra: dict[str, object]) -> bytes:
        return orjson.dumps({"sensors": [{"id": "TR-1", "domain": "traffic", **extra}]})

    sensors, rejected = parse_meta(one_sensor({"free_flow_speed": 60}), "gw")
    assert not rejected and sensors[0].attributes == {"free_flow_speed": 60.0}
    sensors, _ = parse_meta(one_sensor({}), "gw")
    assert "free_flow_speed" not in sensors[0].attributes
    for bad, message in [
        ("fast", "must be a number"),
        (True, "must be a number"),
        (0, "outside"),
        (-30, "outside"),
        (16.67 * 3.6 * 10, "outside"),  # a unit slip
    ]:
        sensors, rejected = parse_meta(one_sensor({"free_flow_speed": bad}), "gw")
        assert sensors == [] and len(rejected) == 1, bad
        assert rejected[0].reason == "bad_meta" and message in rejected[0].detail, bad
