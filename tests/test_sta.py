"""/sta/v1.1 with the suite's PostgreSQL, read by Fraunhofer's SensorThings client from PyPI
(frost-sta-client, which no one here wrote) and by the request examples of the standard
(OGC 18-088, SensorThings API Part 1: Sensing, version 1.1, sections 9.2 and 9.3), adapted to
Pusat's ids. Only public stations and environmental quantities appear."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import frost_sta_client as fsc
import numpy as np
import pytest

from tests import city_town
from tests.helpers import rows
from tests.test_api_support import US, Api, us, write

pytest_plugins = ["tests.test_api_support"]
# frost-sta-client's URL library warns about its own use of a deprecated call.
pytestmark = pytest.mark.filterwarnings("ignore:furl.pathstr is deprecated:DeprecationWarning")

T0 = datetime(2026, 12, 1, 0, 0, tzinfo=UTC)


@pytest.fixture
def town(api: Api) -> Api:
    url = api.settings.database_url or ""
    city_town.build(url)
    # 150 PM2.5 readings a minute apart at one station: more than one page of 100.
    t = us(T0) + np.arange(150, dtype=np.int64) * 60 * US
    write(url, [("AQ-P8-01", "pm25", t, np.arange(150, dtype=np.float64) / 2)])
    return api


def series_id(url: str, sensor: str, quantity: str) -> int:
    ((sid,),) = rows(
        url,
        "SELECT series_id FROM series WHERE sensor_id = %s AND quantity = %s",
        (sensor, quantity),
    )
    return int(sid)


def get(api: Api, path: str, **params: Any) -> Any:
    r = api.get("/sta/v1.1" + path, role=None, **params)
    assert r.status_code == 200, (path, params, r.text)
    return r.json()


def test_a_third_party_client_reads_things_datastreams_and_observations(town: Api) -> None:
    url = town.settings.database_url or ""
    service = fsc.SensorThingsService(town.url + "/sta/v1.1")
    things = service.things().query().list()
    ids = sorted(t.id for t in things)
    assert ids == ["AQ-P8-01", "AQ-P8-02", "AQ-P9-01", "LOOP-P8-01", "WQ-WET-01"]  # no PRIV-01
    thing = service.things().find("AQ-P8-01")
    assert thing.name == "Sekolah P8"
    assert thing.properties == {"domain": "air", "district": "Presint 8"}
    streams = thing.get_datastreams().query().list()
    names = sorted(d.name for d in streams)
    assert names == ["AQ-P8-01 api_my", "AQ-P8-01 aqi_us", "AQ-P8-01 pm25"]
    pm = service.datastreams().find(series_id(url, "AQ-P8-01", "pm25"))
    assert pm.unit_of_measurement.symbol == "ug/m3"
    # All 151 observations (150 + the town's one), over two pages followed by the client.
    obs = pm.get_observations().query().orderby("phenomenonTime", "ASC").list()
    values = [o.result for o in obs]
    assert len(values) == 151
    (stored,) = rows(
        url, "SELECT count(*) FROM readings WHERE sensor_id = 'AQ-P8-01' AND quantity = 'pm25'"
    )
    assert len(values) == stored[0]
    assert values[:3] == [0.0, 0.5, 1.0]
    newest = pm.get_observations().query().orderby("phenomenonTime", "DESC").top(1).list().entities
    assert newest[0].result == 21.4  # the town's reading of a minute ago
    found = (
        service.observations()
        .query()
        .filter(f"Datastream/@iot.id eq {pm.id} and result ge 70")
        .list()
    )
    assert sorted(o.result for o in found) == [
        70.0,
        70.5,
        71.0,
        71.5,
        72.0,
        72.5,
        73.0,
        73.5,
        74.0,
        74.5,
    ]
    locs = thing.get_locations().query().list()
    assert [loc.location["coordinates"] for loc in locs] == [[101.6964, 2.9264]]
    assert sorted(p.name for p in service.observed_properties().query().list()) == [
        "api_my",
        "aqi_us",
        "do",
        "los",
        "pm25",
        "speed",
        "water_level",
        "wqi_class",
    ]  # never battery


def test_the_standards_request_examples(town: Api) -> None:
    url = town.settings.database_url or ""
    pm = series_id(url, "AQ-P8-01", "pm25")
    root = get(town, "")
    assert {v["name"] for v in root["value"]} >= {
        "Things",
        "Locations",
        "Datastreams",
        "Sensors",
        "Observations",
        "ObservedProperties",
    }
    assert root["value"][0]["url"].startswith(town.url + "/sta/v1.1/")
    # 9.2: an entity, a related collection, a property, its raw value, a related entity.
    thing = get(town, "/Things('AQ-P8-01')")
    assert thing["@iot.selfLink"] == f"{town.url}/sta/v1.1/Things('AQ-P8-01')"
    assert thing["Datastreams@iot.navigationLink"].endswith("/Things('AQ-P8-01')/Datastreams")
    assert len(get(town, "/Things('AQ-P8-01')/Locations")["value"]) == 1
    assert get(town, "/Things('AQ-P8-01')/name") == {"name": "Sekolah P8"}
    r = town.get("/sta/v1.1/Things('AQ-P8-01')/name/$value", role=None)
    assert r.json() == "Sekolah P8"
    assert get(town, f"/Datastreams({pm})/Thing")["@iot.id"] == "AQ-P8-01"
    located = get(town, "/Things('AQ-P8-01')/Locations('AQ-P8-01')")
    assert located["location"]["type"] == "Point"
    refs = get(town, "/Things('AQ-P8-01')/Datastreams/$ref")
    assert len(refs["value"]) == 3
    assert all(list(r) == ["@iot.selfLink"] for r in refs["value"])
    assert get(town, f"/Datastreams({pm})/Thing/$ref") == {
        "@iot.selfLink": f"{town.url}/sta/v1.1/Things('AQ-P8-01')"
    }
    assert get(town, f"/Datastreams({pm})/ObservedProperty")["name"] == "pm25"
    assert get(town, f"/Datastreams({pm})/Sensor")["@iot.id"] == "AQ-P8-01"
    first = get(
        town, f"/Datastreams({pm})/Observations", **{"$orderby": "phenomenonTime asc", "$top": "1"}
    )
    oid = first["value"][0]["@iot.id"]
    assert first["value"][0]["phenomenonTime"] == "2026-12-01T00:00:00Z"
    one = get(town, f"/Observations('{oid}')")
    assert one["result"] == 0.0
    assert get(town, f"/Observations('{oid}')/Datastream")["@iot.id"] == pm
    # 9.3.2.1 $expand, with nested options and a path
    things = get(
        town,
        "/Things",
        **{"$expand": "Datastreams($orderby=name;$top=1)", "$filter": "@iot.id eq 'AQ-P8-01'"},
    )
    assert [d["name"] for d in things["value"][0]["Datastreams"]] == ["AQ-P8-01 api_my"]
    deep = get(town, "/Things('WQ-WET-01')", **{"$expand": "Datastreams/ObservedProperty"})
    assert {d["ObservedProperty"]["name"] for d in deep["Datastreams"]} == {
        "do",
        "water_level",
        "wqi_class",
    }
    latest = get(
        town,
        f"/Datastreams({pm})",
        **{"$expand": "Observations($orderby=phenomenonTime desc;$top=1),ObservedProperty"},
    )
    assert (
        latest["Observations"][0]["result"] == 21.4 and latest["ObservedProperty"]["name"] == "pm25"
    )
    # 9.3.2.2 $select
    sel = get(town, "/Things", **{"$select": "name,description"})
    assert all(set(t) == {"name", "description"} for t in sel["value"])
    # 9.3.3.1 $orderby, 9.3.3.2 $top, 9.3.3.3 $skip, 9.3.3.4 $count
    names = [t["name"] for t in get(town, "/Things", **{"$orderby": "name desc"})["value"]]
    assert names == sorted(names, reverse=True)
    page = get(
        town, "/Things", **{"$orderby": "@iot.id", "$top": "2", "$skip": "1", "$count": "true"}
    )
    assert page["@iot.count"] == 5
    assert [t["@iot.id"] for t in page["value"]] == ["AQ-P8-02", "AQ-P9-01"]
    assert "$skip=3" in page["@iot.nextLink"]
    # 9.3.3.5 $filter: comparison, logical, string functions, properties, navigation paths
    f = get(town, "/Things", **{"$filter": "properties/district eq 'Presint 8'"})
    assert sorted(t["@iot.id"] for t in f["value"]) == ["AQ-P8-01", "AQ-P8-02", "LOOP-P8-01"]
    f = get(
        town,
        "/Things",
        **{"$filter": "startswith(name, 'AQ') and not (properties/domain ne 'air')"},
    )
    assert sorted(t["@iot.id"] for t in f["value"]) == ["AQ-P8-02", "AQ-P9-01"]
    f = get(
        town,
        "/Datastreams",
        **{
            "$filter": "ObservedProperty/@iot.id eq 'aqi_us'"
            " and Thing/properties/district eq 'Presint 8'"
        },
    )
    assert sorted(d["name"] for d in f["value"]) == ["AQ-P8-01 aqi_us", "AQ-P8-02 aqi_us"]
    f = get(
        town, "/Things", **{"$filter": "substringof('Inlet', name) or tolower(name) eq 'aq-p9-01'"}
    )
    assert sorted(t["@iot.id"] for t in f["value"]) == ["AQ-P9-01", "WQ-WET-01"]
    # Geometry (OData geo.* and OGC st_* functions), in lon/lat degrees.
    box = "geography'POLYGON((101.69 2.92, 101.71 2.92, 101.71 2.935, 101.69 2.935, 101.69 2.92))'"
    f = get(town, "/Locations", **{"$filter": f"st_within(location, {box})"})
    assert sorted(x["@iot.id"] for x in f["value"]) == ["AQ-P8-01", "AQ-P8-02", "LOOP-P8-01"]
    f = get(town, "/Things", **{"$filter": f"geo.intersects(Locations/location, {box})"})
    assert sorted(x["@iot.id"] for x in f["value"]) == ["AQ-P8-01", "AQ-P8-02", "LOOP-P8-01"]
    near = "geography'POINT(101.685 2.97)'"
    f = get(town, "/Locations", **{"$filter": f"geo.distance(location, {near}) lt 0.001"})
    assert [x["@iot.id"] for x in f["value"]] == ["WQ-WET-01"]
    since = (T0 + timedelta(minutes=140)).isoformat().replace("+00:00", "Z")
    f = get(
        town,
        "/Observations",
        **{
            "$filter": f"phenomenonTime gt {since} and Datastream/@iot.id eq {pm}"
            " and result lt 100",
            "$count": "true",
        },
    )
    assert f["@iot.count"] == 10  # minutes 141..149 and the town's reading
    f = get(town, f"/Datastreams({pm})/Observations", **{"$filter": "result mul 2 eq 3"})
    assert [o["result"] for o in f["value"]] == [1.5]


def test_private_and_bad_requests(town: Api) -> None:
    for path in ("/Things('PRIV-01')", "/Locations('PRIV-01')", "/ObservedProperties('battery')"):
        r = town.get("/sta/v1.1" + path, role=None)
        assert r.status_code == 404, path
    everything = town.get("/sta/v1.1/Datastreams", role=None, **{"$top": "1000"}).text
    for secret in city_town.SECRET, "PRIV-01", "gw-p8", "battery":
        assert secret not in everything
    bad = {
        "$filter": "name eq",
        "$orderby": "name sideways",
        "$top": "-1",
        "$wrong": "1",
        "$expand": "Nothing",
    }
    for option, value in bad.items():
        r = town.get("/sta/v1.1/Things", role=None, **{option: value})
        assert r.status_code == 400, (option, r.text)
        assert r.json()["detail"]
    r = town.get(
        "/sta/v1.1/Observations", role=None, **{"$filter": "FeatureOfInterest/name eq 'x'"}
    )
    assert r.status_code == 400 and "not supported" in r.json()["detail"]
    line = "st_within(location, geography'LINESTRING(1 2, 3 4)')"
    r = town.get("/sta/v1.1/Locations", role=None, **{"$filter": line})
    assert r.status_code == 400 and "POINT and POLYGON" in r.json()["detail"]
    assert town.get("/sta/v1.1/Nothing", role=None).status_code == 404
    with town.client(None) as c:
        assert c.post("/sta/v1.1/Things", json={"name": "x"}).status_code == 405
