"""GET /open/v1/...: the public figures as open data (no token), each answer with its licence.

    /open/v1/                      what is here (links) and the licence
    /open/v1/catalog               a DCAT catalogue of the datasets (JSON-LD)
    /open/v1/districts.json        every district with its current status
    /open/v1/districts.csv         the same, one row per district
    /open/v1/districts.geojson     the same as GeoJSON points (the district's centre)
    /open/v1/stations.geojson      the public stations (id, name, domain, district, position)

The figures are those of /city (api/public.py): public stations only, worst fresh value per
district, category codes with their names in English and Bahasa Malaysia.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends
from fastapi.responses import Response

from api import lang, public
from api.city import require_public
from api.state import ApiState, get_state

router = APIRouter(prefix="/open/v1", tags=["public"])

LICENCE_URLS = {
    "CC-BY-4.0": "https://creativecommons.org/licenses/by/4.0/",
    "CC0-1.0": "https://creativecommons.org/publicdomain/zero/1.0/",
    "ODbL-1.0": "https://opendatacommons.org/licenses/odbl/1-0/",
}
FIGURE_QUANTITIES = [q for qs in public.FIGURES.values() for q in qs]


def licence(state: ApiState) -> dict[str, str]:
    spdx = state.settings.public_licence
    out = {"id": spdx}
    if spdx in LICENCE_URLS:
        out["url"] = LICENCE_URLS[spdx]
    return out


def _json(body: Any, media_type: str = "application/json") -> Response:
    return Response(orjson.dumps(body), media_type=media_type)


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _figure(f: public.Figure) -> dict[str, Any]:
    out: dict[str, Any] = {
        "value": f.value,
        "ts": _iso(f.ts),
        "stale": f.stale,
        "stations": f.stations,
        "fresh_stations": f.fresh,
    }
    cat = public.category(f.quantity, f.value)
    if cat is not None:
        out["category"] = cat
        out["label_en"] = lang.strings("en")[f"{f.quantity}.{cat}.name"]
        out["label_ms"] = lang.strings("ms")[f"{f.quantity}.{cat}.name"]
    return out


def district_record(d: public.District) -> dict[str, Any]:
    centre = d.centre()
    hazards = {}
    for kind in public.HAZARDS:
        h = d.hazard(kind)
        hazards[kind] = (
            {"severity": h.severity, "since": _iso(h.since)} if h else {"severity": "none"}
        )
    return {
        "district": d.name,
        "lat": None if centre is None else round(centre[0], 6),
        "lon": None if centre is None else round(centre[1], 6),
        "stations": {dom: len(d.in_domain(dom)) for dom in public.DOMAINS},
        "offline_stations": sum(1 for s in d.stations if s.offline),
        "figures": {q: _figure(f) for q, f in sorted(d.figures.items())},
        "hazards": hazards,
    }


def _flat(record: dict[str, Any]) -> dict[str, Any]:
    """One CSV row (or GeoJSON properties) of a district: figure_field columns."""
    row: dict[str, Any] = {
        "district": record["district"],
        "lat": record["lat"],
        "lon": record["lon"],
        **{f"stations_{k}": v for k, v in record["stations"].items()},
        "offline_stations": record["offline_stations"],
    }
    for q in FIGURE_QUANTITIES:
        f = record["figures"].get(q, {})
        row[q] = f.get("value")
        if q in ("aqi_us", "api_my", "wqi_class", "los"):
            row[f"{q}_category"] = f.get("category")
            row[f"{q}_label"] = f.get("label_en")
        row[f"{q}_ts"] = f.get("ts")
        row[f"{q}_stale"] = f.get("stale")
    for kind, h in record["hazards"].items():
        row[kind] = h["severity"]
        row[f"{kind}_since"] = h.get("since")
    return row


async def _districts(state: ApiState) -> tuple[public.CityStatus, list[dict[str, Any]]]:
    status = await public.city_status(state)
    return status, [district_record(d) for d in status.districts]


@router.get("/", summary="What open data is here, and its licence")
async def index(state: Annotated[ApiState, Depends(get_state)]) -> Response:
    require_public(state)
    base = state.settings.link_base()  # never the made-up Host header a request may carry
    return _json(
        {
            "title": f"{state.settings.city_name} open city data",
            "licence": licence(state),
            "catalog": f"{base}/open/v1/catalog",
            "datasets": {
                "districts": {
                    "json": f"{base}/open/v1/districts.json",
                    "csv": f"{base}/open/v1/districts.csv",
                    "geojson": f"{base}/open/v1/districts.geojson",
                },
                "stations": {"geojson": f"{base}/open/v1/stations.geojson"},
            },
            "sensorthings": f"{base}/sta/v1.1",
            "page": f"{base}/city",
        }
    )


@router.get("/catalog", summary="DCAT catalogue of the datasets (JSON-LD)")
async def catalog(state: Annotated[ApiState, Depends(get_state)]) -> Response:
    require_public(state)
    base = state.settings.link_base()  # never the made-up Host header a request may carry
    city = state.settings.city_name
    lic = licence(state)
    lic_ref = lic.get("url", lic["id"])
    now = _iso(datetime.now(UTC))

    def dist(fmt: str, media: str, path: str) -> dict[str, Any]:
        return {
            "@type": "dcat:Distribution",
            "dct:format": fmt,
            "dcat:mediaType": media,
            "dcat:accessURL": {"@id": f"{base}{path}"},
            "dcat:downloadURL": {"@id": f"{base}{path}"},
            "dct:license": {"@id": lic_ref},
        }

    def dataset(key: str, title: str, text: str, dists: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "@id": f"{base}/open/v1/catalog#{key}",
            "@type": "dcat:Dataset",
            "dct:identifier": key,
            "dct:title": title,
            "dct:description": text,
            "dct:license": {"@id": lic_ref},
            "dct:modified": now,
            "dct:spatial": city,
            "dct:language": ["en", "ms"],
            "dcat:keyword": ["air quality", "water level", "traffic", "smart city", city],
            "dcat:distribution": dists,
        }

    body = {
        "@context": {
            "dcat": "http://www.w3.org/ns/dcat#",
            "dct": "http://purl.org/dc/terms/",
            "foaf": "http://xmlns.com/foaf/0.1/",
        },
        "@id": f"{base}/open/v1/catalog",
        "@type": "dcat:Catalog",
        "dct:title": f"{city} open city data",
        "dct:description": "Current air, wetland and traffic status of the city's districts,"
        " from the city's sensors (public stations only).",
        "dct:publisher": {"@type": "foaf:Organization", "foaf:name": city},
        "dct:license": {"@id": lic_ref},
        "licence": lic,
        "dcat:dataset": [
            dataset(
                "districts",
                "District status",
                "Per district: US AQI and Malaysian API with categories, PM2.5, water level,"
                " DOE-WQI class, flood and storm alarms, level of service and mean speed, each"
                " with its event time and whether it is stale.",
                [
                    dist("JSON", "application/json", "/open/v1/districts.json"),
                    dist("CSV", "text/csv", "/open/v1/districts.csv"),
                    dist("GeoJSON", "application/geo+json", "/open/v1/districts.geojson"),
                ],
            ),
            dataset(
                "stations",
                "Public stations",
                "The city's public sensor stations: id, name, domain, district and position.",
                [dist("GeoJSON", "application/geo+json", "/open/v1/stations.geojson")],
            ),
        ],
        "dcat:service": [
            {
                "@type": "dcat:DataService",
                "dct:title": "OGC SensorThings API 1.1 (read-only)",
                "dcat:endpointURL": {"@id": f"{base}/sta/v1.1"},
                "dct:conformsTo": {"@id": "http://www.opengis.net/doc/is/sensorthings/1.1"},
                "dct:license": {"@id": lic_ref},
            }
        ],
    }
    return _json(body, "application/ld+json")


@router.get("/districts.json", summary="Every district with its current status (JSON)")
async def districts_json(state: Annotated[ApiState, Depends(get_state)]) -> Response:
    require_public(state)
    status, records = await _districts(state)
    return _json(
        {
            "licence": licence(state),
            "generated_at": _iso(status.at),
            "time_zone": state.settings.city_timezone,
            "districts": records,
        }
    )


@router.get("/districts.csv", summary="Every district with its current status (CSV)")
async def districts_csv(state: Annotated[ApiState, Depends(get_state)]) -> Response:
    require_public(state)
    _, records = await _districts(state)
    rows = [_flat(r) for r in records]
    out = io.StringIO()
    columns = [*_flat(district_record(public.District(""))), "licence"]
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "licence": state.settings.public_licence})
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'inline; filename="districts.csv"'},
    )


@router.get("/districts.geojson", summary="Every district with its current status (GeoJSON)")
async def districts_geojson(state: Annotated[ApiState, Depends(get_state)]) -> Response:
    require_public(state)
    status, records = await _districts(state)
    features = [
        {
            "type": "Feature",
            "id": r["district"],
            "geometry": {"type": "Point", "coordinates": [r["lon"], r["lat"]]},
            "properties": {**_flat(r), "figures": r["figures"], "hazards": r["hazards"]},
        }
        for r in records
        if r["lat"] is not None
    ]
    body = {
        "type": "FeatureCollection",
        "licence": licence(state),
        "generated_at": _iso(status.at),
        "features": features,
    }
    return _json(body, "application/geo+json")


@router.get("/stations.geojson", summary="The public stations (GeoJSON)")
async def stations_geojson(state: Annotated[ApiState, Depends(get_state)]) -> Response:
    require_public(state)
    found = await public.stations(state)
    features = [
        {
            "type": "Feature",
            "id": s.sensor_id,
            "geometry": {"type": "Point", "coordinates": [s.lon, s.lat]},
            "properties": {
                "station": s.sensor_id,
                "name": s.name,
                "domain": s.domain,
                "district": s.district,
                "offline": s.offline,
            },
        }
        for s in found
        if s.lat is not None and s.lon is not None
    ]
    body = {"type": "FeatureCollection", "licence": licence(state), "features": features}
    return _json(body, "application/geo+json")
