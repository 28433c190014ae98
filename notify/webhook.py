"""Direct webhooks: one signed JSON POST per alarm transition.

Headers: `X-Pusat-Event` (the outbox id: the same on every retry, so a receiver can drop a
repeat), `X-Pusat-Timestamp` (Unix seconds of this attempt) and `X-Pusat-Signature:
sha256=<hex>`, the HMAC-SHA256 with the shared secret over `<timestamp>.<body>`, so a captured
request cannot be replayed later with a fresh timestamp.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import date, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx


class WebhookError(RuntimeError):
    """The receiver could not be reached or did not answer 2xx."""


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    return (
        "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    )


def verify(secret: bytes, timestamp: str, body: bytes, given: str) -> bool:
    """What a receiver checks (constant-time); receivers should also bound the timestamp's age."""
    return hmac.compare_digest(signature(secret, timestamp, body), given)


def receiver_name(url: str) -> str:
    """How a webhook is named in delivery records: without credentials or query."""
    p = urlsplit(url)
    host = p.hostname or ""
    netloc = f"{host}:{p.port}" if p.port else host
    return "webhook " + urlunsplit((p.scheme, netloc, p.path, "", ""))


def _default(v: object) -> str:
    if isinstance(v, datetime | date):
        return v.isoformat()
    raise TypeError(f"not JSON: {type(v).__name__}")


def body(event_id: int, seq: int, payload: dict[str, Any]) -> bytes:
    return json.dumps(
        {"id": event_id, "seq": seq, **payload}, default=_default, separators=(",", ":")
    ).encode()


def post(http: httpx.Client, url: str, secret: bytes, event_id: int, data: bytes) -> None:
    ts = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "pusat-notify",
        "X-Pusat-Event": str(event_id),
        "X-Pusat-Timestamp": ts,
        "X-Pusat-Signature": signature(secret, ts, data),
    }
    try:
        r = http.post(url, content=data, headers=headers)
    except httpx.HTTPError as e:
        raise WebhookError(f"{receiver_name(url)}: {e or type(e).__name__}") from e
    if not 200 <= r.status_code < 300:
        raise WebhookError(f"{receiver_name(url)}: HTTP {r.status_code}")
