"""GET /wall: the built-in command-centre page (one self-contained HTML file, no internet)."""

from __future__ import annotations

import html
import json
from functools import cache
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from api.auth import authenticate
from api.errors import ApiError
from api.state import ApiState, get_state

router = APIRouter(tags=["wall"])


@cache
def page() -> str:
    # Read once per process: the page is package data (next to this module) and never changes
    # while running.
    return (Path(__file__).resolve().parent / "wall.html").read_text("utf-8")


_NEEDS_TOKEN = """<!doctype html><html><head><meta charset="utf-8"><title>Pusat wall</title>
<style>body{{background:#0b0f14;color:#e6edf3;font:24px sans-serif;padding:3rem}}
code{{color:#4aa3ff}}</style></head><body><h1>Pusat wall</h1><p>{detail}.</p>
<p>Open <code>/wall?token=&lt;a viewer token&gt;</code>; create one with
<code>pusat token create --role viewer --name wall</code> (an operator token shows
acknowledge buttons).</p></body></html>"""


@router.get(
    "/wall",
    response_class=HTMLResponse,
    summary="The command-centre wall (kiosk page)",
    responses={
        401: {
            "description": "No or a bad token: a page saying how to get one",
            "content": {"text/html": {}},
        }
    },
)
async def wall(request: Request, state: Annotated[ApiState, Depends(get_state)]) -> HTMLResponse:
    """A live page for a wall screen: sensors on a schematic map coloured by state, open alarms
    (with acknowledge buttons for an operator token), air, traffic and wetland tiles with
    sparklines, and a freshness indicator that turns red when data stops. `?token=` carries the
    token (kiosk browsers cannot send headers); `?stale=SECONDS` overrides PUSAT_WALL_STALE_S."""
    try:
        await authenticate(request, state, read=True)
    except ApiError as e:
        return HTMLResponse(_NEEDS_TOKEN.format(detail=html.escape(e.detail)), status_code=e.status)
    config = json.dumps(
        {"staleS": state.settings.wall_stale_s, "citySensors": state.settings.wall_city_sensors}
    )
    body = page().replace("/*PUSAT_CONFIG*/{}", config, 1)
    # The page only talks to this server; forbid everything else outright.
    csp = (
        "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline';"
        " img-src 'self' data:; connect-src 'self'"
    )
    return HTMLResponse(body, headers={"Content-Security-Policy": csp, "Cache-Control": "no-store"})
