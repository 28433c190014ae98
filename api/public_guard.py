"""Abuse safety of the public paths (/city, /open/v1, /sta/v1.1): a token bucket per client
address (429 with Retry-After past it), a short server cache shared by everyone, and ETag /
Cache-Control so browsers and proxies re-use answers.

Every request to a public path is treated as anonymous, token or not (the public handlers never
read one), so a made-up Authorization header buys neither a way past the limit nor past the
cache. Concurrent misses of one answer wait for a single database round (no stampede). The
client address is the connection's, or the one uvicorn takes from X-Forwarded-For when the
proxy is trusted (PUSAT_FORWARDED_ALLOW_IPS). Owned by one app: nothing at module level.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import lang
from pusat.settings import Settings

PREFIXES = ("/city", "/open/v1", "/sta/v1.1")
MAX_CLIENTS = 100_000  # buckets kept; beyond, full (idle) buckets are dropped
MAX_ENTRIES = 2_000  # cached answers kept
MAX_CACHED_BYTES = 2 * 1024 * 1024  # a larger answer is not cached


def is_public(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") or path.startswith(p + ".") for p in PREFIXES)


class RateLimiter:
    """A token bucket per key: ``rate`` requests a second, ``burst`` at once."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key: str, now: float | None = None) -> float:
        """0 when admitted, else the seconds until the next request would be."""
        now = time.monotonic() if now is None else now
        tokens, at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            if len(self._buckets) > MAX_CLIENTS:
                self._prune(now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def _prune(self, now: float) -> None:
        full = [
            k for k, (t, at) in self._buckets.items() if t + (now - at) * self.rate >= self.burst
        ]
        for k in full:
            del self._buckets[k]
        if len(self._buckets) > MAX_CLIENTS:  # a flood of addresses: start again
            self._buckets.clear()


@dataclass(frozen=True)
class Label:
    path: str


@dataclass(frozen=True)
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    etag: bytes
    expires: float


class PublicGuard:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.ttl = settings.public_cache_s
        self.zone = settings.city_timezone
        self.limiter = RateLimiter(settings.public_rate_per_s, settings.public_rate_burst)
        self._cache: dict[tuple[str, ...], Answer] = {}
        self._inflight: dict[tuple[str, ...], asyncio.Future[Answer | None]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        # The metrics' route label (api/app.py's Measure reads scope["route"]): the public
        # answers made here never reach the router, and one label per area keeps it small.
        scope["route"] = Label(next(p for p in PREFIXES if scope["path"].startswith(p)))
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        client = scope.get("client")
        wait = self.limiter.take(client[0] if client else "unknown")
        if wait > 0:
            await _too_many(send, wait)
            return
        if scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        # What the answer depends on, and nothing a client can vary at will: the path, the
        # parameters the handlers read and the page's locale. Not the Host header (links come
        # from PUSAT_PUBLIC_URL), else made-up Hosts would each miss and fill the cache.
        key = (
            scope["path"],
            _query_key(scope.get("query_string", b"")),
            self._language(headers.get("accept-language")) if scope["path"] == "/city" else "",
        )
        answer = await self._answer(key, scope, receive, send)
        if answer is None:
            return  # not cacheable: already sent as it came
        wanted = {t.strip() for t in headers.get("if-none-match", "").split(",")}
        if answer.etag.decode() in wanted or "*" in wanted:
            await _send(send, 304, _common(answer), b"", None)
            return
        body = b"" if scope["method"] == "HEAD" else answer.body
        await _send(send, answer.status, answer.headers + _common(answer), body, len(answer.body))

    def _language(self, header: str | None) -> str:
        """The locale the page will be written in: made-up Accept-Language headers all fall
        on a few keys instead of each missing the cache."""
        return str(lang.choose(None, header, self.zone).locale)

    async def _answer(
        self, key: tuple[str, ...], scope: Scope, receive: Receive, send: Send
    ) -> Answer | None:
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit.expires > now:
            return hit
        pending = self._inflight.get(key)
        if pending is not None:
            shared = await asyncio.shield(pending)
            if shared is not None:
                return shared
        future: asyncio.Future[Answer | None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            answer = await self._fetch(scope, receive, send)
            future.set_result(answer)
        except BaseException:
            future.set_result(None)
            raise
        finally:
            del self._inflight[key]
        if answer is not None and self.ttl > 0:
            if len(self._cache) >= MAX_ENTRIES:
                self._cache = {k: v for k, v in self._cache.items() if v.expires > now}
                if len(self._cache) >= MAX_ENTRIES:
                    self._cache.clear()
            self._cache[key] = answer
        return answer

    async def _fetch(self, scope: Scope, receive: Receive, send: Send) -> Answer | None:
        """Runs the app; a 200 that fits is kept and returned (not yet sent), anything else
        (an error, a stream, a large answer) is passed through at once and gives None."""
        start: Message | None = None
        chunks: list[bytes] = []
        size = 0
        passing = False

        async def capture(message: Message) -> None:
            nonlocal start, size, passing
            if passing:
                await send(message)
            elif message["type"] == "http.response.start":
                start = message
                if message["status"] != 200:
                    passing = True
                    await send(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                size += len(chunks[-1])
                if size > MAX_CACHED_BYTES:
                    passing = True
                    assert start is not None
                    await send(start)
                    await send({**message, "body": b"".join(chunks)})

        get = {**scope, "method": "GET"}  # a HEAD fills the cache for the GETs after it
        await self.app(get, receive, capture)
        if passing or start is None:
            return None
        body = b"".join(chunks)
        etag = b'"' + hashlib.sha256(body).hexdigest()[:32].encode() + b'"'
        kept = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
        return Answer(200, kept, body, etag, time.monotonic() + self.ttl)


def _query_key(raw: bytes) -> str:
    """The parameters the public handlers read (``lang``, ``part`` and the ``$`` options),
    sorted: made-up parameters, which the handlers ignore, do not get round the cache."""
    kept = sorted(
        (k, v)
        for k, v in parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
        if k in ("lang", "part") or k.startswith("$")
    )
    return urlencode(kept)


def _common(answer: Answer) -> list[tuple[bytes, bytes]]:
    # Rounded up: an answer in its last second still says max-age=1, not no-cache, so that a
    # proxy in front keeps it (one more request when it expires) instead of passing every
    # request on until the next answer is made.
    left = answer.expires - time.monotonic()
    control = f"public, max-age={math.ceil(left)}" if left > 0 else "no-cache"
    return [(b"etag", answer.etag), (b"cache-control", control.encode())]


async def _send(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes, length: int | None
) -> None:
    if length is not None:
        headers = [*headers, (b"content-length", str(length).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _too_many(send: Send, wait: float) -> None:
    retry = max(1, math.ceil(wait))
    body = orjson.dumps({"detail": f"too many requests from this address; retry in {retry} s"})
    headers = [(b"content-type", b"application/json"), (b"retry-after", str(retry).encode())]
    await _send(send, 429, headers, body, len(body))
