"""GET /sta/v1.1/...: a read-only OGC SensorThings API 1.1 view of the public stations.

    Thing, Sensor, Location   a public station (id: its sensor id, a string)
    Datastream                one of its series of an environmental quantity (id: the series id)
    ObservedProperty          a quantity of the catalogue (id: its name, such as 'pm25')
    Observation               one reading (id: '<datastream id>-<event time in microseconds>')

Paths: the service root, a collection (``/Things``), an entity (``/Things('AQ-P8-01')``), a
related entity or collection (``/Datastreams(3)/Observations``), a property and its ``$value``,
and ``$ref`` (the links alone).
Query options: $filter (with the OData and OGC geometry functions on points and polygons),
$orderby, $top, $skip, $count, $select and $expand (nested options too) on every collection;
on Observations $filter and $orderby work on phenomenonTime, resultTime, result and
Datastream/@iot.id (they run in SQL). Nothing can be created, changed or
deleted; HistoricalLocations and FeaturesOfInterest are always empty.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from api import public
from api.city import require_public
from api.errors import ApiError
from api.sta_query import DEFAULT_TOP, Expand, Options, QueryError, evaluate, parse_options, to_sql
from api.state import ApiState, get_state

router = APIRouter(prefix="/sta/v1.1", tags=["public"])

SETS = (
    "Things",
    "Locations",
    "HistoricalLocations",
    "Datastreams",
    "Sensors",
    "ObservedProperties",
    "Observations",
    "FeaturesOfInterest",
)
# entity set -> navigation property -> (target set, to many)
NAV: dict[str, dict[str, tuple[str, bool]]] = {
    "Things": {
        "Locations": ("Locations", True),
        "Datastreams": ("Datastreams", True),
        "HistoricalLocations": ("HistoricalLocations", True),
    },
    "Locations": {
        "Things": ("Things", True),
        "HistoricalLocations": ("HistoricalLocations", True),
    },
    "HistoricalLocations": {},
    "Datastreams": {
        "Thing": ("Things", False),
        "Sensor": ("Sensors", False),
        "ObservedProperty": ("ObservedProperties", False),
        "Observations": ("Observations", True),
    },
    "Sensors": {"Datastreams": ("Datastreams", True)},
    "ObservedProperties": {"Datastreams": ("Datastreams", True)},
    "Observations": {"Datastream": ("Datastreams", False)},
    "FeaturesOfInterest": {},
}
MEASUREMENT = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement"
CONFORMANCE = [
    "http://www.opengis.net/spec/iot_sensing/1.1/req/datamodel",
    "http://www.opengis.net/spec/iot_sensing/1.1/req/resource-path/resource-path-to-entities",
    "http://www.opengis.net/spec/iot_sensing/1.1/req/request-data",
]
OBS_COLUMNS = {
    ("phenomenonTime",): "ts",
    ("resultTime",): "ts",
    ("result",): "value",
    ("Datastream", "@iot.id"): "series_id",
    ("Datastream", "id"): "series_id",
}
_SEGMENT = re.compile(r"^([A-Za-z$][\w$]*)(?:\((.+)\))?$")

Key = Any  # str (a station), int (a series), str (a quantity), tuple (an observation)


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _literal(key: Key) -> str:
    if isinstance(key, int):
        return str(key)
    text = key if isinstance(key, str) else f"{key[0]}-{key[1]}"
    return "'" + quote(text.replace("'", "''"), safe="-_.:~@") + "'"


def _parse_id(text: str, entity_set: str) -> Key:
    text = text.strip()
    if text.startswith("'") and text.endswith("'") and len(text) >= 2:
        value: Key = text[1:-1].replace("''", "'")
    elif re.fullmatch(r"-?\d+", text):
        value = int(text)
    else:
        raise ApiError(400, f"{entity_set}({text}): an id is a number or a 'quoted string'")
    if entity_set == "Datastreams":
        try:
            return int(value)
        except ValueError:
            raise ApiError(404, f"no Datastream {text}") from None
    if entity_set == "Observations":
        sid, _, ts = str(value).partition("-")
        if not (sid.isdigit() and ts.isdigit()):
            raise ApiError(404, f"no Observation {text}")
        return (int(sid), int(ts))
    return str(value)


@dataclass
class Model:
    """The public stations, their series and quantities, read for one request."""

    base: str
    things: dict[str, public.Station]
    streams: dict[int, tuple[str, str, str | None]]  # series id -> (sensor, quantity, unit)
    quantities: dict[str, tuple[str, str]]  # name -> (domain, unit)
    conn: Any
    # Indexes, so that expanding every entity of a large city is not quadratic.
    by_sensor: dict[str, list[int]] = field(default_factory=dict)
    by_quantity: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for sid, (sensor, quantity, _) in self.streams.items():
            self.by_sensor.setdefault(sensor, []).append(sid)
            self.by_quantity.setdefault(quantity, []).append(sid)

    # -- entities ---------------------------------------------------------------------------

    def self_link(self, entity_set: str, key: Key) -> str:
        return f"{self.base}/{entity_set}({_literal(key)})"

    def _links(self, entity_set: str, key: Key) -> dict[str, Any]:
        link = self.self_link(entity_set, key)
        out: dict[str, Any] = {"@iot.id": key if not isinstance(key, tuple) else _obs_id(key)}
        out["@iot.selfLink"] = link
        for nav in NAV[entity_set]:
            out[f"{nav}@iot.navigationLink"] = f"{link}/{nav}"
        return out

    def entity(self, entity_set: str, key: Key, row: Any = None) -> dict[str, Any] | None:
        out = self._links(entity_set, key)
        if entity_set in ("Things", "Sensors", "Locations"):
            s = self.things.get(key)
            if s is None:
                return None
            name = s.name or s.sensor_id
            what = f"{s.domain} station {s.sensor_id} in {s.district}"
            if entity_set == "Things":
                out |= {
                    "name": name,
                    "description": what,
                    "properties": {"domain": s.domain, "district": s.district},
                }
            elif entity_set == "Sensors":
                out |= {
                    "name": name,
                    "description": f"the instruments of the {what}",
                    "encodingType": "text/plain",
                    "metadata": f"{s.domain} station",
                    "properties": {"domain": s.domain},
                }
            else:
                if s.lat is None or s.lon is None:
                    return None
                out |= {
                    "name": name,
                    "description": f"where the {what} stands",
                    "encodingType": "application/geo+json",
                    "location": {"type": "Point", "coordinates": [s.lon, s.lat]},
                }
            return out
        if entity_set == "Datastreams":
            st = self.streams.get(key)
            if st is None:
                return None
            sensor, quantity, unit = st
            out |= {
                "name": f"{sensor} {quantity}",
                "description": f"{quantity} at {sensor}",
                "observationType": MEASUREMENT,
                "unitOfMeasurement": {
                    "name": unit or "",
                    "symbol": unit or "",
                    "definition": f"urn:pusat:unit:{unit or 'none'}",
                },
                "properties": {"quantity": quantity},
            }
            return out
        if entity_set == "ObservedProperties":
            q = self.quantities.get(key)
            if q is None:
                return None
            out |= {
                "name": key,
                "definition": f"urn:pusat:quantity:{key}",
                "description": f"{key} ({q[0]}), in {q[1]}",
                "properties": {"domain": q[0], "unit": q[1]},
            }
            return out
        if entity_set == "Observations":
            if row is None:
                return None
            at = _iso(row[1])
            out |= {"phenomenonTime": at, "resultTime": at, "result": row[2]}
            return out
        return None  # HistoricalLocations, FeaturesOfInterest: none

    def keys(self, entity_set: str) -> list[Key]:
        if entity_set in ("Things", "Sensors"):
            return list(self.things)
        if entity_set == "Locations":
            return [k for k, s in self.things.items() if s.lat is not None and s.lon is not None]
        if entity_set == "Datastreams":
            return list(self.streams)
        if entity_set == "ObservedProperties":
            return sorted(self.by_quantity)
        return []

    def related(self, entity_set: str, key: Key, nav: str) -> tuple[str, list[Key] | None]:
        """The target set of ``nav`` and the keys it leads to (None: Observations, by SQL)."""
        target, _ = NAV[entity_set][nav]
        if target == "Observations":
            return target, None
        if entity_set in ("Things", "Sensors") and nav == "Datastreams":
            return target, list(self.by_sensor.get(key, []))
        if entity_set == "ObservedProperties":
            return target, list(self.by_quantity.get(key, []))
        if (entity_set, nav) in (("Things", "Locations"), ("Locations", "Things")):
            s = self.things.get(key)
            return target, [
                key
            ] if s is not None and s.lat is not None and s.lon is not None else []
        if entity_set == "Datastreams":
            sensor, quantity, _ = self.streams[key]
            return target, [quantity if nav == "ObservedProperty" else sensor]
        if entity_set == "Observations":
            return target, [key[0]]
        return target, []

    # -- Observations, in SQL ----------------------------------------------------------------

    async def observations(
        self, streams: list[int], o: Options, extra: int = 0
    ) -> tuple[list[tuple[Any, ...]], int | None]:
        params: list[Any] = [streams]
        where = "series_id = ANY(%s)"
        if o.filter is not None:
            where += " AND " + to_sql(o.filter, OBS_COLUMNS, params)
        order = []
        for path, desc in o.orderby:
            column = OBS_COLUMNS.get(path) if path not in (("id",), ("@iot.id",)) else "ts"
            if column is None:
                raise QueryError(f"$orderby on Observations: {'/'.join(path)} is not supported")
            order.append(f"{column} {'DESC' if desc else 'ASC'}")
        order += ["ts DESC", "series_id"]
        top = DEFAULT_TOP if o.top is None else o.top
        count = None
        if o.count:
            cur = await self.conn.execute(
                f"SELECT count(*) FROM reading_data WHERE {where}", params
            )
            count = int((await cur.fetchone())[0])
        cur = await self.conn.execute(
            f"SELECT series_id, ts, value FROM reading_data WHERE {where}"
            f" ORDER BY {', '.join(order)} LIMIT %s OFFSET %s",
            [*params, top + extra, o.skip],
        )
        return list(await cur.fetchall()), count

    async def observation(self, key: tuple[int, int]) -> tuple[Any, ...] | None:
        if key[0] not in self.streams:
            return None
        cur = await self.conn.execute(
            "SELECT series_id, ts, value FROM reading_data WHERE series_id = %s"
            " AND ts = to_timestamp(%s::double precision / 1000000)",
            (key[0], key[1]),
        )
        return await cur.fetchone()  # type: ignore[no-any-return]


def _obs_id(key: tuple[int, int]) -> str:
    return f"{key[0]}-{key[1]}"


def _obs_key(row: tuple[Any, ...]) -> tuple[int, int]:
    ts: datetime = row[1]
    us = (ts - datetime(1970, 1, 1, tzinfo=UTC)) // _US
    return (int(row[0]), int(us))


_US = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)


# -- evaluating options on entities ------------------------------------------------------------


def _getter(model: Model, entity_set: str, entity: dict[str, Any]) -> Callable[..., Any]:
    def get(path: tuple[str, ...]) -> Any:
        value: Any = entity
        current = entity_set
        for part in path:
            if part == "id":
                part = "@iot.id"
            if isinstance(value, dict) and part in value:
                value = value[part]
                if part in ("phenomenonTime", "resultTime") and isinstance(value, str):
                    value = datetime.fromisoformat(value.replace("Z", "+00:00"))
                continue
            nav = NAV.get(current, {}).get(part)
            # A to-many path (Things' Locations) reads the first: a station has one place.
            if nav is not None and nav[0] != "Observations" and isinstance(value, dict):
                target, keys = model.related(current, _key_of(value, current), part)
                value = model.entity(target, keys[0]) if keys else None
                current = target
                continue
            return None
        return value

    return get


def _key_of(entity: dict[str, Any], entity_set: str) -> Key:
    k = entity["@iot.id"]
    if entity_set == "Observations":
        sid, _, ts = str(k).partition("-")
        return (int(sid), int(ts))
    return k


def _by(model: Model, entity_set: str, path: tuple[str, ...]) -> Callable[[Any], tuple[int, Any]]:
    def key(entity: dict[str, Any]) -> tuple[int, Any]:
        return _sort_key(_getter(model, entity_set, entity)(path))

    return key


def _sort_key(value: Any) -> tuple[int, Any]:
    # None sorts first; mixed types by their text, so a sort never fails.
    if value is None:
        return (0, "")
    if isinstance(value, int | float):
        return (1, value)
    return (2, str(value))


def _filtered(model: Model, entity_set: str, keys: list[Key], o: Options) -> list[dict[str, Any]]:
    found = [x for x in (model.entity(entity_set, k) for k in keys) if x is not None]
    if o.filter is not None:
        found = [x for x in found if evaluate(o.filter, _getter(model, entity_set, x))]
    for path, desc in reversed(o.orderby):  # stable sorts, last key first
        found.sort(key=_by(model, entity_set, path), reverse=desc)
    return found


async def _collection(
    model: Model, entity_set: str, keys: list[Key] | None, o: Options, url: str | None
) -> dict[str, Any]:
    """A collection of ``entity_set`` (``keys``; None for Observations: ``streams`` below)."""
    if entity_set == "Observations":
        assert keys is not None
        rows, count = await model.observations(keys, o, extra=1)
        top = DEFAULT_TOP if o.top is None else o.top
        more = len(rows) > top
        entities = [model.entity("Observations", _obs_key(r), r) for r in rows[:top]]
        found = [x for x in entities if x is not None]
    else:
        top = DEFAULT_TOP if o.top is None else o.top
        by_id = o.orderby in ([], [(("@iot.id",), False)], [(("id",), False)])
        if o.filter is None and by_id:
            # Paging in id order needs only the page's entities made (100,000 series: 1 s).
            page = (keys or [])[o.skip : o.skip + top]
            count, more = len(keys or []), len(keys or []) > o.skip + top
            found = [x for x in (model.entity(entity_set, k) for k in page) if x is not None]
        else:
            # Filtering and sorting every entity is CPU work: off the event loop, so the
            # operators' requests are still answered meanwhile.
            found = await asyncio.to_thread(_filtered, model, entity_set, keys or [], o)
            count, more = len(found), len(found) > o.skip + top
            found = found[o.skip : o.skip + top]
    for x in found:
        await _expand(model, entity_set, x, o.expand)
    body: dict[str, Any] = {}
    if o.count:
        body["@iot.count"] = count
    body["value"] = [_select(x, o) for x in found]
    if more and url is not None:
        body["@iot.nextLink"] = _next(url, o.skip + top)
    return body


def _next(url: str, skip: int) -> str:
    base, _, query = url.partition("?")
    kept = [p for p in query.split("&") if p and not p.startswith(("%24skip=", "$skip="))]
    return base + "?" + "&".join([*kept, f"$skip={skip}"])


def _select(entity: dict[str, Any], o: Options) -> dict[str, Any]:
    if o.select is None:
        return entity
    wanted = {"@iot.id" if s == "id" else s for s in o.select}
    wanted |= {e.path[0] for e in o.expand}
    return {k: v for k, v in entity.items() if k in wanted}


async def _expand(
    model: Model, entity_set: str, entity: dict[str, Any], items: list[Expand]
) -> None:
    for item in items:
        nav = item.path[0]
        if nav not in NAV[entity_set]:
            raise QueryError(f"$expand: {entity_set} has no {nav}")
        options = item.options
        if len(item.path) > 1:
            options = Options(expand=[Expand(item.path[1:], item.options)])
        many = NAV[entity_set][nav][1]
        key = _key_of(entity, entity_set)
        tset, keys = model.related(entity_set, key, nav)
        if tset == "Observations":
            keys = [key] if key in model.streams else []
        if many:
            sub = await _collection(model, tset, keys, options, None)
            entity[nav] = sub["value"]
            if options.count:
                entity[f"{nav}@iot.count"] = sub["@iot.count"]
        else:
            one = model.entity(tset, keys[0]) if keys else None
            if one is not None:
                await _expand(model, tset, one, options.expand)
                one = _select(one, options)
            entity[nav] = one


# -- the routes --------------------------------------------------------------------------------


def _base(state: ApiState) -> str:
    """Where the service is, for the absolute links SensorThings wants (@iot.selfLink): the
    configured address (PUSAT_PUBLIC_URL), never the request's Host header, which anyone can
    make up and which would make every cached answer one per Host."""
    return state.settings.link_base() + "/sta/v1.1"


async def _model(state: ApiState, conn: Any) -> Model:
    base = _base(state)
    cur = await conn.execute(
        "SELECT s.sensor_id, s.name, s.domain, s.district, s.lat, s.lon, false FROM sensors s"
        " WHERE " + public.PUBLIC_SENSOR + " ORDER BY s.sensor_id",
        {"domains": list(public.DOMAINS)},
    )
    things = {r[0]: public.Station(*r) for r in await cur.fetchall()}
    allowed = public.public_quantities(state.catalogue)
    cur = await conn.execute(
        "SELECT se.series_id, se.sensor_id, se.quantity, se.unit FROM series se"
        " JOIN sensors s USING (sensor_id) WHERE se.quantity = ANY(%(quantities)s) AND "
        + public.PUBLIC_SENSOR
        + " ORDER BY se.series_id",
        {"domains": list(public.DOMAINS), "quantities": allowed},
    )
    streams = {int(r[0]): (r[1], r[2], r[3]) for r in await cur.fetchall()}
    quantities = {
        q.name: (q.domain, q.unit) for q in state.catalogue.quantities if q.name in allowed
    }
    return Model(base, things, streams, quantities, conn)


def _json(body: Any) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


@router.get("", summary="SensorThings API 1.1: the service root")
async def root(state: Annotated[ApiState, Depends(get_state)]) -> Response:
    require_public(state)
    base = _base(state)
    return _json(
        {
            "value": [{"name": s, "url": f"{base}/{s}"} for s in SETS],
            "serverSettings": {"conformance": CONFORMANCE},
        }
    )


@router.get("/{path:path}", summary="SensorThings API 1.1: entities, properties, collections")
async def resource(
    path: str, request: Request, state: Annotated[ApiState, Depends(get_state)]
) -> Response:
    """A resource path of OGC 18-088 section 9.2 with the query options of section 9.3."""
    require_public(state)
    try:
        options = parse_options(dict(request.query_params))
        async with state.pool.connection() as conn:
            model = await _model(state, conn)
            query = request.url.query
            url = f"{state.settings.link_base()}{request.url.path}" + (f"?{query}" if query else "")
            return _json(await _resolve(model, path, options, url))
    except QueryError as e:
        raise ApiError(400, str(e)) from e


async def _resolve(model: Model, path: str, o: Options, url: str) -> Any:
    segments = [s for s in path.split("/") if s]
    if not segments:
        raise ApiError(404, "no resource path")
    m = _SEGMENT.match(segments[0])
    if m is None or m.group(1) not in SETS:
        raise ApiError(404, f"no entity set {segments[0]!r}; there are {', '.join(SETS)}")
    entity_set = m.group(1)
    current: tuple[str, Any]
    if m.group(2) is None:
        keys = model.keys(entity_set)
        if entity_set == "Observations":
            keys = list(model.streams)
        current = ("collection", (entity_set, keys))
    else:
        current = ("entity", (entity_set, _parse_id(m.group(2), entity_set)))
    ref = segments[-1] == "$ref"  # links only (OGC 18-088 9.2.7)
    for seg in segments[1 : len(segments) - ref]:
        current = await _step(model, current, seg)
    kind, what = current
    if ref and kind not in ("collection", "entity"):
        raise ApiError(404, "$ref follows an entity or a collection")
    if ref:
        o.select, o.expand = ["@iot.selfLink"], []
    if kind == "collection":
        return await _collection(model, what[0], what[1], o, url)
    if kind == "entity":
        entity_set, key = what
        found = await _entity(model, entity_set, key)
        if found is None:
            raise ApiError(404, f"no {entity_set}({_literal(key)})")
        await _expand(model, entity_set, found, o.expand)
        return _select(found, o)
    if kind == "value":
        return what
    return {what[0]: what[1]}


async def _entity(model: Model, entity_set: str, key: Key) -> dict[str, Any] | None:
    if entity_set == "Observations":
        row = await model.observation(key)
        return None if row is None else model.entity("Observations", key, row)
    return model.entity(entity_set, key)


async def _step(model: Model, current: tuple[str, Any], seg: str) -> tuple[str, Any]:
    kind, what = current
    if kind == "property" and seg == "$value":
        value = what[1]
        return (
            "value",
            value if isinstance(value, str | int | float) else orjson.dumps(value).decode(),
        )
    if kind != "entity":
        raise ApiError(404, f"nothing under {seg!r} here")
    entity_set, key = what
    found = await _entity(model, entity_set, key)
    if found is None:
        raise ApiError(404, f"no {entity_set}({_literal(key)})")
    m = _SEGMENT.match(seg)
    name = m.group(1) if m else seg
    if name in NAV[entity_set]:
        many = NAV[entity_set][name][1]
        tset, keys = model.related(entity_set, key, name)
        if tset == "Observations":
            keys = [key]
        if m is not None and m.group(2) is not None:
            sub = _parse_id(m.group(2), tset)
            if tset == "Observations":
                if sub[0] != key:
                    raise ApiError(404, f"no {tset}({m.group(2)}) under this entity")
            elif keys is None or sub not in keys:
                raise ApiError(404, f"no {tset}({m.group(2)}) under this entity")
            return ("entity", (tset, sub))
        if many:
            return ("collection", (tset, keys))
        if not keys:
            raise ApiError(404, f"{entity_set}({_literal(key)}) has no {name}")
        return ("entity", (tset, keys[0]))
    if seg in found and not seg.endswith("@iot.navigationLink"):
        return ("property", (seg, found[seg]))
    raise ApiError(404, f"{entity_set} has no property or navigation {seg!r}")
