"""The deployment recipe deploy/nginx/pusat.conf in a real nginx (Debian's) in front of a real
API: public answers come from nginx's cache (the API's own request counter shows the second one
never reached it), the operators' requests are never cached, and the per-address limits (the
API's and nginx's own) reach the real client with Retry-After through X-Forwarded-For."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.server import ServerThread
from bench.public import requests_answered
from pusat.embedded import nginx
from pusat.embedded.ports import free_port
from pusat.settings import Settings
from tests import city_town
from tests.test_api_support import make_tokens

pytestmark = pytest.mark.skipif(
    nginx.binary() is None, reason="no nginx: `make system-deps` installs Debian's nginx"
)


@contextlib.contextmanager
def front(
    settings: Settings, work: Path, rate: int = 10_000, burst: int = 10_000, **changes: object
) -> Iterator[tuple[ServerThread, nginx.Nginx]]:
    """The test town's API (``changes`` to its settings) with nginx in front."""
    s = settings.with_(api_port=free_port(), api_token_cache_s=0.0, **changes)
    assert s.database_url is not None
    city_town.build(s.database_url)
    api = ServerThread(s).start()
    try:
        proxy = nginx.start_nginx(
            work / "nginx", f"{s.api_host}:{s.api_port}", rate=rate, burst=burst
        )
        try:
            yield api, proxy
        finally:
            proxy.stop()
    finally:
        api.stop()


def reached(api: ServerThread, route: str, status: str = "200") -> int:
    """Requests the API answered on ``route`` with ``status`` (its own counter)."""
    return requests_answered(api.url, route, status)


def test_public_answers_come_from_nginx_and_the_operators_pass_through(
    settings: Settings, tmp_path: Path
) -> None:
    with front(settings, tmp_path, public_cache_s=60.0) as (api, proxy):
        tokens, _ = make_tokens(settings.database_url or "")
        with httpx.Client(base_url=proxy.url, timeout=30) as c:
            first = c.get("/open/v1/districts.json")
            assert first.status_code == 200 and reached(api, "/open/v1") == 1
            # Other Hosts, a token and an If-None-Match: all answered by nginx.
            for headers in (
                {"Host": "evil.example"},
                {"Authorization": f"Bearer {tokens['viewer']}"},
                {},
            ):
                again = c.get("/open/v1/districts.json", headers=headers)
                assert again.content == first.content and again.headers["x-cache"] == "HIT"
            unchanged = c.get(
                "/open/v1/districts.json", headers={"If-None-Match": first.headers["etag"]}
            )
            assert unchanged.status_code == 304
            assert reached(api, "/open/v1") == 1
            # The page: a copy per language and locale, whatever is made up around them.
            assert '<html lang="en">' in c.get("/city?lang=en").text
            for path, header in (
                ("/city?lang=en&x=1", "ms"),  # ?lang= decides
                ("/city?x=2&lang=en", "xx-YY, en;q=0.3"),
                ("/city", "xx-YY, en;q=0.3"),  # the first English tag: "en"
                ("/city", "en"),
            ):
                page = c.get(path, headers={"Accept-Language": header})
                assert '<html lang="en">' in page.text
            assert '<html lang="ms">' in c.get("/city", headers={"Accept-Language": "ms-MY"}).text
            assert reached(api, "/city") == 3  # ?lang=en, Accept-Language en, ms-MY
            # The operators' API: every request reaches it, with its token.
            viewer = {"Authorization": f"Bearer {tokens['viewer']}"}
            for _ in range(2):
                assert c.get("/api/v1/latest", headers=viewer).status_code == 200
            assert reached(api, "/api/v1/latest") == 2
            assert c.get("/api/v1/latest").status_code == 401  # no token, no answer
            assert reached(api, "/api/v1/latest", "401") == 1
            assert c.get("/healthz").status_code == 200 and c.get("/healthz").status_code == 200
            assert reached(api, "/healthz") == 2


def test_the_apis_limit_applies_to_the_real_client_through_nginx(
    settings: Settings, tmp_path: Path
) -> None:
    # Nothing cached (every request reaches the API's limit), three requests per address.
    with front(
        settings, tmp_path, public_cache_s=0.0, public_rate_per_s=0.05, public_rate_burst=3
    ) as (api, proxy):

        def client(address: str) -> httpx.Client:
            transport = httpx.HTTPTransport(local_address=address)
            return httpx.Client(base_url=proxy.url, transport=transport, timeout=30)

        # An X-Forwarded-For of its own does not make a client someone else: nginx adds the
        # address it sees and the API takes the last one it does not trust.
        spoof = {"X-Forwarded-For": "198.51.100.7"}
        with client("127.0.0.2") as a, client("127.0.0.3") as b:
            assert [a.get("/sta/v1.1", headers=spoof).status_code for _ in range(3)] == [200] * 3
            limited = a.get("/sta/v1.1")
            assert limited.status_code == 429
            assert int(limited.headers["retry-after"]) >= 1
            assert "too many requests" in limited.json()["detail"]
            # Another address has its own bucket, whatever it claims (without nginx's
            # X-Forwarded-For all would share nginx's 127.0.0.1, or the made-up address).
            assert b.get("/sta/v1.1", headers=spoof).status_code == 200
            assert b.get("/sta/v1.1").status_code == 200
        assert reached(api, "/sta/v1.1", "429") == 1 and reached(api, "/sta/v1.1") == 5


def test_nginx_limits_each_address_itself_with_retry_after(
    settings: Settings, tmp_path: Path
) -> None:
    with front(settings, tmp_path, rate=1, burst=2, public_cache_s=60.0) as (api, proxy):
        with httpx.Client(base_url=proxy.url, timeout=30) as c:
            answers = [c.get("/open/v1/districts.json") for _ in range(3)]  # 1 + burst
            assert [r.status_code for r in answers] == [200] * 3
            # One a second refills: the next few, a few milliseconds apart, are refused.
            limited = next(
                (
                    r
                    for r in (c.get("/open/v1/districts.json") for _ in range(20))
                    if r.status_code == 429
                ),
                None,
            )
            assert limited is not None, "nginx did not limit 23 requests at once"
            assert limited.headers["retry-after"] == "1"
            assert "too many requests" in limited.json()["detail"]
        # Limited and answered at nginx: the API saw one request and no 429.
        assert reached(api, "/open/v1") == 1
        assert reached(api, "/open/v1", "429") == 0
