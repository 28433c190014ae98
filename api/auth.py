"""API tokens and roles.

A token is ``pusat_`` and 43 random URL-safe characters. Only its SHA-256 is stored, so a leaked
table leaks no usable token; the secret is shown once, when it is created. Roles are ordered
viewer < operator < engineer < admin, and an endpoint names the lowest role it accepts:
reads need viewer (or nothing with PUSAT_ANONYMOUS_READ), alarm actions operator, provisioning,
bulk import and replay engineer, token management admin.

The token travels as ``Authorization: Bearer <token>``; GET requests may carry it as ``?token=``
instead, because a kiosk URL (`/wall?token=`), an EventSource and pandas reading a URL cannot set
headers. Writes never take it from the URL (URLs end up in logs and browser history).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import psycopg
from fastapi import Depends, Request
from fastapi.security import APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer

from api.errors import ApiError
from api.state import ApiState, get_state

ROLES = ("viewer", "operator", "engineer", "admin")
RANK = {r: i for i, r in enumerate(ROLES)}
PREFIX = "pusat_"
ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class Principal:
    """Who is asking: the token's name (the actor in the audit trail) and its role."""

    name: str
    role: str
    token_id: int | None = None

    def can(self, role: str) -> bool:
        return RANK[self.role] >= RANK[role]


@dataclass(frozen=True)
class TokenInfo:
    id: int
    name: str
    role: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def check_role(role: str) -> str:
    if role not in RANK:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    return role


def default_name(role: str) -> str:
    return f"{role}-{secrets.token_hex(3)}"


# -- the store side, synchronous (the CLI) and asynchronous (the API) ----------------------------

_INSERT = (
    "INSERT INTO api_tokens (name, role, token_hash) VALUES (%s, %s, %s)"
    " RETURNING id, name, role, created_at, last_used_at, revoked_at"
)
_LIST = (
    "SELECT id, name, role, created_at, last_used_at, revoked_at FROM api_tokens"
    " WHERE revoked_at IS NULL OR %s ORDER BY id"
)
_REVOKE = (
    "UPDATE api_tokens SET revoked_at = now() WHERE (name = %s OR id::text = %s)"
    " AND revoked_at IS NULL RETURNING id, name, role, created_at, last_used_at, revoked_at"
)


class TokenNameTaken(ValueError):
    """Another live token has this name (names identify people in the audit trail)."""


def create_token(
    conn: psycopg.Connection[Any], role: str, name: str | None = None
) -> tuple[TokenInfo, str]:
    """A new token: its record and the secret (shown once, never stored)."""
    check_role(role)
    secret = new_secret()
    try:
        with conn.transaction():
            row = conn.execute(_INSERT, (name or default_name(role), role, hash_token(secret)))
            found = row.fetchone()
    except psycopg.errors.UniqueViolation as e:
        raise TokenNameTaken(f"a live token is already named {name!r}") from e
    assert found is not None
    return TokenInfo(*found), secret


def list_tokens(conn: psycopg.Connection[Any], include_revoked: bool = False) -> list[TokenInfo]:
    return [TokenInfo(*r) for r in conn.execute(_LIST, (include_revoked,)).fetchall()]


def revoke_token(conn: psycopg.Connection[Any], name_or_id: str) -> TokenInfo | None:
    with conn.transaction():
        row = conn.execute(_REVOKE, (name_or_id, name_or_id)).fetchone()
    return None if row is None else TokenInfo(*row)


async def create_token_async(
    conn: psycopg.AsyncConnection[Any], role: str, name: str | None = None
) -> tuple[TokenInfo, str]:
    check_role(role)
    secret = new_secret()
    try:
        async with conn.transaction():
            cur = await conn.execute(
                _INSERT, (name or default_name(role), role, hash_token(secret))
            )
            found = await cur.fetchone()
    except psycopg.errors.UniqueViolation as e:
        raise TokenNameTaken(f"a live token is already named {name!r}") from e
    assert found is not None
    return TokenInfo(*found), secret


async def list_tokens_async(
    conn: psycopg.AsyncConnection[Any], include_revoked: bool = False
) -> list[TokenInfo]:
    cur = await conn.execute(_LIST, (include_revoked,))
    return [TokenInfo(*r) for r in await cur.fetchall()]


async def revoke_token_by_id(conn: psycopg.AsyncConnection[Any], token_id: int) -> TokenInfo | None:
    async with conn.transaction():
        cur = await conn.execute(
            "UPDATE api_tokens SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL"
            " RETURNING id, name, role, created_at, last_used_at, revoked_at",
            (token_id,),
        )
        row = await cur.fetchone()
    return None if row is None else TokenInfo(*row)


# -- checking a request ----------------------------------------------------------------------


class TokenCache:
    """Checked tokens for a few seconds, so a busy wall does not cost a query per request.

    A revoked token keeps working for at most ``ttl`` seconds. Owned by one app.
    """

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[Principal | None, float]] = {}

    def get(self, digest: str) -> tuple[bool, Principal | None]:
        hit = self._entries.get(digest)
        if hit is None or hit[1] < time.monotonic():
            return False, None
        return True, hit[0]

    def put(self, digest: str, principal: Principal | None) -> None:
        if len(self._entries) > 10_000:  # bound it against a flood of made-up tokens
            self._entries.clear()
        self._entries[digest] = (principal, time.monotonic() + self.ttl)

    def clear(self) -> None:
        self._entries.clear()


async def _lookup(state: ApiState, secret: str) -> Principal | None:
    digest = hash_token(secret)
    found, principal = state.tokens.get(digest)
    if found:
        return principal
    async with state.pool.connection() as conn:
        cur = await conn.execute(
            "UPDATE api_tokens SET last_used_at = now() WHERE token_hash = %s"
            " AND revoked_at IS NULL RETURNING id, name, role",
            (digest,),
        )
        row = await cur.fetchone()
    principal = None if row is None else Principal(name=row[1], role=row[2], token_id=row[0])
    state.tokens.put(digest, principal)
    return principal


_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <token>`")
_query = APIKeyQuery(
    name="token",
    auto_error=False,
    description="the token in the URL, for GET requests only (kiosk walls, EventSource, pandas)",
)


def _unauthorized(detail: str) -> ApiError:
    return ApiError(401, detail, {"WWW-Authenticate": "Bearer"})


async def _principal(
    request: Request,
    state: ApiState,
    bearer: HTTPAuthorizationCredentials | None,
    query_token: str | None,
    *,
    read: bool,
) -> Principal:
    secret: str | None = None
    if bearer is not None:
        secret = bearer.credentials
    elif query_token is not None and request.method in ("GET", "HEAD"):
        secret = query_token
    if secret is None:
        if read and state.settings.anonymous_read:
            return Principal(name=ANONYMOUS, role="viewer")
        raise _unauthorized("a token is needed: send `Authorization: Bearer <token>`")
    principal = await _lookup(state, secret)
    if principal is None:
        raise _unauthorized("unknown or revoked token")
    return principal


async def authenticate(request: Request, state: ApiState, *, read: bool = True) -> Principal:
    """The principal of a request outside the dependency system (the wall page)."""
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    bearer = (
        HTTPAuthorizationCredentials(scheme="Bearer", credentials=credentials.strip())
        if scheme.lower() == "bearer" and credentials.strip()
        else None
    )
    return await _principal(request, state, bearer, request.query_params.get("token"), read=read)


Dependency = Callable[..., Awaitable[Principal]]


def require(role: str) -> Dependency:
    """A dependency admitting tokens of ``role`` or above (viewer: anonymous too when allowed)."""
    check_role(role)

    async def dependency(
        request: Request,
        state: Annotated[ApiState, Depends(get_state)],
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        query_token: Annotated[str | None, Depends(_query)],
    ) -> Principal:
        principal = await _principal(request, state, bearer, query_token, read=role == "viewer")
        if not principal.can(role):
            raise ApiError(403, f"this needs the {role} role; the token's role is {principal.role}")
        return principal

    dependency.__name__ = f"require_{role}"
    return dependency


Viewer = Annotated[Principal, Depends(require("viewer"))]
Operator = Annotated[Principal, Depends(require("operator"))]
Engineer = Annotated[Principal, Depends(require("engineer"))]
Admin = Annotated[Principal, Depends(require("admin"))]
