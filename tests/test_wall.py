"""The /wall page in a real headless Chromium (Debian's, driven by Playwright), fed by a real
ingest worker through Mosquitto: it loads, shows a reading within seconds of its publication,
acknowledges an alarm, turns its freshness indicator red when data stops, and asks nothing of
the internet. A screenshot is kept under test-artifacts/. The API's docs page, too, must work
with no internet."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from api import auth
from api.server import ServerThread
from bench.wall import CHROMIUM, FLAGS  # the flags that work on these machines
from pusat.embedded.ports import free_port
from pusat.settings import Settings
from store import db
from tests.conftest import RunningWorker
from tests.helpers import Publisher, rows, wait_for

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (deploy/system-deps.sh)"
)

SENSORS = [
    {
        "id": "AQ-P8-01",
        "domain": "air",
        "district": "Presint 8",
        "lat": 2.9264,
        "lon": 101.6964,
        "quantities": ["pm25", "pm10"],
    },
    {
        "id": "AQ-P9-01",
        "domain": "air",
        "district": "Presint 9",
        "lat": 2.9050,
        "lon": 101.6800,
        "quantities": ["pm25"],
    },
    {
        "id": "AQ-P10-01",
        "domain": "air",
        "district": "Presint 10",
        "lat": 2.9150,
        "lon": 101.6700,
        "quantities": ["pm25"],
    },
    {
        "id": "LOOP-P2-01",
        "domain": "traffic",
        "district": "Presint 2",
        "lat": 2.9300,
        "lon": 101.6900,
        "quantities": ["flow", "speed", "los"],
    },
    {
        "id": "WQ-WET-01",
        "domain": "water",
        "district": "Wetland",
        "lat": 2.9700,
        "lon": 101.6850,
        "name": "Wetland inlet",
        "quantities": ["water_level", "do", "wqi_class"],
    },
]


@pytest.fixture
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


def native(sensor: str, t: float, **values: float) -> str:
    return json.dumps({"sensor": sensor, "ts": t, "values": values})


def test_wall_live_reading_acknowledge_and_freshness(
    settings: Settings, publisher: Publisher, browser: object
) -> None:
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    s = settings.with_(api_port=free_port(), api_token_cache_s=0.0)
    assert s.database_url is not None
    with db.connect(s.database_url) as conn:
        _, operator = auth.create_token(conn, "operator", "wall-operator")
    root = f"{s.topic_root}/gw-wall"
    worker = RunningWorker(s).start()
    server = ServerThread(s).start()
    try:
        publisher.publish(f"{root}/meta", json.dumps({"sensors": SENSORS}), retain=True)
        now = time.time()
        publisher.publish(
            f"{root}/json",
            json.dumps(
                [
                    {"sensor": "AQ-P9-01", "ts": now - 5, "values": {"pm25": 12.0}},
                    {"sensor": "AQ-P10-01", "ts": now - 5, "values": {"pm25": 40.0}},
                    {
                        "sensor": "LOOP-P2-01",
                        "ts": now - 5,
                        "values": {"flow": 640, "speed": 42, "los": 3},
                    },
                    {
                        "sensor": "WQ-WET-01",
                        "ts": now - 5,
                        "values": {"water_level": 1.21, "do": 6.4, "wqi_class": 2},
                    },
                    # Two hours of the wetland level before it, for its sparkline.
                    *(
                        {
                            "sensor": "WQ-WET-01",
                            "ts": now - 600 * k,
                            "values": {"water_level": round(1.21 - 0.01 * k, 2)},
                        }
                        for k in range(1, 13)
                    ),
                    # PM2.5 above the warning threshold for over two minutes (event time): an alarm.
                    {"sensor": "AQ-P8-01", "ts": now - 180, "values": {"pm25": 80.0, "pm10": 90}},
                    {"sensor": "AQ-P8-01", "ts": now - 30, "values": {"pm25": 82.0, "pm10": 95}},
                ]
            ),
        )
        (alert_id,) = wait_for(
            lambda: rows(
                s.database_url or "",
                "SELECT id FROM alerts WHERE sensor_id = 'AQ-P8-01' AND state = 'active'",
            ),
            what="the PM2.5 alarm raised by ingest",
        )[0]

        page = browser.new_page(viewport={"width": 1920, "height": 1080})
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{server.url}/wall?token={operator}&stale=6")
        page.wait_for_selector("#live.live", timeout=15_000)
        row = page.locator(f"#alarms li[data-id='{alert_id}']")
        row.wait_for(timeout=15_000)
        assert "active" in (row.get_attribute("class") or "")
        expect(page.locator("#water")).to_contain_text("1.21", timeout=15_000)
        # Districts worst first (unhealthy, sensitive groups, moderate), not by name, and the
        # ticker starts from the newest readings already stored.
        districts = page.locator("#air .row .name")
        # A district's name is the first text of its cell (innerText's line breaks depend on
        # the moment's layout, and the tiles re-render as data comes in).
        names = "es => es.map((e) => e.firstChild.textContent)"
        expect(districts).to_have_count(3)
        assert districts.evaluate_all(names) == [
            "Presint 8",
            "Presint 10",
            "Presint 9",
        ]
        assert "waiting" not in page.inner_text("#ticker")
        # The level's last two hours as a sparkline: one point per 5-minute bucket with data.
        line = page.locator("#water svg.spark polyline")
        expect(line).to_have_count(1, timeout=15_000)
        assert len((line.get_attribute("points") or "").split()) >= 12

        # A reading published now shows on the wall within seconds.
        published = time.monotonic()
        publisher.publish(f"{root}/json", native("AQ-P9-01", time.time(), pm25=42.5))
        # (Locators, not wait_for_function: the page's CSP forbids evaluating strings.)
        expect(page.locator("#ticker")).to_contain_text("42.5", timeout=10_000)
        expect(page.locator("#air")).to_contain_text("42.5", timeout=10_000)
        # Presint 9 is now as bad as Presint 10: the same band goes by name, numbers in order.
        assert districts.evaluate_all(names) == [
            "Presint 8",
            "Presint 9",
            "Presint 10",
        ]
        shown_after = time.monotonic() - published
        assert shown_after < 5, f"the reading took {shown_after:.1f}s to reach the wall"
        assert "fresh" in (page.get_attribute("#freshness", "class") or "")

        # The operator acknowledges the alarm on the wall.
        row.locator("button.ack").click()
        page.wait_for_selector(f"#alarms li.acknowledged[data-id='{alert_id}']", timeout=10_000)
        state, by = rows(
            s.database_url, "SELECT state, acked_by FROM alerts WHERE id = %s", (alert_id,)
        )[0]
        assert (state, by) == ("acknowledged", "wall-operator")
        assert row.locator("button.ack").count() == 0

        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "wall.png"))

        # Data stops: the freshness indicator turns red (stale=6 s for the test).
        page.wait_for_selector("#freshness.stale", timeout=15_000)
        assert "NO DATA" in page.inner_text("#freshness")
        page.screenshot(path=str(ARTIFACTS / "wall-no-data.png"))

        assert not errors, errors
        outside = [u for u in requests if not u.startswith(server.url)]
        assert not outside, f"the wall asked the internet for {outside}"
        page.close()
    finally:
        server.stop()
        worker.stop()


def test_wall_without_a_token_says_how_to_get_one(settings: Settings, browser: object) -> None:
    from playwright.sync_api import Browser

    assert isinstance(browser, Browser)
    s = settings.with_(api_port=free_port())
    server = ServerThread(s).start()
    try:
        page = browser.new_page()
        response = page.goto(f"{server.url}/wall")
        assert response is not None and response.status == 401
        assert "pusat token create --role viewer" in page.inner_text("body")
        page.goto(f"{server.url}/wall?token=pusat_wrong")
        assert "unknown or revoked token" in page.inner_text("body")
        page.close()
    finally:
        server.stop()


def test_api_docs_render_with_no_internet(settings: Settings, browser: object) -> None:
    """Swagger UI at /docs lists the operations with every request answered by the server."""
    from playwright.sync_api import Browser, Route

    assert isinstance(browser, Browser)
    server = ServerThread(settings.with_(api_port=free_port())).start()
    elsewhere: list[str] = []

    def only_the_server(route: Route) -> None:
        url = route.request.url
        if url.startswith(server.url) or url.startswith("data:"):
            route.continue_()
        else:
            elsewhere.append(url)
            route.abort()

    try:
        page = browser.new_page()
        page.route("**/*", only_the_server)
        response = page.goto(f"{server.url}/docs")
        assert response is not None and response.status == 200
        # Swagger UI lists each operation under its path.
        page.wait_for_selector('.opblock-summary-path[data-path="/api/v1/readings"]')
        assert elsewhere == []
        page.close()
    finally:
        server.stop()


def district_sensors(n: int) -> list[dict[str, object]]:
    """One air station in each of Presint 1 .. n, as the simulated city has them."""
    return [
        {
            "id": f"AQ-P{i:02d}",
            "domain": "air",
            "district": f"Presint {i}",
            "lat": 2.90 + 0.004 * i,
            "lon": 101.68 + 0.002 * i,
            "quantities": ["pm25"],
        }
        for i in range(1, n + 1)
    ]


def test_wall_tiles_put_alarmed_sensors_first_and_count_what_they_hide(
    settings: Settings, publisher: Publisher, browser: object
) -> None:
    """On a 1920 x 1080 wall nothing scrolls: a tile shows the rows that fit, alarmed first,
    and says how many it leaves out."""
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    s = settings.with_(api_port=free_port(), api_token_cache_s=0.0)
    assert s.database_url is not None
    with db.connect(s.database_url) as conn:
        _, viewer = auth.create_token(conn, "viewer", "wall-viewer")
    root = f"{s.topic_root}/gw-wall"
    n = 12
    worker = RunningWorker(s).start()
    server = ServerThread(s).start()
    try:
        publisher.publish(f"{root}/meta", json.dumps({"sensors": district_sensors(n)}), retain=True)
        now = time.time()
        # All districts equally good; the last by name has a stuck PM2.5 sensor (the same value
        # for over two hours): an open alarm that does not change its air-quality band.
        # (Oldest first: alarms take readings in arrival order, and a late one is not judged.)
        readings = [
            {"sensor": f"AQ-P{n:02d}", "ts": now - 600 * k, "values": {"pm25": 5.0}}
            for k in range(13, 0, -1)
        ]
        readings += [
            {"sensor": f"AQ-P{i:02d}", "ts": now - 30, "values": {"pm25": 5.0}}
            for i in range(1, n + 1)
        ]
        publisher.publish(f"{root}/json", json.dumps(readings))
        wait_for(
            lambda: rows(
                s.database_url or "",
                "SELECT id FROM alerts WHERE sensor_id = %s AND state = 'active'",
                (f"AQ-P{n:02d}",),
            ),
            what="the stuck-sensor alarm raised by ingest",
        )
        page = browser.new_page(viewport={"width": 1920, "height": 1080})
        page.goto(f"{server.url}/wall?token={viewer}")
        page.wait_for_selector("#live.live", timeout=15_000)
        expect(page.locator("#air .row")).to_have_count(n, timeout=15_000)
        shown = page.locator("#air .row:visible")
        expect(shown.first).to_contain_text(f"Presint {n}")
        assert "alarmed" in (shown.first.get_attribute("class") or "")
        visible = shown.count()
        assert 3 <= visible < n, visible
        expect(page.locator("#air .more")).to_have_text(f"+{n - visible} more not shown")
        # Nothing scrolls and every row shown lies whole inside its tile.
        # (Measured in one evaluation: the page re-renders its tiles as data comes in.)
        for tile in ("#air", "#traffic", "#water"):
            outside = page.locator(tile).evaluate(
                "t => { const b = t.getBoundingClientRect();"
                " return [...t.querySelectorAll('.row')].filter((r) => r.style.display !== 'none')"
                " .map((r) => r.getBoundingClientRect())"
                " .filter((r) => r.top < b.top || r.bottom > b.bottom).length; }"
            )
            assert outside == 0, tile
            scroll = page.locator(f"{tile} .rows").evaluate("e => e.scrollHeight - e.clientHeight")
            assert scroll <= 1, (tile, scroll)
        assert page.evaluate("document.documentElement.scrollHeight") <= 1080
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "wall-tiles.png"))
        page.close()

        # A phone: the page fits its width and scrolls down to the alarms and the tiles.
        phone = browser.new_page(viewport={"width": 412, "height": 915}, has_touch=True)
        phone.goto(f"{server.url}/wall?token={viewer}")
        phone.wait_for_selector("#live.live", timeout=15_000)
        expect(phone.locator("#air .row")).to_have_count(n, timeout=15_000)
        assert phone.evaluate("document.documentElement.scrollWidth") <= 412
        phone.mouse.move(200, 500)

        def settled() -> None:
            # A wheel scrolls smoothly, after the event: wait until the page stops moving.
            last = None
            while (y := phone.evaluate("scrollY")) != last:
                last = y
                phone.wait_for_timeout(100)

        for target in ("#alarms li", "#water h2", f"#air .row >> text=Presint {n - 1}"):
            phone.evaluate("scrollTo(0, 0)")
            for _ in range(40):
                settled()
                if phone.locator(target).first.evaluate(
                    "e => { const r = e.getBoundingClientRect();"
                    " return r.height > 0 && r.top >= 0 && r.bottom <= innerHeight"
                    " && r.left >= 0 && r.right <= innerWidth; }"
                ):
                    break
                phone.mouse.wheel(0, 300)
            expect(phone.locator(target).first).to_be_in_viewport(ratio=1)
        phone.screenshot(path=str(ARTIFACTS / "wall-phone.png"), full_page=True)
        phone.close()
    finally:
        server.stop()
        worker.stop()


def test_wall_of_a_big_city_shows_districts_from_the_server(
    settings: Settings, publisher: Publisher, browser: object
) -> None:
    """Past PUSAT_WALL_CITY_SENSORS the wall asks for the districts summary, not every sensor
    and value: district bubbles sized and coloured by their sensors' states, the worst sensors,
    district tiles (alarmed first), and a live stream of alarms only, on which a new alarm
    arrives without a reload."""
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    s = settings.with_(api_port=free_port(), api_token_cache_s=0.0, wall_city_sensors=3)
    assert s.database_url is not None
    with db.connect(s.database_url) as conn:
        _, viewer = auth.create_token(conn, "viewer", "wall-city")
    root = f"{s.topic_root}/gw-wall"
    worker = RunningWorker(s).start()
    server = ServerThread(s).start()
    try:
        publisher.publish(f"{root}/meta", json.dumps({"sensors": SENSORS}), retain=True)
        now = time.time()
        publisher.publish(
            f"{root}/json",
            json.dumps(
                [
                    {"sensor": "AQ-P9-01", "ts": now - 5, "values": {"pm25": 12.0}},
                    {"sensor": "AQ-P10-01", "ts": now - 5, "values": {"pm25": 14.0}},
                    {"sensor": "LOOP-P2-01", "ts": now - 5, "values": {"flow": 640}},
                    {"sensor": "WQ-WET-01", "ts": now - 5, "values": {"water_level": 1.21}},
                    {"sensor": "AQ-P8-01", "ts": now - 180, "values": {"pm25": 80.0}},
                    {"sensor": "AQ-P8-01", "ts": now - 30, "values": {"pm25": 82.0}},
                ]
            ),
        )
        wait_for(
            lambda: rows(s.database_url or "", "SELECT id FROM alerts WHERE state = 'active'"),
            what="the PM2.5 alarm raised by ingest",
        )
        page = browser.new_page(viewport={"width": 1920, "height": 1080})
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{server.url}/wall?token={viewer}")
        page.wait_for_selector("#live.live", timeout=15_000)
        expect(page.locator("#map circle.district-bubble")).to_have_count(5, timeout=15_000)
        expect(page.locator("#ticker")).to_contain_text("5 sensors in 5 districts")
        expect(page.locator("#alarms li.warning")).to_have_count(1)
        p8 = page.locator("#map circle.district-bubble[data-district='Presint 8']")
        assert "var(--warn)" in (p8.get_attribute("style") or "")
        expect(page.locator("#map circle.sensor.worst")).to_have_count(1)  # the alarmed one
        air = page.locator("#air .row .name")
        expect(air).to_have_count(3)
        assert air.first.inner_text().splitlines()[0] == "Presint 8"  # alarmed first

        # A new alarm reaches the wall on the live stream (alarms only in a city), and the
        # district's bubble turns with the next summary.
        publisher.publish(f"{root}/json", native("WQ-WET-01", time.time(), water_level=3.2))
        expect(page.locator("#alarms li.critical")).to_have_count(1, timeout=15_000)
        wetland = page.locator("#map circle.district-bubble[data-district='Wetland']")
        expect(wetland).to_have_attribute("style", "fill:var(--crit)", timeout=15_000)
        live = [u for u in requests if "/api/v1/live" in u]
        assert live and all("kind=alerts" in u for u in live)
        asked = {u.split("?")[0].removeprefix(server.url) for u in requests}
        assert "/api/v1/districts" in asked
        assert not asked & {"/api/v1/latest", "/api/v1/sensors"}, asked
        assert not errors, errors
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "wall-city.png"))
        page.close()
    finally:
        server.stop()
        worker.stop()
