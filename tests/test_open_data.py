"""/open/v1 with the suite's PostgreSQL: JSON, CSV and GeoJSON of the districts with the
figures of the database and a licence, the public stations, and a DCAT catalogue whose every
distribution answers with its media type."""

from __future__ import annotations

import csv
import io

import geojson
import pytest

from tests import city_town
from tests.test_api_support import Api
from tests.test_city import PRIVATE, worst_fresh

pytest_plugins = ["tests.test_api_support"]


@pytest.fixture
def town(api: Api) -> Api:
    city_town.build(api.settings.database_url or "")
    return api


def test_districts_json_has_the_database_figures_and_a_licence(town: Api) -> None:
    url = town.settings.database_url or ""
    r = town.get("/open/v1/districts.json", role=None)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["licence"] == {
        "id": "CC-BY-4.0",
        "url": "https://creativecommons.org/licenses/by/4.0/",
    }
    by = {d["district"]: d for d in body["districts"]}
    assert sorted(by) == ["Presint 8", "Presint 9", "Wetland"]
    p8 = by["Presint 8"]
    assert p8["figures"]["aqi_us"]["value"] == worst_fresh(url, "Presint 8", "aqi_us")
    assert p8["figures"]["aqi_us"]["category"] == 4
    assert p8["figures"]["aqi_us"]["label_ms"] == "Tidak sihat"
    assert p8["figures"]["los"]["label_en"] == "D"
    assert p8["stations"] == {"air": 2, "traffic": 1, "water": 0}  # not the private one
    assert by["Presint 9"]["figures"]["aqi_us"]["stale"] is True
    assert by["Presint 9"]["offline_stations"] == 1
    wet = by["Wetland"]
    assert wet["figures"]["water_level"]["value"] == worst_fresh(url, "Wetland", "water_level")
    assert wet["hazards"]["flood"]["severity"] == "critical"
    assert wet["hazards"]["storm"] == {"severity": "none"}
    for secret in PRIVATE:
        assert secret not in r.text


def test_districts_csv_and_geojson_agree_with_json(town: Api) -> None:
    records = {
        d["district"]: d for d in town.get("/open/v1/districts.json", None).json()["districts"]
    }
    r = town.get("/open/v1/districts.csv", role=None)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["district"] for row in rows] == sorted(records)
    for row in rows:
        rec = records[row["district"]]
        assert row["licence"] == "CC-BY-4.0"
        if "aqi_us" in rec["figures"]:
            assert float(row["aqi_us"]) == rec["figures"]["aqi_us"]["value"]
            assert row["aqi_us_label"] == rec["figures"]["aqi_us"]["label_en"]
    g = town.get("/open/v1/districts.geojson", role=None)
    assert g.headers["content-type"] == "application/geo+json"
    fc = geojson.loads(g.text)
    assert fc.is_valid, fc.errors()
    assert fc["licence"]["id"] == "CC-BY-4.0"
    for f in fc["features"]:
        rec = records[f["id"]]
        assert f["geometry"]["coordinates"] == [rec["lon"], rec["lat"]]
        assert f["properties"]["flood"] == rec["hazards"]["flood"]["severity"]
    s = geojson.loads(town.get("/open/v1/stations.geojson", role=None).text)
    assert s.is_valid
    assert sorted(f["id"] for f in s["features"]) == [
        "AQ-P8-01",
        "AQ-P8-02",
        "AQ-P9-01",
        "LOOP-P8-01",
        "WQ-WET-01",
    ]


def test_dcat_catalogue_lists_working_distributions(town: Api) -> None:
    index = town.get("/open/v1/", role=None).json()
    assert index["licence"]["id"] == "CC-BY-4.0"
    cat = town.get("/open/v1/catalog", role=None)
    assert cat.headers["content-type"] == "application/ld+json"
    body = cat.json()
    assert body["@type"] == "dcat:Catalog"
    assert body["@context"]["dcat"] == "http://www.w3.org/ns/dcat#"
    datasets = {d["dct:identifier"]: d for d in body["dcat:dataset"]}
    assert set(datasets) == {"districts", "stations"}
    seen = 0
    for d in datasets.values():
        assert d["dct:license"]["@id"].startswith("https://creativecommons.org/")
        for dist in d["dcat:distribution"]:
            r = town.get(dist["dcat:downloadURL"]["@id"].removeprefix(town.url), role=None)
            assert r.status_code == 200
            assert r.headers["content-type"].split(";")[0] == dist["dcat:mediaType"]
            seen += 1
    assert seen == 4
    assert body["dcat:service"][0]["dcat:endpointURL"]["@id"].endswith("/sta/v1.1")
