"""Cursor paging for lists (sensors, alarms, quarantine): keyset, not offset.

A page ends where its last row sorts; the next page starts after that row's sort key, so rows
inserted or removed meanwhile neither repeat a row nor skip one that was there (an offset shifts
with them). The cursor is that key, opaque to clients: base64url of ``[list, key...]``.

A list answers ``limit`` rows (its body unchanged: a JSON array) and, when more follow, a
``Link: <...&cursor=...>; rel="next"`` header (RFC 8288) with the same query and the cursor,
and the cursor alone in ``X-Pusat-Next-Cursor``. A cursor that does not decode, or is another
list's, is a 400; ``offset`` still works for old clients but not together with a cursor.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import orjson
from fastapi import Request, Response

from api.errors import bad_request

CURSOR_DESCRIPTION = (
    "where the page starts: the `cursor` of the previous page's Link rel=next header"
    " (or X-Pusat-Next-Cursor); opaque"
)


def encode(kind: str, key: Sequence[Any]) -> str:
    """A cursor for list ``kind`` after the row whose sort key is ``key`` (datetimes allowed)."""
    values = [v.isoformat() if isinstance(v, datetime) else v for v in key]
    return base64.urlsafe_b64encode(orjson.dumps([kind, *values])).rstrip(b"=").decode()


def decode(kind: str, cursor: str, types: Sequence[type]) -> list[Any]:
    """The sort key in ``cursor``, each value of the type given (datetimes from RFC 3339);
    a 400 saying why when it is not a cursor of list ``kind``."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        doc = orjson.loads(raw)
    except (binascii.Error, ValueError) as e:
        raise bad_request(f"cursor is not one this API gave: {cursor[:40]!r}") from e
    if not isinstance(doc, list) or not doc or doc[0] != kind:
        raise bad_request(f"cursor is not one of the {kind} list: {cursor[:40]!r}")
    values = doc[1:]
    if len(values) != len(types):
        raise bad_request(f"cursor is not one of the {kind} list: {cursor[:40]!r}")
    key: list[Any] = []
    for v, t in zip(values, types, strict=True):
        try:
            if t is datetime and isinstance(v, str):
                key.append(datetime.fromisoformat(v))
                continue
        except ValueError as e:
            raise bad_request(f"cursor is damaged: {cursor[:40]!r}") from e
        if not isinstance(v, t) or isinstance(v, bool):
            raise bad_request(f"cursor is damaged: {cursor[:40]!r}")
        key.append(v)
    return key


def check(cursor: str | None, offset: int) -> None:
    if cursor is not None and offset:
        raise bad_request("give a cursor or an offset, not both")


def page(
    rows: list[dict[str, Any]],
    limit: int,
    kind: str,
    key: Callable[[dict[str, Any]], Sequence[Any]],
    request: Request,
    response: Response,
) -> list[dict[str, Any]]:
    """The first ``limit`` of ``rows`` (fetched as ``limit + 1``, to know whether more follow),
    with the next page's Link and cursor headers set on ``response`` when they do."""
    if len(rows) <= limit:
        return rows
    rows = rows[:limit]
    cursor = encode(kind, key(rows[-1]))
    # The same query (filters, limit, a token in the URL) with the cursor in place of any
    # offset; a reference relative to this server, so it holds behind a proxy's host name.
    params = [
        (k, v) for k, v in request.query_params.multi_items() if k not in ("cursor", "offset")
    ]
    query = urlencode([*params, ("cursor", cursor)])
    response.headers["Link"] = f'<{request.url.path}?{query}>; rel="next"'
    response.headers["X-Pusat-Next-Cursor"] = cursor
    return rows
