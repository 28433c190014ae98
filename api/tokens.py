"""Token management (admin) and GET /api/v1/whoami (any token)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, ConfigDict, Field

from api import auth
from api.auth import Admin, Viewer
from api.errors import ApiError, responses
from api.state import ApiState, get_state

router = APIRouter(prefix="/api/v1", tags=["tokens"])


class Role(StrEnum):
    viewer = "viewer"
    operator = "operator"
    engineer = "engineer"
    admin = "admin"


class Token(BaseModel):
    id: int
    name: str = Field(examples=["operator-ana"])
    role: str = Field(examples=["operator"])
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


class TokenCreated(Token):
    token: str = Field(description="the secret: shown this once, stored only hashed")


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role
    name: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        pattern=r"^[^\x00-\x1f]+$",
        description="who holds it (the actor in the alarm audit trail); default role-xxxxxx",
        examples=["operator-ana"],
    )


class WhoAmI(BaseModel):
    name: str = Field(examples=["operator-ana"])
    role: str = Field(examples=["operator"])


@router.get(
    "/whoami", response_model=WhoAmI, summary="The token's name and role", responses=responses(401)
)
async def whoami(principal: Viewer) -> WhoAmI:
    return WhoAmI(name=principal.name, role=principal.role)


@router.get(
    "/tokens",
    response_model=list[Token],
    summary="Live tokens (admin)",
    responses=responses(401, 403, 503),
)
async def list_tokens(
    principal: Admin, state: Annotated[ApiState, Depends(get_state)]
) -> list[auth.TokenInfo]:
    async with state.pool.connection() as conn:
        return await auth.list_tokens_async(conn)


@router.post(
    "/tokens",
    response_model=TokenCreated,
    status_code=201,
    summary="Create a token (admin); the secret is in this answer only",
    responses=responses(400, 401, 403, 409, 503),
)
async def create_token(
    body: TokenIn, principal: Admin, state: Annotated[ApiState, Depends(get_state)]
) -> TokenCreated:
    async with state.pool.connection() as conn:
        try:
            info, secret = await auth.create_token_async(conn, body.role.value, body.name)
        except auth.TokenNameTaken as e:
            raise ApiError(409, str(e)) from e
    return TokenCreated(**info.__dict__, token=secret)


@router.delete(
    "/tokens/{token_id}",
    response_model=Token,
    summary="Revoke a token (admin)",
    responses=responses(401, 403, 404, 409, 503),
)
async def revoke_token(
    token_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    principal: Admin,
    state: Annotated[ApiState, Depends(get_state)],
) -> auth.TokenInfo:
    if token_id == principal.token_id:
        raise ApiError(409, "a token cannot revoke itself; use another admin token")
    async with state.pool.connection() as conn:
        info = await auth.revoke_token_by_id(conn, token_id)
    if info is None:
        raise ApiError(404, f"no live token {token_id}")
    state.tokens.clear()  # revocation takes effect now in this process
    return info
