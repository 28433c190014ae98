"""The public side over HTTP with the suite's PostgreSQL: /city in both languages with the
figures of the database, PUSAT_PUBLIC=false, and the walk over every route of the app proving
that nothing outside an explicit allow-list answers without a token, and that what does answer
shows no private data (the browser tests are in tests/test_city_browser.py)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator

import httpx
import pytest
from fastapi.routing import APIRoute
from starlette.routing import Mount, Route

from api import lang
from api.server import ServerThread
from pusat.embedded.ports import free_port
from pusat.settings import Settings
from tests import city_town
from tests.helpers import rows
from tests.test_api_support import Api

pytest_plugins = ["tests.test_api_support"]

# Everything a request without a token may reach. Anything else must answer 401.
ANONYMOUS = {
    "/city",
    "/healthz",
    "/metrics",
    "/docs",
    "/docs/oauth2-redirect",
    "/openapi.json",
}
ANONYMOUS_PREFIXES = ("/open/v1", "/sta/v1.1", "/docs-assets")
# Strings of the town that no public answer may contain.
PRIVATE = (city_town.SECRET, city_town.COMMENT, "PRIV-01", "gw-p8", "gw-p9", "test-operator")


@pytest.fixture
def town(api: Api) -> Api:
    city_town.build(api.settings.database_url or "")
    return api


def section(page: str, district: str) -> str:
    m = re.search(rf'<section[^>]*data-district="{district}">(.*?)</section>', page, re.S)
    assert m, f"no section for {district}"
    return m.group(1)


def worst_fresh(url: str, district: str, quantity: str) -> float:
    """The figure /city must show, straight from the public SQL surface."""
    ((value,),) = rows(
        url,
        "SELECT max(l.value) FROM latest l JOIN sensors s USING (sensor_id)"
        " WHERE s.district = %s AND l.quantity = %s AND l.ts > now() - interval '5 hours'"
        " AND coalesce(s.attributes->>'public', 'true') <> 'false'",
        (district, quantity),
    )
    return float(value)


def test_city_in_english_shows_the_database_figures(town: Api) -> None:
    url = town.settings.database_url or ""
    r = town.get("/city", role=None, lang="en")
    assert r.status_code == 200, r.text
    assert r.headers["content-language"] == "en"
    assert "Accept-Language" in r.headers["vary"]
    page = r.text
    assert '<html lang="en">' in page
    p8 = section(page, "Presint 8")
    aqi = worst_fresh(url, "Presint 8", "aqi_us")
    assert aqi == 151  # the worse of the two stations, not the private 499
    assert f'<span class="value">{aqi:.0f}</span>' in p8
    assert "<strong>Unhealthy</strong>" in p8
    assert "Everyone should cut down long or hard outdoor exertion" in p8
    assert f'<span class="value">{worst_fresh(url, "Presint 8", "api_my"):.0f}</span>' in p8
    assert "56.2 µg/m³" in p8
    assert "<strong>D</strong>" in p8  # level of service 4
    wet = section(page, "Wetland")
    assert f"{worst_fresh(url, 'Wetland', 'water_level'):.2f} m" in wet
    assert "Class III" in wet
    assert 'data-hazard="flood" class="alarm">Flood warning' in wet
    assert "No storm alarm." in wet
    p9 = section(page, "Presint 9")
    assert "Out of date" in p9 and "1 of 1 stations are offline." in p9
    # Times in the city's zone (UTC+8), written the English way.
    assert re.search(r'datetime="[^"]+\+08:00"', page)
    assert re.search(r"\d{1,2} [A-Z][a-z]{2} \d{4}, \d{1,2}:\d{2}\s[ap]m", page)
    for secret in PRIVATE:
        assert secret not in page
    # Not colour alone: every category shown has its name and a swatch of its own pattern.
    shown = re.findall(r'data-q="(\w+)" data-category="(\d)">(.*?)</dd>', page, re.S)
    assert len(shown) >= 6
    for quantity, cat, body in shown:
        assert f'class="sw p{cat}"' in body
        assert f"<strong>{lang.strings('en')[f'{quantity}.{cat}.name']}</strong>" in body
    # Headings in order: the page, its parts, the districts, their domains.
    levels = [int(h) for h in re.findall(r"<h(\d)", page)]
    assert levels[0] == 1 and all(b - a <= 1 for a, b in itertools.pairwise(levels))


def test_city_in_bahasa_malaysia_by_accept_language(town: Api) -> None:
    with town.client(None) as c:
        page = c.get("/city", headers={"Accept-Language": "fr-FR, ms;q=0.8, en;q=0.5"}).text
        assert '<html lang="ms">' in page
        p8 = section(page, "Presint 8")
        assert "<strong>Tidak sihat</strong>" in p8
        assert "Zarah halus (PM2.5)" in p8
        assert re.search(r"\d{1,2} [A-Z][a-z]{2} \d{4}, \d{1,2}:\d{2}\s(PG|PTG)", page)
        # ?lang= wins over the header; a reader's own English locale is honoured.
        gb = c.get("/city?lang=en-GB", headers={"Accept-Language": "ms"}).text
        assert '<html lang="en">' in gb and re.search(r", \d{2}:\d{2}</time>", gb)
        # No header and no parameter: the city's own language.
        assert '<html lang="ms">' in c.get("/city").text
        bad = c.get("/city?lang=fr")
        assert bad.status_code == 400 and "ms, en" in bad.json()["detail"]
        part = c.get("/city?part=now&lang=en")
        assert part.status_code == 200 and part.text.startswith("<h2")
        assert "<html" not in part.text


def test_every_catalogue_has_the_same_strings() -> None:
    keys = {code: set(lang.strings(code)) for code in lang.LANGUAGES}
    en = {k for k in keys["en"] if not k.endswith(".one")}  # Malay has no singular form
    assert en == keys["ms"] - {k for k in keys["ms"] if k.endswith(".one")}


def test_public_off_answers_404(settings: Settings) -> None:
    server = ServerThread(settings.with_(api_port=free_port(), public=False)).start()
    try:
        for path in ("/city", "/open/v1/districts.json", "/sta/v1.1/Things"):
            r = httpx.get(server.url + path, timeout=30)
            assert r.status_code == 404, (path, r.status_code)
    finally:
        server.stop()


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def _walk(app_routes: list[object], prefix: str = "") -> Iterator[tuple[str, str]]:
    for route in app_routes:
        included = getattr(route, "original_router", None)  # FastAPI's include_router entry
        if included is not None:
            inner = prefix + getattr(route, "include_context").prefix  # noqa: B009
            yield from _walk(included.routes, inner)
        elif isinstance(route, APIRoute | Route):
            for method in sorted(route.methods or {"GET"}):
                yield method, prefix + route.path
        elif isinstance(route, Mount):
            yield "GET", prefix + route.path + "/x"
        else:
            raise AssertionError(f"a route of an unknown kind: {route!r}")


def allowed(path: str) -> bool:
    return path in ANONYMOUS or any(path.startswith(p) for p in ANONYMOUS_PREFIXES)


def test_nothing_outside_the_allow_list_answers_without_a_token(town: Api) -> None:
    """Walks every route the app has (a route added later is walked too) with no token."""
    server = ServerThread(town.settings.with_(api_port=free_port()))
    walked = list(_walk(server.app.routes))
    assert len(walked) > 20
    reached = []
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            for method, path in walked:
                if method == "HEAD":
                    continue
                r = c.request(method, _concrete(path), json={} if method != "GET" else None)
                if allowed(path):
                    reached.append(path)
                    if r.status_code < 400:
                        for secret in PRIVATE:
                            assert secret not in r.text, (path, secret)
                else:
                    assert r.status_code == 401, (method, path, r.status_code, r.text[:200])
    finally:
        server.stop()
    assert "/city" in reached
