"""/city in a real headless Chromium (Debian's, driven by Playwright, as tests/test_wall.py):
both languages with the figures of the database, without JavaScript, live refresh where
scripts run, 320 px wide and 200 % zoom without sideways scrolling, no request leaving the
server, and axe-core (npm) reporting no WCAG 2.2 A/AA violation. Screenshots go to
test-artifacts/."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from api import lang
from api.server import ServerThread
from pusat.embedded.ports import free_port
from pusat.settings import Settings
from tests import city_town
from tests.test_api_support import us, write
from tests.test_city import worst_fresh
from tests.test_wall import ARTIFACTS, CHROMIUM, FLAGS

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (deploy/system-deps.sh)"
)

# axe-core from npm, installed by `make axe` (deploy/axe/package.json) into the cache folder.
AXE = Path(
    os.environ.get(
        "PUSAT_TEST_AXE",
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        / "pusat/axe/node_modules/axe-core/axe.min.js",
    )
)
WCAG = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]


@pytest.fixture
def city_server(settings: Settings) -> Iterator[tuple[ServerThread, str]]:
    s = settings.with_(api_port=free_port(), public_cache_s=0.0)
    assert s.database_url is not None
    city_town.build(s.database_url)
    server = ServerThread(s).start()
    try:
        yield server, s.database_url
    finally:
        server.stop()


@pytest.fixture
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


def _only_the_server(page: Any, base: str) -> list[str]:
    elsewhere: list[str] = []

    def route(r: Any) -> None:
        url = r.request.url
        if url.startswith(base) or url.startswith("data:"):
            r.continue_()
        else:
            elsewhere.append(url)
            r.abort()

    page.route("**/*", route)
    return elsewhere


@pytest.mark.parametrize(("locale", "code"), [("en-GB", "en"), ("ms-MY", "ms")])
def test_city_renders_the_database_in_both_languages_without_javascript(
    city_server: tuple[ServerThread, str], chromium: Any, locale: str, code: str
) -> None:
    server, url = city_server
    words = lang.strings(code)
    context = chromium.new_context(locale=locale, java_script_enabled=False)
    page = context.new_page()
    elsewhere = _only_the_server(page, server.url)
    response = page.goto(f"{server.url}/city")
    assert response is not None and response.status == 200
    assert page.get_attribute("html", "lang") == code  # from Chromium's Accept-Language
    p8 = page.locator("section[data-district='Presint 8']")
    aqi = p8.locator("dd[data-q='aqi_us']")
    assert aqi.locator(".value").inner_text() == f"{worst_fresh(url, 'Presint 8', 'aqi_us'):.0f}"
    assert words["aqi_us.4.name"] in aqi.inner_text()
    assert words["aqi_us.4.advice"] in aqi.inner_text()
    api = p8.locator("dd[data-q='api_my']")
    assert api.locator(".value").inner_text() == f"{worst_fresh(url, 'Presint 8', 'api_my'):.0f}"
    assert words["api_my.3.name"] in api.inner_text()
    assert words["los.4.name"] in p8.locator("dd[data-q='los']").inner_text()
    wet = page.locator("section[data-district='Wetland']")
    level = worst_fresh(url, "Wetland", "water_level")
    assert wet.locator("dd[data-q='water_level'] .value").inner_text() == f"{level:.2f} m"
    assert words["wqi_class.3.name"] in wet.inner_text()
    flood = wet.locator("[data-hazard=flood]").inner_text()
    assert words["hazard.flood_critical"].split(" (")[0] in flood
    p9 = page.locator("section[data-district='Presint 9']")
    assert words["district.stale"].split(":")[0] in p9.inner_text()
    # The map: one circle per district, drawn here, no tiles.
    assert page.locator("svg.map circle").count() == 3
    assert page.locator("img").count() == 0
    assert not page.locator("#live").is_visible()  # no promise of refreshing without scripts
    for secret in city_town.SECRET, city_town.COMMENT, "PRIV-01", "gw-p8":
        assert secret not in page.content()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"city-{code}.png"), full_page=True)
    assert elsewhere == []
    context.close()


def test_city_refreshes_itself_where_scripts_run(
    city_server: tuple[ServerThread, str], chromium: Any
) -> None:
    server, url = city_server
    page = chromium.new_page(locale="en-GB")
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.clock.install()
    page.goto(f"{server.url}/city")
    value = page.locator("section[data-district='Wetland'] dd[data-q='water_level'] .value")
    assert value.inner_text() == "3.12 m"
    assert page.locator("#live").is_visible()
    t = us(datetime.now(UTC))
    write(url, [("WQ-WET-01", "water_level", np.array([t]), np.array([3.47]))])
    page.clock.fast_forward(61_000)  # the page's one-minute refresh
    from playwright.sync_api import expect

    expect(value).to_have_text("3.47 m", timeout=10_000)
    assert errors == []  # and the CSP let the page's own script run


@pytest.mark.parametrize(("width", "height", "name"), [(320, 640, "320px"), (640, 400, "zoom200")])
def test_city_fits_a_small_screen_and_200_percent_zoom(
    city_server: tuple[ServerThread, str], chromium: Any, width: int, height: int, name: str
) -> None:
    """200 % zoom of a 1280 x 800 window is a 640 x 400 CSS-pixel viewport."""
    server, _ = city_server
    scale = 2 if name == "zoom200" else 1
    page = chromium.new_page(
        viewport={"width": width, "height": height}, device_scale_factor=scale, locale="ms-MY"
    )
    page.goto(f"{server.url}/city")
    wide = page.evaluate("document.documentElement.scrollWidth")
    assert wide <= width, f"{wide} px of content in a {width} px viewport: sideways scrolling"
    for box in page.locator("section.district").all():
        b = box.bounding_box()
        assert b is not None and b["x"] >= 0 and b["x"] + b["width"] <= width + 0.5
    page.screenshot(path=str(ARTIFACTS / f"city-{name}.png"), full_page=True)


@pytest.mark.skipif(not AXE.exists(), reason="axe-core is not installed (make axe)")
@pytest.mark.parametrize("code", ["en", "ms"])
def test_city_has_no_axe_violations(
    city_server: tuple[ServerThread, str], chromium: Any, code: str
) -> None:
    server, _ = city_server
    # The page's CSP admits only its own script: let the test inject axe.
    context = chromium.new_context(bypass_csp=True)
    page = context.new_page()
    page.goto(f"{server.url}/city?lang={code}")
    page.add_script_tag(path=str(AXE))
    result = page.evaluate(
        "async (tags) => await axe.run(document, {runOnly: {type: 'tag', values: tags}})", WCAG
    )
    violations = [(v["id"], [n["target"] for n in v["nodes"]]) for v in result["violations"]]
    assert violations == []
    assert len(result["passes"]) > 10  # axe did run its checks
    context.close()
