"""Errors as HTTP answers: every bad request is a 4xx with a message a person can act on.

    ApiError (ours, raised by the routers)
     +-- 400 bad request   inverted range, too many points, a step the tier cannot serve
     +-- 401 unauthorized  no token, or a token that is unknown or revoked
     +-- 403 forbidden     a token whose role is below what the endpoint needs
     +-- 404 not found     unknown sensor, alert, token
     +-- 409 conflict      an alarm action that does not apply to the alarm's state
    psycopg.DataError -> 400   a value PostgreSQL cannot hold (a NUL in text, say)
     +-- 503 unavailable   the database or the broker cannot be reached (not our bug: retry)
    RequestValidationError (FastAPI) -> 422 with FastAPI's usual body (a bad format, a bad date)

Anything else is a bug and stays a 500.
"""

from __future__ import annotations

from typing import Any

import psycopg
import psycopg_pool
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from store.alerts import AlertError


class ErrorBody(BaseModel):
    """The body of every error the API answers itself."""

    detail: str = Field(examples=["start must be before end"])


class ApiError(Exception):
    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers


def bad_request(detail: str) -> ApiError:
    return ApiError(400, detail)


def not_found(detail: str) -> ApiError:
    return ApiError(404, detail)


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI documentation of the error answers an endpoint can give."""
    text = {
        400: "A request that cannot be answered as asked (the message says why)",
        401: "No token, or an unknown or revoked one",
        403: "The token's role is too low for this endpoint",
        404: "No such resource",
        409: "The action does not apply in the resource's current state",
        503: "The database or the broker cannot be reached; retry later",
    }
    return {c: {"model": ErrorBody, "description": text[c]} for c in codes}


def _json(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return _json(exc.status, exc.detail, exc.headers)


async def _alert_error(request: Request, exc: Exception) -> JSONResponse:
    # store.alerts says "no alert N" for an unknown id and describes a wrong state otherwise.
    detail = str(exc)
    return _json(404 if detail.startswith("no alert") else 409, detail)


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, psycopg.errors.QueryCanceled):
        detail = (
            "the query took too long and was cancelled;"
            " ask for less (a shorter range, a longer step)"
        )
    else:
        detail = f"the database is unavailable: {exc}"
    return _json(503, detail, {"Retry-After": "5"})


async def _bad_data(request: Request, exc: Exception) -> JSONResponse:
    # Class 22 (data exception): a value PostgreSQL cannot hold, such as a NUL character in
    # text or JSON, or a number out of range. The request carried it, so it is the client's.
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return _json(400, f"a value in the request cannot be stored: {message}")


def install(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(AlertError, _alert_error)
    app.add_exception_handler(psycopg.DataError, _bad_data)
    app.add_exception_handler(psycopg.OperationalError, _unavailable)
    app.add_exception_handler(psycopg_pool.PoolTimeout, _unavailable)
