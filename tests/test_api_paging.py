"""Cursor paging of the lists (sensors, alarms, quarantine) on a real server: following the
Link rel=next headers walks every row exactly once, also while rows are inserted; the default
page is what it always was; a bad cursor is a 400 that says so."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from api import paging
from store.writer import QuarantineRow
from tests.test_api_support import Api, raise_alert, sensor, write

pytest_plugins = ["tests.test_api_support"]

NEXT = re.compile(r'^<([^>]+)>; rel="next"$')


def walk(
    api: Api, path: str, between: Callable[[int], None] = lambda page: None, **params: Any
) -> tuple[list[dict[str, Any]], int]:
    """Every row of a list, page by page along the Link headers; ``between(n)`` runs after
    page ``n``. Returns the rows and the number of pages."""
    out: list[dict[str, Any]] = []
    pages = 0
    with api.client() as c:
        r = c.get(path, params=params)
        while True:
            assert r.status_code == 200, r.text
            out += r.json()
            pages += 1
            between(pages)
            link = r.headers.get("Link")
            if link is None:
                assert "X-Pusat-Next-Cursor" not in r.headers
                return out, pages
            m = NEXT.match(link)
            assert m, link
            assert r.headers["X-Pusat-Next-Cursor"] in link
            r = c.get(m.group(1))


def test_sensors_page_by_cursor_with_sensors_added_meanwhile(api: Api) -> None:
    url = api.settings.database_url or ""
    names = [f"S-{i:03d}" for i in range(0, 50, 2)]  # S-000, S-002, ... S-048
    write(url, sensors=[sensor(n, "air", "Presint 8") for n in names])
    # The default page: every sensor, as before, and no next page.
    r = api.get("/api/v1/sensors")
    assert [s["sensor_id"] for s in r.json()] == names and "Link" not in r.headers

    added: list[str] = []

    def insert(page: int) -> None:
        # After each page: one sensor before where the walk is, one after it.
        if page <= 3:
            new = [f"S-{2 * page - 1:03d}", f"S-{40 + 2 * page + 1:03d}"]
            write(url, sensors=[sensor(n, "air", "Presint 8") for n in new])
            added.extend(new)

    rows, pages = walk(api, "/api/v1/sensors", insert, limit=7, district="Presint 8")
    seen = [s["sensor_id"] for s in rows]
    assert len(seen) == len(set(seen)), "a sensor came twice"
    assert set(names) <= set(seen), "a sensor was skipped"
    assert seen == sorted(seen)
    # Those added behind the walk are not in it; those ahead of it are.
    assert set(seen) - set(names) == {n for n in added if n > "S-040"}
    assert pages == -(-len(seen) // 7)
    # Filters travel in the link: the other district is never listed.
    write(url, sensors=[sensor("S-999", "air", "Presint 9")])
    rows, _ = walk(api, "/api/v1/sensors", limit=5, district="Presint 8")
    assert "S-999" not in {s["sensor_id"] for s in rows}


def test_alarms_page_by_cursor_in_their_order_with_alarms_raised_meanwhile(api: Api) -> None:
    url = api.settings.database_url or ""
    write(
        url, sensors=[sensor(f"AQ-{i}", "air", "Presint 8", quantities=("pm25",)) for i in range(9)]
    )
    ids = set()
    for i in range(9):
        for severity in ("warning", "critical"):
            ids.add(raise_alert(url, f"AQ-{i}", severity=severity))
    whole = api.get("/api/v1/alerts").json()  # the default page: all of them, in order
    assert {a["id"] for a in whole} == ids

    raised: list[int] = []

    def insert(page: int) -> None:
        if page <= 2:  # newer alarms sort before the walk's position within their severity
            raised.append(raise_alert(url, f"AQ-{page}", quantity="no2", severity="critical"))

    rows, pages = walk(api, "/api/v1/alerts", insert, limit=4)
    got = [a["id"] for a in rows]
    assert len(got) == len(set(got)), "an alarm came twice"
    assert ids <= set(got), "an alarm was skipped"
    assert set(got) - ids <= set(raised)
    # The list's own order (most severe, then newest), across pages.
    assert [a["id"] for a in rows if a["id"] in ids] == [a["id"] for a in whole]
    assert pages >= 5


def test_quarantine_pages_by_cursor_through_equal_times(api: Api) -> None:
    url = api.settings.database_url or ""
    t = time.time()

    def bad(n: int, at: float) -> QuarantineRow:
        return QuarantineRow(at, "x/v1/gw/json", "gw", "bad_json", f"record {n}", None, b"{")

    # Four records share each received time: the id breaks the tie.
    write(url, quarantine=[bad(i, t - (i // 4)) for i in range(20)])
    whole = api.get("/api/v1/quarantine").json()
    assert len(whole) == 20

    def insert(page: int) -> None:
        if page == 1:
            write(url, quarantine=[bad(100, time.time())])  # newer: before the walk

    rows, pages = walk(api, "/api/v1/quarantine", insert, limit=3)
    assert [q["id"] for q in rows] == [q["id"] for q in whole]
    assert pages == 7


@pytest.mark.parametrize(
    ("path", "cursor", "message"),
    [
        ("/api/v1/sensors", "not a cursor!", "cursor is not one this API gave"),
        (
            "/api/v1/sensors",
            paging.encode("alerts", [0, "2026-01-01T00:00:00+00:00", 1]),
            "of the sensors list",
        ),
        ("/api/v1/alerts", paging.encode("alerts", [0, "yesterday", 1]), "cursor is damaged"),
        (
            "/api/v1/alerts",
            paging.encode("alerts", ["0", "2026-01-01T00:00:00+00:00", 1]),
            "damaged",
        ),
        ("/api/v1/quarantine", paging.encode("quarantine", []), "of the quarantine list"),
        ("/api/v1/quarantine", "W10", "of the quarantine list"),  # []
    ],
)
def test_a_bad_cursor_is_a_400_that_says_so(api: Api, path: str, cursor: str, message: str) -> None:
    r = api.get(path, cursor=cursor)
    assert r.status_code == 400, r.text
    assert message in r.json()["detail"]


def test_a_cursor_and_an_offset_together_are_a_400(api: Api) -> None:
    r = api.get("/api/v1/sensors", cursor=paging.encode("sensors", ["A"]), offset=3)
    assert r.status_code == 400 and "not both" in r.text
    # An offset alone still works, as it did.
    write(api.settings.database_url or "", sensors=[sensor(f"S-{i}", "air", "P") for i in range(5)])
    with httpx.Client(
        base_url=api.url, headers={"Authorization": f"Bearer {api.tokens['viewer']}"}
    ) as c:
        r = c.get("/api/v1/sensors", params={"offset": 3, "limit": 1})
    assert [s["sensor_id"] for s in r.json()] == ["S-3"] and "Link" in r.headers
