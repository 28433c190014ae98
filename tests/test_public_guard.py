"""Abuse safety of the public paths on a real server: ETag and 304, Cache-Control, the short
server cache (a change in the database shows only once the cached answer expires), one
database round for many concurrent misses, and the per-address rate limit (429 with
Retry-After) that a made-up token does not get round, while the operators' API is not limited."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import numpy as np
import pytest

from api.public_guard import RateLimiter, is_public
from api.server import ServerThread
from pusat.embedded.ports import free_port
from pusat.settings import Settings
from tests import city_town
from tests.helpers import wait_for
from tests.test_api_support import make_tokens, us, write


def test_rate_limiter_refills_at_its_rate() -> None:
    limiter = RateLimiter(rate=2.0, burst=3)
    assert [limiter.take("a", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a", 0.0) == pytest.approx(0.5)
    assert limiter.take("b", 0.0) == 0.0  # per address
    assert limiter.take("a", 0.5) == 0.0  # one token back after 1/rate s
    assert limiter.take("a", 0.5) > 0


def test_public_paths() -> None:
    assert is_public("/city") and is_public("/open/v1/districts.json")
    assert is_public("/sta/v1.1") and is_public("/sta/v1.1/Things(1)")
    assert not is_public("/cityhall") and not is_public("/api/v1/latest")
    assert not is_public("/wall")


def _server(settings: Settings, **changes: object) -> ServerThread:
    s = settings.with_(api_port=free_port(), api_token_cache_s=0.0, **changes)
    assert s.database_url is not None
    city_town.build(s.database_url)
    return ServerThread(s).start()


@pytest.fixture
def cached(settings: Settings) -> Iterator[tuple[ServerThread, str]]:
    server = _server(settings, public_cache_s=3.0)
    try:
        yield server, settings.database_url or ""
    finally:
        server.stop()


def level(body: dict[str, object]) -> float:
    districts = body["districts"]
    assert isinstance(districts, list)
    wet = next(d for d in districts if d["district"] == "Wetland")
    return float(wet["figures"]["water_level"]["value"])


def test_etag_cache_control_and_the_server_cache(cached: tuple[ServerThread, str]) -> None:
    server, url = cached
    with httpx.Client(base_url=server.url, timeout=30) as c:
        first = c.get("/open/v1/districts.json")
        assert first.status_code == 200
        etag = first.headers["etag"]
        assert first.headers["cache-control"].startswith("public, max-age=")
        again = c.get("/open/v1/districts.json", headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b""
        head = c.head("/open/v1/districts.json")
        assert head.status_code == 200 and head.headers["etag"] == etag
        assert int(head.headers["content-length"]) == len(first.content)
        assert level(first.json()) == 3.12
        t = us(datetime.now(UTC))
        write(url, [("WQ-WET-01", "water_level", np.array([t]), np.array([3.55]))])
        # Still the cached answer (same ETag) until it expires, then the new level.
        assert c.get("/open/v1/districts.json").headers["etag"] == etag
        fresh = wait_for(
            lambda: (r := c.get("/open/v1/districts.json")).headers["etag"] != etag and r,
            timeout=10,
            what="the cached answer to expire",
        )
        assert level(fresh.json()) == 3.55
        # The page in two languages: two answers, keyed by Accept-Language.
        ms = c.get("/city", headers={"Accept-Language": "ms"})
        en = c.get("/city", headers={"Accept-Language": "en"})
        assert ms.headers["etag"] != en.headers["etag"]
        assert '<html lang="en">' in en.text and '<html lang="ms">' in ms.text
        # Made-up parameters and language headers do not get round the cache.
        busted = c.get("/open/v1/districts.json?nocache=12345")
        assert busted.headers["etag"] == c.get("/open/v1/districts.json").headers["etag"]
        odd = c.get("/city", headers={"Accept-Language": "xx-YY, en;q=0.3"})
        assert odd.headers["etag"] == en.headers["etag"]


def test_a_made_up_host_header_neither_misses_the_cache_nor_shows_in_links(
    settings: Settings,
) -> None:
    site = "https://data.putrajaya.example"
    server = _server(settings, public_cache_s=30.0, public_url=site)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            first = c.get("/open/v1/districts.json")
            # Each database round has its own generated_at, so its own ETag: the same ETag
            # under other Host headers is the one cached answer.
            for host in ("evil.example", "x.invalid:1", server.url.removeprefix("http://")):
                again = c.get("/open/v1/districts.json", headers={"Host": host})
                assert again.status_code == 200 and again.headers["etag"] == first.headers["etag"]
            # Absolute links come from PUSAT_PUBLIC_URL, whatever Host the request named.
            index = c.get("/open/v1/", headers={"Host": "evil.example"}).json()
            assert index["catalog"] == f"{site}/open/v1/catalog"
            things = c.get("/sta/v1.1/Things?$top=1", headers={"Host": "evil.example"}).json()
            assert things["value"][0]["@iot.selfLink"].startswith(f"{site}/sta/v1.1/Things(")
            assert things["@iot.nextLink"] == f"{site}/sta/v1.1/Things?$top=1&$skip=1"
            root = c.get("/sta/v1.1", headers={"Host": "evil.example"}).json()
            assert {v["url"] for v in root["value"]} >= {f"{site}/sta/v1.1/Things"}
    finally:
        server.stop()


def test_concurrent_requests_share_one_answer(cached: tuple[ServerThread, str]) -> None:
    server, _ = cached

    async def burst() -> set[str]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
            rs = await asyncio.gather(*(c.get("/open/v1/districts.csv") for _ in range(40)))
        assert {r.status_code for r in rs} == {200}
        return {r.headers["etag"] for r in rs}

    # Different generated_at values would give different ETags: one answer was shared.
    assert len(asyncio.run(burst())) == 1


def test_rate_limit_per_address_with_retry_after(settings: Settings) -> None:
    server = _server(settings, public_rate_per_s=0.5, public_rate_burst=5)
    url = settings.database_url or ""
    tokens, _ = make_tokens(url)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            codes = [c.get("/open/v1/districts.json").status_code for _ in range(5)]
            assert codes == [200] * 5
            # A made-up token is no way round the limit.
            limited = c.get("/city", headers={"Authorization": "Bearer pusat_made_up"})
            assert limited.status_code == 429
            assert int(limited.headers["retry-after"]) >= 1
            assert "too many requests" in limited.json()["detail"]
            assert c.get("/sta/v1.1").status_code == 429
            # Counted in the API's metrics under the public area, 429s included.
            metrics = c.get("/metrics").text
            assert 'route="/city",status="429"' in metrics
            assert 'route="/open/v1",status="200"' in metrics
            # The operators' API is not limited.
            viewer = {"Authorization": f"Bearer {tokens['viewer']}"}
            for _ in range(10):
                assert c.get("/api/v1/latest", headers=viewer).status_code == 200
    finally:
        server.stop()
