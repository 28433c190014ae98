"""Property-based fuzzing of the decoders: whatever arrives, they answer and never raise.

Three kinds of input per decoder: arbitrary bytes, arbitrary JSON, and structured near-valid
messages (right field names, values that are mostly right and sometimes junk), which reach the
deep branches that random JSON never does. Each answer must keep the Decoded contract.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ingest import cayenne, lorawan, native, sdm, senml, sparkplug
from ingest.records import REASONS, Candidate, Columns, Decoded
from ingest.sparkplug_proto.sparkplug_b_pb2 import Payload
from ingest.timeparse import EPOCH_MAX, EPOCH_MIN, parse_interval, parse_time

NOW = 1_764_252_100.0
Decoder = Callable[[bytes, float], Decoded]


def _lorawan(network: str, event: str, decoder: str = "network") -> Decoder:
    """A LoRaWAN decoder for one application's event, as the pipeline routes to it."""
    app = lorawan.parse_application(
        {
            "network": network,
            "application": "app",
            "decoder": decoder,
            "fields": {"temperature": {"quantity": "temperature", "unit": "Cel"}},
        },
        "fuzz",
    )
    route = lorawan.Route(app, "0101010101010101", event)
    return lambda payload, now: lorawan.decode(route, payload, now).decoded


CHIRPSTACK_UP = _lorawan("chirpstack", "up")
CHIRPSTACK_LPP = _lorawan("chirpstack", "up", "cayenne_lpp")
CHIRPSTACK_STATUS = _lorawan("chirpstack", "status")
TTS_UP = _lorawan("tts", "up")
DECODERS: list[Decoder] = [
    senml.decode,
    native.decode,
    sdm.decode,
    CHIRPSTACK_UP,
    CHIRPSTACK_LPP,
    CHIRPSTACK_STATUS,
    TTS_UP,
]
IDS = ["senml", "native", "sdm", "chirpstack", "chirpstack_lpp", "chirpstack_status", "tts"]


def dumps(doc: object) -> bytes:
    # The standard library, not orjson: it writes integers beyond 64 bits, and lone surrogates
    # as escapes, both of which the decoders must survive.
    return json.dumps(doc).encode()


def check(d: Decoded, records: int | None = None) -> None:
    """The Decoded contract; ``records``: the array length when the message was an array."""
    assert isinstance(d, Decoded)
    for r in d.rejections:
        assert r.reason in REASONS
        assert isinstance(r.detail, str) and r.detail
        assert r.record is None or (type(r.record) is int and r.record >= 0)
        if records is not None and r.record is not None:
            assert r.record < records
    for c in d.readings:
        assert type(c.sensor) is str and c.sensor
        assert type(c.quantity) is str and c.quantity
        assert type(c.ts) is float and EPOCH_MIN <= c.ts <= EPOCH_MAX
        assert type(c.value) is float and math.isfinite(c.value)
        assert c.unit is None or type(c.unit) is str


# --------------------------------------------------------------------------------------------
# strategies

leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
any_json = st.recursive(
    leaf,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)
number = st.one_of(
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, 2**28, 2**28 - 1, -(2**28), 1.7e308, -1.7e308, 1_764_252_000]),
)
ident = st.from_regex(r"[A-Za-z0-9][-A-Za-z0-9._]{0,8}", fullmatch=True)
sep = st.sampled_from([":", "/"])
timestamps = st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31))
offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
    lambda m: timezone(timedelta(minutes=m))
)
rfc3339 = st.builds(lambda t, tz: t.replace(tzinfo=tz).isoformat(), timestamps, offsets)


def mostly(
    good: st.SearchStrategy[Any], junk: st.SearchStrategy[Any] = leaf
) -> st.SearchStrategy[Any]:
    """``good`` nine times in ten, else ``junk``: deep branches need mostly valid input."""
    return st.integers(min_value=0, max_value=9).flatmap(lambda k: junk if k == 0 else good)


def weighted(*options: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of the strategies, chosen in proportion to its weight."""
    pool = [strategy for weight, strategy in options for _ in range(weight)]
    return st.integers(min_value=0, max_value=len(pool) - 1).flatmap(lambda i: pool[i])


small_time = weighted((8, st.integers(min_value=-3600, max_value=3600)), (1, number))
epoch = st.floats(min_value=0, max_value=4e9)
names = st.builds(lambda s, c, q: s + c + q, ident, sep, ident)
interval = st.builds(lambda a, b: f"{min(a, b)}/{max(a, b)}", timestamps, timestamps).map(
    lambda x: "/".join(part.replace(" ", "T") + "Z" for part in x.split("/"))
)

# SenML: plain records most of the time, base records, other value kinds, and chaos.
senml_plain = st.fixed_dictionaries(
    {"n": mostly(st.one_of(ident, names)), "v": mostly(number)},
    optional={
        "t": mostly(small_time),
        "u": mostly(st.sampled_from(["Cel", "m", "/"])),
        "s": number,
    },
)
senml_base = st.fixed_dictionaries(
    {"bn": mostly(st.builds(lambda s, c: s + c, ident, sep))},
    optional={
        "bt": mostly(weighted((3, epoch), (1, small_time))),
        "bu": mostly(st.sampled_from(["Cel", "%RH", "ug/m3"])),
        "bv": mostly(number),
        "bs": mostly(number),
        "bver": mostly(st.integers(min_value=1, max_value=10), st.integers(-1, 12) | leaf),
        "n": mostly(ident),
        "v": mostly(number),
    },
)
senml_other = st.fixed_dictionaries(
    {"n": mostly(names)},
    optional={
        "vs": st.text(max_size=4),
        "vb": st.booleans(),
        "vd": st.text(max_size=4),
        "s": number,
    },
)
senml_chaos = st.dictionaries(
    st.sampled_from(["bn", "bt", "bu", "bv", "bs", "bver", "n", "u", "v", "vs", "vb", "vd", "s"])
    | st.sampled_from(["t", "ut", "ext", "x_", "_"]),
    any_json,
    max_size=6,
)
senml_record = weighted(
    (12, senml_plain), (3, senml_base), (2, senml_other), (1, senml_chaos), (1, any_json)
)


@st.composite
def senml_packs(draw: st.DrawFn) -> list[object]:
    """SenML packs near the valid ones: usually a base record first, then records."""
    head = draw(st.lists(senml_base, max_size=1))
    return [*head, *draw(st.lists(senml_record, max_size=12))]


# Native: objects with sensor and values, now and then a field missing or wrong.
native_values = st.dictionaries(
    mostly(ident, st.text(max_size=4)), mostly(number), min_size=1, max_size=5
)
native_object = weighted(
    (
        8,
        st.fixed_dictionaries(
            {"sensor": mostly(ident), "values": mostly(native_values)},
            optional={"ts": mostly(st.one_of(rfc3339, epoch)), "note": leaf},
        ),
    ),
    (1, st.dictionaries(st.sampled_from(["sensor", "ts", "values"]), any_json, max_size=3)),
    (1, any_json),
)
native_messages = st.one_of(native_object, st.lists(native_object, max_size=6))

# SDM: entities of the three models with their attributes, measurands, and some junk.
_ATTRIBUTES = sorted(
    {k for table in sdm.MODELS.values() for k in table} | sdm.DESCRIPTIVE | {"no", "nox"}
)
_measurand = st.builds(
    lambda name, value, code, text: f"{name}, {value}, {code}, {text}",
    st.sampled_from([*_ATTRIBUTES, "CO", "NH4", "level", ""]),
    mostly(number),
    mostly(st.sampled_from([*sdm.UNIT_CODES, ""]), st.sampled_from(["XX", "ppm"])),
    st.text(alphabet="abc ,", max_size=8),
)
_entity_fields = st.fixed_dictionaries(
    {
        "type": mostly(st.sampled_from(sorted(sdm.MODELS))),
        "id": mostly(
            st.one_of(ident, st.builds(lambda s: "urn:ngsi-ld:TrafficFlowObserved:" + s, ident))
        ),
        "dateObserved": mostly(st.one_of(rfc3339, interval, epoch)),
    },
    optional={
        "refDevice": mostly(st.one_of(ident, st.lists(ident, max_size=2))),
        "dateObservedFrom": rfc3339,
        "dateObservedTo": rfc3339,
        "measurand": mostly(st.lists(mostly(_measurand), max_size=4)),
    },
)
_entity_readings = st.dictionaries(
    mostly(st.sampled_from(_ATTRIBUTES), st.text(max_size=5)),
    mostly(number, st.one_of(number.map(str), leaf)),
    max_size=10,
)
sdm_entity = weighted(
    (
        8,
        st.builds(
            lambda fields, readings: {**readings, **fields}, _entity_fields, _entity_readings
        ),
    ),
    (1, any_json),
)
sdm_messages = st.one_of(sdm_entity, st.lists(sdm_entity, max_size=4))


# LoRaWAN uplinks: the network servers' field names, values mostly right
codec_output = st.dictionaries(
    st.one_of(ident, st.just("temperature"), st.just("")),
    st.one_of(number, leaf, st.dictionaries(ident, number, max_size=3)),
    max_size=5,
)
_lpp_record = st.one_of(
    st.builds(
        lambda c, v: cayenne.encode(c, "temperature", v),
        st.integers(0, 255),
        st.floats(-3000, 3000),
    ),
    st.builds(
        lambda c, v: cayenne.encode(c, "humidity", v), st.integers(0, 255), st.floats(0, 127)
    ),
    st.binary(max_size=4),
)
frames = st.lists(_lpp_record, max_size=4).map(lambda parts: b"".join(parts))
b64 = frames.map(lambda b: base64.b64encode(b).decode())
radio = st.lists(
    st.fixed_dictionaries({}, optional={"rssi": number | leaf, "snr": number | leaf}) | any_json,
    max_size=3,
)
time_value = weighted((6, rfc3339), (1, leaf))
chirpstack_ups = st.fixed_dictionaries(
    {},
    optional={
        "time": time_value,
        "object": weighted((6, codec_output), (1, any_json)),
        "data": weighted((6, b64), (1, leaf)),
        "rxInfo": weighted((6, radio), (1, any_json)),
        "fCnt": number | leaf,
        "batteryLevel": number | leaf,
        "externalPowerSource": st.booleans(),
    },
)
tts_ups = st.fixed_dictionaries(
    {},
    optional={
        "received_at": time_value,
        "uplink_message": weighted(
            (
                8,
                st.fixed_dictionaries(
                    {},
                    optional={
                        "received_at": time_value,
                        "decoded_payload": weighted((6, codec_output), (1, any_json)),
                        "frm_payload": weighted((6, b64), (1, leaf)),
                        "rx_metadata": weighted((6, radio), (1, any_json)),
                        "f_cnt": number | leaf,
                        "last_battery_percentage": st.fixed_dictionaries({"value": number | leaf}),
                    },
                ),
            ),
            (1, any_json),
        ),
    },
)


# --------------------------------------------------------------------------------------------
# every decoder, any input


@pytest.mark.parametrize("decode", DECODERS, ids=IDS)
@settings(max_examples=300, deadline=None, database=None)
@given(payload=st.binary(max_size=200))
def test_arbitrary_bytes(decode: Decoder, payload: bytes) -> None:
    check(decode(payload, NOW))


@pytest.mark.parametrize("decode", DECODERS, ids=IDS)
@settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(doc=any_json)
def test_arbitrary_json(decode: Decoder, doc: object) -> None:
    d = decode(dumps(doc), NOW)
    check(d, len(doc) if isinstance(doc, list) else None)


# --------------------------------------------------------------------------------------------
# near-valid messages


@settings(
    max_examples=250, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(pack=senml_packs())
def test_senml_near_valid(pack: list[object]) -> None:
    d = senml.decode(dumps(pack), NOW)
    check(d, len(pack))
    whole = [r for r in d.rejections if r.record is None]
    if whole:  # a whole-pack rejection stands alone
        assert len(d.rejections) == 1 and d.readings == []
    else:  # every record: one reading, one rejection, or (a header) nothing
        indices = [r.record for r in d.rejections]
        assert len(indices) == len(set(indices))
        assert len(d.readings) + len(indices) <= len(pack)


@settings(max_examples=200, deadline=None, database=None)
@given(
    sensor=ident,
    bt=st.one_of(st.none(), st.floats(min_value=1e9, max_value=4e9)),
    bv=st.one_of(st.none(), st.floats(min_value=-1e6, max_value=1e6)),
    records=st.lists(
        st.tuples(ident, st.floats(-1e6, 1e6), st.one_of(st.none(), st.floats(-1e5, 1e5))),
        min_size=1,
        max_size=20,
    ),
)
def test_senml_valid_packs_resolve(
    sensor: str,
    bt: float | None,
    bv: float | None,
    records: list[tuple[str, float, float | None]],
) -> None:
    """Valid packs: every record lands, resolved by the RFC 8428 rules."""
    pack: list[dict[str, object]] = [
        {"n": q, "v": v} | ({} if t is None else {"t": t}) for q, v, t in records
    ]
    pack[0] |= {"bn": sensor + ":"}
    if bt is not None:
        pack[0]["bt"] = bt
    if bv is not None:
        pack[0]["bv"] = bv
    d = senml.decode(dumps(pack), NOW)
    assert d.rejections == []
    assert [(c.sensor, c.quantity) for c in d.readings] == [(sensor, q) for q, _, _ in records]
    for c, (_, v, t) in zip(d.readings, records, strict=True):
        when = (bt or 0.0) + (t or 0.0)
        assert c.ts == (when + NOW if when < 2**28 else when)
        assert c.value == (v if bv is None else bv + v)


# --------------------------------------------------------------------------------------------
# SenML: the column-wise fast path answers exactly what the record-by-record path does

# Well-formed values of the plain fields and of a head record, edge cases included. Each pack
# draws its values of a field from one of the field's styles.
edge_times = st.sampled_from(
    [
        *(EPOCH_MAX, EPOCH_MIN, EPOCH_MAX + 1, EPOCH_MIN - 1, 1.5 * EPOCH_MAX, 1.5 * EPOCH_MIN),
        *(2**28, 2**28 - 1, 2.0**28 - 0.5, -1e12),
    ]
)
fast_styles: dict[str, list[st.SearchStrategy[Any]]] = {
    "n": [st.just("flow"), st.sampled_from(["flow", "pm25", "speed"]), ident, names],
    "u": [st.just("veh/h"), st.sampled_from(["veh/h", "Cel", "m"])],
    "t": [
        st.floats(0, 1),
        st.floats(-1e3, 1e3),
        st.integers(-100, 100),
        small_time,
        weighted((6, st.floats(-10, 10)), (1, edge_times)),
        mostly(st.floats(0, 1), st.booleans() | leaf),
    ],
    "v": [
        st.floats(-1e6, 1e6),
        st.integers(-(10**6), 10**6),
        number,
        mostly(st.floats(-1e6, 1e6), st.booleans() | leaf),
    ],
}
fast_base = st.fixed_dictionaries(
    {
        "bn": weighted(
            (8, st.sampled_from(["urn:dev:ow:traffic-12:", "S-1:", "a/b/"])),
            (2, st.just("S-1:flow")),  # names the records without n
            (1, ident),
        )
    },
    optional={
        "bt": weighted((6, epoch), (2, small_time), (1, number), (2, edge_times)),
        "bu": st.sampled_from(["veh/h", "m"]),
        "bver": weighted((4, st.integers(min_value=1, max_value=10)), (1, leaf)),
    },
)
# The head: base fields, and a reading or none.
fast_head = st.builds(
    lambda base, reading: base | reading,
    fast_base,
    st.just({})
    | st.fixed_dictionaries({"n": ident, "v": number}, optional={"u": st.just("m"), "t": number}),
)
_ANY_FIELD = ["bn", "bt", "bu", "bv", "bs", "bver", "n", "u", "v", "vs", "s", "t", "ut", "x_"]


@st.composite
def common_packs(draw: st.DrawFn) -> list[object]:
    """A head, then records that share one set of plain fields in one key order; half of the
    packs then get a few mutations: a field dropped, added or spoilt, a record of any kind."""
    order = draw(st.permutations(["n", "u", "t", "v"]))
    # v always (else no value), n nearly always (else bn names every record), u and t or not.
    keep = {"v": st.just(True), "n": st.integers(0, 9).map(bool), "u": st.booleans()}
    fields = [f for f in order if draw(keep.get(f, st.booleans()))]
    styles = {f: draw(st.sampled_from(fast_styles[f])) for f in fields}
    pack: list[object] = [draw(fast_head)]
    for _ in range(draw(st.integers(min_value=1, max_value=24))):
        pack.append({f: draw(styles[f]) for f in fields})
    for _ in range(draw(weighted((3, st.just(0)), (3, st.integers(1, 3))))):
        # The head one time in three: it is resolved apart from the others.
        i = draw(weighted((1, st.just(0)), (2, st.integers(0, len(pack) - 1))))
        rec = pack[i]
        how = draw(st.integers(min_value=0, max_value=3))
        if how == 0 or type(rec) is not dict:
            pack[i] = draw(senml_record)
        elif how == 1 and rec:
            rec.pop(draw(st.sampled_from(sorted(rec))))
        else:  # a field, its own or any, set to anything
            key = draw(st.sampled_from(sorted(rec) or _ANY_FIELD) | st.sampled_from(_ANY_FIELD))
            rec[key] = draw(st.one_of(leaf, st.booleans(), number, edge_times))
    return pack


def exact(rows: list[Candidate]) -> list[tuple[str, str, str, str, str | None]]:
    """Readings compared bit for bit (0.0 and -0.0 differ), types included."""
    return [(c.sensor, c.quantity, c.ts.hex(), c.value.hex(), c.unit) for c in rows]


def fast_and_general(pack: list[object]) -> tuple[Columns | None, Decoded]:
    payload = dumps(pack)
    try:
        parsed = orjson.loads(payload)  # what the decoder sees
    except orjson.JSONDecodeError:  # a lone surrogate from st.text: no pack at all
        assume(False)
    cols = Columns()
    took = senml._fast(parsed, NOW, cols)
    general = senml._general(parsed, NOW)
    whole = senml.decode(payload, NOW)
    assert exact(whole.readings) == exact(general.readings)
    assert whole.rejections == general.rejections
    if not took:
        assert len(cols) == 0  # nothing appended when it declines
    return (cols if took else None), general


@settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(pack=st.one_of(common_packs(), senml_packs()))
def test_senml_fast_path_is_the_general_path(pack: list[object]) -> None:
    cols, general = fast_and_general(pack)
    if cols is not None:  # taken only when there is nothing to reject
        assert general.rejections == []
        assert exact(cols.rows()) == exact(general.readings)
        check(Decoded(cols.rows()), len(pack))


@settings(max_examples=150, deadline=None, database=None)
@given(
    sensor=st.sampled_from(["urn:dev:ow:traffic-12:", "S-1:", "a/b/"]),
    bt=st.one_of(st.none(), st.floats(min_value=1e9, max_value=4e9), st.floats(-1e4, 1e4)),
    head_reading=st.booleans(),
    records=st.lists(
        st.tuples(
            st.sampled_from(["flow", "flow", "speed"]),
            st.one_of(st.none(), st.sampled_from(["veh/h", "km/h"])),
            st.one_of(st.floats(-1e6, 1e6), st.integers(-(10**6), 10**6)),
            st.one_of(st.none(), st.floats(-1e3, 1e3), st.integers(-100, 100)),
        ),
        min_size=1,
        max_size=30,
    ),
)
def test_senml_common_packs_take_the_fast_path(
    sensor: str,
    bt: float | None,
    head_reading: bool,
    records: list[tuple[str, str | None, float, float | None]],
) -> None:
    """Well-formed packs of the usual shape, fields present or not record by record."""
    head: dict[str, object] = {"bn": sensor, "bu": "veh/h"}
    if bt is not None:
        head["bt"] = bt
    if head_reading:
        head |= {"n": "flow", "v": 1.5}
    pack: list[object] = [head]
    for n, u, v, t in records:
        rec: dict[str, object] = {"n": n, "v": v}
        if u is not None:
            rec["u"] = u
        if t is not None:
            rec["t"] = t
        pack.append(rec)
    cols, general = fast_and_general(pack)
    assert cols is not None and general.rejections == []
    assert exact(cols.rows()) == exact(general.readings)


@settings(
    max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(msg=native_messages)
def test_native_near_valid(msg: object) -> None:
    d = native.decode(dumps(msg), NOW)
    check(d, len(msg) if isinstance(msg, list) else None)
    if isinstance(msg, list):  # a batch: every rejection names its object
        assert all(r.record is not None for r in d.rejections)
    else:  # a single object is the whole message
        assert all(r.record is None for r in d.rejections)


@settings(max_examples=75, deadline=None, database=None)
@given(
    batch=st.lists(
        st.tuples(ident, rfc3339, st.dictionaries(ident, number, min_size=1, max_size=5)),
        max_size=6,
    )
)
def test_native_valid_batches_land_whole(batch: list[tuple[str, str, dict[str, float]]]) -> None:
    msg = [{"sensor": s, "ts": ts, "values": values} for s, ts, values in batch]
    d = native.decode(dumps(msg), NOW)
    assert d.rejections == []
    assert len(d.readings) == sum(len(v) for _, _, v in batch)


@settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(msg=sdm_messages)
def test_sdm_near_valid(msg: object) -> None:
    d = sdm.decode(dumps(msg), NOW)
    check(d, len(msg) if isinstance(msg, list) else None)


@pytest.mark.parametrize(
    "decode", [CHIRPSTACK_UP, CHIRPSTACK_LPP, CHIRPSTACK_STATUS], ids=["up", "lpp", "status"]
)
@settings(
    max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(msg=chirpstack_ups)
def test_chirpstack_near_valid(decode: Decoder, msg: object) -> None:
    check(decode(dumps(msg), NOW), None)


@settings(
    max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(msg=tts_ups)
def test_tts_near_valid(msg: object) -> None:
    check(TTS_UP(dumps(msg), NOW), None)


@settings(max_examples=300, deadline=None, database=None)
@given(frame=st.binary(max_size=40))
def test_cayenne_answers_or_raises_value_error(frame: bytes) -> None:
    try:
        fields = cayenne.decode(frame)
    except ValueError:
        return
    assert all(k and math.isfinite(v) for k, (v, _) in fields.items())


# --------------------------------------------------------------------------------------------
# time parsing


@settings(max_examples=200, deadline=None, database=None)
@given(t=timestamps, tz=offsets)
def test_rfc3339_round_trip(t: datetime, tz: timezone) -> None:
    aware = t.replace(tzinfo=tz)
    assert parse_time(aware.isoformat()) == pytest.approx(aware.timestamp(), abs=1e-6)
    with pytest.raises(ValueError, match="no timezone"):
        parse_time(t.isoformat())


@settings(max_examples=300, deadline=None, database=None)
@given(x=st.one_of(any_json, st.text(alphabet="0123456789-:.TZtz+ /", max_size=40)))
def test_parse_time_answers_or_raises_value_error(x: object) -> None:
    try:
        t = parse_time(x)
    except ValueError as err:
        assert str(err)
    else:
        assert type(t) is float and EPOCH_MIN <= t <= EPOCH_MAX


@settings(max_examples=200, deadline=None, database=None)
@given(x=st.one_of(st.text(max_size=60), st.builds(lambda a, b: f"{a}/{b}", rfc3339, rfc3339)))
def test_parse_interval_answers_or_raises_value_error(x: str) -> None:
    try:
        start, end = parse_interval(x)
    except ValueError as err:
        assert str(err)
    else:
        assert EPOCH_MIN <= start <= end <= EPOCH_MAX


# --------------------------------------------------------------------------------------------
# Sparkplug B: a host fed random sequences of messages, arbitrary bytes and near-valid payloads

SPB_GROUP = sparkplug.parse_group(
    {"group": "G", "metrics": {"Level": {"quantity": "water_level", "unit": "m"}}}, "fuzz"
)
SPB_TOPICS = [
    "NBIRTH/n",
    "NDATA/n",
    "NDEATH/n",
    "DBIRTH/n/d",
    "DDATA/n/d",
    "DDEATH/n/d",
]
u64 = st.integers(min_value=0, max_value=2**64 - 1)
spb_values = st.one_of(
    st.builds(lambda v: {"int_value": v}, st.integers(min_value=0, max_value=2**32 - 1)),
    st.builds(lambda v: {"long_value": v}, u64),
    st.builds(lambda v: {"float_value": v}, st.floats(width=32)),
    st.builds(lambda v: {"double_value": v}, st.floats()),
    st.builds(lambda v: {"boolean_value": v}, st.booleans()),
    st.builds(lambda v: {"string_value": v}, st.text(max_size=8)),
    st.builds(lambda v: {"bytes_value": v}, st.binary(max_size=8)),
    st.just({}),
)
spb_metrics = st.builds(
    lambda name, alias, ts, dt, null, value, unit: {
        **({"name": name} if name is not None else {}),
        **({"alias": alias} if alias is not None else {}),
        **({"timestamp": ts} if ts is not None else {}),
        **({"datatype": dt} if dt is not None else {}),
        **({"is_null": null} if null else {}),
        **value,
        **({"unit": unit} if unit is not None else {}),
    },
    st.one_of(st.none(), st.sampled_from(["Level", "bdSeq", "Node Control/Rebirth", ""]),
              st.text(max_size=6)),
    st.one_of(st.none(), st.integers(min_value=0, max_value=5), u64),
    st.one_of(st.none(), mostly(st.integers(min_value=1_700_000_000_000,
                                            max_value=1_800_000_000_000), u64)),
    st.one_of(st.none(), st.integers(min_value=0, max_value=40)),
    st.booleans(),
    spb_values,
    st.one_of(st.none(), st.sampled_from(["m", "cm", "degC", ""])),
)  # fmt: skip


def spb_payload(ts: int | None, seq: int | None, metrics: list[dict[str, Any]]) -> bytes:
    p = Payload()
    if ts is not None:
        p.timestamp = ts
    if seq is not None:
        p.seq = seq
    for m in metrics:
        unit = m.pop("unit", None)
        metric = p.metrics.add(**m)
        if unit is not None:
            metric.properties.keys.append("engUnit")
            metric.properties.values.add(type=12, string_value=unit)
    return p.SerializeToString()


spb_messages = st.lists(
    st.tuples(
        st.sampled_from(SPB_TOPICS),
        st.one_of(
            st.builds(
                spb_payload,
                st.one_of(st.none(), mostly(st.just(1_764_252_000_000), u64)),
                st.one_of(st.none(), st.integers(min_value=0, max_value=300)),
                st.lists(spb_metrics, max_size=5),
            ),
            st.binary(max_size=40),
        ),
    ),
    max_size=12,
)


@settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(messages=spb_messages)
def test_sparkplug_host_answers_any_sequence(messages: list[tuple[str, bytes]]) -> None:
    host = sparkplug.Host(sparkplug.Mappings({"G": SPB_GROUP}))
    for i, (topic, body) in enumerate(messages):
        route = host.mappings.route(f"spBv1.0/G/{topic}")
        assert route is not None
        ev = host.decode(route, body, NOW + i)
        check(ev.decoded, None)
        assert all(s.status in ("online", "offline") for s in ev.statuses)
    for topic, body in host.rebirths(NOW + 100):
        assert topic == "spBv1.0/G/NCMD/n"
        assert Payload.FromString(body).metrics[0].name == sparkplug.REBIRTH
